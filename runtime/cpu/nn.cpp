// cpu/nn.cpp: row-wise neural-network kernels: softmax and log-softmax, fused cross-entropy,
// embedding, LayerNorm, RMSNorm, rotary embedding and dropout, each beside its backward.
// Row statistics accumulate in double; parameter-gradient reductions over rows use a fixed
// number of row chunks, so results are identical for any thread count.
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/cpu/common.h"
#include "runtime/cpu/rope_table.h"
#include "runtime/cpu/vecmath.h"
#include "runtime/rng.h"

namespace loom::runtime::cpu {
namespace {

int64_t rows_of(const Tensor& t) { return t.numel() / std::max<int64_t>(t.size(-1), 1); }

// ---- softmax / log-softmax over the last dim -------------------------------------------------
template <bool kLog> void k_softmax(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  require_contiguous(x, Op::softmax_last, "input");
  int64_t n = x.size(-1), rows = rows_of(x);
  visit_float(Op::softmax_last, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* py = static_cast<T*>(a.out[0].raw_data());
    parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = px + r * n;
        T* yr = py + r * n;
        T m = row_max(xr, n);
        if (m == -std::numeric_limits<T>::infinity()) m = 0;  // all -inf: avoid inf - inf
        const double s = exp_sub_sum(xr, kLog ? nullptr : yr, n, m);
        if constexpr (kLog) {
          const T lse = m + T(std::log(s));
          for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] - lse;
        } else {
          const T inv = T(1.0 / s);
          for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
        }
      }
    });
  });
}

// softmax: gx = y * (gy - sum(gy * y));  log-softmax: gx = gy - exp(y) * sum(gy)
template <bool kLog> void k_softmax_backward(const KernelArgs& a) {
  const Tensor& y = a.in[0];
  const Tensor& gy = a.in[1];
  require_contiguous(y, Op::softmax_backward_last, "y");
  require_contiguous(gy, Op::softmax_backward_last, "gy");
  int64_t n = y.size(-1), rows = rows_of(y);
  visit_float(Op::softmax_backward_last, y.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* py = static_cast<const T*>(y.raw_data());
    const T* pg = static_cast<const T*>(gy.raw_data());
    T* px = static_cast<T*>(a.out[0].raw_data());
    parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* yr = py + r * n;
        const T* gr = pg + r * n;
        T* xr = px + r * n;
        double s = 0;
        if constexpr (kLog) {
          for (int64_t j = 0; j < n; ++j) s += double(gr[j]);
          if constexpr (std::is_same_v<T, float>) {  // the 8-lane exp, as in the forward
            const float sf = float(s);
            for_blocks8(0, n, [&](int64_t j, int64_t m) { store8(xr + j, load8(gr + j, m) - exp8(load8(yr + j, m)) * sf, m); });
          } else {
            for (int64_t j = 0; j < n; ++j) xr[j] = gr[j] - vexp(yr[j]) * T(s);
          }
        } else {
          for (int64_t j = 0; j < n; ++j) s += double(gr[j]) * double(yr[j]);
          for (int64_t j = 0; j < n; ++j) xr[j] = yr[j] * (gr[j] - T(s));
        }
      }
    });
  });
}

// The distance between rows of a [.., V] operand: V when contiguous; a 2-D view of padded rows
// (linear_cross_entropy's logits, padded for the GEMM that reads them) has its own.
int64_t row_stride(const Tensor& t, Op op, const char* which) {
  if (t.is_contiguous()) return t.size(-1);
  if (t.dim() == 2 && t.stride(1) == 1 && t.stride(0) >= t.size(1)) return t.stride(0);
  throw std::logic_error(std::string(op_name(op)) + ": " + which +
                         " must be contiguous, or 2-D rows with unit column stride");
}

