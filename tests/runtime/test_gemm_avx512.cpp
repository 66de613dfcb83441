// test_gemm_avx512.cpp: cpu/gemm_avx512.cpp against an f64 loop, on the edges its loops split
// on: 14-row register tiles (and the 2-, 4-, 6- and 8-row ones of a last partial micro-panel)
// and 112-row blocks of A (M around 14 and 112), 32-column tiles and
// their 16-lane halves (N around 16 and 32), 1 MB column chunks of B (N past 4096 at K 64),
// 16-deep transposes and 320-deep K slices (K around 16 and 320, 3 slices); all four storage
// combinations of A and B, alpha and beta (applied once over slices), leading dimensions wider
// than the matrices, beta = 0 never reading C; the bias row (linear's) added as C is written;
// row-major A read in place, copied or packed, with the same bits. gemm() takes this path at f32 on
// AVX-512 CPUs; its thread split keeping the one-thread bits is test_gemm.cpp's.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemm_avx512.h"
#include "tests/runtime/gemm_check.h"

namespace loom::runtime::cpu {
namespace {

void check(const GemmCase& c) {
  check_gemm_against_f64(
      c, [](const GemmCase& g, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc) {
        gemm_avx512(g.trans_a, g.trans_b, g.M, g.N, g.K, g.alpha, A, lda, B, ldb, g.beta, C, ldc);
      });
}

#define SKIP_WITHOUT_AVX512() \
  if (!avx512_gemm_available()) GTEST_SKIP() << "no AVX-512 on this CPU"

TEST(GemmAvx512, MatchesF64OnTileAndTransposeEdges) {
  SKIP_WITHOUT_AVX512();
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t M : {1, 3, 5, 7, 13, 14, 15, 18, 20, 22, 29})  // last tiles of 2, 4, 6, 8, 14 rows
        for (int64_t N : {1, 15, 16, 17, 32, 33})
          for (int64_t K : {1, 15, 16, 17, 40})
            check({M, N, K, ta, tb});
}

TEST(GemmAvx512, BlocksChunksSlicesAndTrainingShapes) {
  SKIP_WITHOUT_AVX512();
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check({113, 40, 30, ta, tb});    // a second 112-row block of 1 row
      check({20, 4100, 64, ta, tb});   // two 1 MB column chunks (4096 + 4 columns at K 64)
      check({17, 48, 321, ta, tb});    // two K slices of 161
      check({30, 35, 700, ta, tb});    // three K slices of 234, 234, 232
      check({128, 96, 256, ta, tb});   // whole tiles but the last row tile, one slice
      check({530, 40, 330, ta, tb});   // row-major A read in place (>= 512 rows), 2 slices
    }
}

TEST(GemmAvx512, AlphaAndBetaApplyOnceOverSlices) {
  SKIP_WITHOUT_AVX512();
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float alpha : {1.0f, 0.25f, -2.0f})
        for (float beta : {0.0f, 1.0f, -0.5f}) {
          check({13, 40, 9, ta, tb, alpha, beta});
          check({37, 17, 700, ta, tb, alpha, beta});
        }
}

