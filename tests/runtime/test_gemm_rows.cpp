// test_gemm_rows.cpp: cpu/gemm_rows.cpp against an f64 loop over the shapes its loops split on:
// row tails (M % 6), column tails and panel/block edges (N around 16 and 512), K slices (K
// around 256 and the 768 limit, 704 = 3 x 235), B stored both ways, alpha and beta, leading
// dimensions wider than the matrices; and beta = 0 must not read C (NaN there stays out).
#include <gtest/gtest.h>

#include "runtime/cpu/gemm_rows.h"
#include "tests/runtime/gemm_check.h"

namespace loom::runtime::cpu {
namespace {

struct Case {
  int64_t M, N, K;
  bool trans_b;
  float alpha, beta;
};

void check(const Case& c) {
  check_gemm_against_f64(
      {c.M, c.N, c.K, false, c.trans_b, c.alpha, c.beta},
      [](const GemmCase& g, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc) {
        gemm_rows(g.trans_b, g.M, g.N, g.K, g.alpha, A, lda, B, ldb, g.beta, C, ldc);
      });
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
