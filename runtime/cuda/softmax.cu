// cuda/softmax.cu: softmax / log-softmax over the last dim and their backward maps, twins of
// cpu/nn.cpp's k_softmax / k_softmax_backward. One block per row (grid-stride over rows), rows
// read in 16-byte packs where aligned; row sums accumulate in double as on the CPU, through a
// fixed-shape block reduction, so results are deterministic. Contiguous f32/f64 only; anything
// else goes to the host kernel.
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

// Rows of n = np * V elements, read in packs of V (rows_pack_aligned) or one by one (V = 1). The
// three passes re-read the row from L1/L2, not HBM: a block works on one row at a time.
template <class T, bool kLog, int V>
__global__ void softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n) {
  __shared__ double red[32];
  const int64_t np = n / V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    double m = -INFINITY;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V);
#pragma unroll
      for (int k = 0; k < V; ++k) m = MaxOp{}(m, double(p.v[k]));
    }
    T mt = T(block_reduce(m, MaxOp{}, -INFINITY, red));
    if (mt == d_neg_inf<T>()) mt = T(0);  // all -inf: avoid inf - inf
    double s = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V);
#pragma unroll
      for (int k = 0; k < V; ++k) s += double(d_exp(p.v[k] - mt));
    }
    s = block_reduce(s, SumOp{}, 0.0, red);
    const T lse = mt + T(log(s)), inv = T(1.0 / s);
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V);
#pragma unroll
      for (int k = 0; k < V; ++k) p.v[k] = kLog ? p.v[k] - lse : d_exp(p.v[k] - mt) * inv;
      store_pack<V>(yr + j * V, p);
    }
  }
}

// softmax: gx = y * (gy - sum(gy * y));  log-softmax: gx = gy - exp(y) * sum(gy)
template <class T, bool kLog, int V>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                        int64_t rows, int64_t n) {
  __shared__ double red[32];
  const int64_t np = n / V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * n;
    const T* gr = gy + r * n;
    T* xr = gx + r * n;
    double s = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> g = load_pack<V>(gr + j * V), p;
      if constexpr (!kLog) p = load_pack<V>(yr + j * V);
#pragma unroll
      for (int k = 0; k < V; ++k) s += kLog ? double(g.v[k]) : double(g.v[k]) * double(p.v[k]);
    }
    T st = T(block_reduce(s, SumOp{}, 0.0, red));
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> g = load_pack<V>(gr + j * V), p = load_pack<V>(yr + j * V), o;
#pragma unroll
      for (int k = 0; k < V; ++k) o.v[k] = kLog ? g.v[k] - d_exp(p.v[k]) * st : p.v[k] * (g.v[k] - st);
      store_pack<V>(xr + j * V, o);
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
  unsigned grid = unsigned(std::min<int64_t>(rows, int64_t(1) << 20));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* py = static_cast<T*>(y.raw_data());
    with_pack_width<T>(rows_pack_aligned(px, n, sizeof(T)) && aligned16(py), [&](auto v) {
      constexpr int V = decltype(v)::value;
      softmax_kernel<T, kLog, V><<<grid, row_threads_for_packs(n / V)>>>(px, py, rows, n);
    });
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
  unsigned grid = unsigned(std::min<int64_t>(rows, int64_t(1) << 20));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T* py = static_cast<const T*>(y.raw_data());
    const T* pg = static_cast<const T*>(gy.raw_data());
    T* px = static_cast<T*>(gx.raw_data());
    with_pack_width<T>(rows_pack_aligned(py, n, sizeof(T)) && aligned16(pg) && aligned16(px), [&](auto v) {
      constexpr int V = decltype(v)::value;
      softmax_backward_kernel<T, kLog, V><<<grid, row_threads_for_packs(n / V)>>>(py, pg, px, rows, n);
    });
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
