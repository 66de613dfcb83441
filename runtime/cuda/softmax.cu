// cuda/softmax.cu: softmax / log-softmax over the last dim and their backward maps, twins of
// cpu/nn.cpp's k_softmax / k_softmax_backward. One block per row (grid-stride over rows); row
// sums accumulate in double as on the CPU, through a fixed-shape block reduction, so results
// are deterministic. Contiguous f32/f64 only; anything else goes to the host kernel.
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

template <class T, bool kLog>
__global__ void softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    double m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = MaxOp{}(m, double(xr[j]));
    T mt = T(block_reduce(m, MaxOp{}, -INFINITY, red));
    if (mt == d_neg_inf<T>()) mt = T(0);  // all -inf: avoid inf - inf
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += double(d_exp(xr[j] - mt));
    s = block_reduce(s, SumOp{}, 0.0, red);
    if constexpr (kLog) {
      T lse = mt + T(log(s));
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - lse;
    } else {
      T inv = T(1.0 / s);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = d_exp(xr[j] - mt) * inv;
    }
  }
}

// softmax: gx = y * (gy - sum(gy * y));  log-softmax: gx = gy - exp(y) * sum(gy)
template <class T, bool kLog>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                        int64_t rows, int64_t n) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * n;
    const T* gr = gy + r * n;
    T* xr = gx + r * n;
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      s += kLog ? double(gr[j]) : double(gr[j]) * double(yr[j]);
    T st = T(block_reduce(s, SumOp{}, 0.0, red));
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if constexpr (kLog) xr[j] = gr[j] - d_exp(yr[j]) * st;
      else xr[j] = yr[j] * (gr[j] - st);
    }
  }
}

bool plain(const Tensor& t, DType dt) { return t.defined() && t.dtype() == dt && t.is_contiguous(); }

template <bool kLog> void k_softmax(const KernelArgs& a) {
  constexpr Op kOp = kLog ? Op::log_softmax_last : Op::softmax_last;
  const Tensor& x = a.in[0];
  Tensor& y = a.out[0];
  DType dt = x.dtype();
  if (x.dim() == 0 || !plain(x, dt) || !plain(y, dt) || y.numel() != x.numel() ||
      !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(kOp, a.in, a.out, a.attrs);
  int64_t n = x.size(-1), rows = n == 0 ? 0 : x.numel() / n;
  if (rows == 0) return;
  DeviceGuard g(device_index(y));
  int threads = row_threads(n);
  unsigned grid = unsigned(std::min<int64_t>(rows, int64_t(1) << 20));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    softmax_kernel<T, kLog><<<grid, threads>>>(static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()),
                                               rows, n);
  });
  LOOM_CUDA_LAUNCH_CHECK("softmax kernel");
}

template <bool kLog> void k_softmax_backward(const KernelArgs& a) {
  constexpr Op kOp = kLog ? Op::log_softmax_backward_last : Op::softmax_backward_last;
  const Tensor& y = a.in[0];
  const Tensor& gy = a.in[1];
  Tensor& gx = a.out[0];
  DType dt = y.dtype();
  if (y.dim() == 0 || !plain(y, dt) || !plain(gy, dt) || !plain(gx, dt) || gy.numel() != y.numel() ||
      gx.numel() != y.numel() || !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(kOp, a.in, a.out, a.attrs);
  int64_t n = y.size(-1), rows = n == 0 ? 0 : y.numel() / n;
  if (rows == 0) return;
  DeviceGuard g(device_index(gx));
  int threads = row_threads(n);
  unsigned grid = unsigned(std::min<int64_t>(rows, int64_t(1) << 20));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    softmax_backward_kernel<T, kLog><<<grid, threads>>>(static_cast<const T*>(y.raw_data()),
                                                        static_cast<const T*>(gy.raw_data()),
                                                        static_cast<T*>(gx.raw_data()), rows, n);
  });
  LOOM_CUDA_LAUNCH_CHECK("softmax backward kernel");
}

}  // namespace

void register_softmax_kernels(KernelTable& t) {
  t.fn[size_t(Op::softmax_last)] = k_softmax<false>;
  t.fn[size_t(Op::log_softmax_last)] = k_softmax<true>;
  t.fn[size_t(Op::softmax_backward_last)] = k_softmax_backward<false>;
  t.fn[size_t(Op::log_softmax_backward_last)] = k_softmax_backward<true>;
}

}  // namespace loom::runtime::cuda
