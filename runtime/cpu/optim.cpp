// cpu/optim.cpp: fused optimizer updates over a parameter's flat buffer (one pass, in place).
#include <cmath>

#include "runtime/cpu/common.h"

namespace loom::runtime::cpu {
namespace {

// The update loop as a plain function over restrict pointers, so that it vectorises (this file
// is built with -fno-math-errno so sqrt needs no scalar errno path).
template <class T>
void adamw_range(const T* __restrict g, T* __restrict p, T* __restrict m, T* __restrict v, int64_t begin, int64_t end,
                 T b1, T b2, T decay, T step, T inv_sqrt_c2, T eps) {
  for (int64_t i = begin; i < end; ++i) {
    T gi = g[i];
    T mi = b1 * m[i] + (T(1) - b1) * gi;
    T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (std::sqrt(vi) * inv_sqrt_c2 + eps);
  }
}

// AdamW (Loshchilov & Hutter, 2019): decoupled decay p -= lr wd p, then the Adam step
// p -= lr m_hat / (sqrt(v_hat) + eps) with bias corrections 1 - beta^t.
void k_adamw(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  Tensor& p = a.out[0];
  Tensor& m = a.out[1];
  Tensor& v = a.out[2];
  for (const Tensor* t : std::initializer_list<const Tensor*>{&g, &p, &m, &v})
    require_contiguous(*t, Op::adamw_step, "operand");
  double lr = a.attrs.alpha, b1 = a.attrs.beta, b2 = a.attrs.p, eps = a.attrs.eps, wd = a.attrs.scale;
  double t = double(a.attrs.k);
  double c1 = 1.0 - std::pow(b1, t), c2 = 1.0 - std::pow(b2, t);
  visit_float(Op::adamw_step, p.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pg = static_cast<const T*>(g.raw_data());
    T* pp = static_cast<T*>(p.raw_data());
    T* pm = static_cast<T*>(m.raw_data());
    T* pv = static_cast<T*>(v.raw_data());
    const T step = T(lr / c1), decay = T(1.0 - lr * wd), tb1 = T(b1), tb2 = T(b2), inv_sqrt_c2 = T(1.0 / std::sqrt(c2));
    const T teps = T(eps);
    parallel_for(p.numel(), 16384, [&](int64_t s, int64_t e) {
      adamw_range<T>(pg, pp, pm, pv, s, e, tb1, tb2, decay, step, inv_sqrt_c2, teps);
    });
  });
}

// SGD with (optional) heavy-ball momentum and L2 weight decay folded into the gradient.
void k_sgd(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  Tensor& p = a.out[0];
  bool has_m = a.out.size() > 1 && a.out[1].defined();
  double lr = a.attrs.alpha, mu = a.attrs.beta, wd = a.attrs.scale;
  visit_float(Op::sgd_step, p.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pg = static_cast<const T*>(g.raw_data());
    T* pp = static_cast<T*>(p.raw_data());
    T* pm = has_m ? static_cast<T*>(a.out[1].raw_data()) : nullptr;
    parallel_for(p.numel(), 16384, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        T d = pg[i] + T(wd) * pp[i];
        if (pm) d = pm[i] = T(mu) * pm[i] + d;
        pp[i] -= T(lr) * d;
      }
    });
  });
}

}  // namespace

void register_optim_kernels(KernelTable& t) {
  t.fn[size_t(Op::adamw_step)] = k_adamw;
  t.fn[size_t(Op::sgd_step)] = k_sgd;
}

}  // namespace loom::runtime::cpu
