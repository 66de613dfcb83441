// ops_nn.cpp: softmax family, fused cross-entropy, embedding, norms, rotary embedding and
// dropout, each calling its fused forward kernel and recording its fused backward kernel.
#include <cmath>

#include "runtime/ops_util.h"
#include "runtime/rng.h"

namespace loom::runtime {
using namespace detail;

namespace {
Tensor contig(const Tensor& x) { return x.is_contiguous() ? x.detach() : contiguous(x.detach()); }

// Runs a last-dim kernel on `dim` by moving it last and back.
template <class F> Tensor along_last(const Tensor& x, int64_t dim, F&& f) {
  int d = wrap_dim(dim, x.dim(), "softmax");
  if (d == x.dim() - 1) return f(x);
  return transpose(f(transpose(x, d, -1)), d, -1);
}

Tensor softmax_last(Op fwd, Op bwd, const char* name, const Tensor& x) {
  require_floating(x, name);
  Tensor xc = contig(x);
  Tensor y = empty_like(xc);
  dispatch(fwd, {xc}, {y});
  Tensor yd = y.detach();
  record_lambda(name, {x}, y, [yd, bwd](std::vector<Tensor>&& g) {
    Tensor gx = empty_like(yd);
    dispatch(bwd, {yd, contig(g[0])}, {gx});
    return std::vector<Tensor>{gx};
  });
  return y;
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return along_last(x, dim, [](const Tensor& t) {
    return softmax_last(Op::softmax_last, Op::softmax_backward_last, "SoftmaxBackward", t);
  });
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  return along_last(x, dim, [](const Tensor& t) {
    return softmax_last(Op::log_softmax_last, Op::log_softmax_backward_last, "LogSoftmaxBackward", t);
  });
}

namespace {
// Per-token losses [N] -> what opt.reduction asks for (t: the flat targets).
Tensor reduce_token_losses(const Tensor& per_token, const Tensor& t, const Dims& target_shape,
                           const CrossEntropyOptions& opt) {
  switch (opt.reduction) {
    case Reduction::none: return per_token.view(target_shape);
    case Reduction::sum: return sum(per_token);
    case Reduction::mean: {
      int64_t count;
      {
        NoGradGuard ng;
        Tensor ign = Tensor::full({}, double(opt.ignore_index), DType::i64, t.device());
        count = t.numel() - int64_t(sum(eq(t, ign).to(DType::i64)).item());
      }
      // Every target ignored: 0 (not NaN), so a padding-only micro-batch adds nothing.
      return mul_scalar(sum(per_token), count > 0 ? 1.0 / double(count) : 0.0);
    }
  }
  return per_token;
}

// `input` (named `what` in messages) holds one row per target: the logits, or
// linear_cross_entropy's x.
void check_cross_entropy_args(const Tensor& input, const Tensor& target, const CrossEntropyOptions& opt,
                              const char* op, const char* what) {
  require_floating(input, op);
  if (target.dtype() != DType::i64) fail(op, "target must be i64");
  if (input.dim() < 1 || target.numel() * input.size(-1) != input.numel())
    fail(op, std::string(what) + " " + input.shape().str() + " and target " + target.shape().str() + " disagree");
  if (opt.label_smoothing < 0 || opt.label_smoothing > 1) fail(op, "label_smoothing outside [0, 1]");
}

OpAttrs cross_entropy_attrs(const CrossEntropyOptions& opt) {
  OpAttrs at;
  at.ignore_index = opt.ignore_index;
  at.label_smoothing = opt.label_smoothing;
  return at;
}

// scale * a [M, K] @ b [K, N] (either may be a transposed view), outside autograd.
Tensor scaled_matmul(const Tensor& a, const Tensor& b, double scale) {
  Tensor out = new_empty(a, {a.size(0), b.size(1)});
  Tensor out3 = out.view({1, a.size(0), b.size(1)});
  OpAttrs at;
  at.scale = scale;
  dispatch(Op::matmul, {unsqueeze(a, 0), unsqueeze(b, 0)}, {out3}, at);
  return out;
}

// The one value of g over the rows whose target is counted, if there is one (0 when none is):
// sum and mean reductions give every row the same gradient.
bool uniform_row_gradient(const Tensor& g, const Tensor& t, int64_t ignore_index, double* value) {
  const Tensor gd = g.to(DType::f64);
  const double* pg = gd.data<double>();
  const int64_t* pt = t.data<int64_t>();
  bool seen = false;
  *value = 0;
  for (int64_t r = 0; r < t.numel(); ++r) {
    if (pt[r] == ignore_index) continue;
    if (seen && pg[r] != *value) return false;
    *value = pg[r];
    seen = true;
  }
  return true;
}
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& opt) {
  check_cross_entropy_args(logits, target, opt, "cross_entropy", "logits");
  int64_t V = logits.size(-1);
  Tensor x = contig(logits).view({-1, V});
  Tensor t = contig(target).view({-1});
  OpAttrs at = cross_entropy_attrs(opt);
  Tensor loss = new_empty(x, {x.size(0)}), lse = new_empty(x, {x.size(0)});
  dispatch(Op::cross_entropy, {x, t}, {loss, lse}, at);
  Dims logits_shape = logits.shape();
  record_lambda("CrossEntropyBackward", {logits}, loss, [x, t, lse, at, logits_shape](std::vector<Tensor>&& g) {
    Tensor gx = empty_like(x);
    dispatch(Op::cross_entropy_backward, {x, t, lse, contig(g[0])}, {gx}, at);
    return std::vector<Tensor>{gx.view(logits_shape)};
  });
  return reduce_token_losses(loss, t, target.shape(), opt);
}

// The logits G = x W^T exist once: the cross-entropy kernel overwrites them, row by row while
// the row is in cache, with d loss_i / d logits_i. Backward is then two GEMMs whose alpha carries
// the loss gradient (one value per counted row under sum/mean), with no pass over [N, V] and no
// second [N, V] buffer. On other devices (and without gradients) it is the composition.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& target,
                            const CrossEntropyOptions& opt) {
  if (weight.dim() != 2 || x.dim() < 1 || x.size(-1) != weight.size(1))
    fail("linear_cross_entropy", "input " + x.shape().str() + " does not match weight [V, C] " + weight.shape().str());
  check_cross_entropy_args(x, target, opt, "linear_cross_entropy", "input");  // before the GEMM
  const bool wants_grad = grad_enabled() && (x.requires_grad() || weight.requires_grad());
  if (!wants_grad || !x.device().is_cpu()) return cross_entropy(linear(x, weight), target, opt);
  const int64_t C = x.size(-1);
  Tensor x2 = contig(x).view({-1, C}), wd = weight.detach();
  Tensor t = contig(target).view({-1});
  // The logits [N, V] (x2, wd: no autograd), in rows padded to the stride at which the input
  // gradient's product (K = V) reads them in place: at V = 8192 unpadded rows were packed, and
  // that product took 8% longer.
  const int64_t V = weight.size(0), ld = x2.dtype() == DType::f32 ? cpu_gemm_row_stride(x2.size(0), V) : V;
  Tensor G = new_empty(x2, {x2.size(0), ld}).narrow(1, 0, V);
  dispatch(Op::matmul, {unsqueeze(x2, 0), unsqueeze(transpose(wd, 0, 1), 0)}, {unsqueeze(G, 0)});
  Tensor loss = new_empty(G, {G.size(0)}), lse = new_empty(G, {G.size(0)});
  dispatch(Op::cross_entropy, {G, t}, {loss, lse, G}, cross_entropy_attrs(opt));
  const bool gx = x.requires_grad(), gw = weight.requires_grad();
  const int64_t ignore = opt.ignore_index;
  Dims x_shape = x.shape();
  record_lambda("LinearCrossEntropyBackward", {x, weight}, loss,
                [G, x2, wd, t, gx, gw, ignore, x_shape](std::vector<Tensor>&& g) {
                  if (!g[0].defined()) return std::vector<Tensor>{Tensor(), Tensor()};
                  double s = 1;
                  Tensor Gs = G;  // ignored rows of G are 0
                  if (!uniform_row_gradient(g[0], t, ignore, &s)) {
                    Gs = mul(G, unsqueeze(contig(g[0]), 1));
                    s = 1;
                  }
                  return std::vector<Tensor>{gx ? scaled_matmul(Gs, wd, s).view(x_shape) : Tensor(),
                                             gw ? scaled_matmul(transpose(Gs, 0, 1), x2, s) : Tensor()};
                });
  return reduce_token_losses(loss, t, target.shape(), opt);
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  require_floating(weight, "embedding");
  if (weight.dim() != 2) fail("embedding", "weight must be [V, C], got " + weight.shape().str());
  if (ids.dtype() != DType::i64) fail("embedding", "ids must be i64");
  Tensor idc = contig(ids).view({-1});
  Tensor w = contig(weight);
  Tensor out = new_empty(weight, {idc.numel(), weight.size(1)});
  dispatch(Op::embedding, {w, idc}, {out});
  Dims shape = ids.shape();
  shape.push_back(weight.size(1));
  Dims wshape = weight.shape();
  record_lambda("EmbeddingBackward", {weight}, out, [idc, wshape](std::vector<Tensor>&& g) {
    Tensor gw = Tensor::empty(wshape, g[0].dtype(), g[0].device());
    dispatch(Op::embedding_backward, {idc, contig(g[0])}, {gw});
    return std::vector<Tensor>{gw};
  });
  return out.view(shape);
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  require_floating(x, "layer_norm");
  int64_t C = x.size(-1);
  if ((weight.defined() && weight.numel() != C) || (bias.defined() && bias.numel() != C))
    fail("layer_norm", "weight/bias size does not match the last dim of " + x.shape().str());
  Tensor xc = contig(x);
  int64_t R = xc.numel() / std::max<int64_t>(C, 1);
  Tensor y = empty_like(xc), mean = new_empty(xc, {R}), rstd = new_empty(xc, {R});
  OpAttrs at;
  at.eps = eps;
  Tensor w = weight.defined() ? contig(weight) : Tensor(), b = bias.defined() ? contig(bias) : Tensor();
  dispatch(Op::layer_norm, {xc, w, b}, {y, mean, rstd}, at);
  bool gw = weight.defined() && weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  record_lambda("LayerNormBackward", {x, weight, bias}, y, [xc, w, mean, rstd, gw, gb](std::vector<Tensor>&& g) {
    Tensor gx = empty_like(xc);
    Tensor gwt = gw ? empty_like(w) : Tensor(), gbt = gb ? Tensor::empty(w.defined() ? w.shape() : Dims{xc.size(-1)}, xc.dtype(), xc.device()) : Tensor();
    dispatch(Op::layer_norm_backward, {xc, w, mean, rstd, contig(g[0])}, {gx, gwt, gbt});
    return std::vector<Tensor>{gx, gwt, gbt};
  });
  return y;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  require_floating(x, "rms_norm");
  int64_t C = x.size(-1);
  if (weight.defined() && weight.numel() != C)
    fail("rms_norm", "weight size " + std::to_string(weight.numel()) + " does not match the last dim of " + x.shape().str());
  Tensor xc = contig(x);
  int64_t R = xc.numel() / std::max<int64_t>(C, 1);
  Tensor y = empty_like(xc), rstd = new_empty(xc, {R});
  OpAttrs at;
  at.eps = eps;
  Tensor w = weight.defined() ? contig(weight) : Tensor();
  dispatch(Op::rms_norm, {xc, w}, {y, rstd}, at);
  bool gw = weight.defined() && weight.requires_grad();
  record_lambda("RmsNormBackward", {x, weight}, y, [xc, w, rstd, gw](std::vector<Tensor>&& g) {
    Tensor gx = empty_like(xc), gwt = gw ? empty_like(w) : Tensor();
    dispatch(Op::rms_norm_backward, {xc, w, rstd, contig(g[0])}, {gx, gwt});
    return std::vector<Tensor>{gx, gwt};
  });
  return y;
}

Tensor rope(const Tensor& x, const Tensor& positions, double theta) {
  require_floating(x, "rope");
  if (x.dim() != 4) fail("rope", "x must be [B, T, H, D], got " + x.shape().str());
  if (positions.dtype() != DType::i64 || positions.dim() != 2 || positions.size(0) != x.size(0) ||
      positions.size(1) != x.size(1))
    fail("rope", "positions must be i64 [B, T] matching x " + x.shape().str() + ", got " + positions.shape().str());
  Tensor xc = contig(x), pos = contig(positions);
  Tensor y = empty_like(xc);
  OpAttrs at;
  at.alpha = theta;
  dispatch(Op::rope, {xc, pos}, {y}, at);
  record_lambda("RopeBackward", {x}, y, [pos, at](std::vector<Tensor>&& g) {
    Tensor gc = contig(g[0]);
    Tensor gx = empty_like(gc);
    OpAttrs inv = at;
    inv.inverse = true;  // the transpose of a rotation is the rotation by -angle
    dispatch(Op::rope, {gc, pos}, {gx}, inv);
    return std::vector<Tensor>{gx};
  });
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, uint64_t stream) {
  if (!training || p == 0.0) return x;
  if (p < 0 || p >= 1) fail("dropout", "p must be in [0, 1), got " + std::to_string(p));
  Tensor xc = contig(x);
  Tensor y = empty_like(xc), mask = new_empty(xc, xc.shape(), DType::u8);
  Generator& gen = default_generator();
  OpAttrs at;
  at.p = p;
  at.seed = stream ? mix64(gen.seed() ^ mix64(stream)) : gen.seed();
  at.offset = gen.reserve(uint64_t(xc.numel()));
  dispatch(Op::dropout, {xc}, {y, mask}, at);
  double scale = 1.0 / (1.0 - p);
  record_lambda("DropoutBackward", {x}, y, [mask, scale](std::vector<Tensor>&& g) {
    Tensor zero = Tensor::zeros({}, g[0].dtype(), g[0].device());
    return std::vector<Tensor>{where(mask, mul_scalar(g[0], scale), zero)};
  });
  return y;
}

// ---- indexing ---------------------------------------------------------------------------------
namespace {
// [O, N, I] extents of x around dim d.
void oni_extents(const Tensor& x, int d, int64_t& O, int64_t& N, int64_t& I) {
  O = 1;
  I = 1;
  for (int i = 0; i < d; ++i) O *= x.size(i);
  N = x.size(d);
  for (int i = d + 1; i < x.dim(); ++i) I *= x.size(i);
}
}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  int d = wrap_dim(dim, x.dim(), "index_select");
  if (index.dtype() != DType::i64 || index.dim() != 1) fail("index_select", "index must be a 1-d i64 tensor");
  int64_t O, N, I;
  oni_extents(x, d, O, N, I);
  Tensor xc = contig(x).view({O, N, I}), idx = contig(index);
  int64_t K = idx.numel();
  Tensor out = new_empty(x, {O, K, I});
  dispatch(Op::index_select, {xc, idx}, {out});
  Dims shape = x.shape();
  shape[d] = K;
  out = out.view(shape);
  Dims in_shape = x.shape();
  record_lambda("IndexSelectBackward", {x}, out, [idx, in_shape, O, N, I, K](std::vector<Tensor>&& g) {
    Tensor gx = Tensor::zeros({O, N, I}, g[0].dtype(), g[0].device());
    dispatch(Op::index_add, {idx, contig(g[0]).view({O, K, I})}, {gx});
    return std::vector<Tensor>{gx.view(in_shape)};
  });
  return out;
}

