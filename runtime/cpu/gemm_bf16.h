// cpu/gemm_bf16.h: f32 GEMM computed in bf16 on Intel AMX (f32 in, f32 out, f32 sums). The
// path cpu/gemm.cpp's gemm() takes for f32 products when the matmul precision is bf16
// (set_matmul_precision in cpu/gemm.h), as PyTorch's float32 matmul precision "medium".
#pragma once
#include <cstdint>

namespace loom::runtime::cpu {

// True when this CPU has AMX-BF16 and AVX512-BF16 and the kernel granted this process the
// AMX tile state (Linux asks for it once per process: arch_prctl ARCH_REQ_XCOMP_PERM).
bool amx_bf16_available();

// C[M, N] = alpha op(A) op(B) + beta C with A, B, C f32, row-major, op = transpose when
// trans_* is set. alpha A and B are rounded to bf16 (round to nearest even) and every C element
// is its exact products summed in f32, in K slices of at most kBf16SliceK (added in order), so
// the result depends on (K, the element's operands) only, never on M, N or the thread count.
// Single-threaded; gemm() splits rows over threads. Requires amx_bf16_available().
// Slices of 1024 rather than 512 made llama-small's bf16 step about 2% shorter: the K = 704
// products become one slice, C is written once.
constexpr int64_t kBf16SliceK = 1024;
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace loom::runtime::cpu
