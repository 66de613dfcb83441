// cuda/cross_entropy.cu: cross-entropy fused with log-softmax and its backward, twins of
// cpu/nn.cpp's k_cross_entropy / k_cross_entropy_backward (label smoothing, ignore_index).
//   loss_i = (1 - eps) (lse_i - x_i,t) + eps (lse_i - mean_j x_ij);  ignored rows give 0
//   glogits_ij = gloss_i (softmax_ij - (1 - eps) [j == t_i] - eps / V)
// One block per row, read in 16-byte packs where aligned; sums in double. Targets are validated
// like on the CPU: the forward kernel records the first bad row in a device word, and the host
// reads it back after the launch (one 8-byte device-to-host copy, which waits for the kernel)
// and throws the CPU's message.
#include <string>

#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

// Rows of V = np * P logits, read in packs of P (16 bytes) where aligned, else P = 1.
template <class T, int P>
__global__ void cross_entropy_kernel(const T* __restrict__ x, const int64_t* __restrict__ target,
                                     T* __restrict__ loss, T* __restrict__ lse_out, unsigned long long* bad_row,
                                     int64_t rows, int64_t V, int64_t ignore, double eps) {
  __shared__ double red[32];
  const int64_t np = V / P;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * V;
    double m = -INFINITY;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, P> p = load_pack<P>(xr + j * P);
#pragma unroll
      for (int k = 0; k < P; ++k) m = MaxOp{}(m, double(p.v[k]));
    }
    T mt = T(block_reduce(m, MaxOp{}, -INFINITY, red));
    double s = 0, sx = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, P> p = load_pack<P>(xr + j * P);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        s += double(d_exp(p.v[k] - mt));
        sx += double(p.v[k]);
      }
    }
    s = block_reduce(s, SumOp{}, 0.0, red);
    sx = block_reduce(sx, SumOp{}, 0.0, red);
    if (threadIdx.x == 0) {
      double lse = double(mt) + log(s);
      lse_out[r] = T(lse);
      int64_t t = target[r];
      if (t == ignore) {
        loss[r] = T(0);
      } else if (t < 0 || t >= V) {
        loss[r] = T(NAN);
        atomicMin(bad_row, (unsigned long long)r);
      } else {
        loss[r] = T((1 - eps) * (lse - double(xr[t])) + eps * (lse - sx / double(V)));
      }
    }
  }
}

template <class T, int P>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ x, const int64_t* __restrict__ target,
                                              const T* __restrict__ lse, const T* __restrict__ gloss,
                                              T* __restrict__ gx, int64_t rows, int64_t V, int64_t ignore,
                                              double eps) {
  const int64_t np = V / P;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* orow = gx + r * V;
    int64_t t = target[r];
    if (t == ignore) {
      Pack<T, P> zero;
#pragma unroll
      for (int k = 0; k < P; ++k) zero.v[k] = T(0);
      for (int64_t j = threadIdx.x; j < np; j += blockDim.x) store_pack<P>(orow + j * P, zero);
      continue;
    }
    const T* xr = x + r * V;
    T g = gloss[r], l = lse[r], smooth = T(eps / double(V)), hit = g * T(1 - eps);
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, P> p = load_pack<P>(xr + j * P);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        T v = g * (d_exp(p.v[k] - l) - smooth);
        if (j * P + k == t) v -= hit;
        p.v[k] = v;
      }
      store_pack<P>(orow + j * P, p);
    }
  }
}

bool plain(const Tensor& t, DType dt) { return t.defined() && t.dtype() == dt && t.is_contiguous(); }
unsigned row_grid(int64_t rows) { return unsigned(std::min<int64_t>(rows, int64_t(1) << 20)); }

