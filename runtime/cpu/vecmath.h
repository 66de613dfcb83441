// cpu/vecmath.h: branch-free math for hot f32 loops. The kernels work on 8-lane vectors
// (GCC/Clang vector extensions: AVX2 registers under -march=native, SSE pairs otherwise), the
// elementwise maps with exp inside on the widest vector (f32xw: 16 lanes under AVX-512);
// vexp<float> has a relative error below 3e-7 on the whole range; f64 keeps std::exp so the
// finite-difference tests stay exact.
//
// One rule keeps results independent of the thread count: every f32 element goes through the
// same vector code whether it sits in a full block or in a tail (tails are padded into a
// vector, see load8/store8), and the scalar exp_f32 is lane 0 of the vector one (whose lanes
// give the same bits at 8 and 16 lanes).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace loom::runtime::cpu {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));

inline f32x8 splat8(float v) { return f32x8{} + v; }

#ifdef __AVX__
// Lanes [0, n) set, for n in [0, 8]: a window into -1 x 8, 0 x 8. Row tails (a causal row of
// n keys is rarely a multiple of 8) load and store through masked moves, which never touch the
// masked-out memory; a variable-length memcpy cost about 50 ns per attention row.
inline __m256i lane_mask8(int64_t n) {
  alignas(32) static constexpr int32_t kWindow[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kWindow + 8 - n));
}
#endif

// Loads n <= 8 floats from p; lanes n..7 get `pad`.
inline f32x8 load8(const float* p, int64_t n = 8, float pad = 0.0f) {
  if (n == 8) {
    f32x8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
#ifdef __AVX__
  const __m256i mask = lane_mask8(n);
  return (f32x8)_mm256_blendv_ps((__m256)splat8(pad), _mm256_maskload_ps(p, mask), _mm256_castsi256_ps(mask));
#else
  f32x8 v = splat8(pad);
  std::memcpy(&v, p, size_t(n) * sizeof(float));
  return v;
#endif
}
inline void store8(float* p, f32x8 v, int64_t n = 8) {
#ifdef __AVX__
  if (n < 8) {
    _mm256_maskstore_ps(p, lane_mask8(n), (__m256)v);
    return;
  }
#endif
  std::memcpy(p, &v, size_t(n) * sizeof(float));
}

// Runs body(i, n) for i = begin, begin + 8, ... < end with n = min(8, end - i).
template <class F> inline void for_blocks8(int64_t begin, int64_t end, F&& body) {
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) body(i, int64_t(8));
  if (i < end) body(i, end - i);
}

// The 8 lanes widened to f64: lanes 0-3 in lo, 4-7 in hi.
// (GCC 12 built the halves lane by lane, two floats per vcvtps2pd plus inserts: the norms'
// backward spent most of its time here. One conversion per half gives the same values.)
inline void widen_f64(f32x8 v, f64x4& lo, f64x4& hi) {
#ifdef __AVX__
  lo = (f64x4)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)v));
  hi = (f64x4)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)v, 1));
#else
  lo = __builtin_convertvector((f32x4{v[0], v[1], v[2], v[3]}), f64x4);
  hi = __builtin_convertvector((f32x4{v[4], v[5], v[6], v[7]}), f64x4);
#endif
}
// Adds the 8 lanes to two f64x4 accumulators (f32 values, f64 sums: accurate row statistics).
inline void acc_f64(f64x4& lo, f64x4& hi, f32x8 v) {
  f64x4 a, b;
  widen_f64(v, a, b);
  lo += a;
  hi += b;
}
// Sum over c in [0, n) of f(c, m) (an f32x8 holding m <= 8 valid lanes; the rest must be 0),
// accumulated in f64 lanes: the row statistics of norms and softmax.
template <class F> inline double sum8_f64(int64_t n, F&& f) {
  f64x4 lo{}, hi{};
  for_blocks8(0, n, [&](int64_t c, int64_t m) { acc_f64(lo, hi, f(c, m)); });
  f64x4 s = lo + hi;
  return (s[0] + s[1]) + (s[2] + s[3]);
}
// acc[i] += v[i] for i < n <= 8, in f64 (per-column parameter-gradient sums of the norms).
inline void add8_f64(double* acc, f32x8 v, int64_t n = 8) {
  if (n < 8) {
    for (int64_t i = 0; i < n; ++i) acc[i] += double(v[i]);
    return;
  }
  f64x4 lo, hi;
  std::memcpy(&lo, acc, sizeof lo);
  std::memcpy(&hi, acc + 4, sizeof hi);
  acc_f64(lo, hi, v);
  std::memcpy(acc, &lo, sizeof lo);
  std::memcpy(acc + 4, &hi, sizeof hi);
}
inline double hsum_f64(f64x4 lo, f64x4 hi) {
  f64x4 s = lo + hi;
  return (s[0] + s[1]) + (s[2] + s[3]);
}
// Sum of vectors of values in [0, 1] (softmax numerators exp(x - max)): f32 lanes hold up to
// 16 vectors (error below 2^-20 relative), then flush into f64 lanes. Converting every vector
// to f64 cost as much as the exp that made it.
struct UnitSum {
  f64x4 lo{}, hi{};
  f32x8 part{};
  int in_part = 0;
  void add(f32x8 v) {
    part += v;
    if (++in_part == 16) flush();
  }
  void flush() {
    acc_f64(lo, hi, part);
    part = f32x8{};
    in_part = 0;
  }
  double total() {
    flush();
    return hsum_f64(lo, hi);
  }
};