// ---- cross-entropy fused with log-softmax ----------------------------------------------------
// loss_i = (1 - eps) (lse_i - x_i,t) + eps (lse_i - mean_j x_ij); ignored rows give 0.
// With a third output it also writes d loss_i / d x_ij = softmax_ij - (1 - eps) [j == t] - eps / V
// (0 on ignored rows) while the row is still in cache: linear_cross_entropy's backward then needs
// no pass over the logits. That output may be the logits themselves (each row is read before it
// is overwritten).
void k_cross_entropy(const KernelArgs& a) {
  const Tensor& logits = a.in[0];
  const Tensor& target = a.in[1];
  const int64_t ldx = row_stride(logits, Op::cross_entropy, "logits");
  require_contiguous(target, Op::cross_entropy, "target");
  const bool with_grad = a.out.size() > 2 && a.out[2].defined();
  const int64_t ldg = with_grad ? row_stride(a.out[2], Op::cross_entropy, "glogits") : 0;
  int64_t V = logits.size(-1), N = rows_of(logits);
  double eps = a.attrs.label_smoothing;
  int64_t ignore = a.attrs.ignore_index;
  const int64_t* pt = target.data<int64_t>();
  for (int64_t r = 0; r < N; ++r)  // validate before the parallel region (no throwing inside it)
    if (pt[r] != ignore && (pt[r] < 0 || pt[r] >= V))
      throw std::invalid_argument("cross_entropy: target " + std::to_string(pt[r]) + " at row " + std::to_string(r) +
                                  " is outside [0, " + std::to_string(V) + ")");
  visit_float(Op::cross_entropy, logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(logits.raw_data());
    T* ploss = static_cast<T*>(a.out[0].raw_data());
    T* plse = static_cast<T*>(a.out[1].raw_data());
    T* pgrad = with_grad ? static_cast<T*>(a.out[2].raw_data()) : nullptr;
    const T smooth = T(eps / double(V));
    parallel_for(N, std::max<int64_t>(1, 2048 / std::max<int64_t>(V, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = px + r * ldx;
        T* gr = pgrad ? pgrad + r * ldg : nullptr;
        const int64_t t = pt[r];
        const double xt = t == ignore ? 0.0 : double(xr[t]);
        double sx = 0;  // sum of the logits, for label smoothing only
        if (eps != 0) {
          if constexpr (std::is_same_v<T, float>) sx = sum8_f64(V, [&](int64_t j, int64_t n) { return load8(xr + j, n); });
          else for (int64_t j = 0; j < V; ++j) sx += xr[j];
        }
        const T m = row_max(xr, V);
        const double s = exp_sub_sum(xr, gr, V, m);  // gr = exp(x - m), when wanted
        double lse = double(m) + std::log(s);
        plse[r] = T(lse);
        if (t == ignore) {
          ploss[r] = T(0);
          if (gr) std::fill(gr, gr + V, T(0));
          continue;
        }
        ploss[r] = T((1 - eps) * (lse - xt) + eps * (lse - sx / double(V)));
        if (gr) {  // exp(x - m) / s - smooth, and the target's share
          const T inv = T(1.0 / s);
          if constexpr (std::is_same_v<T, float>) {
            for_blocks8(0, V, [&](int64_t j, int64_t n) { store8(gr + j, load8(gr + j, n) * inv - smooth, n); });
          } else {
            for (int64_t j = 0; j < V; ++j) gr[j] = gr[j] * inv - smooth;
          }
          gr[t] -= T(1 - eps);
        }
      }
    });
  });
}

// glogits_ij = gloss_i (softmax_ij - (1 - eps) [j == t_i] - eps / V)
void k_cross_entropy_backward(const KernelArgs& a) {
  const Tensor& logits = a.in[0];
  const Tensor& target = a.in[1];
  const Tensor& lse = a.in[2];
  const Tensor& gloss = a.in[3];
  int64_t V = logits.size(-1), N = rows_of(logits);
  double eps = a.attrs.label_smoothing;
  int64_t ignore = a.attrs.ignore_index;
  const int64_t* pt = target.data<int64_t>();
  visit_float(Op::cross_entropy_backward, logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(logits.raw_data());
    const T* pl = static_cast<const T*>(lse.raw_data());
    const T* pg = static_cast<const T*>(gloss.raw_data());
    T* po = static_cast<T*>(a.out[0].raw_data());
    parallel_for(N, std::max<int64_t>(1, 2048 / std::max<int64_t>(V, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        T* orow = po + r * V;
        int64_t t = pt[r];
        if (t == ignore) {
          std::fill(orow, orow + V, T(0));
          continue;
        }
        const T* xr = px + r * V;
        T g = pg[r], l = pl[r], smooth = T(eps / double(V));
        if constexpr (std::is_same_v<T, float>) {
          for_blocks8(0, V, [&](int64_t j, int64_t n) {
            store8(orow + j, g * (exp8(load8(xr + j, n) - l) - smooth), n);
          });
        } else {
          for (int64_t j = 0; j < V; ++j) orow[j] = g * (vexp(xr[j] - l) - smooth);
        }
        orow[t] -= g * T(1 - eps);
      }
    });
  });
}

