// cuda/binary.cuh: the broadcasting binary-map machinery shared by binary.cu (arithmetic) and
// compare.cu (comparisons -> u8). Three device paths, no host fallback:
//  - both operands the output's shape and contiguous: a flat kernel;
//  - one operand full and contiguous, the other a row vector over the last dim (bias) or a
//    single element (scalar tensor): a flat kernel reading v[i % cols];
//  - anything else (any broadcast, any strides, strided output): an 8-dim indexer kernel.
#pragma once
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {

template <class T, class R, class F>
__global__ void binary_contig_kernel(const T* __restrict__ x, const T* __restrict__ y, R* __restrict__ o,
                                     int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) o[i] = F{}(x[i], y[i]);
}

// o[i] = f(full[i], vec[i % cols]) (kVecFirst: f(vec[i % cols], full[i])).
template <class T, class R, class F, bool kVecFirst>
__global__ void binary_row_kernel(const T* __restrict__ full, const T* __restrict__ vec, R* __restrict__ o,
                                  int64_t n, int64_t cols) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    T v = vec[cols == 1 ? 0 : i % cols];
    o[i] = kVecFirst ? F{}(v, full[i]) : F{}(full[i], v);
  }
}

template <class T, class R, class F>
__global__ void binary_strided_kernel(const T* x, const T* y, R* o, int64_t n, Indexer<3> ix) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    int64_t off[3];
    ix.offsets(i, off);
    o[off[0]] = F{}(x[off[1]], y[off[2]]);
  }
}

// True when strides `s` (already broadcast to `shape`) read one row vector over the last dim
// (cols = shape.back()) or one element (cols = 1).
inline bool is_row_vector(const Dims& s, const Dims& shape, int64_t& cols) {
  int nd = shape.size();
  if (nd == 0) return false;
  for (int d = 0; d + 1 < nd; ++d)
    if (shape[d] != 1 && s[d] != 0) return false;
  if (shape[nd - 1] == 1 || s[nd - 1] == 0) {
    cols = 1;
    return true;
  }
  if (s[nd - 1] == 1) {
    cols = shape[nd - 1];
    return true;
  }
  return false;
}

// Runs out = f(x, y) with numpy broadcasting on the device of `out`.
template <class T, class R, class F> void run_binary(const Tensor& x, const Tensor& y, Tensor& out) {
  const Dims& shape = out.shape();
  int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard g(device_index(out));
  const T* px = static_cast<const T*>(x.raw_data());
  const T* py = static_cast<const T*>(y.raw_data());
  R* po = static_cast<R*>(out.raw_data());
  unsigned grid = grid_for(n, kThreads);
  bool oc = out.is_contiguous();
  bool xf = x.shape() == shape && x.is_contiguous(), yf = y.shape() == shape && y.is_contiguous();
  Dims sx = broadcast_strides(x.shape(), x.strides(), shape);
  Dims sy = broadcast_strides(y.shape(), y.strides(), shape);
  int64_t cols = 0;
  if (oc && xf && yf) {
    binary_contig_kernel<T, R, F><<<grid, kThreads>>>(px, py, po, n);
  } else if (oc && xf && is_row_vector(sy, shape, cols)) {
    binary_row_kernel<T, R, F, false><<<grid, kThreads>>>(px, py, po, n, cols);
  } else if (oc && yf && is_row_vector(sx, shape, cols)) {
    binary_row_kernel<T, R, F, true><<<grid, kThreads>>>(py, px, po, n, cols);
  } else {
    Indexer<3> ix = make_indexer<3>(shape, {out.strides(), sx, sy});
    binary_strided_kernel<T, R, F><<<grid, kThreads>>>(px, py, po, n, ix);
  }
  LOOM_CUDA_LAUNCH_CHECK("binary kernel");
}

}  // namespace loom::runtime::cuda