// dst[c * ldd + r] = src[r * lds + c] for r, c < 8: the 8 x 8 transpose of unpack / shuffle /
// lane-swap steps (three stages of 8 shuffles), where a scalar gather costs a load per element.
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  f32x8 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = load8(src + i * lds);
  for (int i = 0; i < 8; i += 2) {  // pairs of rows interleaved within each 128-bit half
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {  // columns c and c + 4 of rows i..i+3
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int c = 0; c < 4; ++c) {  // join the halves of rows 0..3 and 4..7
    store8(dst + c * ldd, __builtin_shufflevector(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11));
    store8(dst + (c + 4) * ldd, __builtin_shufflevector(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15));
  }
}

#ifdef __AVX512F__
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
#endif

// exp's argument clamped to [-87, 88]; NaN goes through (max/min return their second operand
// when one is NaN: x).
inline f32x8 clamp_exp_arg(f32x8 x) {
#ifdef __AVX__
  return (f32x8)_mm256_min_ps((__m256)splat8(88.0f), _mm256_max_ps((__m256)splat8(-87.0f), (__m256)x));
#else
  return x < -87.0f ? splat8(-87.0f) : (x > 88.0f ? splat8(88.0f) : x);
#endif
}
#ifdef __AVX512F__
inline f32x16 clamp_exp_arg(f32x16 x) {  // (the all-lanes masked forms: gcc 12 warns on the plain ones)
  const __m512 hi = _mm512_set1_ps(88.0f), lo = _mm512_set1_ps(-87.0f);
  const __m512 t = _mm512_mask_max_ps(lo, __mmask16(0xFFFF), lo, (__m512)x);
  return (f32x16)_mm512_mask_min_ps(hi, __mmask16(0xFFFF), hi, t);
}
#endif

// exp(x) = 2^n exp(r) with n = round(x / ln 2), r = x - n ln 2 (Cody-Waite split of ln 2),
// exp(r) by its degree-7 Taylor polynomial on |r| <= ln2/2 (truncation < 5e-9).
// n comes from the 1.5 * 2^23 shifter: adding it rounds x / ln 2 to an integer held in the low
// mantissa bits, which also become the exponent of 2^n (no float-int conversions, no floor).
// exp(-inf) = 0 exactly (masked scores), exp(x > 88) = inf, NaN stays NaN.
// V: f32x8 or f32x16; every lane computes the same operations, so a value gets the same bits at
// either width.
template <class V> inline V exp_v(V x) {
  using I = std::conditional_t<sizeof(V) == sizeof(f32x8), i32x8,
#ifdef __AVX512F__
                               i32x16
#else
                               void
#endif
                               >;
  const V zero{}, shifter = zero + 12582912.0f;
  const V xc = clamp_exp_arg(x);
  const V t = xc * 1.44269504088896341f + shifter;
  const V n = t - shifter;
  V r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  V p = zero + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I bits = ((I)t - (I)shifter + 127) << 23;  // bit casts between vector types of one size
  const V y = p * (V)bits;
  return x < -87.0f ? zero : (x > 88.0f ? zero + INFINITY : y);
}
// sigmoid(x) = 1 / (1 + exp(-x)).
template <class V> inline V sigmoid_v(V x) { return 1.0f / (1.0f + exp_v(-x)); }

inline f32x8 exp8(f32x8 x) { return exp_v(x); }
// tanh(u) = 1 - 2 / (exp(2u) + 1), exact at the saturated ends.
inline f32x8 tanh8(f32x8 u) { return 1.0f - 2.0f / (exp8(2.0f * u) + 1.0f); }
inline f32x8 sigmoid8(f32x8 x) { return sigmoid_v(x); }

