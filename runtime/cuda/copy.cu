// cuda/copy.cu: copy (with dtype casts and any strides) and fill, the twins of
// cpu/elementwise.cpp's k_copy / k_fill. Every case runs on the device:
//  - contiguous, same dtype: cudaMemcpyAsync device-to-device;
//  - contiguous cast among all seven dtypes: one flat kernel;
//  - anything strided: one kernel indexing up to 8 (merged) dims, shape/strides by value.
#include <cstring>

#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

template <class D, class S>
__global__ void copy_contig_kernel(D* __restrict__ d, const S* __restrict__ s, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) d[i] = convert_d<D>(s[i]);
}

template <class D, class S> __global__ void copy_strided_kernel(D* d, const S* s, int64_t n, Indexer<2> ix) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    int64_t off[2];
    ix.offsets(i, off);
    d[off[0]] = convert_d<D>(s[off[1]]);
  }
}

void k_copy(const KernelArgs& a) {
  const Tensor& src = a.in[0];
  Tensor& dst = a.out[0];
  if (src.shape() != dst.shape()) throw std::logic_error("copy: shapes differ");
  int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard g(device_index(dst));
  bool contig = src.is_contiguous() && dst.is_contiguous();
  if (contig && src.dtype() == dst.dtype()) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), size_t(n) * dst.element_size(),
                                    cudaMemcpyDeviceToDevice, 0));
    return;
  }
  Indexer<2> ix;
  if (!contig) ix = make_indexer<2>(dst.shape(), {dst.strides(), src.strides()});
  visit_all(dst.dtype(), [&](auto dz) {
    using D = decltype(dz);
    visit_all(src.dtype(), [&](auto sz) {
      using S = decltype(sz);
      D* d = static_cast<D*>(dst.raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      if (contig) {
        copy_contig_kernel<D, S><<<grid_for(n, kThreads), kThreads>>>(d, s, n);
      } else {
        copy_strided_kernel<D, S><<<grid_for(n, kThreads), kThreads>>>(d, s, n, ix);
      }
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("copy kernel");
}

// ---- fill -------------------------------------------------------------------------------------
template <class T> __global__ void fill_contig_kernel(T* d, int64_t n, T v) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) d[i] = v;
}
template <class T> __global__ void fill_strided_kernel(T* d, int64_t n, Indexer<1> ix, T v) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    int64_t off[1];
    ix.offsets(i, off);
    d[off[0]] = v;
  }
}

// The host-side value, converted exactly as cpu::from_double.
template <class T> T host_value(double v) {
  if constexpr (std::is_same_v<T, bf16>) return float_to_bf16(float(v));
  else if constexpr (std::is_same_v<T, f16>) return float_to_f16(float(v));
  else return T(v);
}

void k_fill(const KernelArgs& a) {
  Tensor& dst = a.out[0];
  int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard g(device_index(dst));
  visit_all(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T v = host_value<T>(a.attrs.alpha);
    T* d = static_cast<T*>(dst.raw_data());
    if (dst.is_contiguous()) {
      unsigned char bytes[sizeof(T)];
      std::memcpy(bytes, &v, sizeof(T));
      bool uniform = true;
      for (size_t i = 1; i < sizeof(T); ++i) uniform &= bytes[i] == bytes[0];
      if (uniform) {  // 0, and any u8 value: a memset
        LOOM_CUDA_CHECK(cudaMemsetAsync(d, bytes[0], size_t(n) * sizeof(T), 0));
        return;
      }
      fill_contig_kernel<T><<<grid_for(n, kThreads), kThreads>>>(d, n, v);
    } else {
      Indexer<1> ix = make_indexer<1>(dst.shape(), {dst.strides()});
      fill_strided_kernel<T><<<grid_for(n, kThreads), kThreads>>>(d, n, ix, v);
    }
    LOOM_CUDA_LAUNCH_CHECK("fill kernel");
  });
}

}  // namespace

void register_copy_kernels(KernelTable& t) {
  t.fn[size_t(Op::copy)] = k_copy;
  t.fn[size_t(Op::fill)] = k_fill;
}

}  // namespace loom::runtime::cuda
