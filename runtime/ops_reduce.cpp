// ops_reduce.cpp: sum/mean/max/argmax over dims, and matmul/linear on the GEMM kernel.
#include <algorithm>

#include "runtime/ops_util.h"

namespace loom::runtime {
using namespace detail;

namespace {

// Lays x out as [O, N, I] with the reduced dims as N: in place when they are adjacent and x is
// contiguous, else after permuting them to the end.
struct OniView {
  Tensor x3;        // [O, N, I] contiguous
  Dims kept_shape;  // output shape with keepdim
};
OniView to_oni(const Tensor& x, std::vector<int64_t> dims, const char* op) {
  int nd = x.dim();
  std::vector<bool> red(size_t(std::max(nd, 1)), false);
  for (int64_t& d : dims) {
    d = wrap_dim(d, nd, op);
    red[size_t(d)] = true;
  }
  std::sort(dims.begin(), dims.end());
  dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
  Dims kept = x.shape();
  int64_t n = 1;
  for (int64_t d : dims) {
    n *= x.size(d);
    kept[int(d)] = 1;
  }
  bool adjacent = dims.empty() || dims.back() - dims.front() + 1 == int64_t(dims.size());
  Tensor src = x;
  int64_t o = 1, i = 1;
  if (adjacent) {
    for (int d = 0; d < (dims.empty() ? nd : int(dims.front())); ++d) o *= x.size(d);
    for (int d = dims.empty() ? nd : int(dims.back()) + 1; d < nd; ++d) i *= x.size(d);
  } else {
    Dims order;
    for (int d = 0; d < nd; ++d)
      if (!red[size_t(d)]) {
        order.push_back(d);
        o *= x.size(d);
      }
    for (int64_t d : dims) order.push_back(d);
    src = permute(x.detach(), order);
  }
  src = contiguous(src.detach());
  return {src.view({o, n, i}), kept};
}

Dims drop_dims(const Dims& kept, const Tensor& x, const std::vector<int64_t>& dims) {
  Dims out;
  for (int d = 0; d < x.dim(); ++d) {
    bool reduced = false;
    for (int64_t r : dims) reduced |= wrap_dim(r, x.dim(), "reduce") == d;
    if (!reduced) out.push_back(kept[d]);
  }
  return out;
}

std::vector<int64_t> all_dims(const Tensor& x) {
  std::vector<int64_t> d;
  for (int i = 0; i < x.dim(); ++i) d.push_back(i);
  return d;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  if (x.dim() == 0) return clone(x);
  OniView v = to_oni(x, dims, "sum");
  Tensor out = new_empty(x, {v.x3.size(0), v.x3.size(2)});
  dispatch(Op::sum_dim, {v.x3}, {out});
  out = out.detach().view(keepdim ? v.kept_shape : drop_dims(v.kept_shape, x, dims));
  Dims in_shape = x.shape(), kept = v.kept_shape;
  record_lambda("SumBackward", {x}, out, [in_shape, kept](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{contiguous(expand(reshape(g[0], kept), in_shape))};
  });
  return out;
}

Tensor sum(const Tensor& x) { return x.dim() == 0 ? clone(x) : sum(x, all_dims(x), false); }

Tensor sum_squares(const Tensor& x) {
  require_floating(x, "sum_squares");
  Tensor out = Tensor::empty({}, DType::f64, x.device());
  dispatch(Op::sum_squares, {contiguous(x.detach())}, {out});
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  int64_t n = 1;
  for (int64_t d : dims) n *= x.size(d);
  return mul_scalar(sum(x, dims, keepdim), 1.0 / double(std::max<int64_t>(n, 1)));
}

Tensor mean(const Tensor& x) { return mul_scalar(sum(x), 1.0 / double(std::max<int64_t>(x.numel(), 1))); }

MaxResult max(const Tensor& x, int64_t dim, bool keepdim) {
  int d = wrap_dim(dim, x.dim(), "max");
  OniView v = to_oni(x, {d}, "max");
  Tensor values = new_empty(x, {v.x3.size(0), v.x3.size(2)});
  Tensor indices = new_empty(x, {v.x3.size(0), v.x3.size(2)}, DType::i64);
  dispatch(Op::max_dim, {v.x3}, {values, indices});
  Dims shape = keepdim ? v.kept_shape : drop_dims(v.kept_shape, x, {d});
  values = values.view(shape);
  indices = indices.view(shape);
  if (is_floating(x.dtype())) {
    Dims in_shape = x.shape(), kept = v.kept_shape;
    Tensor idx = indices.view(kept);
    record_lambda("MaxBackward", {x}, values, [in_shape, kept, idx, d](std::vector<Tensor>&& g) {
      Tensor gx = Tensor::zeros(in_shape, g[0].dtype(), g[0].device());
      return std::vector<Tensor>{scatter_add(gx, d, idx, reshape(g[0], kept))};
    });
  }
  return {values, indices};
}

Tensor amax(const Tensor& x) {
  NoGradGuard ng;
  return max(x.reshape({-1}), 0).values;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  NoGradGuard ng;
  return max(x, dim, keepdim).indices;
}

// ---- matmul ---------------------------------------------------------------------------------
namespace {
// A 3-D [Bt, R, C] view of a matrix stack for the kernel. It copies only when neither of the
// last two dims has unit stride, or when the batch dims cannot be walked with one stride.
Tensor as_matrix_stack(const Tensor& t, const Dims& batch_shape, int64_t batch) {
  Dims target = batch_shape;
  target.push_back(t.size(-2));
  target.push_back(t.size(-1));
  Tensor e = expand(t.detach(), target);
  if (!(e.stride(-1) == 1 || e.stride(-2) == 1 || e.size(-1) == 1 || e.size(-2) == 1)) e = contiguous(e);
  // One batch stride for all batch dims: 0 when every one is broadcast, else each outer
  // non-trivial dim must step exactly over the inner ones.
  int64_t bstride = 0, span = -1;
  bool uniform = true;
  for (int i = batch_shape.size() - 1; i >= 0 && uniform; --i) {
    if (e.size(i) == 1) continue;
    if (span == -1) {
      bstride = e.stride(i);
      span = bstride * e.size(i);
    } else if (e.stride(i) == span && bstride != 0) {
      span *= e.size(i);
    } else {
      uniform = e.stride(i) == 0 && bstride == 0;
    }
  }
  if (!uniform) {
    e = contiguous(e);
    bstride = e.size(-1) * e.size(-2);
  }
  return Tensor::make(e.storage(), {batch, e.size(-2), e.size(-1)}, {bstride, e.stride(-2), e.stride(-1)},
                      e.offset(), e.dtype());
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  require_floating(a, "matmul");
  if (a.dtype() != b.dtype()) fail("matmul", "dtypes differ");
  if (a.dim() == 0 || b.dim() == 0) fail("matmul", "needs at least 1-d operands");
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, -1)), -1);
  int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  if (b.size(-2) != K)
    fail("matmul", "inner dims differ: " + a.shape().str() + " @ " + b.shape().str());
  Dims ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Dims batch_shape = broadcast_shapes(ba, bb);
  int64_t batch = numel_of(batch_shape);
  Tensor a3 = as_matrix_stack(a, batch_shape, batch), b3 = as_matrix_stack(b, batch_shape, batch);
  Dims out_shape = batch_shape;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = new_empty(a, out_shape);
  Tensor out3 = out.view({batch, M, N});
  dispatch(Op::matmul, {a3, b3}, {out3});
  bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  record_lambda("MatmulBackward", {a, b}, out, [ad, bd, ga, gb](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{ga ? sum_to(matmul(g[0], transpose(bd, -1, -2)), ad.shape()) : Tensor(),
                               gb ? sum_to(matmul(transpose(ad, -1, -2), g[0]), bd.shape()) : Tensor()};
  });
  return out;
}

