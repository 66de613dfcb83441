// cuda/unary.cu: the unary maps (scalar ops, exp/log/sqrt/..., activations), the fused
// activation backward maps gx = gy * f'(x) and SwiGLU with its backward, twins of
// cpu/elementwise.cpp's unary_kernel, unary_backward_kernel and k_swiglu(_backward) with the
// same formulas. Contiguous f32/f64 tensors run here; anything else goes to the host kernel
// (which rejects strided inputs exactly as on the CPU).
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

struct AddScalarF { template <class T> __device__ T operator()(T x, T s) const { return x + s; } };
struct MulScalarF { template <class T> __device__ T operator()(T x, T s) const { return x * s; } };
struct PowScalarF {
  template <class T> __device__ T operator()(T x, T s) const { return s == T(2) ? x * x : d_pow(x, s); }
};
struct NegF { template <class T> __device__ T operator()(T x, T) const { return -x; } };
struct ExpF { template <class T> __device__ T operator()(T x, T) const { return d_exp(x); } };
struct LogF { template <class T> __device__ T operator()(T x, T) const { return d_log(x); } };
struct SqrtF { template <class T> __device__ T operator()(T x, T) const { return d_sqrt(x); } };
struct RsqrtF { template <class T> __device__ T operator()(T x, T) const { return T(1) / d_sqrt(x); } };
struct TanhF { template <class T> __device__ T operator()(T x, T) const { return d_tanh(x); } };
struct SigmoidF { template <class T> __device__ T operator()(T x, T) const { return T(1) / (T(1) + d_exp(-x)); } };
struct ReluF { template <class T> __device__ T operator()(T x, T) const { return x > T(0) ? x : T(0); } };
struct AbsF { template <class T> __device__ T operator()(T x, T) const { return d_abs(x); } };
struct GeluTanhF {
  template <class T> __device__ T operator()(T x, T) const {
    T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (T(1) + d_tanh(u));
  }
};
struct GeluErfF {
  template <class T> __device__ T operator()(T x, T) const { return T(0.5) * x * (T(1) + d_erf(x * T(kInvSqrt2))); }
};
struct SiluF { template <class T> __device__ T operator()(T x, T) const { return x / (T(1) + d_exp(-x)); } };

