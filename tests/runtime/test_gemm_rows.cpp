// test_gemm_rows.cpp: cpu/gemm_rows.cpp against an f64 loop over the shapes its loops split on:
// row tails (M % 6), column tails and panel/block edges (N around 16 and 512), K slices (K
// around 256 and the 768 limit, 704 = 3 x 235), B stored both ways, alpha and beta, leading
// dimensions wider than the matrices; and beta = 0 must not read C (NaN there stays out).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "runtime/cpu/gemm_rows.h"

namespace loom::runtime::cpu {
namespace {

struct Case {
  int64_t M, N, K;
  bool trans_b;
  float alpha, beta;
};

void check(const Case& c) {
  const int64_t lda = c.K + 3, ldb = (c.trans_b ? c.K : c.N) + 5, ldc = c.N + 2;
  std::mt19937 gen(unsigned(c.M * 1000003 + c.N * 1009 + c.K));
  std::normal_distribution<float> nd;
  std::vector<float> A(size_t(c.M * lda)), B(size_t((c.trans_b ? c.N : c.K) * ldb)), C(size_t(c.M * ldc));
  for (float& v : A) v = nd(gen);
  for (float& v : B) v = nd(gen);
  for (float& v : C) v = c.beta == 0 ? std::numeric_limits<float>::quiet_NaN() : nd(gen);
  std::vector<float> C0 = C;
  gemm_rows(c.trans_b, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);
  double worst = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double b = c.trans_b ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)];
        s += double(A[size_t(i * lda + k)]) * b;
        mag += std::abs(double(A[size_t(i * lda + k)]) * b);
      }
      double expect = double(c.alpha) * s + (c.beta == 0 ? 0.0 : double(c.beta) * C0[size_t(i * ldc + j)]);
      // f32 sums of K terms: error bounded by K * 2^-24 * sum |a b| (plus the beta term's rounding).
      const double bound = 1e-6 + 2.0 * double(c.K + 2) * 6e-8 * (std::abs(c.alpha) * mag + std::abs(expect));
      const double err = std::abs(double(C[size_t(i * ldc + j)]) - expect);
      ASSERT_LE(err, bound) << "M " << c.M << " N " << c.N << " K " << c.K << " trans_b " << c.trans_b << " at (" << i
                            << ", " << j << ")";
      worst = std::max(worst, err / bound);
    }
  // Padding columns of C (ldc > N) are never written.
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = c.N; j < ldc; ++j) {
      const float before = C0[size_t(i * ldc + j)], after = C[size_t(i * ldc + j)];
      if (std::isnan(before)) EXPECT_TRUE(std::isnan(after));
      else EXPECT_EQ(after, before);
    }
}

TEST(GemmRows, MatchesF64OnEveryEdgeOfItsLoops) {
  for (bool tb : {false, true})
    for (int64_t M : {1, 5, 6, 7, 13})
      for (int64_t N : {1, 7, 8, 15, 16, 17, 40})
        for (int64_t K : {1, 7, 8, 9, 255, 256, 257})
          check({M, N, K, tb, 1.0f, 0.0f});
}

TEST(GemmRows, BlocksSlicesAndTheTrainingShapes) {
  for (bool tb : {false, true}) {
    check({20, 513, 600, tb, 1.0f, 0.0f});   // a second column block of 1 column; 3 K slices
    check({31, 530, 768, tb, 1.0f, 0.0f});   // the K limit
    check({64, 256, 704, tb, 1.0f, 0.0f});   // 704 = 3 slices of 235
    check({48, 128, 128, tb, 1.0f, 0.0f});   // llama-tiny's projections
  }
}

TEST(GemmRows, AlphaAndBetaIncludingAccumulationOverSlices) {
  for (bool tb : {false, true})
    for (float alpha : {1.0f, 0.25f, -2.0f})
      for (float beta : {0.0f, 1.0f, -0.5f}) {
        check({13, 40, 9, tb, alpha, beta});
        check({7, 17, 600, tb, alpha, beta});  // beta applies once, not once per K slice
      }
}

}  // namespace
}  // namespace loom::runtime::cpu
