// cpu/gemm.cpp: the one place that picks the f32 GEMM path, and the batched matmul kernel.
// At matmul precision f32: on CPUs with AVX-512, cpu/gemm_avx512.cpp for every product of at
// least 64 x 64 (smaller ones, such as decoding's single rows: the library); on CPUs without,
// row-major A with K <= 768 (a layer's activations times a weight): cpu/gemm_rows.cpp, and every
// other product (A transposed: the weight gradients; long K): CBLAS (OpenBLAS) when built with
// it, else Eigen. At matmul precision bf16 every f32 product takes cpu/gemm_bf16.cpp (AMX). A
// matrix operand may be stored row-major or transposed (a transpose view), so transposes never
// copy.
#include "runtime/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <vector>

#include <Eigen/Core>

#include "runtime/cpu/common.h"
#include "runtime/cpu/gemm_avx512.h"
#include "runtime/cpu/gemm_bf16.h"
#include "runtime/cpu/gemm_rows.h"

#ifdef LOOM_USE_CBLAS
#include <cblas.h>
#endif

namespace loom::runtime::cpu {

namespace {
template <class T>
void eigen_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                int64_t ldb, T beta, T* C, int64_t ldc) {
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<RowMat, 0, Stride> c(C, M, N, Stride(ldc));
  auto run = [&](const auto& a, const auto& b) {
    if (beta == T(0)) c.noalias() = alpha * (a * b);
    else c = beta * c + alpha * (a * b);
  };
  // A stored row-major [M, K] (or [K, M] when transposed: then it is a column-major [M, K]).
  if (!ta && !tb) run(Eigen::Map<const RowMat, 0, Stride>(A, M, K, Stride(lda)),
                      Eigen::Map<const RowMat, 0, Stride>(B, K, N, Stride(ldb)));
  else if (ta && !tb) run(Eigen::Map<const ColMat, 0, Stride>(A, M, K, Stride(lda)),
                          Eigen::Map<const RowMat, 0, Stride>(B, K, N, Stride(ldb)));
  else if (!ta && tb) run(Eigen::Map<const RowMat, 0, Stride>(A, M, K, Stride(lda)),
                          Eigen::Map<const ColMat, 0, Stride>(B, K, N, Stride(ldb)));
  else run(Eigen::Map<const ColMat, 0, Stride>(A, M, K, Stride(lda)),
           Eigen::Map<const ColMat, 0, Stride>(B, K, N, Stride(ldb)));
}
}  // namespace

namespace {
std::atomic<MatmulPrecision> g_precision{MatmulPrecision::f32};
}  // namespace

void set_matmul_precision(MatmulPrecision precision) {
  if (precision == MatmulPrecision::bf16 && !amx_bf16_available())
    throw std::runtime_error(
        "matmul precision bf16 needs a CPU with AMX-BF16 and AVX512-BF16 (Sapphire Rapids or newer) and a Linux "
        "kernel that grants AMX state (5.16 or newer); this machine has not. Use f32.");
  g_precision.store(precision);
}
MatmulPrecision matmul_precision() { return g_precision.load(std::memory_order_relaxed); }

MatmulPrecision matmul_precision_from_name(const std::string& name) {
  if (name == "f32") return MatmulPrecision::f32;
  if (name == "bf16") return MatmulPrecision::bf16;
  throw std::invalid_argument("unknown matmul precision '" + name + "' (expected f32 or bf16)");
}
const char* matmul_precision_name(MatmulPrecision precision) {
  return precision == MatmulPrecision::bf16 ? "bf16" : "f32";
}

