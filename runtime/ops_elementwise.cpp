// ops_elementwise.cpp: broadcasting arithmetic, unary maps, comparisons and where, with
// their backwards. Gradients of broadcast inputs are summed back to the input's shape.
#include <cmath>

#include "runtime/ops_util.h"

namespace loom::runtime {
using namespace detail;

namespace {

Tensor binary(Op op, const Tensor& a, const Tensor& b, DType out_dtype) {
  if (a.dtype() != b.dtype())
    fail(op_name(op), std::string("dtypes differ: ") + dtype_name(a.dtype()) + " and " + dtype_name(b.dtype()));
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape()), out_dtype, a.device());
  dispatch(op, {a, b}, {out});
  return out;
}

Tensor unary(Op op, const Tensor& x, double alpha = 0.0) {
  require_floating(x, op_name(op));
  Tensor xc = x.is_contiguous() ? x : contiguous(x.detach());
  Tensor out = empty_like(x);
  OpAttrs at;
  at.alpha = alpha;
  dispatch(op, {xc}, {out}, at);
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary(Op::add, a, b, a.dtype());
  Dims sa = a.shape(), sb = b.shape();
  record_lambda("AddBackward", {a, b}, out, [sa, sb](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(g[0], sb)};
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary(Op::sub, a, b, a.dtype());
  Dims sa = a.shape(), sb = b.shape();
  record_lambda("SubBackward", {a, b}, out, [sa, sb](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(neg(g[0]), sb)};
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary(Op::mul, a, b, a.dtype());
  bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  record_lambda("MulBackward", {a, b}, out, [ad, bd, ga, gb](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{ga ? sum_to(mul(g[0], bd), ad.shape()) : Tensor(),
                               gb ? sum_to(mul(g[0], ad), bd.shape()) : Tensor()};
  });
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary(Op::div, a, b, a.dtype());
  bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  record_lambda("DivBackward", {a, b}, out, [ad, bd, ga, gb](std::vector<Tensor>&& g) {
    Tensor gA = div(g[0], bd);
    return std::vector<Tensor>{ga ? sum_to(gA, ad.shape()) : Tensor(),
                               gb ? sum_to(neg(mul(gA, div(ad, bd))), bd.shape()) : Tensor()};
  });
  return out;
}

// The gradient goes to a where a >= b (maximum) or a <= b (minimum), else to b.
static Tensor select_binary(Op op, const char* name, const Tensor& a, const Tensor& b) {
  Tensor out = binary(op, a, b, a.dtype());
  Tensor ad = a.detach(), bd = b.detach();
  bool is_max = op == Op::maximum;
  record_lambda(name, {a, b}, out, [ad, bd, is_max](std::vector<Tensor>&& g) {
    Tensor pick_b = is_max ? lt(ad, bd) : gt(ad, bd);
    Tensor zero = Tensor::zeros({}, g[0].dtype(), g[0].device());
    return std::vector<Tensor>{sum_to(where(pick_b, zero, g[0]), ad.shape()),
                               sum_to(where(pick_b, g[0], zero), bd.shape())};
  });
  return out;
}
Tensor maximum(const Tensor& a, const Tensor& b) { return select_binary(Op::maximum, "MaximumBackward", a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return select_binary(Op::minimum, "MinimumBackward", a, b); }

Tensor eq(const Tensor& a, const Tensor& b) { return binary(Op::eq, a, b, DType::u8); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(Op::lt, a, b, DType::u8); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(Op::gt, a, b, DType::u8); }

Tensor add_scalar(const Tensor& x, double s) {
  Tensor out = unary(Op::add_scalar, x, s);
  record_lambda("AddScalarBackward", {x}, out, [](std::vector<Tensor>&& g) { return std::vector<Tensor>{g[0]}; });
  return out;
}

Tensor mul_scalar(const Tensor& x, double s) {
  Tensor out = unary(Op::mul_scalar, x, s);
  record_lambda("MulScalarBackward", {x}, out, [s](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{mul_scalar(g[0], s)};
  });
  return out;
}

Tensor pow_scalar(const Tensor& x, double e) {
  Tensor out = unary(Op::pow_scalar, x, e);
  Tensor xd = x.detach();
  record_lambda("PowScalarBackward", {x}, out, [xd, e](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{mul(g[0], mul_scalar(pow_scalar(xd, e - 1), e))};
  });
  return out;
}

Tensor neg(const Tensor& x) {
  Tensor out = unary(Op::neg, x);
  record_lambda("NegBackward", {x}, out, [](std::vector<Tensor>&& g) { return std::vector<Tensor>{neg(g[0])}; });
  return out;
}

Tensor exp(const Tensor& x) {
  Tensor out = unary(Op::exp, x);
  Tensor y = out.detach();
  record_lambda("ExpBackward", {x}, out, [y](std::vector<Tensor>&& g) { return std::vector<Tensor>{mul(g[0], y)}; });
  return out;
}

Tensor log(const Tensor& x) {
  Tensor out = unary(Op::log, x);
  Tensor xd = x.detach();
  record_lambda("LogBackward", {x}, out, [xd](std::vector<Tensor>&& g) { return std::vector<Tensor>{div(g[0], xd)}; });
  return out;
}

Tensor sqrt(const Tensor& x) {
  Tensor out = unary(Op::sqrt, x);
  Tensor y = out.detach();
  record_lambda("SqrtBackward", {x}, out, [y](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{div(mul_scalar(g[0], 0.5), y)};
  });
  return out;
}

Tensor rsqrt(const Tensor& x) {
  Tensor out = unary(Op::rsqrt, x);
  Tensor y = out.detach();
  // d/dx x^-1/2 = -1/2 y^3
  record_lambda("RsqrtBackward", {x}, out, [y](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{mul(g[0], mul_scalar(pow_scalar(y, 3), -0.5))};
  });
  return out;
}

Tensor tanh(const Tensor& x) {
  Tensor out = unary(Op::tanh, x);
  Tensor y = out.detach();
  record_lambda("TanhBackward", {x}, out, [y](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{mul(g[0], add_scalar(neg(mul(y, y)), 1.0))};
  });
  return out;
}

Tensor sigmoid(const Tensor& x) {
  Tensor out = unary(Op::sigmoid, x);
  Tensor y = out.detach();
  record_lambda("SigmoidBackward", {x}, out, [y](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{mul(g[0], mul(y, add_scalar(neg(y), 1.0)))};
  });
  return out;
}

Tensor relu(const Tensor& x) {
  Tensor out = unary(Op::relu, x);
  Tensor xd = x.detach();
  record_lambda("ReluBackward", {x}, out, [xd](std::vector<Tensor>&& g) {
    Tensor zero = Tensor::zeros({}, xd.dtype(), xd.device());
    return std::vector<Tensor>{where(gt(xd, zero), g[0], zero)};
  });
  return out;
}

Tensor abs(const Tensor& x) {
  Tensor out = unary(Op::abs, x);
  Tensor xd = x.detach();
  record_lambda("AbsBackward", {x}, out, [xd](std::vector<Tensor>&& g) {
    Tensor zero = Tensor::zeros({}, xd.dtype(), xd.device());
    return std::vector<Tensor>{where(lt(xd, zero), neg(g[0]), where(gt(xd, zero), g[0], zero))};
  });
  return out;
}

static Tensor fused_unary(Op fwd, Op bwd, const char* name, const Tensor& x) {
  Tensor out = unary(fwd, x);
  Tensor xd = x.is_contiguous() ? x.detach() : contiguous(x.detach());
  record_lambda(name, {x}, out, [xd, bwd](std::vector<Tensor>&& g) {
    Tensor gx = empty_like(xd);
    dispatch(bwd, {xd, contiguous(g[0])}, {gx});
    return std::vector<Tensor>{gx};
  });
  return out;
}

Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return tanh_approximation ? fused_unary(Op::gelu_tanh, Op::gelu_tanh_backward, "GeluTanhBackward", x)
                            : fused_unary(Op::gelu_erf, Op::gelu_erf_backward, "GeluErfBackward", x);
}
Tensor silu(const Tensor& x) { return fused_unary(Op::silu, Op::silu_backward, "SiluBackward", x); }

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  require_floating(gate, "swiglu");
  if (gate.shape() != up.shape() || gate.dtype() != up.dtype())
    fail("swiglu", "gate " + gate.shape().str() + " and up " + up.shape().str() + " must match in shape and dtype");
  Tensor g = gate.is_contiguous() ? gate.detach() : contiguous(gate.detach());
  Tensor u = up.is_contiguous() ? up.detach() : contiguous(up.detach());
  Tensor out = empty_like(g);
  dispatch(Op::swiglu, {g, u}, {out});
  record_lambda("SwigluBackward", {gate, up}, out, [g, u](std::vector<Tensor>&& grads) {
    Tensor gg = empty_like(g), gu = empty_like(u);
    dispatch(Op::swiglu_backward, {g, u, contiguous(grads[0])}, {gg, gu});
    return std::vector<Tensor>{gg, gu};
  });
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  if (cond.dtype() != DType::u8) fail("where", std::string("condition must be u8, got ") + dtype_name(cond.dtype()));
  if (a.dtype() != b.dtype()) fail("where", "branches differ in dtype");
  Dims shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape()), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  dispatch(Op::where, {cond, a, b}, {out});
  Tensor c = cond;
  Dims sa = a.shape(), sb = b.shape();
  record_lambda("WhereBackward", {a, b}, out, [c, sa, sb](std::vector<Tensor>&& g) {
    Tensor zero = Tensor::zeros({}, g[0].dtype(), g[0].device());
    return std::vector<Tensor>{sum_to(where(c, g[0], zero), sa), sum_to(where(c, zero, g[0]), sb)};
  });
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  return where(mask, Tensor::full({}, value, x.dtype(), x.device()), x);
}

}  // namespace loom::runtime
