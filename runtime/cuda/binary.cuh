// cuda/binary.cuh: the broadcasting binary-map machinery shared by binary.cu (arithmetic) and
// compare.cu (comparisons -> u8). Three device paths, no host fallback:
//  - both operands the output's shape and contiguous: device.cuh's map_kernel (16-byte packs);
//  - one operand full and contiguous, the other a row vector over the last dim (bias) or a
//    single element (scalar tensor): map_row_kernel, reading v[i % cols];
//  - anything else (any broadcast, any strides, strided output): an 8-dim indexer kernel.
#pragma once
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {

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
  bool oc = out.is_contiguous();
  bool xf = x.shape() == shape && x.is_contiguous(), yf = y.shape() == shape && y.is_contiguous();
  Dims sx = broadcast_strides(x.shape(), x.strides(), shape);
  Dims sy = broadcast_strides(y.shape(), y.strides(), shape);
  const bool aligned = aligned16(px) && aligned16(py) && aligned16(po);
  int64_t cols = 0;
  if (oc && xf && yf) {
    with_pack_width<T>(aligned, [&](auto v) {
      constexpr int V = decltype(v)::value;
      map_kernel<V, true><<<map_grid(n, V), kThreads>>>(px, py, po, n, F{});
    });
  } else if (oc && ((xf && is_row_vector(sy, shape, cols)) || (yf && is_row_vector(sx, shape, cols)))) {
    const bool vec_first = !xf;  // y is the full operand
    const T* full = vec_first ? py : px;
    const T* vec = vec_first ? px : py;
    with_pack_width<T>(aligned && (cols == 1 || cols % kPack<T> == 0), [&](auto v) {
      constexpr int V = decltype(v)::value;
      if (vec_first) map_row_kernel<V, true><<<map_grid(n, V), kThreads>>>(full, vec, po, n, cols, F{});
      else map_row_kernel<V, false><<<map_grid(n, V), kThreads>>>(full, vec, po, n, cols, F{});
    });
  } else {
    Indexer<3> ix = make_indexer<3>(shape, {out.strides(), sx, sy});
    binary_strided_kernel<T, R, F><<<grid_for(n, kThreads), kThreads>>>(px, py, po, n, ix);
  }
  LOOM_CUDA_LAUNCH_CHECK("binary kernel");
}

}  // namespace loom::runtime::cuda
