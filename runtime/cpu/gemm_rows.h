// cpu/gemm_rows.h: f32 GEMM for a row-major A whose K is short (the activations of a
// transformer layer times a weight: K = d_model or the MLP width). Called by cpu/gemm.cpp's
// gemm(), which keeps the choice of path in one place.
#pragma once
#include <cstdint>

namespace loom::runtime::cpu {

// The largest K gemm_rows takes: past it C would be re-read once per 256-deep slice of K, and
// OpenBLAS measured faster (the [B*T, V] x [V, C] product of the LM head's backward).
constexpr int64_t kGemmRowsMaxK = 768;

// C[M, N] = alpha A B + beta C with A [M, K] row-major (not transposed), B [K, N] row-major or
// transposed (trans_b), K <= kGemmRowsMaxK. Single-threaded; gemm() splits rows over threads.
void gemm_rows(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace loom::runtime::cpu
