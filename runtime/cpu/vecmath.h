// cpu/vecmath.h: branch-free math for hot f32 loops that the compiler vectorises (libm's scalar
// expf stops auto-vectorisation). vexp<float> has a relative error below 3e-7 on the whole
// range; f64 keeps std::exp so the finite-difference tests stay exact.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace loom::runtime::cpu {

// exp(x) = 2^n exp(r) with n = round(x / ln 2), r = x - n ln 2 (Cody-Waite split of ln 2),
// exp(r) by its degree-7 Taylor polynomial on |r| <= ln2/2 (truncation < 5e-9).
inline float exp_f32(float x) {
  float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  float y = p * scale;
  return x < -87.0f ? 0.0f : (x > 88.0f ? INFINITY : y);  // exp(-inf) = 0 exactly (masked scores)
}

template <class T> inline T vexp(T x) { return std::exp(x); }
template <> inline float vexp<float>(float x) { return exp_f32(x); }

// tanh(u) = 1 - 2 / (exp(2u) + 1), exact at the saturated ends.
template <class T> inline T vtanh(T u) { return std::tanh(u); }
template <> inline float vtanh<float>(float u) { return 1.0f - 2.0f / (exp_f32(2.0f * u) + 1.0f); }

template <class T> inline T vsigmoid(T x) { return T(1) / (T(1) + vexp<T>(-x)); }

}  // namespace loom::runtime::cpu