// linear's bias: added as C is written, with the bits of starting C as the bias rows (beta = 1).
TEST(GemmAvx512, BiasRowGivesTheBitsOfStartingFromIt) {
  SKIP_WITHOUT_AVX512();
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const GemmCase& c : {GemmCase{13, 40, 9, ta, tb, 0.5f}, GemmCase{113, 70, 700, ta, tb},
                                GemmCase{30, 33, 321, ta, tb, -2.0f}, GemmCase{20, 4100, 64, ta, tb}}) {
        std::mt19937 gen(unsigned(c.M + c.N + c.K));
        std::normal_distribution<float> nd;
        const int64_t ldc = c.N + 3;
        std::vector<float> A(size_t(c.M * c.K)), B(size_t(c.K * c.N)), bias(size_t(c.N));
        for (std::vector<float>* v : {&A, &B, &bias})
          for (float& x : *v) x = nd(gen);
        std::vector<float> fused(size_t(c.M * ldc), std::numeric_limits<float>::quiet_NaN()), started = fused;
        for (int64_t i = 0; i < c.M; ++i) std::copy(bias.begin(), bias.end(), started.begin() + i * ldc);
        const int64_t lda = c.trans_a ? c.M : c.K, ldb = c.trans_b ? c.K : c.N;
        gemm_avx512(ta, tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, 0.0f, fused.data(), ldc, bias.data());
        gemm_avx512(ta, tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, 1.0f, started.data(), ldc);
        for (size_t i = 0; i < fused.size(); ++i) {
          if (int64_t(i) % ldc >= c.N) {  // padding: never written
            ASSERT_TRUE(std::isnan(fused[i]));
            continue;
          }
          ASSERT_EQ(fused[i], started[i]) << c.M << "x" << c.N << "x" << c.K << " at " << i;
        }
      }
  std::vector<float> one(64, 1.0f);
  EXPECT_THROW(gemm_avx512(false, false, 8, 8, 8, 1.0f, one.data(), 8, one.data(), 8, 1.0f, one.data(), 8, one.data()),
               std::invalid_argument);
}

// Row sums of A^T (linear's bias gradient), summed as A is packed: each within 1e-12 of an f64
// loop (f64 sums in another order), on whole and partial 112-row blocks and micro-panels, K
// slices, and two column chunks (packing A twice, summing once); the product is unchanged.
// Non-transposed A has no packing pass to sum in: refused.
TEST(GemmAvx512, RowSumsOfTransposedAAsItIsPacked) {
  SKIP_WITHOUT_AVX512();
  for (const GemmCase& c : {GemmCase{13, 40, 9, true, false}, GemmCase{1040, 64, 700, true, false},
                            GemmCase{250, 4100, 64, true, true}, GemmCase{112, 33, 321, true, true}}) {
    std::mt19937 gen(unsigned(c.M * 3 + c.N + c.K));
    std::normal_distribution<float> nd;
    std::vector<float> A(size_t(c.K * c.M)), B(size_t(c.K * c.N));
    for (std::vector<float>* v : {&A, &B})
      for (float& x : *v) x = nd(gen);
    const int64_t ldb = c.trans_b ? c.K : c.N;
    std::vector<float> plain(size_t(c.M * c.N)), summed = plain;
    std::vector<double> sums(size_t(c.M), 0.0);
    gemm_avx512(true, c.trans_b, c.M, c.N, c.K, 1.0f, A.data(), c.M, B.data(), ldb, 0.0f, plain.data(), c.N);
    gemm_avx512(true, c.trans_b, c.M, c.N, c.K, 1.0f, A.data(), c.M, B.data(), ldb, 0.0f, summed.data(), c.N,
                nullptr, sums.data());
    EXPECT_EQ(plain, summed) << c.M << "x" << c.N << "x" << c.K;
    for (int64_t m = 0; m < c.M; ++m) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        ref += double(A[size_t(k * c.M + m)]);
        mag += std::abs(double(A[size_t(k * c.M + m)]));
      }
      ASSERT_NEAR(sums[size_t(m)], ref, 1e-12 * mag) << c.M << "x" << c.N << "x" << c.K << " row " << m;
    }
  }
  std::vector<float> one(64, 1.0f);
  std::vector<double> sums(8);
  EXPECT_THROW(gemm_avx512(false, false, 8, 8, 8, 1.0f, one.data(), 8, one.data(), 8, 0.0f, one.data(), 8, nullptr,
                           sums.data()),
               std::invalid_argument);
}