// ---- embedding -------------------------------------------------------------------------------
void check_ids(const int64_t* ids, int64_t n, int64_t V, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw std::invalid_argument(std::string(op) + ": token id " + std::to_string(ids[i]) + " at position " +
                                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
}

void k_embedding(const KernelArgs& a) {
  const Tensor& w = a.in[0];
  const Tensor& ids = a.in[1];
  require_contiguous(w, Op::embedding, "weight");
  int64_t V = w.size(0), C = w.size(1), N = ids.numel();
  const int64_t* pi = ids.data<int64_t>();
  check_ids(pi, N, V, "embedding");
  visit_float(Op::embedding, w.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pw = static_cast<const T*>(w.raw_data());
    T* po = static_cast<T*>(a.out[0].raw_data());
    parallel_for(N, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) std::copy(pw + pi[n] * C, pw + (pi[n] + 1) * C, po + n * C);
    });
  });
}

// Rows with equal ids collide, so threads split the channel axis instead of the tokens.
void k_embedding_backward(const KernelArgs& a) {
  const Tensor& ids = a.in[0];
  const Tensor& g = a.in[1];
  Tensor& gw = a.out[0];
  int64_t V = gw.size(0), C = gw.size(1), N = ids.numel();
  const int64_t* pi = ids.data<int64_t>();
  check_ids(pi, N, V, "embedding_backward");
  visit_float(Op::embedding_backward, gw.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pg = static_cast<const T*>(g.raw_data());
    T* po = static_cast<T*>(gw.raw_data());
    // The zeroing is most of the op (an 8192 x 256 table is 8 MB against 2048 rows added), so
    // it is split over the threads too.
    parallel_for(V, 64, [&](int64_t v0, int64_t v1) { std::fill(po + v0 * C, po + v1 * C, T(0)); });
    parallel_for(C, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; ++n) {
        T* dst = po + pi[n] * C;
        const T* src = pg + n * C;
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    });
  });
}

// ---- LayerNorm: y = (x - mean) * rstd * w + b -------------------------------------------------
void k_layer_norm(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  const Tensor& bias = a.in[2];
  require_contiguous(x, Op::layer_norm, "x");
  int64_t C = x.size(-1), R = rows_of(x);
  double eps = a.attrs.eps;
  visit_float(Op::layer_norm, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pw = w.defined() ? static_cast<const T*>(w.raw_data()) : nullptr;
    const T* pb = bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr;
    T* py = static_cast<T*>(a.out[0].raw_data());
    T* pm = static_cast<T*>(a.out[1].raw_data());
    T* pr = static_cast<T*>(a.out[2].raw_data());
    parallel_for(R, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = px + r * C;
        double mean, v = 0;
        if constexpr (std::is_same_v<T, float>) {
          mean = sum8_f64(C, [&](int64_t c, int64_t m) { return load8(xr + c, m); }) / double(C);
          const float mf = float(mean);
          v = sum8_f64(C, [&](int64_t c, int64_t m) {
            f32x8 d = load8(xr + c, m, mf) - mf;  // padding lanes give 0
            return d * d;
          });
        } else {
          double s = 0;
          for (int64_t c = 0; c < C; ++c) s += double(xr[c]);
          mean = s / double(C);
          for (int64_t c = 0; c < C; ++c) v += (double(xr[c]) - mean) * (double(xr[c]) - mean);
        }
        double rstd = 1.0 / std::sqrt(v / double(C) + eps);
        pm[r] = T(mean);
        pr[r] = T(rstd);
        T* yr = py + r * C;
        for (int64_t c = 0; c < C; ++c) {
          T h = (xr[c] - T(mean)) * T(rstd);
          yr[c] = (pw ? h * pw[c] : h) + (pb ? pb[c] : T(0));
        }
      }
    });
  });
}