namespace {
// Which path, by measurement (bench/README.md): with A in place and only B packed, gemm_rows
// ran the K = 128..704 products 5-15% faster than OpenBLAS with cold operands, as in the
// training step (steps 2-5% shorter); OpenBLAS stays faster for A^T (it packs A anyway), for K
// in the thousands, and for few rows: each row panel packs all of B, so at 128 rows per
// thread (GPT-2 124M's 256 tokens on 2 threads) the packing made the step 4% slower. The
// choice depends on the shape only, never on the thread count (see gemm()).
// gemm_rows' micro-kernel is 8 lanes wide (AVX2; it was chosen on an AVX2-only AMD EPYC). Where
// the CPU has AVX-512, cpu/gemm_avx512.cpp runs every product but the smallest: on an AVX-512
// Xeon it was 1.08-1.18x faster than OpenBLAS's SkylakeX kernels (themselves 1.25-1.5x faster
// than gemm_rows) on the training shapes with cold operands, all but GPT-2 124M's LM-head
// forward (0.97x; bench/README.md).
bool use_gemm_rows(bool ta, int64_t M, int64_t K) {
  return !avx512_gemm_available() && !ta && K <= kGemmRowsMaxK && M >= 512;
}
// Products under 64 rows or columns (decoding's single rows) stay with the library: much of
// each 14 x 32 register tile would be padding.
bool use_gemm_avx512(int64_t M, int64_t N) { return avx512_gemm_available() && M >= 64 && N >= 64; }

// The path of one product: kBf16 (AMX) at bf16 precision; at f32, by shape (see above).
enum class Path { kRows, kAvx512, kLibrary, kBf16 };
Path choose_path(bool ta, int64_t M, int64_t N, int64_t K) {
  if (matmul_precision() == MatmulPrecision::bf16) return Path::kBf16;
  if (use_gemm_avx512(M, N)) return Path::kAvx512;
  return use_gemm_rows(ta, M, K) ? Path::kRows : Path::kLibrary;
}

// C's rows set to the bias row (the paths without a bias epilogue then accumulate, beta = 1).
template <class T> void fill_rows(T* C, int64_t ldc, int64_t M, int64_t N, const T* bias) {
  for (int64_t i = 0; i < M; ++i) std::copy(bias, bias + N, C + i * ldc);
}

// sums[m] = sum over k of op(A)(m, k), in f64 (where the product's path does not sum A as it
// packs it). A^T stored [K, M] sums as sum_dim sums a bias gradient: fixed blocks of rows.
template <class T> void row_sums(bool ta, int64_t M, int64_t K, const T* A, int64_t lda, double* sums) {
  if (ta) {
    std::vector<double> total;
    reduce_rows_fixed(K, M, total, [&](int64_t k, double* acc) {
      const T* row = A + k * lda;
      for (int64_t m = 0; m < M; ++m) acc[m] += double(row[m]);
    });
    std::copy(total.begin(), total.end(), sums);
    return;
  }
  parallel_for(M, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      double t = 0;
      for (int64_t k = 0; k < K; ++k) t += double(A[m * lda + k]);
      sums[m] = t;
    }
  });
}

