// test_small_gemm.cpp: the register-tiled product attention uses (runtime/cpu/small_gemm.h)
// against a naive triple loop, for every row-tile remainder (M = 1..13), column counts with
// whole 2-vector tiles, a single vector and scalar tails, strided and transposed A, an output
// with a row stride wider than N, and beta = 0 / 1 (beta = 0 must ignore NaN already in C).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/cpu/small_gemm.h"

using loom::runtime::cpu::small_gemm;

namespace {

template <class T> void check_against_naive(int64_t M, int64_t N, int64_t K, bool a_transposed, T beta) {
  std::mt19937 gen(unsigned(M * 1000 + N * 10 + K));
  std::normal_distribution<double> dist;
  const int64_t lda = K + 3, ldb = N + 5, ldc = N + 2;
  // A stored [M, lda] (a_rs = lda, a_ks = 1) or as A^T [K, M + 1] (a_rs = 1, a_ks = M + 1).
  const int64_t a_rs = a_transposed ? 1 : lda, a_ks = a_transposed ? M + 1 : 1;
  std::vector<T> a(size_t(a_transposed ? K * (M + 1) : M * lda)), b(size_t(K * ldb)), c(size_t(M * ldc));
  for (T& v : a) v = T(dist(gen));
  for (T& v : b) v = T(dist(gen));
  for (T& v : c) v = beta == T(0) ? T(NAN) : T(dist(gen));
  std::vector<T> want = c;
  const T alpha = T(0.75);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(a[r * a_rs + k * a_ks]) * double(b[k * ldb + j]);
      want[r * ldc + j] = T(double(alpha) * s + (beta == T(0) ? 0.0 : double(beta) * double(c[r * ldc + j])));
    }
  small_gemm(M, N, K, alpha, a.data(), a_rs, a_ks, b.data(), ldb, beta, c.data(), ldc);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t j = 0; j < ldc; ++j) {
      const T got = c[r * ldc + j], ref = want[r * ldc + j];
      if (j >= N) {  // past N: untouched
        if (beta == T(0)) EXPECT_TRUE(std::isnan(got)) << "column " << j << " was written";
        else EXPECT_EQ(got, ref);
        continue;
      }
      ASSERT_NEAR(double(got), double(ref), tol * (1 + std::abs(double(ref))))
          << "M " << M << " N " << N << " K " << K << " at (" << r << ", " << j << ")";
    }
  }
}

}  // namespace

// Column blocks of 2 and 1 vectors, the half-width block (16-lane builds) and scalar tails,
// for either vector width: N = 24, 40, 48, 56 reach the half-width and one-vector blocks after
// whole pairs of 16-float vectors.
TEST(SmallGemm, MatchesNaiveProductForEveryTileRemainder) {
  for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 11, 12, 13})
    for (int64_t N : {1, 5, 8, 13, 16, 21, 24, 32, 37, 40, 48, 56})
      for (int64_t K : {1, 5, 32}) {
        check_against_naive<float>(M, N, K, false, 0.0f);
        check_against_naive<float>(M, N, K, true, 1.0f);
        check_against_naive<double>(M, N, K, true, 0.0);
        check_against_naive<double>(M, N, K, false, 1.0);
      }
}

TEST(SmallGemm, EmptyReductionScalesC) {
  std::vector<float> a(32, 1.0f), b(32, 1.0f), c(16, 2.0f);  // 2 x 8: one whole vector per row
  small_gemm<float>(2, 8, 0, 1.0f, a.data(), 1, 1, b.data(), 8, 0.5f, c.data(), 8);
  EXPECT_EQ(c, std::vector<float>(16, 1.0f));
  small_gemm<float>(2, 8, 0, 1.0f, a.data(), 1, 1, b.data(), 8, 0.0f, c.data(), 8);
  EXPECT_EQ(c, std::vector<float>(16, 0.0f));
}
