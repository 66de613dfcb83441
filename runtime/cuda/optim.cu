// cuda/optim.cu: the fused optimizer updates (one pass over a parameter's flat buffer, in place),
// twins of cpu/optim.cpp's k_adamw and k_sgd with the same formulas and the same precision (the
// parameter's dtype). Contiguous f32/f64 only; anything else goes to the host kernel.
#include <cmath>

#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

bool plain(const Tensor& t, DType dt) { return t.defined() && t.dtype() == dt && t.is_contiguous(); }

// AdamW: decoupled decay, then the Adam step with bias corrections folded into `step` and
// `inv_sqrt_c2` on the host, as on the CPU.
template <class T> struct AdamW {
  T b1, b2, decay, step, inv_sqrt_c2, eps;
  __device__ void operator()(T g, T& p, T& m, T& v) const {
    T mi = b1 * m + (T(1) - b1) * g;
    T vi = b2 * v + (T(1) - b2) * g * g;
    m = mi;
    v = vi;
    p = p * decay - step * mi / (d_sqrt(vi) * inv_sqrt_c2 + eps);
  }
};

template <int V, class T>
__global__ void adamw_kernel(const T* __restrict__ g, T* __restrict__ p, T* __restrict__ m, T* __restrict__ v,
                             int64_t n, AdamW<T> f) {
  const int64_t packs = n / V;
  for (int64_t i = global_thread(); i < packs; i += grid_stride()) {
    Pack<T, V> pg = load_pack<V>(g + i * V), pp = load_pack<V>(p + i * V), pm = load_pack<V>(m + i * V),
               pv = load_pack<V>(v + i * V);
#pragma unroll
    for (int k = 0; k < V; ++k) f(pg.v[k], pp.v[k], pm.v[k], pv.v[k]);
    store_pack<V>(p + i * V, pp);
    store_pack<V>(m + i * V, pm);
    store_pack<V>(v + i * V, pv);
  }
  for (int64_t i = packs * V + global_thread(); i < n; i += grid_stride()) f(g[i], p[i], m[i], v[i]);
}

void k_adamw(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  Tensor& p = a.out[0];
  Tensor& m = a.out[1];
  Tensor& v = a.out[2];
  DType dt = p.dtype();
  const int64_t n = p.numel();
  bool ok = visit_f32_f64(dt, [](auto) {});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&g, &p, &m, &v})
    ok = ok && plain(*t, dt) && t->numel() == n;
  if (!ok) return dispatch_on_host(Op::adamw_step, a.in, a.out, a.attrs);
  if (n == 0) return;
  double lr = a.attrs.alpha, b1 = a.attrs.beta, b2 = a.attrs.p, eps = a.attrs.eps, wd = a.attrs.scale;
  double t = double(a.attrs.k);
  double c1 = 1.0 - std::pow(b1, t), c2 = 1.0 - std::pow(b2, t);
  DeviceGuard guard(device_index(p));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    AdamW<T> f{T(b1), T(b2), T(1.0 - lr * wd), T(lr / c1), T(1.0 / std::sqrt(c2)), T(eps)};
    const T* pg = static_cast<const T*>(g.raw_data());
    T* pp = static_cast<T*>(p.raw_data());
    T* pm = static_cast<T*>(m.raw_data());
    T* pv = static_cast<T*>(v.raw_data());
    with_pack_width<T>(aligned16(pg) && aligned16(pp) && aligned16(pm) && aligned16(pv), [&](auto w) {
      constexpr int V = decltype(w)::value;
      adamw_kernel<V><<<map_grid(n, V), kThreads>>>(pg, pp, pm, pv, n, f);
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("adamw kernel");
}

// SGD with optional heavy-ball momentum (m null: none) and L2 decay folded into the gradient.
template <class T>
__global__ void sgd_kernel(const T* __restrict__ g, T* __restrict__ p, T* __restrict__ m, int64_t n, T lr, T mu,
                           T wd) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    T d = g[i] + wd * p[i];
    if (m) d = m[i] = mu * m[i] + d;
    p[i] -= lr * d;
  }
}

void k_sgd(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  Tensor& p = a.out[0];
  const bool has_m = a.out.size() > 1 && a.out[1].defined();
  DType dt = p.dtype();
  const int64_t n = p.numel();
  bool ok = visit_f32_f64(dt, [](auto) {}) && plain(g, dt) && plain(p, dt) && g.numel() == n;
  if (has_m) ok = ok && plain(a.out[1], dt) && a.out[1].numel() == n;
  if (!ok) return dispatch_on_host(Op::sgd_step, a.in, a.out, a.attrs);
  if (n == 0) return;
  DeviceGuard guard(device_index(p));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    sgd_kernel<T><<<grid_for(n, kThreads), kThreads>>>(static_cast<const T*>(g.raw_data()),
                                                       static_cast<T*>(p.raw_data()),
                                                       has_m ? static_cast<T*>(a.out[1].raw_data()) : nullptr, n,
                                                       T(a.attrs.alpha), T(a.attrs.beta), T(a.attrs.scale));
  });
  LOOM_CUDA_LAUNCH_CHECK("sgd kernel");
}

}  // namespace

void register_optim_kernels(KernelTable& t) {
  t.fn[size_t(Op::adamw_step)] = k_adamw;
  t.fn[size_t(Op::sgd_step)] = k_sgd;
}

}  // namespace loom::runtime::cuda
