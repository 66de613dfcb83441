// cpu/rope_table.h: the rotary-embedding angles (kept between calls) and the rotation, for the
// rope kernel (cpu/nn.cpp). Hugging Face rotate-half convention (Su et al., RoFormer): with
// w_i = theta^(-2i/D) and angle p w_i,
//   y[i] = x[i] cos - x[i + D/2] sin,   y[i + D/2] = x[i + D/2] cos + x[i] sin;
// the inverse (the backward) rotates by -angle (a table whose sines are negated).
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

#include "runtime/cpu/common.h"
#include "runtime/cpu/vecmath.h"

namespace loom::runtime::cpu {

// cos(p w_i) and sign * sin(p w_i) for positions p < rows, [rows, D / 2] each.
template <class T> struct RopeTable {
  int64_t rows = 0;
  std::vector<T> cos, sin;
};

inline std::vector<double> rope_inverse_frequencies(double theta, int64_t D) {
  std::vector<double> inv_freq(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) inv_freq[size_t(i)] = 1.0 / std::pow(theta, double(2 * i) / double(D));
  return inv_freq;
}

template <class T> void rope_angles(const std::vector<double>& inv_freq, double sign, double p, T* cs, T* sn) {
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double ang = p * inv_freq[i];
    cs[i] = T(std::cos(ang));
    sn[i] = T(sign * std::sin(ang));
  }
}

// The table for (theta, D, direction) with at least `rows` positions, kept for the next call:
// every training step's rope calls rotate positions 0..T-1 by the same angles, and tabulating
// them (D * T libm cos and sin per call) took about half of the rope op's time (llama-small:
// 24 calls a step). Thread-safe; a table is never changed once shared.
template <class T> std::shared_ptr<const RopeTable<T>> rope_table(double theta, int64_t D, bool inverse, int64_t rows) {
  static std::mutex mutex;
  static std::map<std::tuple<double, int64_t, bool>, std::shared_ptr<const RopeTable<T>>> tables;
  std::lock_guard<std::mutex> lock(mutex);
  auto& kept = tables[{theta, D, inverse}];
  if (kept && kept->rows >= rows) return kept;
  auto made = std::make_shared<RopeTable<T>>();
  const int64_t half = D / 2;
  const std::vector<double> inv_freq = rope_inverse_frequencies(theta, D);
  made->rows = rows;
  made->cos.resize(size_t(rows * half));
  made->sin.resize(made->cos.size());
  parallel_for(rows, 16, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      rope_angles(inv_freq, inverse ? -1.0 : 1.0, double(p), made->cos.data() + p * half, made->sin.data() + p * half);
  });
  kept = made;
  return kept;
}

// y = x rotated by the angles cs / sn (D / 2 each); y may be x. An odd last element is copied.
// f32 in 8-lane blocks (each lane the scalar formula, so the same values): the scalar loop,
// which may write where it reads, ran at about 16 ns a row of D = 32.
template <class T> inline void rope_rotate(const T* x, T* y, const T* cs, const T* sn, int64_t D) {
  const int64_t half = D / 2;
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>)
    for (; i + 8 <= half; i += 8) {
      const f32x8 x1 = load8(x + i), x2 = load8(x + i + half), c = load8(cs + i), s = load8(sn + i);
      store8(y + i, x1 * c - x2 * s);
      store8(y + i + half, x2 * c + x1 * s);
    }
  for (; i < half; ++i) {
    const T x1 = x[i], x2 = x[i + half];
    y[i] = x1 * cs[i] - x2 * sn[i];
    y[i + half] = x2 * cs[i] + x1 * sn[i];
  }
  if (D % 2) y[D - 1] = x[D - 1];
}

}  // namespace loom::runtime::cpu
