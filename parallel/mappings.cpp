// mappings.cpp: the conjugate pairs of mappings.h. A collective along dim d treats x as
// [A, S, B] (A = extent before d, B = after) and moves d outermost, where the collectives
// split and concatenate: all_gather fills [n, A, S, B] and permutes to [A, n S, B];
// reduce_scatter permutes [A, n S, B] to [n, A, S, B] and keeps block r.
#include "parallel/mappings.h"

#include <stdexcept>

#include "runtime/autograd.h"
#include "runtime/ops.h"

namespace loom::parallel {
namespace {

using runtime::Dims;

int64_t norm_dim(const Tensor& x, int64_t dim, const char* op, const Comm& comm) {
  int64_t d = dim < 0 ? dim + x.dim() : dim;
  if (x.dim() == 0 || d < 0 || d >= x.dim())
    throw std::invalid_argument(std::string(op) + " on group " + comm.name() + ": dim " + std::to_string(dim) +
                                " is out of range for shape " + x.shape().str());
  return d;
}

struct Around {
  int64_t A = 1, S = 1, B = 1;
};
Around around(const Tensor& x, int64_t d) {
  Around a;
  for (int64_t i = 0; i < x.dim(); ++i) (i < d ? a.A : i == d ? a.S : a.B) *= x.size(i);
  return a;
}

int64_t chunk_rows(const Tensor& x, int64_t d, const char* op, const Comm& comm) {
  if (x.size(d) % comm.size() != 0)
    throw std::invalid_argument(std::string(op) + " on group " + comm.name() + ": size " + std::to_string(x.size(d)) +
                                " along dim " + std::to_string(d) + " of " + x.shape().str() + " does not divide by " +
                                std::to_string(comm.size()) + " ranks");
  return x.size(d) / comm.size();
}

Tensor gather_along(const Tensor& x, Comm& comm, int64_t dim, const char* op) {
  runtime::NoGradGuard ng;
  const int64_t d = norm_dim(x, dim, op, comm), n = comm.size();
  if (n == 1) return x.contiguous().detach();
  const Around a = around(x, d);
  Tensor buf = Tensor::empty({n, a.A * a.S * a.B}, x.dtype(), x.device());
  comm.all_gather(x.contiguous().view({1, a.A * a.S * a.B}), buf);
  Dims shape = x.shape();
  shape[d] = n * a.S;
  if (a.A == 1) return buf.view(shape);
  return buf.view({n, a.A, a.S, a.B}).permute({1, 0, 2, 3}).contiguous().view(shape);
}

Tensor reduce_scatter_along(const Tensor& x, Comm& comm, int64_t dim, const char* op) {
  runtime::NoGradGuard ng;
  const int64_t d = norm_dim(x, dim, op, comm), n = comm.size();
  const int64_t S = chunk_rows(x, d, op, comm);
  Around a = around(x, d);
  a.S = S;
  Tensor in = x.contiguous();
  in = a.A == 1 ? in.view({n, a.S * a.B})
                : in.view({a.A, n, a.S, a.B}).permute({1, 0, 2, 3}).contiguous().view({n, a.A * a.S * a.B});
  Tensor out = Tensor::empty({1, a.A * a.S * a.B}, x.dtype(), x.device());
  comm.reduce_scatter(in, out);
  Dims shape = x.shape();
  shape[d] = S;
  return out.view(shape);
}

Tensor chunk_along(const Tensor& x, Comm& comm, int64_t dim, const char* op) {
  runtime::NoGradGuard ng;
  const int64_t d = norm_dim(x, dim, op, comm);
  const int64_t S = chunk_rows(x, d, op, comm);
  return x.narrow(d, comm.rank() * S, S).contiguous();
}

Tensor reduce_copy(const Tensor& x, Comm& comm) {
  runtime::NoGradGuard ng;
  if (comm.size() == 1) return x.detach();
  Tensor y = x.clone();
  comm.all_reduce(y);
  return y;
}

// Attaches `backward` (grad of out -> grad of x) as out's grad_fn when x needs a gradient.
template <class Fn>
Tensor with_backward(const char* name, const Tensor& x, Tensor out, Fn backward) {
  if (runtime::any_requires_grad({&x})) {
    auto node = std::make_shared<runtime::LambdaNode>(name, [backward](std::vector<Tensor>&& g) {
      return std::vector<Tensor>{g[0].defined() ? backward(g[0]) : Tensor()};
    });
    runtime::record(node, {x}, {&out});
  }
  return out;
}

}  // namespace

Tensor all_reduced(const Tensor& x, Comm& comm) { return reduce_copy(x, comm); }
Tensor all_gathered(const Tensor& x, Comm& comm, int64_t dim) { return gather_along(x, comm, dim, "all_gathered"); }
Tensor reduce_scattered(const Tensor& x, Comm& comm, int64_t dim) {
  return reduce_scatter_along(x, comm, dim, "reduce_scattered");
}
Tensor local_chunk(const Tensor& x, Comm& comm, int64_t dim) { return chunk_along(x, comm, dim, "local_chunk"); }

Tensor copy_to_region(const Tensor& x, const CommPtr& comm) {
  return with_backward("CopyToRegionBackward", x, x.detach(),
                       [comm](const Tensor& g) { return reduce_copy(g, *comm); });
}

Tensor reduce_from_region(const Tensor& x, const CommPtr& comm) {
  return with_backward("ReduceFromRegionBackward", x, reduce_copy(x, *comm), [](const Tensor& g) { return g; });
}

Tensor scatter_to_region(const Tensor& x, const CommPtr& comm, int64_t dim) {
  const char* op = "scatter_to_region";
  const int64_t d = norm_dim(x, dim, op, *comm);
  return with_backward("ScatterToRegionBackward", x, chunk_along(x, *comm, d, op),
                       [comm, d, op](const Tensor& g) { return gather_along(g, *comm, d, op); });
}

Tensor gather_from_region(const Tensor& x, const CommPtr& comm, int64_t dim) {
  const char* op = "gather_from_region";
  const int64_t d = norm_dim(x, dim, op, *comm);
  return with_backward("GatherFromRegionBackward", x, gather_along(x, *comm, d, op),
                       [comm, d, op](const Tensor& g) { return chunk_along(g, *comm, d, op); });
}

Tensor reduce_scatter_to_sequence(const Tensor& x, const CommPtr& comm, int64_t dim) {
  const char* op = "reduce_scatter_to_sequence";
  const int64_t d = norm_dim(x, dim, op, *comm);
  return with_backward("ReduceScatterToSequenceBackward", x, reduce_scatter_along(x, *comm, d, op),
                       [comm, d, op](const Tensor& g) { return gather_along(g, *comm, d, op); });
}

Tensor all_gather_from_sequence(const Tensor& x, const CommPtr& comm, int64_t dim, bool grad_is_partial) {
  const char* op = "all_gather_from_sequence";
  const int64_t d = norm_dim(x, dim, op, *comm);
  return with_backward("AllGatherFromSequenceBackward", x, gather_along(x, *comm, d, op),
                       [comm, d, op, grad_is_partial](const Tensor& g) {
                         return grad_is_partial ? reduce_scatter_along(g, *comm, d, op) : chunk_along(g, *comm, d, op);
                       });
}

}  // namespace loom::parallel
