// cpu/vecmath.h: branch-free math for hot f32 loops. The kernels work on 8-lane vectors
// (GCC/Clang vector extensions: AVX2 registers under -march=native, SSE pairs otherwise);
// vexp<float> has a relative error below 3e-7 on the whole range; f64 keeps std::exp so the
// finite-difference tests stay exact.
//
// One rule keeps results independent of the thread count: every f32 element goes through the
// same vector code whether it sits in a full block of 8 or in a tail (tails are padded into a
// vector, see load8/store8), and the scalar exp_f32 is lane 0 of the vector one.
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

inline f32x8 vmax8(f32x8 a, f32x8 b) { return a > b ? a : b; }
inline float hmax8(f32x8 v) {
  float m = v[0];
  for (int i = 1; i < 8; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
// The 8 lanes widened to f64: lanes 0-3 in lo, 4-7 in hi.
inline void widen_f64(f32x8 v, f64x4& lo, f64x4& hi) {
  lo = __builtin_convertvector((f32x4{v[0], v[1], v[2], v[3]}), f64x4);
  hi = __builtin_convertvector((f32x4{v[4], v[5], v[6], v[7]}), f64x4);
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

// exp(x) = 2^n exp(r) with n = round(x / ln 2), r = x - n ln 2 (Cody-Waite split of ln 2),
// exp(r) by its degree-7 Taylor polynomial on |r| <= ln2/2 (truncation < 5e-9).
// n comes from the 1.5 * 2^23 shifter: adding it rounds x / ln 2 to an integer held in the low
// mantissa bits, which also become the exponent of 2^n (no float-int conversions, no floor).
// exp(-inf) = 0 exactly (masked scores), exp(x > 88) = inf, NaN stays NaN.
inline f32x8 exp8(f32x8 x) {
  const f32x8 lo = splat8(-87.0f), hi = splat8(88.0f), shifter = splat8(12582912.0f);
#ifdef __AVX__
  // max/min return their second operand when one is NaN: x, so NaN goes through.
  f32x8 xc = (f32x8)_mm256_min_ps((__m256)hi, _mm256_max_ps((__m256)lo, (__m256)x));
#else
  f32x8 xc = x < lo ? lo : (x > hi ? hi : x);
#endif
  const f32x8 t = xc * 1.44269504088896341f + shifter;
  const f32x8 n = t - shifter;
  f32x8 r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  f32x8 p = splat8(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const i32x8 bits = ((i32x8)t - (i32x8)shifter + 127) << 23;  // bit casts between vector types of one size
  const f32x8 y = p * (f32x8)bits;
  return x < lo ? splat8(0.0f) : (x > hi ? splat8(INFINITY) : y);
}
// tanh(u) = 1 - 2 / (exp(2u) + 1), exact at the saturated ends.
inline f32x8 tanh8(f32x8 u) { return 1.0f - 2.0f / (exp8(2.0f * u) + 1.0f); }
inline f32x8 sigmoid8(f32x8 x) { return 1.0f / (1.0f + exp8(-x)); }

inline float exp_f32(float x) { return exp8(splat8(x))[0]; }

// Row statistics shared by softmax, cross-entropy and attention (f32 through the 8 lanes, f64
// scalar with std::exp).
// max of x[0, n); -inf when n = 0.
template <class T> T row_max(const T* x, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    f32x8 mv = splat8(-INFINITY);
    for_blocks8(0, n, [&](int64_t c, int64_t m) { mv = vmax8(mv, load8(x + c, m, -INFINITY)); });
    return hmax8(mv);
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
    for_blocks8(0, n, [&](int64_t c, int64_t m) {
      const f32x8 e = exp8(load8(x + c, m, -INFINITY) - sub);  // padded lanes: exp(-inf) = 0
      if (y) store8(y + c, e, m);
      es.add(e);
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
