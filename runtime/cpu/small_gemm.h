// cpu/small_gemm.h: register-tiled products for the small matrices inside attention, where a
// BLAS call costs more than it computes. At T = 64..256, D = 32..64 each product is a few
// hundred kFLOP; OpenBLAS re-packs both operands on every call and ran them at 4-6 GFLOP/s.
// These have no packing and no call overhead:
//
//   C[r][c] = alpha * sum_k A(r, k) * B[k][c] + beta * C[r][c],   r < M, c < N, k < K,
//
// with A(r, k) = a[r * a_rs + k * a_ks] read one scalar at a time (any strides, so A or A^T
// of a row-major block need no copy) and B's rows contiguous (b + k * ldb). Output tiles of
// MR rows by 2 vectors of columns are accumulated in registers over the whole K (the classic
// broadcast-A / load-B micro-kernel); column tails narrower than a vector run scalar.
//
// Every element's sum runs over k in order, and the tiling depends only on (M, N), never on
// the thread count. T is float or double (the f64 finite-difference tests run this code).
#pragma once
#include <cstdint>
#include <cstring>

namespace loom::runtime::cpu {

// Vectors of W bytes: 32 (AVX2) or, where the compiler targets AVX-512, 64 for small_gemm.
template <class T, int W> struct SimdOf;
template <int W> struct SimdOf<float, W> { typedef float type __attribute__((vector_size(W))); };
template <int W> struct SimdOf<double, W> { typedef double type __attribute__((vector_size(W))); };

namespace small_gemm_detail {

#ifdef __AVX512F__
constexpr int kWidestVector = 64;
#else
constexpr int kWidestVector = 32;
#endif
template <class T, int W> using Vec = typename SimdOf<T, W>::type;
template <class T, int W> constexpr int64_t kLanes = int64_t(W / sizeof(T));
constexpr int kMaxRows = 6;  // MR: 6 x 2 accumulators + 2 B vectors + 1 broadcast = 15 registers

template <class V, class T> inline V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, class T> inline void vstore(T* p, V v) { std::memcpy(p, &v, sizeof v); }
// All lanes = x, as one vbroadcastss. (V{} + x is not: 0 + -0 is +0, so the compiler keeps
// an add per broadcast; x - 0 is exactly x and folds away.)
template <class V, class T> inline V vsplat(T x) { return x - V{}; }

// One MR x (NV vectors of W bytes) tile of C over the full K.
template <class T, int MR, int NV, int W>
inline void tile(int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb, T beta, T* c,
                 int64_t ldc) {
  using V = Vec<T, W>;
  constexpr int64_t L = kLanes<T, W>;
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  for (int64_t k = 0; k < K; ++k) {
    const T* brow = b + k * ldb;
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload<V>(brow + v * L);
    const T* ak = a + k * a_ks;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const V ar = vsplat<V>(ak[r * a_rs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      T* cp = c + r * ldc + v * L;
      V out = vsplat<V>(alpha) * acc[r][v];
      if (beta != T(0)) out += vsplat<V>(beta) * vload<V>(cp);
      vstore(cp, out);
    }
}

// Rows [0, M) of a column block [c0, c0 + NV * L), MR rows at a time.
template <class T, int NV, int W = 32>
inline void column_block(int64_t M, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
                         int64_t ldb, T beta, T* c, int64_t ldc) {
  int64_t r = 0;
  for (; r + kMaxRows <= M; r += kMaxRows)
    tile<T, kMaxRows, NV, W>(K, alpha, a + r * a_rs, a_rs, a_ks, b, ldb, beta, c + r * ldc, ldc);
  const T* ar = a + r * a_rs;
  T* cr = c + r * ldc;
  switch (M - r) {
    case 5: tile<T, 5, NV, W>(K, alpha, ar, a_rs, a_ks, b, ldb, beta, cr, ldc); break;
    case 4: tile<T, 4, NV, W>(K, alpha, ar, a_rs, a_ks, b, ldb, beta, cr, ldc); break;
    case 3: tile<T, 3, NV, W>(K, alpha, ar, a_rs, a_ks, b, ldb, beta, cr, ldc); break;
    case 2: tile<T, 2, NV, W>(K, alpha, ar, a_rs, a_ks, b, ldb, beta, cr, ldc); break;
    case 1: tile<T, 1, NV, W>(K, alpha, ar, a_rs, a_ks, b, ldb, beta, cr, ldc); break;
    default: break;
  }
}

}  // namespace small_gemm_detail

template <class T>
void small_gemm(int64_t M, int64_t N, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
                int64_t ldb, T beta, T* c, int64_t ldc) {
  using namespace small_gemm_detail;
  constexpr int W = kWidestVector;
  constexpr int64_t L = kLanes<T, W>;
  int64_t c0 = 0;
  for (; c0 + 2 * L <= N; c0 += 2 * L)
    column_block<T, 2, W>(M, K, alpha, a, a_rs, a_ks, b + c0, ldb, beta, c + c0, ldc);
  if (c0 + L <= N) {
    column_block<T, 1, W>(M, K, alpha, a, a_rs, a_ks, b + c0, ldb, beta, c + c0, ldc);
    c0 += L;
  }
  if (W > 32 && c0 + L / 2 <= N) {  // a half-width block before the scalar tail
    column_block<T, 1, W / 2>(M, K, alpha, a, a_rs, a_ks, b + c0, ldb, beta, c + c0, ldc);
    c0 += L / 2;
  }
  for (int64_t r = 0; r < M && c0 < N; ++r)  // columns past the last whole vector
    for (int64_t j = c0; j < N; ++j) {
      T s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[r * a_rs + k * a_ks] * b[k * ldb + j];
      T& out = c[r * ldc + j];
      out = beta != T(0) ? alpha * s + beta * out : alpha * s;
    }
}

}  // namespace loom::runtime::cpu
