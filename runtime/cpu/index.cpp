// cpu/index.cpp: index_select/index_add over [O, N, I] views, gather/scatter_add along a dim,
// top-k and multinomial sampling. Indices are validated before any parallel region.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/cpu/common.h"
#include "runtime/rng.h"

namespace loom::runtime::cpu {
namespace {

void check_index(const int64_t* idx, int64_t n, int64_t bound, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= bound)
      throw std::invalid_argument(std::string(op) + ": index " + std::to_string(idx[i]) + " is outside [0, " +
                                  std::to_string(bound) + ")");
}

template <class F> void visit_data(Op op, DType t, F&& fn) {
  visit_any(op, t, [&](auto z) {
    using T = decltype(z);
    if constexpr (std::is_arithmetic_v<T>) fn(z);
    else bad_dtype(op, t);
  });
}

// out[o, k, i] = x[o, index[k], i]
void k_index_select(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& index = a.in[1];
  require_contiguous(x, Op::index_select, "x");
  int64_t O = x.size(0), N = x.size(1), I = x.size(2), K = index.numel();
  const int64_t* pi = index.data<int64_t>();
  check_index(pi, K, N, "index_select");
  visit_data(Op::index_select, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(a.out[0].raw_data());
    parallel_for(O * K, std::max<int64_t>(1, 4096 / std::max<int64_t>(I, 1)), [&](int64_t b, int64_t e) {
      for (int64_t ok = b; ok < e; ++ok) {
        int64_t o = ok / K, k = ok % K;
        std::copy(px + (o * N + pi[k]) * I, px + (o * N + pi[k] + 1) * I, po + ok * I);
      }
    });
  });
}

// out[o, index[k], i] += src[o, k, i]; threads split (o, i) so duplicate indices never race.
void k_index_add(const KernelArgs& a) {
  const Tensor& index = a.in[0];
  const Tensor& src = a.in[1];
  Tensor& out = a.out[0];
  int64_t O = out.size(0), N = out.size(1), I = out.size(2), K = index.numel();
  const int64_t* pi = index.data<int64_t>();
  check_index(pi, K, N, "index_add");
  visit_data(Op::index_add, out.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* ps = static_cast<const T*>(src.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    parallel_for(O * I, 64, [&](int64_t b, int64_t e) {
      for (int64_t oi = b; oi < e; ++oi) {
        int64_t o = oi / I, i = oi % I;
        for (int64_t k = 0; k < K; ++k) po[(o * N + pi[k]) * I + i] += ps[(o * K + k) * I + i];
      }
    });
  });
}

// gather: out[o, k, i] = x[o, index[o, k, i], i] with x [O, N, I], index/out [O, K, I].
void k_gather(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& index = a.in[1];
  int64_t O = x.size(0), N = x.size(1), I = x.size(2), K = index.size(1);
  const int64_t* pi = index.data<int64_t>();
  check_index(pi, index.numel(), N, "gather");
  visit_data(Op::gather, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(a.out[0].raw_data());
    parallel_for(O * K * I, 4096, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        int64_t o = j / (K * I), i = j % I;
        po[j] = px[(o * N + pi[j]) * I + i];
      }
    });
  });
}

// scatter_add: out[o, index[o, k, i], i] += src[o, k, i]; out [O, N, I] pre-filled.
void k_scatter_add(const KernelArgs& a) {
  const Tensor& index = a.in[0];
  const Tensor& src = a.in[1];
  Tensor& out = a.out[0];
  int64_t O = out.size(0), N = out.size(1), I = out.size(2), K = index.size(1);
  const int64_t* pi = index.data<int64_t>();
  check_index(pi, index.numel(), N, "scatter_add");
  visit_data(Op::scatter_add, out.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* ps = static_cast<const T*>(src.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    parallel_for(O * I, 64, [&](int64_t b, int64_t e) {
      for (int64_t oi = b; oi < e; ++oi) {
        int64_t o = oi / I, i = oi % I;
        for (int64_t k = 0; k < K; ++k) {
          int64_t j = (o * K + k) * I + i;
          po[(o * N + pi[j]) * I + i] += ps[j];
        }
      }
    });
  });
}

