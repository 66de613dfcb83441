// ops_util.h: small helpers shared by the ops_*.cpp files (not part of the public API).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/autograd.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"

namespace loom::runtime::detail {

inline Tensor empty_like(const Tensor& x) { return Tensor::empty(x.shape(), x.dtype(), x.device()); }
inline Tensor new_empty(const Tensor& like, const Dims& shape, DType dt) {
  return Tensor::empty(shape, dt, like.device());
}
inline Tensor new_empty(const Tensor& like, const Dims& shape) { return new_empty(like, shape, like.dtype()); }

// Records a LambdaNode named `name` for `out` when any input needs a gradient.
template <class Fn>
void record_lambda(const char* name, const std::vector<Tensor>& inputs, Tensor& out, Fn&& fn) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<LambdaNode>(name, std::forward<Fn>(fn));
  record(node, inputs, {&out});
}

[[noreturn]] inline void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(std::string(op) + ": " + msg);
}
inline void require_floating(const Tensor& t, const char* op) {
  if (!is_floating(t.dtype())) fail(op, std::string("needs a floating tensor, got ") + dtype_name(t.dtype()));
}

}  // namespace loom::runtime::detail