namespace {
// gather/scatter_add need index shaped like x except along dim.
void check_gather_shapes(const Tensor& x, const Tensor& index, int d, const char* op) {
  if (index.dtype() != DType::i64) fail(op, "index must be i64");
  if (index.dim() != x.dim()) fail(op, "index rank differs from the tensor's");
  for (int i = 0; i < x.dim(); ++i)
    if (i != d && index.size(i) != x.size(i))
      fail(op, "index " + index.shape().str() + " must match " + x.shape().str() + " except along dim " + std::to_string(d));
}
}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  int d = wrap_dim(dim, x.dim(), "gather");
  check_gather_shapes(x, index, d, "gather");
  int64_t O, N, I;
  oni_extents(x, d, O, N, I);
  int64_t K = index.size(d);
  Tensor xc = contig(x).view({O, N, I}), idx = contig(index).view({O, K, I});
  Tensor out = new_empty(x, index.shape());
  Tensor out3 = out.view({O, K, I});
  dispatch(Op::gather, {xc, idx}, {out3});
  Dims in_shape = x.shape();
  record_lambda("GatherBackward", {x}, out, [idx, in_shape, O, N, I](std::vector<Tensor>&& g) {
    Tensor gx = Tensor::zeros({O, N, I}, g[0].dtype(), g[0].device());
    dispatch(Op::scatter_add, {idx, contig(g[0]).view(idx.shape())}, {gx});
    return std::vector<Tensor>{gx.view(in_shape)};
  });
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  int d = wrap_dim(dim, x.dim(), "scatter_add");
  check_gather_shapes(x, index, d, "scatter_add");
  if (src.shape() != index.shape()) fail("scatter_add", "src must have the index's shape");
  int64_t O, N, I;
  oni_extents(x, d, O, N, I);
  int64_t K = index.size(d);
  Tensor idx = contig(index).view({O, K, I});
  Tensor out = clone(x.detach());
  Tensor out3 = out.view({O, N, I});
  dispatch(Op::scatter_add, {idx, contig(src).view({O, K, I})}, {out3});
  Dims src_shape = src.shape();
  record_lambda("ScatterAddBackward", {x, src}, out, [idx, src_shape, O, N, I](std::vector<Tensor>&& g) {
    Tensor gc = contig(g[0]).view({O, N, I});
    Tensor gs = Tensor::empty(idx.shape(), g[0].dtype(), g[0].device());
    dispatch(Op::gather, {gc, idx}, {gs});
    return std::vector<Tensor>{g[0], gs.view(src_shape)};
  });
  return out;
}

