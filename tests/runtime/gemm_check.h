// gemm_check.h: one product of a CPU GEMM kernel (cpu/gemm_rows, cpu/gemm_avx512, cpu/gemm_bf16)
// against f64 sums, on random operands stored with leading dimensions wider than the matrices:
// every element within the bound of f32 sums, C's padding columns untouched, and at beta = 0
// C never read (it starts as NaN).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

namespace loom::runtime::cpu {

struct GemmCase {
  int64_t M, N, K;
  bool trans_a, trans_b;
  float alpha = 1.0f, beta = 0.0f;
};

// Computes C = alpha op(A) op(B) + beta C for the case with the given storage.
using GemmUnderTest = std::function<void(const GemmCase&, const float* A, int64_t lda, const float* B, int64_t ldb,
                                         float* C, int64_t ldc)>;

// round: what the kernel does to an operand before multiplying (bf16 rounding; none for f32).
// alpha is applied to A before rounding, as the bf16 kernel does.
inline void check_gemm_against_f64(const GemmCase& c, const GemmUnderTest& gemm, double (*round)(float) = nullptr) {
  const int64_t lda = (c.trans_a ? c.M : c.K) + 3, ldb = (c.trans_b ? c.K : c.N) + 5, ldc = c.N + 2;
  std::mt19937 gen(unsigned(c.M * 1000003 + c.N * 1009 + c.K * 7 + c.trans_a * 2 + c.trans_b));
  std::normal_distribution<float> nd;
  std::vector<float> A(size_t((c.trans_a ? c.K : c.M) * lda)), B(size_t((c.trans_b ? c.N : c.K) * ldb)),
      C(size_t(c.M * ldc));
  for (float& v : A) v = nd(gen);
  for (float& v : B) v = nd(gen);
  for (float& v : C) v = c.beta == 0 ? std::numeric_limits<float>::quiet_NaN() : nd(gen);
  const std::vector<float> C0 = C;
  gemm(c, A.data(), lda, B.data(), ldb, C.data(), ldc);
  auto a_at = [&](int64_t i, int64_t k) { return c.trans_a ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)]; };
  auto b_at = [&](int64_t k, int64_t j) { return c.trans_b ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)]; };
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double p = round ? round(c.alpha * a_at(i, k)) * round(b_at(k, j))
                               : double(c.alpha) * double(a_at(i, k)) * double(b_at(k, j));
        s += p;
        mag += std::abs(p);
      }
      const double expect = s + (c.beta == 0 ? 0.0 : double(c.beta) * C0[size_t(i * ldc + j)]);
      // f32 sums of K exact products: error within K * 2^-24 * sum |products| (plus beta C's).
      const double bound = 1e-6 + 2.0 * double(c.K + 2) * 6e-8 * (mag + std::abs(expect));
      const double err = std::abs(double(C[size_t(i * ldc + j)]) - expect);
      ASSERT_LE(err, bound) << "M " << c.M << " N " << c.N << " K " << c.K << " trans " << c.trans_a << c.trans_b
                            << " alpha " << c.alpha << " beta " << c.beta << " at (" << i << ", " << j << ")";
    }
  for (int64_t i = 0; i < c.M; ++i)  // padding columns of C (ldc > N) are never written
    for (int64_t j = c.N; j < ldc; ++j) {
      const float before = C0[size_t(i * ldc + j)], after = C[size_t(i * ldc + j)];
      if (std::isnan(before)) EXPECT_TRUE(std::isnan(after));
      else EXPECT_EQ(after, before);
    }
}

}  // namespace loom::runtime::cpu
