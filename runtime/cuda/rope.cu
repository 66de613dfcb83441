// cuda/rope.cu: rotary position embedding (Hugging Face rotate-half), the twin of cpu/nn.cpp's
// k_rope: for i < D/2, angle = position * theta^(-2i/D) (in double, as on the CPU),
//   y_i = x_i cos - x_{i+D/2} sin,   y_{i+D/2} = x_{i+D/2} cos + x_i sin   (sin negated: inverse);
// an odd last channel passes through. One block per token, threads over (head, i).
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

template <class T>
__global__ void rope_kernel(const T* __restrict__ x, const int64_t* __restrict__ pos, T* __restrict__ y, int64_t BT,
                            int64_t H, int64_t D, double theta, double sign) {
  const int64_t half = D / 2;
  for (int64_t bt = blockIdx.x; bt < BT; bt += gridDim.x) {
    const double p = double(pos[bt]);
    for (int64_t e = threadIdx.x; e < H * half; e += blockDim.x) {
      const int64_t h = e / half, i = e % half;
      const double ang = p * (1.0 / pow(theta, double(2 * i) / double(D)));
      const T cs = T(cos(ang)), sn = T(sign * sin(ang));
      const T* xr = x + (bt * H + h) * D;
      T* yr = y + (bt * H + h) * D;
      const T x1 = xr[i], x2 = xr[i + half];
      yr[i] = x1 * cs - x2 * sn;
      yr[i + half] = x2 * cs + x1 * sn;
    }
    if (D % 2)
      for (int64_t h = threadIdx.x; h < H; h += blockDim.x) y[(bt * H + h) * D + D - 1] = x[(bt * H + h) * D + D - 1];
  }
}

void k_rope(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& pos = a.in[1];
  Tensor& y = a.out[0];
  DType dt = x.dtype();
  bool ok = visit_f32_f64(dt, [](auto) {}) && x.dim() == 4 && x.is_contiguous() && y.dtype() == dt &&
            y.is_contiguous() && pos.dtype() == DType::i64 && pos.is_contiguous();
  if (!ok) return dispatch_on_host(Op::rope, a.in, a.out, a.attrs);
  const int64_t BT = x.size(0) * x.size(1), H = x.size(2), D = x.size(3);
  if (BT * H * D == 0) return;
  DeviceGuard g(device_index(x));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    rope_kernel<T><<<unsigned(std::min<int64_t>(BT, int64_t(1) << 20)), row_threads(std::max<int64_t>(H * (D / 2), H))>>>(
        static_cast<const T*>(x.raw_data()), static_cast<const int64_t*>(pos.raw_data()), static_cast<T*>(y.raw_data()),
        BT, H, D, a.attrs.alpha, a.attrs.inverse ? -1.0 : 1.0);
  });
  LOOM_CUDA_LAUNCH_CHECK("rope kernel");
}

}  // namespace

void register_rope_kernels(KernelTable& t) { t.fn[size_t(Op::rope)] = k_rope; }

}  // namespace loom::runtime::cuda
