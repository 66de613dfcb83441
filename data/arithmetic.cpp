// arithmetic.cpp: sampling and verifying arithmetic problems.
#include "data/arithmetic.h"

#include <stdexcept>

#include "runtime/rng.h"

namespace loom::data {

void ArithmeticConfig::validate() const {
  if (min_digits < 1 || max_digits > 18 || min_digits > max_digits)
    throw std::invalid_argument("arithmetic config: need 1 <= min_digits <= max_digits <= 18, got min_digits " +
                                std::to_string(min_digits) + ", max_digits " + std::to_string(max_digits));
  if (ops.empty()) throw std::invalid_argument("arithmetic config: ops is empty (use some of \"+-*\")");
  for (char c : ops)
    if (c != '+' && c != '-' && c != '*')
      throw std::invalid_argument(std::string("arithmetic config: ops holds '") + c + "', only \"+-*\" are supported");
}

namespace {

uint64_t pow10(int n) {
  uint64_t p = 1;
  while (n-- > 0) p *= 10;
  return p;
}

// Uniform in [0, n) from 64 random bits (multiply-high; bias <= n / 2^64).
uint64_t below(uint64_t bits, uint64_t n) { return uint64_t((unsigned __int128)bits * n >> 64); }

std::string to_string_u128(unsigned __int128 v) {
  if (v == 0) return "0";
  std::string s;
  while (v > 0) {
    s += char('0' + int(v % 10));
    v /= 10;
  }
  return std::string(s.rbegin(), s.rend());
}

// Stream tag so arithmetic draws never coincide with other users of the same seed.
constexpr uint64_t kArithmeticStream = 0x41524954484D4554ull;  // "ARITHMET"

}  // namespace

ArithmeticProblem sample_problem(const ArithmeticConfig& cfg, uint64_t seed, uint64_t index) {
  cfg.validate();
  const uint64_t key = runtime::mix64(seed ^ kArithmeticStream);
  auto w0 = runtime::philox4x32(key, index, 0);
  auto w1 = runtime::philox4x32(key, index, 1);
  auto u64 = [](uint32_t hi, uint32_t lo) { return uint64_t(hi) << 32 | lo; };
  auto operand = [&](uint64_t digit_bits, uint64_t value_bits) {
    int digits = cfg.min_digits + int(below(digit_bits, uint64_t(cfg.max_digits - cfg.min_digits + 1)));
    uint64_t lo = digits == 1 ? 0 : pow10(digits - 1), hi = pow10(digits);
    return lo + below(value_bits, hi - lo);
  };
  uint64_t a = operand(u64(w0[0], w0[1]), u64(w0[2], w0[3]));
  uint64_t b = operand(u64(w1[0], w1[1]), u64(w1[2], w1[3]));
  auto w2 = runtime::philox4x32(key, index, 2);
  char op = cfg.ops[below(u64(w2[0], w2[1]), cfg.ops.size())];

  std::string answer;
  if (op == '+') {
    answer = to_string_u128((unsigned __int128)a + b);
  } else if (op == '*') {
    answer = to_string_u128((unsigned __int128)a * b);
  } else {
    if (a < b && !cfg.allow_negative) std::swap(a, b);
    answer = a >= b ? std::to_string(a - b) : std::string(1, '-').append(std::to_string(b - a));
  }
  return {std::to_string(a) + op + std::to_string(b) + "=", answer};
}

bool check_answer(const ArithmeticProblem& problem, const std::string& completion) {
  auto normalise = [](const std::string& s, size_t i, std::string& out) {
    bool neg = false;
    if (i < s.size() && s[i] == '-') neg = true, ++i;
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return false;
    while (start + 1 < i && s[start] == '0') ++start;  // value, not spelling
    out = s.substr(start, i - start);
    if (neg && out != "0") out = "-" + out;
    return true;
  };
  size_t i = completion.find_first_not_of(' ');
  std::string got, want;
  if (i == std::string::npos || !normalise(completion, i, got)) return false;
  if (!normalise(problem.answer, 0, want)) return false;
  return got == want;
}

}  // namespace loom::data