// Row-major A of 512 rows or more runs through the row kernel: read in place when its rows
// spread over L1's sets, else (lda a multiple of 1024 floats) copied 14 rows at a time; fewer
// rows are packed. All three sum each element in the same order: the same bits, checked by
// computing the same product whole and as two halves of fewer than 512 rows.
TEST(GemmAvx512, RowKernelGivesThePackedBits) {
  SKIP_WITHOUT_AVX512();
  for (bool tb : {false, true})
    // 600 = 42 whole micro-panels and 12 rows; K = 330: two slices with B packed whole.
    for (const GemmCase& c : {GemmCase{600, 40, 330, false, tb}, GemmCase{518, 33, 64, false, tb, -0.5f, 1.0f},
                              GemmCase{512, 300, 256, false, tb, 1.0f, 0.0f}}) {
      std::mt19937 gen(unsigned(c.M * 7 + c.N + c.K));
      std::normal_distribution<float> nd;
      const int64_t ldb = tb ? c.K : c.N, half = c.M / 2;
      std::vector<float> B(size_t(c.K * c.N)), bias(size_t(c.N)), C0(size_t(c.M * c.N));
      for (std::vector<float>* v : {&B, &bias, &C0})
        for (float& x : *v) x = nd(gen);
      const float* with_bias = c.beta == 0.0f ? bias.data() : nullptr;
      for (int64_t lda : {c.K + 3, int64_t(1024)}) {  // in place, then copied
        std::vector<float> A(size_t(c.M * lda));
        for (float& x : A) x = nd(gen);
        std::vector<float> whole = C0, halves = C0;
        gemm_avx512(false, tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, whole.data(), c.N,
                    with_bias);
        gemm_avx512(false, tb, half, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, halves.data(), c.N,
                    with_bias);
        gemm_avx512(false, tb, c.M - half, c.N, c.K, c.alpha, A.data() + half * lda, lda, B.data(), ldb, c.beta,
                    halves.data() + half * c.N, c.N, with_bias);
        for (size_t i = 0; i < whole.size(); ++i)
          ASSERT_EQ(whole[i], halves[i]) << c.M << "x" << c.N << "x" << c.K << " lda " << lda << " at " << i;
      }
    }
}

// The padded row stride for such A: at 1024 floats all rows fall in the same L1 sets (copied);
// the stride given instead is read in place, and one that already spreads is kept.
TEST(GemmAvx512, RowStrideInPlacePadsOnlyWhereRowsCollide) {
  SKIP_WITHOUT_AVX512();
  EXPECT_GT(avx512_row_stride_in_place(2048, 1024), 1024);
  EXPECT_LT(avx512_row_stride_in_place(2048, 1024), 1024 + 128);
  EXPECT_EQ(avx512_row_stride_in_place(256, 1024), 1024);  // too few rows to be read in place
  EXPECT_EQ(avx512_row_stride_in_place(2048, 704), 704);   // already spread
  for (int64_t cols : {1024, 8192, 3072}) {
    const int64_t ld = avx512_row_stride_in_place(518, cols);
    EXPECT_EQ(ld % 16, 0);
    // Read in place: the same bits as the unpadded layout (copied or in place, see above).
    const int64_t M = 518, N = 40, K = cols;
    std::vector<float> B(size_t(K * N)), results[2];
    for (size_t i = 0; i < B.size(); ++i) B[i] = float(i % 13) * 0.25f - 1.0f;
    for (int64_t lda : {cols, ld}) {
      std::vector<float> A(size_t(M * lda));
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k) A[size_t(i * lda + k)] = float((i * 31 + k * 17) % 29) * 0.125f - 1.5f;
      std::vector<float>& C = results[lda != cols];
      C.assign(size_t(M * N), 0.0f);
      gemm_avx512(false, false, M, N, K, 1.0f, A.data(), lda, B.data(), N, 0.0f, C.data(), N);
    }
    EXPECT_EQ(results[0], results[1]) << cols;
  }
}

TEST(GemmAvx512, GemmNamesThePathItTakes) {
  const std::string library = gemm_library();
  EXPECT_EQ(library.rfind("avx512+", 0) == 0, avx512_gemm_available()) << library;
}

}  // namespace
}  // namespace loom::runtime::cpu
