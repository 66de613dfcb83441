// arithmetic.h: a synthetic, verifiable arithmetic corpus that needs no download.
// A problem is "482+397=" with answer "879"; its text form is "482+397=879\n". Difficulty is
// set by the operand digit range and the operator set. Every problem is a pure function of
// (config, seed, index) through Philox, so any process can regenerate any sample.
#pragma once
#include <cstdint>
#include <string>

namespace loom::data {

struct ArithmeticConfig {
  int min_digits = 1;    // operand length range, each operand drawn independently
  int max_digits = 3;    // at most 18
  std::string ops = "+";  // operators drawn uniformly from this string, each one of "+-*"
  bool allow_negative = false;  // '-': when false the larger operand comes first

  void validate() const;  // throws std::invalid_argument naming the offending field
};

struct ArithmeticProblem {
  std::string prompt;  // "482+397="
  std::string answer;  // "879"
  std::string text() const { return prompt + answer + "\n"; }
};

// Operands: a digit count uniform in [min_digits, max_digits], then a number uniform among
// those with exactly that many digits (1 digit: 0..9).
ArithmeticProblem sample_problem(const ArithmeticConfig& cfg, uint64_t seed, uint64_t index);

// The verifier: parses the leading integer of `completion` (leading spaces allowed, an
// optional '-', then digits; what follows the digits is ignored) and compares it with the
// answer by value. No leading integer -> false.
bool check_answer(const ArithmeticProblem& problem, const std::string& completion);

}  // namespace loom::data