// ---- sampling -----------------------------------------------------------------------------------
TopK topk(const Tensor& x, int64_t k) {
  require_floating(x, "topk");
  int64_t N = x.size(-1);
  if (k < 1 || k > N) fail("topk", "k = " + std::to_string(k) + " outside [1, " + std::to_string(N) + "]");
  Tensor xc = contig(x);
  Dims shape = x.shape();
  shape[shape.size() - 1] = k;
  Tensor values = new_empty(x, shape), indices = new_empty(x, shape, DType::i64);
  OpAttrs at;
  at.k = k;
  dispatch(Op::topk_last, {xc}, {values, indices}, at);
  return {values, indices};
}

Tensor multinomial(const Tensor& probs, int64_t n, bool replacement) {
  require_floating(probs, "multinomial");
  if (probs.dim() != 2) fail("multinomial", "probs must be [R, V], got " + probs.shape().str());
  if (n < 1) fail("multinomial", "n must be positive");
  Tensor pc = contig(probs);
  Tensor out = new_empty(probs, {probs.size(0), n}, DType::i64);
  Generator& gen = default_generator();
  OpAttrs at;
  at.k = n;
  at.replacement = replacement;
  at.seed = gen.seed();
  at.offset = gen.reserve(uint64_t(probs.size(0) * n));
  dispatch(Op::multinomial, {pc}, {out}, at);
  return out;
}

}  // namespace loom::runtime