// Runs row(r, acc) for every row r < R. With the parameter gradients wanted, through
// reduce_rows_fixed (acc: that row block's `width` f64 sums), so each row of x and gy is read
// once for both its input gradient and its parameter terms; else in parallel with acc = nullptr.
template <class F>
void norm_backward_rows(int64_t R, int64_t C, int64_t width, bool want_params, std::vector<double>& sums, F&& row) {
  if (want_params) {
    reduce_rows_fixed(R, width, sums, row);
    return;
  }
  parallel_for(R, std::max<int64_t>(1, 2048 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) row(r, nullptr);
  });
}

// gx = rstd (g - mean(g) - xhat mean(g xhat)), g = gy w;  gw = sum gy xhat;  gb = sum gy
void k_layer_norm_backward(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  const Tensor& mean = a.in[2];
  const Tensor& rstd = a.in[3];
  const Tensor& gy = a.in[4];
  int64_t C = x.size(-1), R = rows_of(x);
  const bool want_w = a.out.size() > 1 && a.out[1].defined(), want_b = a.out.size() > 2 && a.out[2].defined();
  visit_float(Op::layer_norm_backward, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pw = w.defined() ? static_cast<const T*>(w.raw_data()) : nullptr;
    const T* pm = static_cast<const T*>(mean.raw_data());
    const T* pr = static_cast<const T*>(rstd.raw_data());
    const T* pg = static_cast<const T*>(gy.raw_data());
    T* pgx = static_cast<T*>(a.out[0].raw_data());
    std::vector<double> sums;  // [gw | gb], each C wide
    norm_backward_rows(R, C, 2 * C, want_w || want_b, sums, [&](int64_t r, double* acc) {
      const T* xr = px + r * C;
      const T* gr = pg + r * C;
      T* out = pgx + r * C;
      if constexpr (std::is_same_v<T, float>) {  // f64 row sums; f32 map and products
        const float mu = pm[r], rs = pr[r];
        auto weighted = [&](f32x8 gy, int64_t c, int64_t m) { return pw ? gy * load8(pw + c, m) : gy; };
        auto g8 = [&](int64_t c, int64_t m) { return weighted(load8(gr + c, m), c, m); };
        const double sg = sum8_f64(C, g8) / double(C);
        const double sgx = sum8_f64(C, [&](int64_t c, int64_t m) { return g8(c, m) * ((load8(xr + c, m, mu) - mu) * rs); }) /
                           double(C);
        const float msg = float(sg), msgx = float(sgx);
        for_blocks8(0, C, [&](int64_t c, int64_t m) {
          const f32x8 gyv = load8(gr + c, m);
          const f32x8 g = weighted(gyv, c, m);
          const f32x8 xh = (load8(xr + c, m) - mu) * rs;
          store8(out + c, rs * (g - msg - xh * msgx), m);
          if (acc) {
            add8_f64(acc + c, gyv * xh, m);
            add8_f64(acc + C + c, gyv, m);
          }
        });
      } else {
        const double mu = double(pm[r]), rs = double(pr[r]);
        double sg = 0, sgx = 0;
        for (int64_t c = 0; c < C; ++c) {
          const double g = double(gr[c]) * (pw ? double(pw[c]) : 1.0), xh = (double(xr[c]) - mu) * rs;
          sg += g;
          sgx += g * xh;
        }
        sg /= double(C);
        sgx /= double(C);
        for (int64_t c = 0; c < C; ++c) {
          const double g = double(gr[c]) * (pw ? double(pw[c]) : 1.0), xh = (double(xr[c]) - mu) * rs;
          out[c] = T(rs * (g - sg - xh * sgx));
          if (acc) {
            acc[c] += double(gr[c]) * xh;
            acc[C + c] += double(gr[c]);
          }
        }
      }
    });
    if (want_w) {
      T* gw = static_cast<T*>(a.out[1].raw_data());
      for (int64_t c = 0; c < C; ++c) gw[c] = T(sums[size_t(c)]);
    }
    if (want_b) {
      T* gb = static_cast<T*>(a.out[2].raw_data());
      for (int64_t c = 0; c < C; ++c) gb[c] = T(sums[size_t(C + c)]);
    }
  });
}

