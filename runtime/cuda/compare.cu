// cuda/compare.cu: eq, lt, gt (-> u8 masks, numpy broadcasting) and where, the twins of
// cpu/elementwise.cpp's compare_kernel and k_where. Dtypes f32, f64, i32, i64, u8; others go
// to the host kernel.
#include "runtime/cuda/binary.cuh"

namespace loom::runtime::cuda {
namespace {

struct EqF { template <class T> __device__ uint8_t operator()(T x, T y) const { return uint8_t(x == y); } };
struct LtF { template <class T> __device__ uint8_t operator()(T x, T y) const { return uint8_t(x < y); } };
struct GtF { template <class T> __device__ uint8_t operator()(T x, T y) const { return uint8_t(x > y); } };

template <Op kOp, class F> void k_compare(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& y = a.in[1];
  Tensor& out = a.out[0];
  if (x.dtype() != y.dtype() || out.dtype() != DType::u8) return dispatch_on_host(kOp, a.in, a.out, a.attrs);
  switch (x.dtype()) {
    case DType::f32: return run_binary<float, uint8_t, F>(x, y, out);
    case DType::f64: return run_binary<double, uint8_t, F>(x, y, out);
    case DType::i32: return run_binary<int32_t, uint8_t, F>(x, y, out);
    case DType::i64: return run_binary<int64_t, uint8_t, F>(x, y, out);
    case DType::u8: return run_binary<uint8_t, uint8_t, F>(x, y, out);
    default: return dispatch_on_host(kOp, a.in, a.out, a.attrs);
  }
}

template <class T>
__global__ void where_kernel(const uint8_t* c, const T* x, const T* y, T* o, int64_t n, Indexer<4> ix) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    int64_t off[4];
    ix.offsets(i, off);
    o[off[0]] = c[off[1]] ? x[off[2]] : y[off[3]];
  }
}

void k_where(const KernelArgs& a) {
  const Tensor& cond = a.in[0];
  const Tensor& x = a.in[1];
  const Tensor& y = a.in[2];
  Tensor& out = a.out[0];
  DType dt = out.dtype();
  bool ok = cond.dtype() == DType::u8 && x.dtype() == dt && y.dtype() == dt &&
            (dt == DType::f32 || dt == DType::f64 || dt == DType::i32 || dt == DType::i64 || dt == DType::u8);
  if (!ok) return dispatch_on_host(Op::where, a.in, a.out, a.attrs);
  int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard g(device_index(out));
  const Dims& shape = out.shape();
  Indexer<4> ix = make_indexer<4>(shape, {out.strides(), broadcast_strides(cond.shape(), cond.strides(), shape),
                                          broadcast_strides(x.shape(), x.strides(), shape),
                                          broadcast_strides(y.shape(), y.strides(), shape)});
  visit_all(dt, [&](auto z) {
    using T = decltype(z);
    if constexpr (std::is_arithmetic_v<T>) {
      where_kernel<T><<<grid_for(n, kThreads), kThreads>>>(
          static_cast<const uint8_t*>(cond.raw_data()), static_cast<const T*>(x.raw_data()),
          static_cast<const T*>(y.raw_data()), static_cast<T*>(out.raw_data()), n, ix);
    }
  });
  LOOM_CUDA_LAUNCH_CHECK("where kernel");
}

}  // namespace

void register_compare_kernels(KernelTable& t) {
  t.fn[size_t(Op::eq)] = k_compare<Op::eq, EqF>;
  t.fn[size_t(Op::lt)] = k_compare<Op::lt, LtF>;
  t.fn[size_t(Op::gt)] = k_compare<Op::gt, GtF>;
  t.fn[size_t(Op::where)] = k_where;
}

}  // namespace loom::runtime::cuda
