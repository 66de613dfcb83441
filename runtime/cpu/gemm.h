// cpu/gemm.h: the single CPU GEMM entry point. Which code runs a product (cpu/gemm_rows.cpp,
// or OpenBLAS through CBLAS, or Eigen without it) is decided in one place (cpu/gemm.cpp);
// bench/ measures them.
// The one exception is attention's per-block products (a few hundred kFLOP each, where a
// library call costs more than it computes): cpu/small_gemm.h.
#pragma once
#include <cstdint>

namespace loom::runtime::cpu {

// C[M, N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when trans_* is set.
// lda/ldb/ldc are row strides of the stored matrices.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);
const char* gemm_library();  // "rows+openblas" or "rows+eigen"

}  // namespace loom::runtime::cpu

namespace loom::runtime::cpu {
// This machine's f32 GEMM rate (FLOP/s) at the current thread count, measured once on a
// square product for about `seconds`: the denominator of MFU on the CPU.
double measured_gemm_peak_flops(double seconds = 0.2);
}  // namespace loom::runtime::cpu
