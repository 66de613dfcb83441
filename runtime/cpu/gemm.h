// cpu/gemm.h: the single CPU GEMM entry point. Which code runs a product (cpu/gemm_avx512.cpp,
// cpu/gemm_rows.cpp, or OpenBLAS through CBLAS, or Eigen without it, or AMX at bf16:
// cpu/gemm_bf16.cpp) is decided in one place (cpu/gemm.cpp);
// bench/ measures them.
// The one exception is attention's per-block products (a few hundred kFLOP each, where a
// library call costs more than it computes): cpu/small_gemm.h.
#pragma once
#include <cstdint>
#include <string>

namespace loom::runtime::cpu {

// C[M, N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when trans_* is set.
// lda/ldb/ldc are row strides of the stored matrices. bias (f32, beta = 0 only): a row of N added
// to every row of C; the AVX-512 path adds it as C is written, the others start C as its rows.
// a_row_sums (optional, [M]): set to each row's sum over k of op(A), in f64 (linear's bias
// gradient alongside its weight gradient g^T x: the column sums of g). The AVX-512 path sums A^T
// as it packs it; the others take a pass of their own.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr,
          double* a_row_sums = nullptr);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);
// The row stride to give a [rows, cols] f32 matrix that will be a product's row-major A with
// K = cols (the LM head's logits gradient): cols, or a little more where the AVX-512 path would
// otherwise have to pack it (cpu/gemm_avx512.h).
int64_t gemm_row_stride(int64_t rows, int64_t cols);
const char* gemm_library();  // "avx512+openblas", "rows+openblas" (no AVX-512) or "...+eigen";
                             // "amx-bf16" at matmul precision bf16

// How f32 products are computed, process-wide (PyTorch's torch.set_float32_matmul_precision):
// f32 (the default), or bf16: operands rounded to bf16, products summed in f32, on AMX
// (cpu/gemm_bf16.h). Mixed precision with f32 master weights: tensors, optimizer and every other
// op stay f32. Attention's per-block products (cpu/small_gemm.h) stay f32 either way.
enum class MatmulPrecision { f32, bf16 };
// Throws std::runtime_error naming what is missing when bf16 is asked for on a CPU (or kernel)
// without AMX-BF16.
void set_matmul_precision(MatmulPrecision precision);
MatmulPrecision matmul_precision();
MatmulPrecision matmul_precision_from_name(const std::string& name);  // "f32" | "bf16", else throws
const char* matmul_precision_name(MatmulPrecision precision);

}  // namespace loom::runtime::cpu

namespace loom::runtime::cpu {
// This machine's GEMM rate (FLOP/s) for f32 operands at the current thread count and matmul
// precision, measured on a square product for about `seconds`: the denominator of MFU on the
// CPU (at bf16 it is the AMX rate of the path the products take).
double measured_gemm_peak_flops(double seconds = 0.2);
}  // namespace loom::runtime::cpu