void k_cross_entropy(const KernelArgs& a) {
  const Tensor& logits = a.in[0];
  const Tensor& target = a.in[1];
  DType dt = logits.dtype();
  // The optional fused gradient output (cpu/nn.cpp) runs on the host: linear_cross_entropy only
  // asks for it on the CPU; on CUDA it composes the GEMM and these kernels.
  const bool with_grad = a.out.size() > 2 && a.out[2].defined();
  if (with_grad || logits.dim() == 0 || !plain(logits, dt) || !plain(target, DType::i64) || !plain(a.out[0], dt) ||
      !plain(a.out[1], dt) || !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(Op::cross_entropy, a.in, a.out, a.attrs);
  int64_t V = logits.size(-1), N = V == 0 ? 0 : logits.numel() / V;
  if (N == 0 || V == 0) return dispatch_on_host(Op::cross_entropy, a.in, a.out, a.attrs);
  int dev = device_index(logits);
  DeviceGuard g(dev);
  Scratch flag(dev, sizeof(unsigned long long));
  LOOM_CUDA_CHECK(cudaMemsetAsync(flag.as<void>(), 0xff, sizeof(unsigned long long), 0));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(logits.raw_data());
    with_pack_width<T>(rows_pack_aligned(px, V, sizeof(T)), [&](auto v) {
      constexpr int P = decltype(v)::value;
      cross_entropy_kernel<T, P><<<row_grid(N), row_threads_for_packs(V / P)>>>(
          px, static_cast<const int64_t*>(target.raw_data()), static_cast<T*>(a.out[0].raw_data()),
          static_cast<T*>(a.out[1].raw_data()), flag.as<unsigned long long>(), N, V, a.attrs.ignore_index,
          a.attrs.label_smoothing);
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("cross_entropy kernel");
  unsigned long long bad = 0;
  LOOM_CUDA_CHECK(cudaMemcpy(&bad, flag.as<void>(), sizeof bad, cudaMemcpyDeviceToHost));
  if (bad != ~0ull) {
    int64_t t = 0;
    LOOM_CUDA_CHECK(cudaMemcpy(&t, static_cast<const int64_t*>(target.raw_data()) + bad, sizeof t,
                               cudaMemcpyDeviceToHost));
    throw std::invalid_argument("cross_entropy: target " + std::to_string(t) + " at row " + std::to_string(bad) +
                                " is outside [0, " + std::to_string(V) + ")");
  }
}

void k_cross_entropy_backward(const KernelArgs& a) {
  const Tensor& logits = a.in[0];
  const Tensor& target = a.in[1];
  const Tensor& lse = a.in[2];
  const Tensor& gloss = a.in[3];
  Tensor& gx = a.out[0];
  DType dt = logits.dtype();
  if (logits.dim() == 0 || !plain(logits, dt) || !plain(target, DType::i64) || !plain(lse, dt) ||
      !plain(gloss, dt) || !plain(gx, dt) || !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(Op::cross_entropy_backward, a.in, a.out, a.attrs);
  int64_t V = logits.size(-1), N = V == 0 ? 0 : logits.numel() / V;
  if (N == 0 || V == 0) return;
  DeviceGuard g(device_index(gx));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(logits.raw_data());
    T* pg = static_cast<T*>(gx.raw_data());
    with_pack_width<T>(rows_pack_aligned(px, V, sizeof(T)) && aligned16(pg), [&](auto v) {
      constexpr int P = decltype(v)::value;
      cross_entropy_backward_kernel<T, P><<<row_grid(N), row_threads_for_packs(V / P)>>>(
          px, static_cast<const int64_t*>(target.raw_data()), static_cast<const T*>(lse.raw_data()),
          static_cast<const T*>(gloss.raw_data()), pg, N, V, a.attrs.ignore_index, a.attrs.label_smoothing);
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("cross_entropy backward kernel");
}

}  // namespace

void register_cross_entropy_kernels(KernelTable& t) {
  t.fn[size_t(Op::cross_entropy)] = k_cross_entropy;
  t.fn[size_t(Op::cross_entropy_backward)] = k_cross_entropy_backward;
}

}  // namespace loom::runtime::cuda
