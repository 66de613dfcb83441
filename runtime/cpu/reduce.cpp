// cpu/reduce.cpp: sum and max over the middle axis of an [O, N, I] view. Sums accumulate in
// double and in a fixed order, so results do not depend on the thread count.
#include <cmath>
#include <limits>

#include "runtime/cpu/common.h"
#include "runtime/cpu/vecmath.h"

namespace loom::runtime::cpu {
namespace {

struct OniShape {
  int64_t o, n, i;
};
OniShape oni(const Tensor& x) {
  if (x.dim() != 3) throw std::logic_error("reduction kernels take an [O, N, I] view");
  return {x.size(0), x.size(1), x.size(2)};
}

void k_sum_dim(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  require_contiguous(x, Op::sum_dim, "input");
  OniShape s = oni(x);
  visit_any(Op::sum_dim, x.dtype(), [&](auto z) {
    using T = decltype(z);
    if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
      bad_dtype(Op::sum_dim, x.dtype());
    } else {
      const T* px = static_cast<const T*>(x.raw_data());
      T* po = static_cast<T*>(a.out[0].raw_data());
      if (s.i == 1) {  // reduce contiguous rows
        parallel_for(s.o, std::max<int64_t>(1, 8192 / std::max<int64_t>(s.n, 1)), [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) {
            const T* row = px + r * s.n;
            double acc[4] = {0, 0, 0, 0};
            int64_t j = 0;
            for (; j + 4 <= s.n; j += 4)
              for (int u = 0; u < 4; ++u) acc[u] += double(row[j + u]);
            for (; j < s.n; ++j) acc[0] += double(row[j]);
            po[r] = T((acc[0] + acc[1]) + (acc[2] + acc[3]));
          }
        });
        return;
      }
      // Reduce the middle axis. Up to one row block (n <= kReduceRowBlock) each column is one
      // sequential f64 sum: the columns run in parallel. Longer, the sum runs in fixed row
      // blocks (reduce_rows_fixed), in parallel as well as columns: a bias gradient
      // [B*T, N] -> [N] has too few columns to split between threads. Both orders depend on
      // the shape only, and agree where they meet (one block is the sequential sum).
      if (s.n <= kReduceRowBlock) {
        parallel_for(s.o * s.i, std::max<int64_t>(1, 8192 / std::max<int64_t>(s.n, 1)), [&](int64_t b, int64_t e) {
          for (int64_t c = b; c < e; ++c) {
            const T* col = px + (c / s.i) * s.n * s.i + c % s.i;
            double t = 0;
            for (int64_t n = 0; n < s.n; ++n) t += double(col[n * s.i]);
            po[c] = T(t);
          }
        });
        return;
      }
      std::vector<double> sums;
      reduce_rows_fixed(s.n, s.o * s.i, sums, [&](int64_t n, double* acc) {
        for (int64_t o = 0; o < s.o; ++o) {
          const T* row = px + (o * s.n + n) * s.i;
          double* ao = acc + o * s.i;
          for (int64_t i = 0; i < s.i; ++i) ao[i] += double(row[i]);
        }
      });
      parallel_for(s.o * s.i, 4096, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) po[c] = T(sums[size_t(c)]);
      });
    }
  });
}

// Sum of squares in f64 (the terms of a gradient norm): one pass over x, no f64 copy of it.
// Fixed blocks of kSquaresBlock elements, each summed in 8 f64 lanes; the blocks' partials
// are added in order, so the result depends on the size only, never on the thread count.
// An f32 square is exact in f64 (24-bit mantissas), so only the sums round.
constexpr int64_t kSquaresBlock = 16384;

template <class T> double block_squares(const T* x, int64_t n) {
  f64x4 lo{}, hi{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    f64x4 a, b;
    if constexpr (std::is_same_v<T, float>) {
      widen_f64(load8(x + i), a, b);
    } else {
      std::memcpy(&a, x + i, sizeof a);
      std::memcpy(&b, x + i + 4, sizeof b);
    }
    lo += a * a;
    hi += b * b;
  }
  const f64x4 s = lo + hi;
  double t = (s[0] + s[1]) + (s[2] + s[3]);
  for (; i < n; ++i) t += double(x[i]) * double(x[i]);
  return t;
}

void k_sum_squares(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  require_contiguous(x, Op::sum_squares, "input");
  visit_float(Op::sum_squares, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    const int64_t n = x.numel(), blocks = (n + kSquaresBlock - 1) / kSquaresBlock;
    std::vector<double> partial(static_cast<size_t>(blocks));
    parallel_for(blocks, 4, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k)
        partial[size_t(k)] = block_squares(px + k * kSquaresBlock, std::min(kSquaresBlock, n - k * kSquaresBlock));
    });
    double total = 0;
    for (double p : partial) total += p;
    *a.out[0].data<double>() = total;
  });
}

void k_max_dim(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  require_contiguous(x, Op::max_dim, "input");
  OniShape s = oni(x);
  if (s.n == 0) throw std::invalid_argument("max: reduction over an empty dimension");
  visit_any(Op::max_dim, x.dtype(), [&](auto z) {
    using T = decltype(z);
    if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
      bad_dtype(Op::max_dim, x.dtype());
    } else {
      const T* px = static_cast<const T*>(x.raw_data());
      T* pv = static_cast<T*>(a.out[0].raw_data());
      int64_t* pi = a.out[1].defined() ? a.out[1].data<int64_t>() : nullptr;
      parallel_for(s.o * s.i, 64, [&](int64_t b, int64_t e) {
        for (int64_t oi = b; oi < e; ++oi) {
          int64_t o = oi / s.i, i = oi % s.i;
          const T* base = px + o * s.n * s.i + i;
          T best = base[0];
          int64_t arg = 0;
          for (int64_t n = 1; n < s.n; ++n) {
            T v = base[n * s.i];
            // NaN propagates (like PyTorch): the first NaN wins.
            if (v > best || (v != v && best == best)) {
              best = v;
              arg = n;
            }
          }
          pv[oi] = best;
          if (pi) pi[oi] = arg;
        }
      });
    }
  });
}

}  // namespace

void register_reduce_kernels(KernelTable& t) {
  t.fn[size_t(Op::sum_dim)] = k_sum_dim;
  t.fn[size_t(Op::max_dim)] = k_max_dim;
  t.fn[size_t(Op::sum_squares)] = k_sum_squares;
}

}  // namespace loom::runtime::cpu