// ---- RMSNorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) (Zhang & Sennrich, 2019) ----
void k_rms_norm(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  require_contiguous(x, Op::rms_norm, "x");
  int64_t C = x.size(-1), R = rows_of(x);
  double eps = a.attrs.eps;
  visit_float(Op::rms_norm, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pw = w.defined() ? static_cast<const T*>(w.raw_data()) : nullptr;
    T* py = static_cast<T*>(a.out[0].raw_data());
    T* pr = static_cast<T*>(a.out[1].raw_data());
    parallel_for(R, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = px + r * C;
        double ss = 0;
        if constexpr (std::is_same_v<T, float>) {
          ss = sum8_f64(C, [&](int64_t c, int64_t m) {
            f32x8 x = load8(xr + c, m);
            return x * x;
          });
        } else {
          for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
        }
        T rstd = T(1.0 / std::sqrt(ss / double(C) + eps));
        pr[r] = rstd;
        T* yr = py + r * C;
        for (int64_t c = 0; c < C; ++c) yr[c] = pw ? pw[c] * (xr[c] * rstd) : xr[c] * rstd;
      }
    });
  });
}

// gx = rstd (g - xhat mean(g xhat)), g = gy w, xhat = x rstd;  gw = sum gy xhat
void k_rms_norm_backward(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  const Tensor& rstd = a.in[2];
  const Tensor& gy = a.in[3];
  int64_t C = x.size(-1), R = rows_of(x);
  const bool want_w = a.out.size() > 1 && a.out[1].defined();
  visit_float(Op::rms_norm_backward, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pw = w.defined() ? static_cast<const T*>(w.raw_data()) : nullptr;
    const T* pr = static_cast<const T*>(rstd.raw_data());
    const T* pg = static_cast<const T*>(gy.raw_data());
    T* pgx = static_cast<T*>(a.out[0].raw_data());
    std::vector<double> sums;  // gw
    norm_backward_rows(R, C, C, want_w, sums, [&](int64_t r, double* acc) {
      const T* xr = px + r * C;
      const T* gr = pg + r * C;
      T* out = pgx + r * C;
      if constexpr (std::is_same_v<T, float>) {  // f64 row sum; f32 map and products
        const double rs = double(pr[r]);
        auto weighted = [&](f32x8 gy, int64_t c, int64_t m) { return pw ? gy * load8(pw + c, m) : gy; };
        auto g8 = [&](int64_t c, int64_t m) { return weighted(load8(gr + c, m), c, m); };
        const double sgx = rs * sum8_f64(C, [&](int64_t c, int64_t m) { return g8(c, m) * load8(xr + c, m); }) / double(C);
        const float rsf = float(rs), k = float(rs * sgx);
        for_blocks8(0, C, [&](int64_t c, int64_t m) {
          const f32x8 gyv = load8(gr + c, m), xv = load8(xr + c, m);
          store8(out + c, rsf * (weighted(gyv, c, m) - xv * k), m);
          if (acc) add8_f64(acc + c, gyv * (xv * rsf), m);
        });
      } else {
        const double rs = double(pr[r]);
        double sgx = 0;
        for (int64_t c = 0; c < C; ++c) sgx += double(gr[c]) * (pw ? double(pw[c]) : 1.0) * double(xr[c]) * rs;
        sgx /= double(C);
        for (int64_t c = 0; c < C; ++c) {
          const double g = double(gr[c]) * (pw ? double(pw[c]) : 1.0);
          out[c] = T(rs * (g - double(xr[c]) * rs * sgx));
          if (acc) acc[c] += double(gr[c]) * double(xr[c]) * rs;
        }
      }
    });
    if (want_w) {
      T* gw = static_cast<T*>(a.out[1].raw_data());
      for (int64_t c = 0; c < C; ++c) gw[c] = T(sums[size_t(c)]);
    }
  });
}

