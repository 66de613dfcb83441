// cuda/binary.cu: add, sub, mul, div, maximum, minimum with numpy broadcasting, the twins of
// cpu/elementwise.cpp's arith_kernel (f32, f64, i32, i64; other dtypes go to the host kernel,
// which reports them as the CPU does).
#include "runtime/cuda/binary.cuh"

namespace loom::runtime::cuda {
namespace {

struct AddF { template <class T> __device__ T operator()(T x, T y) const { return x + y; } };
struct SubF { template <class T> __device__ T operator()(T x, T y) const { return x - y; } };
struct MulF { template <class T> __device__ T operator()(T x, T y) const { return x * y; } };
struct DivF { template <class T> __device__ T operator()(T x, T y) const { return x / y; } };
struct MaxF { template <class T> __device__ T operator()(T x, T y) const { return x >= y ? x : y; } };
struct MinF { template <class T> __device__ T operator()(T x, T y) const { return x <= y ? x : y; } };

template <Op kOp, class F> void k_arith(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& y = a.in[1];
  Tensor& out = a.out[0];
  if (x.dtype() != y.dtype() || x.dtype() != out.dtype()) throw std::logic_error("binary op: dtypes differ");
  switch (x.dtype()) {
    case DType::f32: return run_binary<float, float, F>(x, y, out);
    case DType::f64: return run_binary<double, double, F>(x, y, out);
    case DType::i32: return run_binary<int32_t, int32_t, F>(x, y, out);
    case DType::i64: return run_binary<int64_t, int64_t, F>(x, y, out);
    default: return dispatch_on_host(kOp, a.in, a.out, a.attrs);
  }
}

}  // namespace

void register_binary_kernels(KernelTable& t) {
  t.fn[size_t(Op::add)] = k_arith<Op::add, AddF>;
  t.fn[size_t(Op::sub)] = k_arith<Op::sub, SubF>;
  t.fn[size_t(Op::mul)] = k_arith<Op::mul, MulF>;
  t.fn[size_t(Op::div)] = k_arith<Op::div, DivF>;
  t.fn[size_t(Op::maximum)] = k_arith<Op::maximum, MaxF>;
  t.fn[size_t(Op::minimum)] = k_arith<Op::minimum, MinF>;
}

}  // namespace loom::runtime::cuda