// One thread's product; a_row_sums (zeroed by the caller; AVX-512 path with A transposed only)
// as gemm()'s.
void sgemm_one(Path path, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias,
               double* a_row_sums) {
  if (path == Path::kAvx512) return gemm_avx512(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, a_row_sums);
  if (bias) {
    fill_rows(C, ldc, M, N, bias);
    beta = 1.0f;
  }
  if (path == Path::kBf16) return gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (path == Path::kRows) return gemm_rows(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#ifdef LOOM_USE_CBLAS
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
#else
  eigen_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

constexpr int64_t kPanelRows = 64;  // smallest row panel worth a thread of its own
}  // namespace

// With several threads, C's rows are split into one panel per thread, each a single-threaded
// call (OpenBLAS's OpenMP build runs serially inside a parallel region). At the training
// shapes (M = B*T rows, N and K of 128..1024) this measured 1.0-1.7x faster than letting
// OpenBLAS thread one call, which leaves N = K = 128 products on one thread. The path is chosen
// from the whole product's shape and every element is the same dot product over the same K
// whichever panel holds its row, so the result does not depend on the thread count.
// Each panel packs all of the other operand, so when B is much wider than A has rows (N >= 2 M:
// GPT-2 124M's LM head, 256 rows x 50257 columns) the panels are column panels instead: its
// 2-thread step was 4.6% shorter (963-969 -> 920-923 ms), llama-small's unchanged.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias, double* a_row_sums) {
  if (bias && beta != 0.0f) throw std::invalid_argument("gemm: a bias row needs beta = 0");
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const bool by_cols = N >= 2 * M;  // see above: then B is the operand worth splitting
  const int64_t panels = std::min(threads, (by_cols ? N : M) / kPanelRows);
  const Path path = choose_path(ta, M, N, K);
  if (a_row_sums) {
    std::fill(a_row_sums, a_row_sums + std::max<int64_t>(M, 0), 0.0);
    if (!(path == Path::kAvx512 && ta)) {  // no packing pass to sum in: a pass of their own
      row_sums(ta, M, K, A, lda, a_row_sums);
      a_row_sums = nullptr;
    }
  }
  if (panels <= 1 || 2.0 * double(M) * double(N) * double(K) < 4e6) {
    sgemm_one(path, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, a_row_sums);
    return;
  }
#pragma omp parallel num_threads(int(panels))
  {
    const int64_t t = omp_get_thread_num();
    const int64_t D = by_cols ? N : M;
    const int64_t r0 = D * t / panels / 16 * 16, r1 = t + 1 == panels ? D : D * (t + 1) / panels / 16 * 16;
    if (r1 > r0) {
      if (by_cols) {  // every panel reads all of A: the first sums its rows
        const float* Bp = tb ? B + r0 * ldb : B + r0;
        sgemm_one(path, ta, tb, M, r1 - r0, K, alpha, A, lda, Bp, ldb, beta, C + r0, ldc, bias ? bias + r0 : nullptr,
                  t == 0 ? a_row_sums : nullptr);
      } else {
        const float* Ap = ta ? A + r0 : A + r0 * lda;  // A^T stored [K, M]: its rows start at column r0
        sgemm_one(path, ta, tb, r1 - r0, N, K, alpha, Ap, lda, B, ldb, beta, C + r0 * ldc, ldc, bias,
                  a_row_sums ? a_row_sums + r0 : nullptr);
      }
    }
  }
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
#ifdef LOOM_USE_CBLAS
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
#else
  eigen_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

int64_t gemm_row_stride(int64_t rows, int64_t cols) {
  if (matmul_precision() != MatmulPrecision::f32 || !avx512_gemm_available()) return cols;
  // gemm() gives each thread a panel of rows: the panel's count decides (cpu/gemm_avx512.cpp).
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  return avx512_row_stride_in_place(rows / std::max<int64_t>(1, threads), cols);
}

const char* gemm_library() {
  if (matmul_precision() == MatmulPrecision::bf16) return "amx-bf16";
#ifdef LOOM_USE_CBLAS
  return avx512_gemm_available() ? "avx512+openblas" : "rows+openblas";
#else
  return avx512_gemm_available() ? "avx512+eigen" : "rows+eigen";
#endif
}

namespace {

// How a [M, K] matrix operand is stored: row-major (unit column stride) or transposed.
struct MatrixLayout {
  bool trans;
  int64_t ld;
};
MatrixLayout layout_of(const Tensor& t, const char* which) {
  int64_t rs = t.stride(1), cs = t.stride(2);
  int64_t rows = t.size(1), cols = t.size(2);
  if (cs == 1 || cols == 1) return {false, std::max<int64_t>(rs, std::max<int64_t>(cols, 1))};
  if (rs == 1 || rows == 1) return {true, std::max<int64_t>(cs, std::max<int64_t>(rows, 1))};
  throw std::logic_error(std::string("matmul: operand ") + which + " needs a unit stride in its last two dims");
}

void k_matmul(const KernelArgs& args) {
  const Tensor& a = args.in[0];
  const Tensor& b = args.in[1];
  Tensor& c = args.out[0];
  int64_t batch = c.size(0), M = c.size(1), N = c.size(2), K = a.size(2);
  // out: row-major, its rows may be padded (linear_cross_entropy's logits).
  if (c.stride(2) != 1 && N > 1) throw std::logic_error("matmul: out needs unit column stride");
  const int64_t ldc = std::max<int64_t>(c.stride(1), N), sc = c.stride(0);
  MatrixLayout la = layout_of(a, "a"), lb = layout_of(b, "b");
  int64_t sa = a.size(0) == 1 ? 0 : a.stride(0), sb = b.size(0) == 1 ? 0 : b.stride(0);
  visit_float(Op::matmul, c.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    T* pc = static_cast<T*>(c.raw_data());
    // C = scale A B + beta C (+ the bias row, linear's; the fused cross-entropy's backward scales
    // its products by the loss gradient).
    const T alpha = T(args.attrs.scale);
    T beta = T(args.attrs.beta);
    const T* bias = args.in.size() > 2 && args.in[2].defined() ? static_cast<const T*>(args.in[2].raw_data()) : nullptr;
    // The optional second output: op(a)'s row sums [M] (linear's bias gradient, see gemm()).
    T* sums_out = args.out.size() > 1 && args.out[1].defined() ? static_cast<T*>(args.out[1].raw_data()) : nullptr;
    if (sums_out && (batch != 1 || args.out[1].numel() != M || !args.out[1].is_contiguous() ||
                     args.out[1].dtype() != c.dtype()))
      throw std::invalid_argument("matmul: row sums need one product and a contiguous [M] out of out's dtype");
    thread_local std::vector<double> sums;  // (kept: no allocation per step)
    sums.resize(sums_out ? size_t(M) : 0);  // (gemm() and row_sums() set every element)
    double* const psums = sums_out ? sums.data() : nullptr;
    if (bias && (beta != T(0) || batch != 1 || args.in[2].numel() != N || !args.in[2].is_contiguous() ||
                 args.in[2].dtype() != c.dtype()))
      throw std::invalid_argument("matmul: a bias needs one product, beta 0 and a contiguous [N] row of out's dtype");
    if constexpr (!std::is_same_v<T, float>) {  // f64: C starts as the bias rows
      if (bias) {
        fill_rows(pc, ldc, M, N, bias);
        beta = T(1);
        bias = nullptr;
      }
    }
    // The f32 path sums as it multiplies; f64 (the finite-difference tests) and K = 0 here.
    if (sums_out && (!std::is_same_v<T, float> || K == 0)) row_sums(la.trans, M, K, pa, la.ld, psums);
    auto publish_row_sums = [&] {
      if (sums_out) std::transform(sums.begin(), sums.end(), sums_out, [](double v) { return T(v); });
    };
    if (K == 0) {
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t r = 0; r < M; ++r)
          for (int64_t j = 0; j < N; ++j) {
            T& x = pc[i * sc + r * ldc + j];
            x = beta == T(0) ? T(0) : beta * x;
          }
      if (bias) fill_rows(pc, ldc, M, N, bias);
      publish_row_sums();
      return;
    }
    auto one = [&](int64_t i) {
      if constexpr (std::is_same_v<T, float>)
        gemm(la.trans, lb.trans, M, N, K, alpha, pa + i * sa, la.ld, pb + i * sb, lb.ld, beta, pc + i * sc, ldc, bias,
             psums);
      else
        gemm(la.trans, lb.trans, M, N, K, alpha, pa + i * sa, la.ld, pb + i * sb, lb.ld, beta, pc + i * sc, ldc);
    };
    // Many small products: one per thread. Few large ones: gemm() splits each over the threads.
    if (batch > 1 && M * N * K < (int64_t(1) << 21)) {
      parallel_for(batch, 1, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) one(i);
      });
    } else {
      for (int64_t i = 0; i < batch; ++i) one(i);
    }
    publish_row_sums();
  });
}

}  // namespace

void register_gemm_kernels(KernelTable& t) { t.fn[size_t(Op::matmul)] = k_matmul; }

}  // namespace loom::runtime::cpu

namespace loom::runtime {
int64_t cpu_gemm_row_stride(int64_t rows, int64_t cols) { return cpu::gemm_row_stride(rows, cols); }
}  // namespace loom::runtime

namespace loom::runtime::cpu {

double measured_gemm_peak_flops(double seconds) {
  const int64_t n = 512;
  std::vector<float> a(static_cast<size_t>(n * n), 1.0f), b(static_cast<size_t>(n * n), 0.5f),
      c(static_cast<size_t>(n * n));
  gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
  double best = 0;
  auto start = std::chrono::steady_clock::now();
  do {
    auto t0 = std::chrono::steady_clock::now();
    gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * double(n) * double(n) * double(n) / dt);
  } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
  return best;
}

}  // namespace loom::runtime::cpu
