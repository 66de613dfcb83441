// test_gemm_bf16.cpp: cpu/gemm_bf16.cpp (AMX) against an f64 loop over the bf16-rounded
// operands, on the edges its loops split on: 16-row tiles and 32-row blocks (M around 16 and
// 32), 16-column panels, panel pairs and 512-column chunks (N around 16, 32 and 512), 32-deep
// steps and 1024-deep K slices (K around 32 and 1024, 3 slices); all four storage combinations of
// A and B, alpha and beta, leading dimensions wider than the matrices, beta = 0 never reading C.
// Then gemm() at matmul precision bf16: the same bits at 1 and 3 threads, and the rounding is
// really bf16 (an f32 product differs by far more than f32 sums would).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemm_bf16.h"
#include "runtime/dtype.h"
#include "tests/runtime/gemm_check.h"

namespace loom::runtime::cpu {
namespace {

double rounded(float v) { return double(bf16_to_float(float_to_bf16(v))); }

using Case = GemmCase;

// gemm_bf16 against f64 sums of the bf16-rounded alpha A and B.
void check(const Case& c) {
  check_gemm_against_f64(
      c,
      [](const Case& c, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc) {
        gemm_bf16(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, A, lda, B, ldb, c.beta, C, ldc);
      },
      rounded);
}

#define SKIP_WITHOUT_AMX() \
  if (!amx_bf16_available()) GTEST_SKIP() << "no AMX-BF16 on this CPU"

TEST(GemmBf16, MatchesF64OverRoundedOperandsOnTileAndPanelEdges) {
  SKIP_WITHOUT_AMX();
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t M : {1, 15, 16, 17, 33})
        for (int64_t N : {1, 15, 17, 32, 33})
          for (int64_t K : {1, 31, 32, 33, 70})
            check({M, N, K, ta, tb});
}

TEST(GemmBf16, ChunksSlicesAndTrainingShapes) {
  SKIP_WITHOUT_AMX();
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check({40, 530, 64, ta, tb});    // a second 512-column chunk of 18 columns
      check({20, 48, 1025, ta, tb});   // two K slices of 513 (17 steps, the last padded)
      check({35, 40, 2100, ta, tb});   // three K slices
      check({64, 96, 256, ta, tb});    // whole blocks, panel pairs and one slice
    }
}

TEST(GemmBf16, AlphaAndBetaApplyOnceOverSlices) {
  SKIP_WITHOUT_AMX();
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float alpha : {1.0f, 0.25f, -2.0f})
        for (float beta : {0.0f, 1.0f, -0.5f}) {
          check({13, 40, 9, ta, tb, alpha, beta});
          check({37, 17, 1500, ta, tb, alpha, beta});
        }
}

// Through gemm() at bf16: the path is taken (results differ from f32 by bf16's rounding, far
// beyond f32 sums), and rows split over threads give the same bits as one thread; for the
// forward's shape (B transposed) and the weight gradient's (A transposed, long K).
TEST(GemmBf16, GemmAtBf16PrecisionIsThreadCountInvariantAndRoundsToBf16) {
  SKIP_WITHOUT_AMX();
  for (const Case& c : {Case{300, 200, 700, false, true}, Case{200, 96, 1500, true, false}}) {
    std::mt19937 gen(7);
    std::normal_distribution<float> nd;
    std::vector<float> A(size_t(c.M * c.K)), B(size_t(c.K * c.N));
    for (float& v : A) v = nd(gen);
    for (float& v : B) v = nd(gen);
    const int64_t lda = c.trans_a ? c.M : c.K, ldb = c.trans_b ? c.K : c.N;
    auto run = [&](MatmulPrecision precision, int threads) {
      std::vector<float> out(size_t(c.M * c.N));
      const int saved = omp_get_max_threads();
      omp_set_num_threads(threads);
      set_matmul_precision(precision);
      gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, out.data(), c.N);
      set_matmul_precision(MatmulPrecision::f32);
      omp_set_num_threads(saved);
      return out;
    };
    const std::vector<float> one = run(MatmulPrecision::bf16, 1), three = run(MatmulPrecision::bf16, 3);
    const std::vector<float> f32 = run(MatmulPrecision::f32, 1);
    EXPECT_EQ(std::string(gemm_library()).find("amx"), std::string::npos);  // back at f32
    double max_rel = 0;
    for (size_t i = 0; i < one.size(); ++i) {
      ASSERT_EQ(one[i], three[i]) << "element " << i << " of " << c.M << "x" << c.N << "x" << c.K;
      max_rel = std::max(max_rel, std::abs(double(one[i]) - f32[i]) / (std::abs(double(f32[i])) + 1.0));
    }
    // bf16 keeps 8 significant bits: products of K = 700..1500 unit normals differ from f32 by
    // about sqrt(K) * 2^-8 relative to a term; f32 sums would stay below 1e-4.
    EXPECT_GT(max_rel, 1e-3);
    EXPECT_LT(max_rel, 0.5);
  }
}

TEST(GemmBf16, PrecisionNamesAndErrors) {
  EXPECT_EQ(matmul_precision_from_name("bf16"), MatmulPrecision::bf16);
  EXPECT_EQ(matmul_precision_from_name("f32"), MatmulPrecision::f32);
  EXPECT_STREQ(matmul_precision_name(MatmulPrecision::bf16), "bf16");
  EXPECT_THROW(matmul_precision_from_name("fp8"), std::invalid_argument);
  if (!amx_bf16_available()) {
    EXPECT_THROW(set_matmul_precision(MatmulPrecision::bf16), std::runtime_error);
    EXPECT_EQ(matmul_precision(), MatmulPrecision::f32);
  }
}

}  // namespace
}  // namespace loom::runtime::cpu