// top-k along the last dim, sorted descending; ties keep the lower index first.
void k_topk(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  require_contiguous(x, Op::topk_last, "x");
  int64_t N = x.size(-1), R = x.numel() / std::max<int64_t>(N, 1), k = a.attrs.k;
  visit_float(Op::topk_last, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* pv = static_cast<T*>(a.out[0].raw_data());
    int64_t* pi = a.out[1].data<int64_t>();
    parallel_for(R, 1, [&](int64_t b, int64_t e) {
      std::vector<int64_t> order(static_cast<size_t>(N));
      for (int64_t r = b; r < e; ++r) {
        const T* xr = px + r * N;
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t p, int64_t q) {
          return xr[p] > xr[q] || (xr[p] == xr[q] && p < q);
        });
        for (int64_t j = 0; j < k; ++j) {
          pv[r * k + j] = xr[order[size_t(j)]];
          pi[r * k + j] = order[size_t(j)];
        }
      }
    });
  });
}

// Inverse-CDF sampling; draw (r, s) uses Philox counter offset + r * n + s.
void k_multinomial(const KernelArgs& a) {
  const Tensor& probs = a.in[0];
  require_contiguous(probs, Op::multinomial, "probs");
  int64_t V = probs.size(-1), R = probs.numel() / std::max<int64_t>(V, 1), n = a.attrs.k;
  bool replacement = a.attrs.replacement;
  uint64_t seed = a.attrs.seed, offset = a.attrs.offset;
  int64_t* po = a.out[0].data<int64_t>();
  std::vector<double> p = probs.to_double_vector();
  for (int64_t r = 0; r < R; ++r) {
    int64_t positive = 0;
    for (int64_t j = 0; j < V; ++j) {
      double v = p[size_t(r * V + j)];
      if (!(v >= 0) || std::isinf(v))
        throw std::invalid_argument("multinomial: row " + std::to_string(r) + " has a negative, NaN or inf weight");
      positive += v > 0;
    }
    if (positive == 0) throw std::invalid_argument("multinomial: row " + std::to_string(r) + " sums to zero");
    if (!replacement && positive < n)
      throw std::invalid_argument("multinomial: row " + std::to_string(r) + " has fewer than " + std::to_string(n) +
                                  " non-zero weights for sampling without replacement");
  }
  parallel_for(R, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      std::vector<double> w(p.begin() + r * V, p.begin() + (r + 1) * V);
      for (int64_t s = 0; s < n; ++s) {
        double total = 0;
        for (double v : w) total += v;
        auto bits = philox4x32(seed, offset + uint64_t(r * n + s), 0);
        double u = (1.0 - uniform_double(bits[0], bits[1])) * total;  // [0, total)
        int64_t pick = V - 1;
        double acc = 0;
        for (int64_t j = 0; j < V; ++j) {
          acc += w[size_t(j)];
          if (u < acc && w[size_t(j)] > 0) {
            pick = j;
            break;
          }
        }
        while (w[size_t(pick)] <= 0 && pick > 0) --pick;  // rounding at the top end
        po[r * n + s] = pick;
        if (!replacement) w[size_t(pick)] = 0;
      }
    }
  });
}

}  // namespace

void register_index_kernels(KernelTable& t) {
  auto set = [&](Op op, KernelFn f) { t.fn[size_t(op)] = f; };
  set(Op::index_select, k_index_select);
  set(Op::index_add, k_index_add);
  set(Op::gather, k_gather);
  set(Op::scatter_add, k_scatter_add);
  set(Op::topk_last, k_topk);
  set(Op::multinomial, k_multinomial);
}

}  // namespace loom::runtime::cpu