// ---- rotary embedding (cpu/rope_table.h): the backward is the same rotation by -angle
// (attrs.inverse).
void k_rope(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& pos = a.in[1];
  require_contiguous(x, Op::rope, "x");
  require_contiguous(pos, Op::rope, "positions");
  int64_t B = x.size(0), T_ = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const double theta = a.attrs.alpha, sign = a.attrs.inverse ? -1.0 : 1.0;
  const int64_t* pp = pos.data<int64_t>();
  const std::vector<double> inv_freq = rope_inverse_frequencies(theta, D);
  // The batch repeats positions (every row of a training batch holds 0..T-1): when they are all
  // in [0, B * T), the angles come from a table per position (rope_table) instead of per token.
  int64_t pmin = 0, pmax = -1;
  for (int64_t i = 0; i < B * T_; ++i) {
    pmin = std::min(pmin, pp[i]);
    pmax = std::max(pmax, pp[i]);
  }
  const bool table = pmin >= 0 && pmax < B * T_;
  visit_float(Op::rope, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* py = static_cast<T*>(a.out[0].raw_data());
    std::shared_ptr<const RopeTable<T>> tab;
    if (table) tab = rope_table<T>(theta, D, a.attrs.inverse, pmax + 1);
    parallel_for(B * T_, 4, [&](int64_t b, int64_t e) {
      std::vector<T> own_cs(table ? 0 : size_t(half)), own_sn(own_cs.size());
      for (int64_t bt = b; bt < e; ++bt) {
        const T* cs = table ? tab->cos.data() + pp[bt] * half : own_cs.data();
        const T* sn = table ? tab->sin.data() + pp[bt] * half : own_sn.data();
        if (!table) rope_angles(inv_freq, sign, double(pp[bt]), own_cs.data(), own_sn.data());
        for (int64_t h = 0; h < H; ++h) rope_rotate(px + (bt * H + h) * D, py + (bt * H + h) * D, cs, sn, D);
      }
    });
  });
}

// ---- dropout: keep element i iff uniform(seed, offset + i) > p; y = x keep / (1 - p) ----------
void k_dropout(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  require_contiguous(x, Op::dropout, "x");
  double p = a.attrs.p;
  uint64_t seed = a.attrs.seed, offset = a.attrs.offset;
  uint8_t* pm = a.out[1].data<uint8_t>();
  visit_float(Op::dropout, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* py = static_cast<T*>(a.out[0].raw_data());
    T scale = T(1.0 / (1.0 - p));
    parallel_for(x.numel(), 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        auto w = philox4x32(seed, offset + uint64_t(i), 0);
        bool keep = double(uniform_float(w[0])) > p;
        pm[i] = keep;
        py[i] = keep ? px[i] * scale : T(0);
      }
    });
  });
}

}  // namespace

void register_nn_kernels(KernelTable& t) {
  auto set = [&](Op op, KernelFn f) { t.fn[size_t(op)] = f; };
  set(Op::softmax_last, k_softmax<false>);
  set(Op::log_softmax_last, k_softmax<true>);
  set(Op::softmax_backward_last, k_softmax_backward<false>);
  set(Op::log_softmax_backward_last, k_softmax_backward<true>);
  set(Op::cross_entropy, k_cross_entropy);
  set(Op::cross_entropy_backward, k_cross_entropy_backward);
  set(Op::embedding, k_embedding);
  set(Op::embedding_backward, k_embedding_backward);
  set(Op::layer_norm, k_layer_norm);
  set(Op::layer_norm_backward, k_layer_norm_backward);
  set(Op::rms_norm, k_rms_norm);
  set(Op::rms_norm_backward, k_rms_norm_backward);
  set(Op::rope, k_rope);
  set(Op::dropout, k_dropout);
}

}  // namespace loom::runtime::cpu
