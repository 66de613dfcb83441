// test_arithmetic.cpp: the synthetic arithmetic corpus: correct answers, purity, difficulty
// knobs, and the verifier.
#include <gtest/gtest.h>

#include <set>

#include "data/arithmetic.h"

using loom::data::ArithmeticConfig;
using loom::data::ArithmeticProblem;
using loom::data::check_answer;
using loom::data::sample_problem;

namespace {

struct Parsed {
  __int128 a, b;
  char op;
  int a_digits, b_digits;
};

Parsed parse_prompt(const std::string& prompt) {
  Parsed p{};
  size_t op = prompt.find_first_of("+-*", 1);
  EXPECT_NE(op, std::string::npos) << prompt;
  EXPECT_EQ(prompt.back(), '=') << prompt;
  std::string a = prompt.substr(0, op), b = prompt.substr(op + 1, prompt.size() - op - 2);
  p.op = prompt[op];
  p.a = std::stoll(a);
  p.b = std::stoll(b);
  p.a_digits = int(a.size());
  p.b_digits = int(b.size());
  return p;
}

std::string str128(__int128 v) {
  if (v == 0) return "0";
  bool neg = v < 0;
  unsigned __int128 u = neg ? (unsigned __int128)(-v) : (unsigned __int128)v;
  std::string s;
  while (u) s += char('0' + int(u % 10)), u /= 10;
  if (neg) s += '-';
  return std::string(s.rbegin(), s.rend());
}

}  // namespace

TEST(Arithmetic, AnswersAreCorrect) {
  ArithmeticConfig cfg;
  cfg.min_digits = 1;
  cfg.max_digits = 9;
  cfg.ops = "+-*";
  std::set<char> ops_seen;
  for (uint64_t i = 0; i < 3000; ++i) {
    ArithmeticProblem p = sample_problem(cfg, 42, i);
    Parsed q = parse_prompt(p.prompt);
    ops_seen.insert(q.op);
    __int128 want = q.op == '+' ? q.a + q.b : q.op == '-' ? q.a - q.b : q.a * q.b;
    EXPECT_EQ(p.answer, str128(want)) << p.prompt;
    EXPECT_EQ(p.text(), p.prompt + p.answer + "\n");
    EXPECT_TRUE(check_answer(p, p.answer));
    EXPECT_GE(q.a, q.b * (q.op == '-'));  // no negative answers by default
  }
  EXPECT_EQ(ops_seen.size(), 3u);
}

TEST(Arithmetic, EighteenDigitProductsAreExact) {
  ArithmeticConfig cfg{18, 18, "*"};
  for (uint64_t i = 0; i < 50; ++i) {
    ArithmeticProblem p = sample_problem(cfg, 1, i);
    Parsed q = parse_prompt(p.prompt);
    EXPECT_EQ(q.a_digits, 18);
    EXPECT_EQ(q.b_digits, 18);
    EXPECT_EQ(p.answer, str128(q.a * q.b));
  }
}

TEST(Arithmetic, IsAPureFunctionOfSeedAndIndex) {
  ArithmeticConfig cfg;
  for (uint64_t i = 0; i < 100; ++i) {
    auto a = sample_problem(cfg, 7, i), b = sample_problem(cfg, 7, i);
    EXPECT_EQ(a.prompt, b.prompt);
    EXPECT_EQ(a.answer, b.answer);
  }
  std::set<std::string> distinct, other_seed;
  for (uint64_t i = 0; i < 200; ++i) distinct.insert(sample_problem(cfg, 7, i).prompt);
  EXPECT_GT(distinct.size(), 150u);
  int same = 0;
  for (uint64_t i = 0; i < 200; ++i) same += sample_problem(cfg, 7, i).prompt == sample_problem(cfg, 8, i).prompt;
  EXPECT_LT(same, 20);
  // Pinned draws: changing the sampling procedure changes every dataset, so it must be
  // deliberate (update these values and say so in the change).
  EXPECT_EQ(sample_problem(cfg, 0, 0).text(), "86+36=122\n");
  EXPECT_EQ(sample_problem({2, 5, "+-*"}, 123, 456).text(), "88254-395=87859\n");
}

TEST(Arithmetic, DifficultyFollowsTheConfig) {
  ArithmeticConfig cfg{2, 4, "-", false};
  std::set<int> lengths;
  bool negative = false;
  for (uint64_t i = 0; i < 500; ++i) {
    auto p = sample_problem(cfg, 3, i);
    Parsed q = parse_prompt(p.prompt);
    lengths.insert(q.a_digits);
    lengths.insert(q.b_digits);
    negative |= p.answer[0] == '-';
  }
  EXPECT_EQ(lengths, (std::set<int>{2, 3, 4}));
  EXPECT_FALSE(negative);
  cfg.allow_negative = true;
  for (uint64_t i = 0; i < 500 && !negative; ++i) negative |= sample_problem(cfg, 3, i).answer[0] == '-';
  EXPECT_TRUE(negative);
  // One-digit operands include 0.
  ArithmeticConfig one{1, 1, "+"};
  bool zero = false;
  for (uint64_t i = 0; i < 500; ++i) zero |= sample_problem(one, 5, i).prompt[0] == '0';
  EXPECT_TRUE(zero);
}

TEST(Arithmetic, InvalidConfigIsRejected) {
  EXPECT_THROW(sample_problem({0, 3, "+"}, 0, 0), std::invalid_argument);
  EXPECT_THROW(sample_problem({3, 2, "+"}, 0, 0), std::invalid_argument);
  EXPECT_THROW(sample_problem({1, 19, "+"}, 0, 0), std::invalid_argument);
  EXPECT_THROW(sample_problem({1, 3, ""}, 0, 0), std::invalid_argument);
  try {
    sample_problem({1, 3, "+/"}, 0, 0);
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ops"), std::string::npos);
  }
}

TEST(Arithmetic, VerifierParsesTheLeadingNumber) {
  ArithmeticProblem p{"482+397=", "879"};
  EXPECT_TRUE(check_answer(p, "879"));
  EXPECT_TRUE(check_answer(p, "879\n"));
  EXPECT_TRUE(check_answer(p, "  879 because 400+400=800"));
  EXPECT_TRUE(check_answer(p, "879<|eos|>"));
  EXPECT_TRUE(check_answer(p, "0879"));  // compared by value
  EXPECT_FALSE(check_answer(p, "8790"));
  EXPECT_FALSE(check_answer(p, "87"));
  EXPECT_FALSE(check_answer(p, "-879"));
  EXPECT_FALSE(check_answer(p, "the answer is 879"));
  EXPECT_FALSE(check_answer(p, ""));
  EXPECT_FALSE(check_answer(p, "-"));
  ArithmeticProblem n{"3-7=", "-4"};
  EXPECT_TRUE(check_answer(n, "-4\n"));
  EXPECT_FALSE(check_answer(n, "4"));
  ArithmeticProblem z{"5-5=", "0"};
  EXPECT_TRUE(check_answer(z, "0"));
  EXPECT_TRUE(check_answer(z, "-0"));
  EXPECT_TRUE(check_answer(z, "000"));
}