// The widest f32 vector of the target, for the elementwise maps with exp inside (GELU, SiLU,
// SwiGLU, sigmoid, exp): 16 lanes under AVX-512, else 8. There an 8-lane GELU backward ran at
// about half the single-core bandwidth (its exp and division were the limit); see
// bench/README.md. Lanes compute what exp8 does, so the width changes no result.
#ifdef __AVX512F__
using f32xw = f32x16;
constexpr int64_t kWideLanes = 16;
// Loads n <= 16 floats from p (masked: never touches memory past them); lanes n.. get `pad`.
inline f32xw loadw(const float* p, int64_t n = kWideLanes, float pad = 0.0f) {
  if (n == kWideLanes) return (f32xw)_mm512_loadu_ps(p);
  return (f32xw)_mm512_mask_loadu_ps(_mm512_set1_ps(pad), __mmask16((1u << n) - 1), p);
}
inline void storew(float* p, f32xw v, int64_t n = kWideLanes) {
  if (n == kWideLanes) return _mm512_storeu_ps(p, (__m512)v);
  _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), (__m512)v);
}
#else
using f32xw = f32x8;
constexpr int64_t kWideLanes = 8;
inline f32xw loadw(const float* p, int64_t n = kWideLanes, float pad = 0.0f) { return load8(p, n, pad); }
inline void storew(float* p, f32xw v, int64_t n = kWideLanes) { store8(p, v, n); }
#endif
// Runs body(i, n) for i = begin, begin + kWideLanes, ... < end with n = min(kWideLanes, end - i).
template <class F> inline void for_blocksw(int64_t begin, int64_t end, F&& body) {
  int64_t i = begin;
  for (; i + kWideLanes <= end; i += kWideLanes) body(i, kWideLanes);
  if (i < end) body(i, end - i);
}

inline float exp_f32(float x) { return exp8(splat8(x))[0]; }

// Row statistics shared by softmax, cross-entropy and attention (f32 through the 8 lanes, f64
// scalar with std::exp).
// max of x[0, n); -inf when n = 0.
template <class T> T row_max(const T* x, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    f32xw mv = f32xw{} - INFINITY;  // (a max is exact: any width gives the same value)
    for_blocksw(0, n, [&](int64_t c, int64_t m) {
      const f32xw v = loadw(x + c, m, -INFINITY);
      mv = mv > v ? mv : v;
    });
    float best = mv[0];
    for (int64_t i = 1; i < kWideLanes; ++i) best = mv[i] > best ? mv[i] : best;
    return best;
  } else {
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t c = 0; c < n; ++c) m = std::max(m, x[c]);
    return m;
  }
}
// y[c] = exp(x[c] - sub) for c < n (y may be x; nullptr only sums); returns the sum in f64.
// sub should be the row's max, so every term is in [0, 1] (UnitSum's precondition).
template <class T> double exp_sub_sum(const T* x, T* y, int64_t n, T sub) {
  if constexpr (std::is_same_v<T, float>) {
    UnitSum es;
    for_blocksw(0, n, [&](int64_t c, int64_t m) {
      const f32xw e = exp_v(loadw(x + c, m, -INFINITY) - sub);  // padded lanes: exp(-inf) = 0
      if (y) storew(y + c, e, m);
#ifdef __AVX512F__
      // As two 8-lane blocks (the second only when it holds values): the same sums, in the same
      // order, as where the widest vector has 8 lanes.
      es.add(__builtin_shufflevector(e, e, 0, 1, 2, 3, 4, 5, 6, 7));
      if (m > 8) es.add(__builtin_shufflevector(e, e, 8, 9, 10, 11, 12, 13, 14, 15));
#else
      es.add(e);
#endif
    });
    return es.total();
  } else {
    double t = 0;
    for (int64_t c = 0; c < n; ++c) {
      const T e = std::exp(x[c] - sub);
      if (y) y[c] = e;
      t += e;
    }
    return t;
  }
}

template <class T> inline T vexp(T x) { return std::exp(x); }
template <> inline float vexp<float>(float x) { return exp_f32(x); }

template <class T> inline T vtanh(T u) { return std::tanh(u); }
template <> inline float vtanh<float>(float u) { return tanh8(splat8(u))[0]; }

template <class T> inline T vsigmoid(T x) { return T(1) / (T(1) + vexp<T>(-x)); }
template <> inline float vsigmoid<float>(float x) { return sigmoid8(splat8(x))[0]; }

}  // namespace loom::runtime::cpu
