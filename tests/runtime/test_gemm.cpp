// test_gemm.cpp: cpu/gemm.cpp's gemm() splits a product into row panels, or column panels when
// N >= 2 M, one per thread. Every element must get the bits of the one-thread product, for each
// storage of A and B, at matmul precision f32 (AVX-512, OpenBLAS or gemm_rows) and bf16 (AMX, where the
// CPU has it), and the split results must be the product (against an f64 loop).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemm_bf16.h"

namespace loom::runtime::cpu {
namespace {

struct Shape {
  int64_t M, N, K;
  bool ta, tb;
};

std::vector<float> run(const Shape& s, const std::vector<float>& A, const std::vector<float>& B, int threads) {
  std::vector<float> C(size_t(s.M * s.N), 0.5f);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), s.ta ? s.M : s.K, B.data(), s.tb ? s.K : s.N, 1.0f, C.data(), s.N);
  omp_set_num_threads(saved);
  return C;
}

void check_split(const Shape& s) {
  std::mt19937 gen(unsigned(s.M * 31 + s.N * 7 + s.K));
  std::normal_distribution<float> nd;
  std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N));
  for (float& v : A) v = nd(gen);
  for (float& v : B) v = nd(gen);
  const std::vector<float> one = run(s, A, B, 1), two = run(s, A, B, 2), three = run(s, A, B, 3);
  for (size_t i = 0; i < one.size(); ++i) {
    ASSERT_EQ(one[i], two[i]) << s.M << "x" << s.N << "x" << s.K << " ta " << s.ta << " tb " << s.tb << " at " << i;
    ASSERT_EQ(one[i], three[i]) << s.M << "x" << s.N << "x" << s.K << " ta " << s.ta << " tb " << s.tb << " at " << i;
  }
  // Spot-check the split product itself: C = 0.5 + A B.
  const bool bf16 = matmul_precision() == MatmulPrecision::bf16;
  for (int64_t i = 0; i < s.M; i += 37)
    for (int64_t j = 0; j < s.N; j += 41) {
      double ref = 0.5, mag = 0.5;
      for (int64_t k = 0; k < s.K; ++k) {
        const double a = s.ta ? A[size_t(k * s.M + i)] : A[size_t(i * s.K + k)];
        const double b = s.tb ? B[size_t(j * s.K + k)] : B[size_t(k * s.N + j)];
        ref += a * b;
        mag += std::abs(a * b);
      }
      EXPECT_NEAR(three[size_t(i * s.N + j)], ref, (bf16 ? 1e-2 : 1e-5) * mag) << i << ", " << j;
    }
}

const Shape kShapes[] = {
    {600, 96, 256, false, true},   // row panels; gemm_rows' shape where it is used (M >= 512)
    {200, 160, 300, true, false},  // row panels, A transposed (a weight gradient)
    {64, 1000, 96, false, true},   // column panels: N >= 2 M (an LM head with few tokens)
    {96, 700, 1200, false, false}, // column panels, B row-major, long K (the LM head's dX)
};

TEST(Gemm, ThreadPanelsGiveTheOneThreadBitsAtF32) {
  for (const Shape& s : kShapes) check_split(s);
}

// A bias row through gemm(): every path (AVX-512 where the CPU has it and the product is at least
// 64 x 64, else the library; AMX at bf16) and thread split gives the bits of starting C as the
// bias rows with beta = 1; row and column panels each take their part of the row.
TEST(Gemm, BiasRowOnEveryPathAndThreadCount) {
  const int saved = omp_get_max_threads();
  for (MatmulPrecision precision : {MatmulPrecision::f32, MatmulPrecision::bf16}) {
    if (precision == MatmulPrecision::bf16 && !amx_bf16_available()) continue;
    set_matmul_precision(precision);
    for (const Shape& s : {kShapes[0], kShapes[2], Shape{20, 48, 33, false, true}}) {
      std::mt19937 gen(unsigned(s.M + s.N));
      std::normal_distribution<float> nd;
      std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N)), bias(size_t(s.N));
      for (std::vector<float>* v : {&A, &B, &bias})
        for (float& x : *v) x = nd(gen);
      const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
      std::vector<float> started(size_t(s.M * s.N));
      for (int64_t i = 0; i < s.M; ++i) std::copy(bias.begin(), bias.end(), started.begin() + i * s.N);
      omp_set_num_threads(1);
      gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, 1.0f, started.data(), s.N);
      for (int threads : {1, 3}) {
        std::vector<float> fused(size_t(s.M * s.N), std::numeric_limits<float>::quiet_NaN());
        omp_set_num_threads(threads);
        gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, fused.data(), s.N, bias.data());
        for (size_t i = 0; i < fused.size(); ++i)
          ASSERT_EQ(fused[i], started[i]) << s.M << "x" << s.N << "x" << s.K << " threads " << threads << " at " << i;
      }
    }
    set_matmul_precision(MatmulPrecision::f32);
  }
  omp_set_num_threads(saved);
}

// gemm()'s row sums of op(A): summed as A^T is packed on the AVX-512 path, in a pass of their
// own elsewhere (A row-major; the library's products; f64 loop order): within 1e-12 of an f64
// loop on every storage, for row and column thread panels (the first column panel sums), and
// the product keeps its bits.
TEST(Gemm, RowSumsOfAOnEveryPathAndThreadCount) {
  const int saved = omp_get_max_threads();
  for (const Shape& s : {kShapes[0], kShapes[1], kShapes[2], Shape{300, 20, 50, true, false},
                         Shape{64, 300, 2048, true, false}}) {
    std::mt19937 gen(unsigned(s.M * 5 + s.N + s.K));
    std::normal_distribution<float> nd;
    std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N));
    for (float& v : A) v = nd(gen);
    for (float& v : B) v = nd(gen);
    const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    std::vector<double> ref(size_t(s.M), 0.0), mag(size_t(s.M), 0.0);
    for (int64_t m = 0; m < s.M; ++m)
      for (int64_t k = 0; k < s.K; ++k) {
        const double a = s.ta ? A[size_t(k * lda + m)] : A[size_t(m * lda + k)];
        ref[size_t(m)] += a;
        mag[size_t(m)] += std::abs(a);
      }
    const std::vector<float> plain = run(s, A, B, 1);
    for (int threads : {1, 2, 3}) {
      std::vector<float> C(size_t(s.M * s.N), 0.5f);
      std::vector<double> sums(size_t(s.M), std::numeric_limits<double>::quiet_NaN());
      omp_set_num_threads(threads);
      gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, 1.0f, C.data(), s.N, nullptr, sums.data());
      EXPECT_EQ(C, plain) << s.M << "x" << s.N << "x" << s.K << " threads " << threads;
      for (int64_t m = 0; m < s.M; ++m)
        ASSERT_NEAR(sums[size_t(m)], ref[size_t(m)], 1e-12 * mag[size_t(m)])
            << s.M << "x" << s.N << "x" << s.K << " ta " << s.ta << " threads " << threads << " row " << m;
    }
  }
  omp_set_num_threads(saved);
}

TEST(Gemm, ThreadPanelsGiveTheOneThreadBitsAtBf16) {
  if (!amx_bf16_available()) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  set_matmul_precision(MatmulPrecision::bf16);
  for (const Shape& s : kShapes) check_split(s);
  set_matmul_precision(MatmulPrecision::f32);
}

}  // namespace
}  // namespace loom::runtime::cpu