struct GeluTanhGradF {
  template <class T> __device__ T operator()(T x) const {
    T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
    T t = d_tanh(u);
    T du = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
  }
};
struct GeluErfGradF {
  template <class T> __device__ T operator()(T x) const {
    return T(0.5) * (T(1) + d_erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * d_exp(T(-0.5) * x * x);
  }
};
struct SiluGradF {
  template <class T> __device__ T operator()(T x) const {
    T s = T(1) / (T(1) + d_exp(-x));
    return s * (T(1) + x * (T(1) - s));
  }
};

// The unary maps take (x, s) with s the op's scalar (add_scalar's addend, pow's exponent...).
template <class F, class T> struct WithScalar {
  T s;
  __device__ T operator()(T x, T) const { return F{}(x, s); }
};
// gx = gy * f'(x), applied to (x, gy).
template <class G> struct TimesGrad {
  template <class T> __device__ T operator()(T x, T gy) const { return gy * G{}(x); }
};

bool plain(const Tensor& t, DType dt) { return t.dtype() == dt && t.is_contiguous(); }

template <Op kOp, class F> void k_unary(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  Tensor& out = a.out[0];
  bool ok = visit_f32_f64(x.dtype(), [](auto) {}) && plain(x, x.dtype()) && plain(out, x.dtype()) &&
            out.numel() == x.numel();
  if (!ok) return dispatch_on_host(kOp, a.in, a.out, a.attrs);
  int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard g(device_index(out));
  visit_f32_f64(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    with_pack_width<T>(aligned16(px) && aligned16(po), [&](auto v) {
      constexpr int V = decltype(v)::value;
      map_kernel<V, false><<<map_grid(n, V), kThreads>>>(px, px, po, n, WithScalar<F, T>{T(a.attrs.alpha)});
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("unary kernel");
}

template <Op kOp, class F> void k_unary_backward(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& gy = a.in[1];
  Tensor& gx = a.out[0];
  DType dt = x.dtype();
  bool ok = visit_f32_f64(dt, [](auto) {}) && plain(x, dt) && plain(gy, dt) && plain(gx, dt) &&
            gy.numel() == x.numel() && gx.numel() == x.numel();
  if (!ok) return dispatch_on_host(kOp, a.in, a.out, a.attrs);
  int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard g(device_index(gx));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pg = static_cast<const T*>(gy.raw_data());
    T* po = static_cast<T*>(gx.raw_data());
    with_pack_width<T>(aligned16(px) && aligned16(pg) && aligned16(po), [&](auto v) {
      constexpr int V = decltype(v)::value;
      map_kernel<V, true><<<map_grid(n, V), kThreads>>>(px, pg, po, n, TimesGrad<F>{});
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("unary backward kernel");
}

// ---- SwiGLU: out = silu(gate) * up, the twin of cpu/elementwise.cpp's k_swiglu -----------------
struct SwigluF {
  template <class T> __device__ T operator()(T g, T u) const { return g / (T(1) + d_exp(-g)) * u; }
};

void k_swiglu(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  const Tensor& u = a.in[1];
  Tensor& out = a.out[0];
  DType dt = g.dtype();
  bool ok = visit_f32_f64(dt, [](auto) {}) && plain(g, dt) && plain(u, dt) && plain(out, dt) &&
            u.numel() == g.numel() && out.numel() == g.numel();
  if (!ok) return dispatch_on_host(Op::swiglu, a.in, a.out, a.attrs);
  int64_t n = g.numel();
  if (n == 0) return;
  DeviceGuard guard(device_index(out));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* pu = static_cast<const T*>(u.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    with_pack_width<T>(aligned16(pg) && aligned16(pu) && aligned16(po), [&](auto v) {
      constexpr int V = decltype(v)::value;
      map_kernel<V, true><<<map_grid(n, V), kThreads>>>(pg, pu, po, n, SwigluF{});
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("swiglu kernel");
}

// ggate = gout * up * silu'(gate), silu'(x) = s (1 + x (1 - s)); gup = gout * silu(gate)
template <class T> __device__ inline void swiglu_grad(T x, T u, T go, T& gg, T& gu) {
  T s = T(1) / (T(1) + d_exp(-x));
  gu = go * x * s;
  gg = go * u * s * (T(1) + x * (T(1) - s));
}

template <int V, class T>
__global__ void swiglu_backward_kernel(const T* __restrict__ g, const T* __restrict__ u, const T* __restrict__ go,
                                       T* __restrict__ gg, T* __restrict__ gu, int64_t n) {
  const int64_t packs = n / V;
  for (int64_t p = global_thread(); p < packs; p += grid_stride()) {
    Pack<T, V> pg = load_pack<V>(g + p * V), pu = load_pack<V>(u + p * V), po = load_pack<V>(go + p * V), rg, ru;
#pragma unroll
    for (int k = 0; k < V; ++k) swiglu_grad(pg.v[k], pu.v[k], po.v[k], rg.v[k], ru.v[k]);
    store_pack<V>(gg + p * V, rg);
    store_pack<V>(gu + p * V, ru);
  }
  for (int64_t i = packs * V + global_thread(); i < n; i += grid_stride()) swiglu_grad(g[i], u[i], go[i], gg[i], gu[i]);
}

void k_swiglu_backward(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  const Tensor& u = a.in[1];
  const Tensor& go = a.in[2];
  Tensor& gg = a.out[0];
  Tensor& gu = a.out[1];
  DType dt = g.dtype();
  const int64_t n = g.numel();
  bool ok = visit_f32_f64(dt, [](auto) {});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&u, &go, &gg, &gu})
    ok = ok && plain(*t, dt) && t->numel() == n;
  if (!ok || !plain(g, dt)) return dispatch_on_host(Op::swiglu_backward, a.in, a.out, a.attrs);
  if (n == 0) return;
  DeviceGuard guard(device_index(gg));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* pu = static_cast<const T*>(u.raw_data());
    const T* po = static_cast<const T*>(go.raw_data());
    T* pgg = static_cast<T*>(gg.raw_data());
    T* pgu = static_cast<T*>(gu.raw_data());
    const bool aligned = aligned16(pg) && aligned16(pu) && aligned16(po) && aligned16(pgg) && aligned16(pgu);
    with_pack_width<T>(aligned, [&](auto v) {
      constexpr int V = decltype(v)::value;
      swiglu_backward_kernel<V><<<map_grid(n, V), kThreads>>>(pg, pu, po, pgg, pgu, n);
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("swiglu backward kernel");
}

}  // namespace

void register_unary_kernels(KernelTable& t) {
  auto set = [&](Op op, KernelFn f) { t.fn[size_t(op)] = f; };
  set(Op::add_scalar, k_unary<Op::add_scalar, AddScalarF>);
  set(Op::mul_scalar, k_unary<Op::mul_scalar, MulScalarF>);
  set(Op::pow_scalar, k_unary<Op::pow_scalar, PowScalarF>);
  set(Op::neg, k_unary<Op::neg, NegF>);
  set(Op::exp, k_unary<Op::exp, ExpF>);
  set(Op::log, k_unary<Op::log, LogF>);
  set(Op::sqrt, k_unary<Op::sqrt, SqrtF>);
  set(Op::rsqrt, k_unary<Op::rsqrt, RsqrtF>);
  set(Op::tanh, k_unary<Op::tanh, TanhF>);
  set(Op::sigmoid, k_unary<Op::sigmoid, SigmoidF>);
  set(Op::relu, k_unary<Op::relu, ReluF>);
  set(Op::abs, k_unary<Op::abs, AbsF>);
  set(Op::gelu_tanh, k_unary<Op::gelu_tanh, GeluTanhF>);
  set(Op::gelu_erf, k_unary<Op::gelu_erf, GeluErfF>);
  set(Op::silu, k_unary<Op::silu, SiluF>);
  set(Op::gelu_tanh_backward, k_unary_backward<Op::gelu_tanh_backward, GeluTanhGradF>);
  set(Op::gelu_erf_backward, k_unary_backward<Op::gelu_erf_backward, GeluErfGradF>);
  set(Op::silu_backward, k_unary_backward<Op::silu_backward, SiluGradF>);
  set(Op::swiglu, k_swiglu);
  set(Op::swiglu_backward, k_swiglu_backward);
}

}  // namespace loom::runtime::cuda
