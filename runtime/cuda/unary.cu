// cuda/unary.cu: the unary maps (scalar ops, exp/log/sqrt/..., activations) and the fused
// activation backward maps gx = gy * f'(x), twins of cpu/elementwise.cpp's unary_kernel and
// unary_backward_kernel with the same formulas. Contiguous f32/f64 tensors run here; anything
// else goes to the host kernel (which rejects strided inputs exactly as on the CPU).
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

template <class T, class F> __global__ void unary_kernel(const T* __restrict__ x, T* __restrict__ o, int64_t n, T s) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) o[i] = F{}(x[i], s);
}
template <class T, class F>
__global__ void unary_backward_kernel(const T* __restrict__ x, const T* __restrict__ gy, T* __restrict__ gx,
                                      int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) gx[i] = gy[i] * F{}(x[i]);
}

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
    unary_kernel<T, F><<<grid_for(n, kThreads), kThreads>>>(static_cast<const T*>(x.raw_data()),
                                                            static_cast<T*>(out.raw_data()), n, T(a.attrs.alpha));
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
    unary_backward_kernel<T, F><<<grid_for(n, kThreads), kThreads>>>(
        static_cast<const T*>(x.raw_data()), static_cast<const T*>(gy.raw_data()), static_cast<T*>(gx.raw_data()), n);
  });
  LOOM_CUDA_LAUNCH_CHECK("unary backward kernel");
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
}

}  // namespace loom::runtime::cuda
