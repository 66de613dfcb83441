// cuda/composite.cpp: ops the CUDA backend runs as a sequence of its own kernels, with no device
// code of their own (each step is a tested twin of a CPU kernel).
//   sum_squares: cast to f64, square (mul), sum_dim over all elements, all on the device; the
//   CPU kernel does the same arithmetic in one pass (an f32 square is exact in f64, so the two
//   differ only in the order of the f64 additions).
#include "runtime/kernels.h"

namespace loom::runtime::cuda {
namespace {

void k_sum_squares(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const int64_t n = x.numel();
  Tensor x64 = x.dtype() == DType::f64 ? x : x.to(DType::f64);
  Tensor squares = Tensor::empty(x64.shape(), DType::f64, x.device());
  dispatch(Op::mul, {x64, x64}, {squares});
  Tensor out = a.out[0].view({1, 1});
  dispatch(Op::sum_dim, {squares.view({1, n, 1})}, {out});
}

}  // namespace

void register_composite_kernels(KernelTable& t) { t.fn[size_t(Op::sum_squares)] = k_sum_squares; }

}  // namespace loom::runtime::cuda
