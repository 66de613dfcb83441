// ops_attention.cpp: the attention ops of ops.h. attention() validates and dispatches the fused
// kernel (cpu/attention.cpp) and records one node whose backward is the fused backward kernel;
// merge_attention() combines partial attentions by log-sum-exp from differentiable ops, so ring
// attention is differentiable without a kernel of its own.
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "runtime/autograd.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"

namespace loom::runtime {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("attention: " + msg); }

void check_dtype(const Tensor& t, DType want, const char* what) {
  if (t.dtype() != want)
    fail(std::string(what) + " must be " + dtype_name(want) + ", got " + dtype_name(t.dtype()));
}

// Contiguous, autograd-free copy (or the tensor itself when already contiguous).
Tensor plain(const Tensor& t) {
  if (!t.defined()) return t;
  NoGradGuard no_grad;
  Tensor d = t.detach();
  return d.is_contiguous() ? d : d.contiguous();
}

// Everything the kernels need besides q, k, v: the optional masks and the attributes.
struct AttentionContext {
  Tensor mask, q_segments, k_segments, visibility;
  OpAttrs attrs;
};

class AttentionBackward final : public Node {
 public:
  AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor kept_probs, AttentionContext ctx)
      : q_(std::move(q)), k_(std::move(k)), v_(std::move(v)), out_(std::move(out)), lse_(std::move(lse)),
        kept_probs_(std::move(kept_probs)), ctx_(std::move(ctx)) {}
  const char* name() const override { return "AttentionBackward"; }
  int num_outputs() const override { return 2; }  // out, lse

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor gout = grads.size() > 0 ? grads[0] : Tensor();
    Tensor glse = grads.size() > 1 ? grads[1] : Tensor();
    if (!gout.defined() && !glse.defined()) return {Tensor(), Tensor(), Tensor()};
    auto like = [](Tensor g, const Tensor& ref) {
      if (g.dtype() != ref.dtype()) g = g.to(ref.dtype());
      return plain(g);
    };
    gout = gout.defined() ? like(gout, out_) : Tensor::zeros(out_.shape(), out_.dtype(), out_.device());
    if (glse.defined()) glse = like(glse, lse_);
    Tensor gq = Tensor::empty(q_.shape(), q_.dtype(), q_.device());
    Tensor gk = Tensor::empty(k_.shape(), k_.dtype(), k_.device());
    Tensor gv = Tensor::empty(v_.shape(), v_.dtype(), v_.device());
    dispatch(Op::attention_backward,
             {q_, k_, v_, out_, lse_, gout, glse, ctx_.mask, ctx_.q_segments, ctx_.k_segments, ctx_.visibility,
              kept_probs_},
             {gq, gk, gv}, ctx_.attrs);
    return {gq, gk, gv};
  }

 private:
  Tensor q_, k_, v_, out_, lse_;  // contiguous and detached (out_/lse_ hold no reference to this node)
  Tensor kept_probs_;             // what the CPU forward kept for this backward, or undefined
  AttentionContext ctx_;
};

}  // namespace

AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& m) {
  if (!q.defined() || !k.defined() || !v.defined()) fail("q, k and v must be defined");
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail("q [B, Tq, H, D], k and v [B, Tk, Hkv, D] must be 4-D, got q " + q.shape().str() + ", k " +
         k.shape().str() + ", v " + v.shape().str());
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t Tk = k.size(1), Hkv = k.size(2);
  if (k.shape() != v.shape())
    fail("k " + k.shape().str() + " and v " + v.shape().str() + " must have the same shape [B, Tk, Hkv, D]");
  if (k.size(0) != B || k.size(3) != D)
    fail("q " + q.shape().str() + " and k " + k.shape().str() + " disagree on B or D");
  if (D <= 0 || H <= 0 || Hkv <= 0 || H % Hkv != 0)
    fail("need D > 0 and H a multiple of Hkv > 0 (grouped-query heads), got q " + q.shape().str() + ", k " +
         k.shape().str());
  if (!is_floating(q.dtype())) fail(std::string("q must be floating, got ") + dtype_name(q.dtype()));
  check_dtype(k, q.dtype(), "k");
  check_dtype(v, q.dtype(), "v");

  AttentionContext ctx;
  if (m.mask.defined()) {
    check_dtype(m.mask, DType::u8, "mask");
    if (m.mask.shape() != Dims{B, Tq, Tk})
      fail("mask must be [B, Tq, Tk] = " + Dims{B, Tq, Tk}.str() + ", got " + m.mask.shape().str());
    ctx.mask = plain(m.mask);
  }
  bool seg = m.q_segments.defined(), kseg = m.k_segments.defined(), vis = m.visibility.defined();
  if (seg != kseg || seg != vis) fail("q_segments, k_segments and visibility must be given together");
  if (seg) {
    check_dtype(m.q_segments, DType::i32, "q_segments");
    check_dtype(m.k_segments, DType::i32, "k_segments");
    check_dtype(m.visibility, DType::u8, "visibility");
    if (m.q_segments.shape() != Dims{B, Tq})
      fail("q_segments must be [B, Tq] = " + Dims{B, Tq}.str() + ", got " + m.q_segments.shape().str());
    if (m.k_segments.shape() != Dims{B, Tk})
      fail("k_segments must be [B, Tk] = " + Dims{B, Tk}.str() + ", got " + m.k_segments.shape().str());
    const Tensor& vm = m.visibility;
    bool ok = (vm.dim() == 2 || (vm.dim() == 3 && (vm.size(0) == B || vm.size(0) == 1))) &&
              vm.size(-1) == vm.size(-2) && vm.size(-1) > 0;
    if (!ok) fail("visibility must be [S, S], [1, S, S] or [B, S, S] with B = " + std::to_string(B) + ", got " +
                  vm.shape().str());
    ctx.q_segments = plain(m.q_segments);
    ctx.k_segments = plain(m.k_segments);
    ctx.visibility = plain(vm);
  }
  ctx.attrs.causal = m.causal;
  ctx.attrs.q_offset = m.q_offset;
  ctx.attrs.k_offset = m.k_offset;
  ctx.attrs.scale = m.scale != 0.0 ? m.scale : 1.0 / std::sqrt(double(D));

  Tensor qc = plain(q), kc = plain(k), vc = plain(v);
  AttentionResult r;
  r.out = Tensor::empty({B, Tq, H, D}, q.dtype(), q.device());
  r.lse = Tensor::empty({B, H, Tq}, q.dtype(), q.device());
  // With a backward to come, the CPU kernel gets a third output slot where it may keep the
  // probabilities for it (cpu/attention_rows.cpp decides by size; other kernels leave it empty).
  const bool wants_grad = any_requires_grad({&q, &k, &v});
  std::vector<Tensor> inputs{qc, kc, vc, ctx.mask, ctx.q_segments, ctx.k_segments, ctx.visibility};
  std::vector<Tensor> outputs{r.out, r.lse};
  if (wants_grad && q.device().is_cpu()) outputs.emplace_back();
  dispatch(Op::attention, inputs, outputs, ctx.attrs);
  if (wants_grad) {
    Tensor kept = outputs.size() > 2 ? outputs[2] : Tensor();
    auto node = std::make_shared<AttentionBackward>(qc, kc, vc, r.out.detach(), r.lse.detach(), kept, std::move(ctx));
    record(node, {q, k, v}, {&r.out, &r.lse});
  }
  return r;
}

AttentionResult merge_attention(const AttentionResult& a, const AttentionResult& b) {
  auto bad = [](const std::string& msg) { throw std::invalid_argument("merge_attention: " + msg); };
  if (!a.out.defined() || !a.lse.defined() || !b.out.defined() || !b.lse.defined())
    bad("both results need out and lse");
  if (a.out.shape() != b.out.shape() || a.lse.shape() != b.lse.shape())
    bad("shapes differ: out " + a.out.shape().str() + " vs " + b.out.shape().str() + ", lse " + a.lse.shape().str() +
        " vs " + b.lse.shape().str());
  if (a.out.dim() != 4 || a.lse.shape() != Dims{a.out.size(0), a.out.size(2), a.out.size(1)})
    bad("need out [B, Tq, H, D] and lse [B, H, Tq], got out " + a.out.shape().str() + ", lse " + a.lse.shape().str());
  if (a.out.dtype() != b.out.dtype() || a.lse.dtype() != a.out.dtype() || b.lse.dtype() != a.out.dtype())
    bad("dtypes differ");
  const DType dt = a.lse.dtype();
  const Dims ls = a.lse.shape();
  const double inf = std::numeric_limits<double>::infinity();
  // m = max(lse_a, lse_b) only stabilises the sum; the result does not depend on it, so it is
  // a constant for autograd. Rows masked in both parts (m = -inf) use m = 0 and sum 1, giving
  // weights 0 / 1 = 0 and finite gradients; their lse is then set to -inf.
  Tensor m, dead;
  {
    NoGradGuard no_grad;
    m = maximum(a.lse.detach(), b.lse.detach());
    dead = eq(m, Tensor::full(ls, -inf, dt, m.device()));  // u8 [B, H, Tq]
    m = masked_fill(m, dead, 0.0);
  }
  Tensor ea = exp(sub(a.lse, m));  // [B, H, Tq], in (0, 1] or 0
  Tensor eb = exp(sub(b.lse, m));
  Tensor s = masked_fill(add(ea, eb), dead, 1.0);
  AttentionResult r;
  r.lse = masked_fill(add(m, log(s)), dead, -inf);
  // Weights exp(lse_x - lse) = e_x / s, moved from [B, H, Tq] to [B, Tq, H, 1] to scale out.
  auto weight = [&](const Tensor& e) { return unsqueeze(permute(div(e, s), {0, 2, 1}), 3); };
  r.out = add(mul(a.out, weight(ea)), mul(b.out, weight(eb)));
  return r;
}

Tensor segment_identity_visibility(int64_t S) {
  if (S <= 0) throw std::invalid_argument("segment_identity_visibility: S must be positive, got " + std::to_string(S));
  Tensor v = Tensor::zeros({S, S}, DType::u8);
  uint8_t* p = v.data<uint8_t>();
  for (int64_t s = 0; s < S; ++s) p[s * S + s] = 1;
  return v;
}

}  // namespace loom::runtime
