// cpu/gemm_avx512.h: f32 GEMM on AVX-512 (packed operands, a 14 x 32 register tile). The path
// cpu/gemm.cpp's gemm() takes for f32 products on CPUs with AVX-512, where it measured faster
// than OpenBLAS's SkylakeX kernels on every training shape (bench/README.md).
#pragma once
#include <cstdint>

namespace loom::runtime::cpu {

// True when this build has the kernel and the CPU has AVX-512 (F, BW, VL, DQ).
bool avx512_gemm_available();

// C[M, N] = alpha op(A) op(B) + beta C (+ bias, a row of N floats added to every row of C:
// only with beta = 0), f32, row-major, op = transpose when trans_* is set. Every
// C element is its products summed in f32 in order of k, in K slices of at most
// kAvx512SliceK (each slice from zero, added to C in order), so the result depends on (K, the
// element's operands) only, never on M, N or the thread count. Single-threaded; gemm() splits
// rows (or columns) over threads. Requires avx512_gemm_available().
// a_row_sums (op(A) transposed only: A stored [K, M], a weight gradient's output gradient):
// adds each row's sum over k of op(A) to a_row_sums[m], in f64, as A is packed (linear's bias
// gradient, the column sums of its output gradient, then costs no pass over that gradient of
// its own). Each row sums in order of k within a slice, slices added in order.
constexpr int64_t kAvx512SliceK = 320;
void gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                 const float* bias = nullptr, double* a_row_sums = nullptr);


// The row stride (floats, at least cols) that lets a row-major [rows, cols] A be read in place
// by a product of K = cols (its 14-row micro-panels spread over L1's sets): cols itself where it
// already does or where A has too few rows to be read in place anyway; else the next multiple
// of 16 that does (cols = 1024, 8192: all rows in the same sets).
int64_t avx512_row_stride_in_place(int64_t rows, int64_t cols);

}  // namespace loom::runtime::cpu