// y = x W^T + b as one GEMM over all leading dims, with its own backward so that every
// gradient comes out contiguous in its parameter's layout (no transposed copies):
//   gx = g W  [R, K];   gW = g^T x  [N, K];   gb = sum_rows(g)  [N]
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (weight.dim() != 2) fail("linear", "weight must be [N, K], got " + weight.shape().str());
  if (x.size(-1) != weight.size(1))
    fail("linear", "input " + x.shape().str() + " does not match weight " + weight.shape().str());
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0)))
    fail("linear", "bias " + bias.shape().str() + " does not match weight " + weight.shape().str());
  Dims out_shape = x.shape();
  out_shape[out_shape.size() - 1] = weight.size(0);
  Tensor x2, y;
  {
    NoGradGuard ng;
    x2 = reshape(x.detach(), {-1, x.size(-1)});
    Tensor wt = transpose(weight.detach(), 0, 1);
    if (bias.defined()) {
      // The GEMM adds the bias row as it writes y (on the CPU's AVX-512 path; elsewhere y starts
      // as the bias rows and the GEMM accumulates into it): no broadcast add reading y back.
      y = new_empty(x2, {x2.size(0), weight.size(0)});
      Tensor a3 = as_matrix_stack(x2, {}, 1), b3 = as_matrix_stack(wt, {}, 1), y3 = y.view({1, y.size(0), y.size(1)});
      dispatch(Op::matmul, {a3, b3, bias.detach().contiguous()}, {y3});
    } else {
      y = matmul(x2, wt);
    }
    y = reshape(y, out_shape);
  }
  Tensor xd = x2, wd = weight.detach();
  bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  Dims x_shape = x.shape();
  record_lambda("LinearBackward", {x, weight, bias}, y, [xd, wd, gx, gw, gb, x_shape](std::vector<Tensor>&& g) {
    Tensor g2 = reshape(g[0], {-1, wd.size(0)});
    Tensor gxs = gx ? reshape(matmul(g2, wd), x_shape) : Tensor();
    if (gw && gb && g2.device().is_cpu()) {  // gb = the row sums of g^T, summed by the gW product
      Tensor gt = as_matrix_stack(transpose(g2, 0, 1), {}, 1), x3 = as_matrix_stack(xd, {}, 1);
      Tensor gW = new_empty(g2, {wd.size(0), wd.size(1)}), gB = new_empty(g2, {wd.size(0)});
      dispatch(Op::matmul, {gt, x3}, {gW.view({1, wd.size(0), wd.size(1)}), gB});
      return std::vector<Tensor>{gxs, gW, gB};
    }
    return std::vector<Tensor>{gxs, gw ? matmul(transpose(g2, 0, 1), xd) : Tensor(), gb ? sum(g2, {0}) : Tensor()};
  });
  return y;
}

}  // namespace loom::runtime
