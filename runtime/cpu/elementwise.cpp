// cpu/elementwise.cpp: copy/cast, fill, broadcasting binary ops, unary maps and their fused
// backward maps, where, comparisons and Philox random fills. Outputs are contiguous unless
// noted; inputs may have any strides (broadcast dims have stride 0).
#include <cmath>
#include <cstring>

#include "runtime/cpu/common.h"
#include "runtime/cpu/vecmath.h"
#include "runtime/rng.h"

namespace loom::runtime::cpu {
namespace {

constexpr int64_t kGrain = 16384;

// ---- copy ------------------------------------------------------------------------------
template <class D, class S> void copy_typed(const Tensor& src, Tensor& dst) {
  const S* s = static_cast<const S*>(src.raw_data());
  D* d = static_cast<D*>(dst.raw_data());
  int64_t n = dst.numel();
  if (src.is_contiguous() && dst.is_contiguous()) {
    if constexpr (std::is_same_v<D, S>) {
      std::memcpy(d, s, size_t(n) * sizeof(S));
    } else {
      parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) d[i] = convert<D>(s[i]);
      });
    }
    return;
  }
  const Dims& shape = dst.shape();
  int64_t cols = shape.size() ? shape.back() : 1;
  int64_t ss = shape.size() ? src.strides().back() : 0, ds = shape.size() ? dst.strides().back() : 0;
  int64_t rows = outer_rows(shape);
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const S* sr = s + row_offset(shape, src.strides(), r);
      D* dr = d + row_offset(shape, dst.strides(), r);
      for (int64_t c = 0; c < cols; ++c) dr[c * ds] = convert<D>(sr[c * ss]);
    }
  });
}

void k_copy(const KernelArgs& a) {
  const Tensor& src = a.in[0];
  Tensor& dst = a.out[0];
  if (src.shape() != dst.shape()) throw std::logic_error("copy: shapes differ");
  visit_any(Op::copy, dst.dtype(), [&](auto dz) {
    using D = decltype(dz);
    visit_any(Op::copy, src.dtype(), [&](auto sz) { copy_typed<D, decltype(sz)>(src, dst); });
  });
}

void k_fill(const KernelArgs& a) {
  Tensor& dst = a.out[0];
  visit_any(Op::fill, dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T v = from_double<T>(a.attrs.alpha);
    T* d = static_cast<T*>(dst.raw_data());
    if (dst.is_contiguous()) {
      int64_t n = dst.numel();
      parallel_for(n, kGrain, [&](int64_t b, int64_t e) { std::fill(d + b, d + e, v); });
      return;
    }
    const Dims& shape = dst.shape();
    int64_t cols = shape.back(), cs = dst.strides().back();
    for (int64_t r = 0, rows = outer_rows(shape); r < rows; ++r) {
      T* dr = d + row_offset(shape, dst.strides(), r);
      for (int64_t c = 0; c < cols; ++c) dr[c * cs] = v;
    }
  });
}

// ---- binary with broadcasting ------------------------------------------------------------
template <class T, class R, class F> void binary_typed(const Tensor& x, const Tensor& y, Tensor& out, F f) {
  const Dims& shape = out.shape();
  Dims sx = broadcast_strides(x.shape(), x.strides(), shape);
  Dims sy = broadcast_strides(y.shape(), y.strides(), shape);
  const T* px = static_cast<const T*>(x.raw_data());
  const T* py = static_cast<const T*>(y.raw_data());
  R* po = static_cast<R*>(out.raw_data());
  int64_t n = out.numel();
  bool xc = x.shape() == shape && x.is_contiguous(), yc = y.shape() == shape && y.is_contiguous();
  if (xc && yc) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) po[i] = f(px[i], py[i]);
    });
    return;
  }
  if (shape.size() == 0) {
    po[0] = f(px[0], py[0]);
    return;
  }
  int64_t cols = shape.back(), cx = sx.back(), cy = sy.back();
  int64_t rows = outer_rows(shape);
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = px + row_offset(shape, sx, r);
      const T* yr = py + row_offset(shape, sy, r);
      R* orow = po + r * cols;
      if (cx == 1 && cy == 1) {
        for (int64_t c = 0; c < cols; ++c) orow[c] = f(xr[c], yr[c]);
      } else if (cx == 1 && cy == 0) {
        T yv = yr[0];
        for (int64_t c = 0; c < cols; ++c) orow[c] = f(xr[c], yv);
      } else {
        for (int64_t c = 0; c < cols; ++c) orow[c] = f(xr[c * cx], yr[c * cy]);
      }
    }
  });
}

template <class F> KernelFn arith_kernel() {
  return [](const KernelArgs& a) {
    const Tensor& x = a.in[0];
    if (x.dtype() != a.in[1].dtype() || x.dtype() != a.out[0].dtype())
      throw std::logic_error("binary op: dtypes differ");
    switch (x.dtype()) {
      case DType::f32: binary_typed<float, float>(x, a.in[1], a.out[0], F{}); return;
      case DType::f64: binary_typed<double, double>(x, a.in[1], a.out[0], F{}); return;
      case DType::i32: binary_typed<int32_t, int32_t>(x, a.in[1], a.out[0], F{}); return;
      case DType::i64: binary_typed<int64_t, int64_t>(x, a.in[1], a.out[0], F{}); return;
      default: bad_dtype(Op::add, x.dtype());
    }
  };
}
struct AddF { template <class T> T operator()(T x, T y) const { return x + y; } };
struct SubF { template <class T> T operator()(T x, T y) const { return x - y; } };
struct MulF { template <class T> T operator()(T x, T y) const { return x * y; } };
struct DivF { template <class T> T operator()(T x, T y) const { return x / y; } };
struct MaxF { template <class T> T operator()(T x, T y) const { return x >= y ? x : y; } };
struct MinF { template <class T> T operator()(T x, T y) const { return x <= y ? x : y; } };

template <class F> KernelFn compare_kernel() {
  return [](const KernelArgs& a) {
    const Tensor& x = a.in[0];
    visit_any(Op::eq, x.dtype(), [&](auto z) {
      using T = decltype(z);
      if constexpr (std::is_arithmetic_v<T>)
        binary_typed<T, uint8_t>(x, a.in[1], a.out[0], [](T p, T q) { return uint8_t(F{}(p, q)); });
      else
        bad_dtype(Op::eq, x.dtype());
    });
  };
}
struct EqF { template <class T> bool operator()(T x, T y) const { return x == y; } };
struct LtF { template <class T> bool operator()(T x, T y) const { return x < y; } };
struct GtF { template <class T> bool operator()(T x, T y) const { return x > y; } };

// ---- unary maps (contiguous in and out) -----------------------------------------------------
template <class F> KernelFn unary_kernel() {
  return [](const KernelArgs& a) {
    const Tensor& x = a.in[0];
    Tensor& out = a.out[0];
    require_contiguous(x, Op::exp, "input");
    visit_float(Op::exp, x.dtype(), [&](auto z) {
      using T = decltype(z);
      const T* px = static_cast<const T*>(x.raw_data());
      T* po = static_cast<T*>(out.raw_data());
      T s = T(a.attrs.alpha);
      parallel_for(x.numel(), kGrain, [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float> && requires { F::vec(f32xw{}); }) {
          for_blocksw(b, e, [&](int64_t i, int64_t n) { storew(po + i, F::vec(loadw(px + i, n)), n); });
        } else {
          for (int64_t i = b; i < e; ++i) po[i] = F{}(px[i], s);
        }
      });
    });
  };
}
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;
struct AddScalarF { template <class T> T operator()(T x, T s) const { return x + s; } };
struct MulScalarF { template <class T> T operator()(T x, T s) const { return x * s; } };
struct PowScalarF { template <class T> T operator()(T x, T s) const { return s == T(2) ? x * x : std::pow(x, s); } };
struct NegF { template <class T> T operator()(T x, T) const { return -x; } };
struct ExpF {
  template <class T> T operator()(T x, T) const { return vexp(x); }
  template <class V> static V vec(V x) { return exp_v(x); }
};
struct LogF { template <class T> T operator()(T x, T) const { return std::log(x); } };
struct SqrtF { template <class T> T operator()(T x, T) const { return std::sqrt(x); } };
struct RsqrtF { template <class T> T operator()(T x, T) const { return T(1) / std::sqrt(x); } };
struct TanhF { template <class T> T operator()(T x, T) const { return std::tanh(x); } };
struct SigmoidF {
  template <class T> T operator()(T x, T) const { return vsigmoid(x); }
  template <class V> static V vec(V x) { return sigmoid_v(x); }
};
struct ReluF { template <class T> T operator()(T x, T) const { return x > T(0) ? x : T(0); } };
struct AbsF { template <class T> T operator()(T x, T) const { return std::abs(x); } };
// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (Hendrycks & Gimpel, 2016)
struct GeluTanhF {
  template <class T> T operator()(T x, T) const {
    T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (T(1) + vtanh(u));
  }
  // 0.5 (1 + tanh u) = sigmoid(2u): one exp and one division, no tanh.
  template <class V> static V vec(V x) {
    V u = float(kSqrt2OverPi) * (x + 0.044715f * x * x * x);
    return x / (1.0f + exp_v(-2.0f * u));
  }
};
struct GeluErfF {
  template <class T> T operator()(T x, T) const { return T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2))); }
};
struct SiluF {
  template <class T> T operator()(T x, T) const { return x * vsigmoid(x); }
  template <class V> static V vec(V x) { return x * sigmoid_v(x); }
};

// Fused backward maps: gx = gy * f'(x).
template <class F> KernelFn unary_backward_kernel() {
  return [](const KernelArgs& a) {
    const Tensor& x = a.in[0];
    const Tensor& gy = a.in[1];
    require_contiguous(x, Op::silu_backward, "x");
    require_contiguous(gy, Op::silu_backward, "gy");
    visit_float(Op::silu_backward, x.dtype(), [&](auto z) {
      using T = decltype(z);
      const T* px = static_cast<const T*>(x.raw_data());
      const T* pg = static_cast<const T*>(gy.raw_data());
      T* po = static_cast<T*>(a.out[0].raw_data());
      parallel_for(x.numel(), kGrain, [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float> && requires { F::vec(f32xw{}); }) {
          for_blocksw(b, e, [&](int64_t i, int64_t n) {
            storew(po + i, loadw(pg + i, n) * F::vec(loadw(px + i, n)), n);
          });
        } else {
          for (int64_t i = b; i < e; ++i) po[i] = pg[i] * F{}(px[i]);
        }
      });
    });
  };
}
struct GeluTanhGradF {
  template <class T> T operator()(T x) const {
    T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
    T t = vtanh(u);
    T du = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
  }
  // With s = sigmoid(2u) = 0.5 (1 + tanh u): 1 - tanh^2 u = 4 s (1 - s), so
  // gelu'(x) = s + 2 x s (1 - s) du/dx = s (1 + 2 x (1 - s) du/dx).
  template <class V> static V vec(V x) {
    V u = float(kSqrt2OverPi) * (x + 0.044715f * x * x * x);
    V s = sigmoid_v(2.0f * u);
    V du = float(kSqrt2OverPi) * (1.0f + float(3 * 0.044715) * x * x);
    return s * (1.0f + 2.0f * x * (1.0f - s) * du);
  }
};
struct GeluErfGradF {
  template <class T> T operator()(T x) const {
    return T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
  }
};
struct SiluGradF {
  template <class T> T operator()(T x) const {
    T s = vsigmoid(x);
    return s * (T(1) + x * (T(1) - s));
  }
  template <class V> static V vec(V x) {
    V s = sigmoid_v(x);
    return s * (1.0f + x * (1.0f - s));
  }
};

// ---- SwiGLU (Shazeer, 2020): out = silu(gate) * up, one pass over both inputs -----------------
void k_swiglu(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  const Tensor& u = a.in[1];
  require_contiguous(g, Op::swiglu, "gate");
  require_contiguous(u, Op::swiglu, "up");
  visit_float(Op::swiglu, g.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* pu = static_cast<const T*>(u.raw_data());
    T* po = static_cast<T*>(a.out[0].raw_data());
    parallel_for(g.numel(), kGrain, [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<T, float>) {
        for_blocksw(b, e, [&](int64_t i, int64_t n) {
          f32xw x = loadw(pg + i, n);
          storew(po + i, x * sigmoid_v(x) * loadw(pu + i, n), n);
        });
      } else {
        for (int64_t i = b; i < e; ++i) po[i] = pg[i] * vsigmoid(pg[i]) * pu[i];
      }
    });
  });
}

// ggate = gout * up * silu'(gate), silu'(x) = s (1 + x (1 - s)); gup = gout * silu(gate)
void k_swiglu_backward(const KernelArgs& a) {
  const Tensor& g = a.in[0];
  const Tensor& u = a.in[1];
  const Tensor& go = a.in[2];
  for (const Tensor* t : std::initializer_list<const Tensor*>{&g, &u, &go})
    require_contiguous(*t, Op::swiglu_backward, "operand");
  visit_float(Op::swiglu_backward, g.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* pu = static_cast<const T*>(u.raw_data());
    const T* pgo = static_cast<const T*>(go.raw_data());
    T* pgg = static_cast<T*>(a.out[0].raw_data());
    T* pgu = static_cast<T*>(a.out[1].raw_data());
    parallel_for(g.numel(), kGrain, [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<T, float>) {
        for_blocksw(b, e, [&](int64_t i, int64_t n) {
          f32xw x = loadw(pg + i, n), s = sigmoid_v(x), go = loadw(pgo + i, n);
          storew(pgu + i, go * x * s, n);
          storew(pgg + i, go * loadw(pu + i, n) * s * (1.0f + x * (1.0f - s)), n);
        });
      } else {
        for (int64_t i = b; i < e; ++i) {
          T x = pg[i], s = vsigmoid(x);
          pgu[i] = pgo[i] * x * s;
          pgg[i] = pgo[i] * pu[i] * s * (T(1) + x * (T(1) - s));
        }
      }
    });
  });
}

// ---- where ----------------------------------------------------------------------------------
void k_where(const KernelArgs& a) {
  const Tensor& cond = a.in[0];
  const Tensor& x = a.in[1];
  const Tensor& y = a.in[2];
  Tensor& out = a.out[0];
  const Dims& shape = out.shape();
  Dims sc = broadcast_strides(cond.shape(), cond.strides(), shape);
  Dims sx = broadcast_strides(x.shape(), x.strides(), shape);
  Dims sy = broadcast_strides(y.shape(), y.strides(), shape);
  visit_any(Op::where, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const uint8_t* pc = static_cast<const uint8_t*>(cond.raw_data());
    const T* px = static_cast<const T*>(x.raw_data());
    const T* py = static_cast<const T*>(y.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    if (shape.size() == 0) {
      po[0] = pc[0] ? px[0] : py[0];
      return;
    }
    int64_t cols = shape.back();
    parallel_for(outer_rows(shape), std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t r = b; r < e; ++r) {
                     const uint8_t* cr = pc + row_offset(shape, sc, r);
                     const T* xr = px + row_offset(shape, sx, r);
                     const T* yr = py + row_offset(shape, sy, r);
                     T* orow = po + r * cols;
                     for (int64_t c = 0; c < cols; ++c)
                       orow[c] = cr[c * sc.back()] ? xr[c * sx.back()] : yr[c * sy.back()];
                   }
                 });
  });
}

// ---- random fills -----------------------------------------------------------------------------
// Element i uses Philox counter (offset + i): independent of threads and of the tensor's split.
template <bool kNormal> void k_random(const KernelArgs& a) {
  Tensor& dst = a.out[0];
  require_contiguous(dst, Op::random_normal, "output");
  uint64_t seed = a.attrs.seed, offset = a.attrs.offset;
  double p0 = a.attrs.alpha, p1 = a.attrs.beta;
  visit_float(Op::random_normal, dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T* d = static_cast<T*>(dst.raw_data());
    parallel_for(dst.numel(), 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        auto w = philox4x32(seed, offset + uint64_t(i), 0);
        if constexpr (kNormal) d[i] = T(p0 + p1 * normal_from_block(w));
        else d[i] = T(p0 + (p1 - p0) * (1.0 - uniform_double(w[0], w[1])));  // [low, high)
      }
    });
  });
}

}  // namespace

void register_elementwise_kernels(KernelTable& t) {
  auto set = [&](Op op, KernelFn f) { t.fn[size_t(op)] = f; };
  set(Op::copy, k_copy);
  set(Op::fill, k_fill);
  set(Op::add, arith_kernel<AddF>());
  set(Op::sub, arith_kernel<SubF>());
  set(Op::mul, arith_kernel<MulF>());
  set(Op::div, arith_kernel<DivF>());
  set(Op::maximum, arith_kernel<MaxF>());
  set(Op::minimum, arith_kernel<MinF>());
  set(Op::eq, compare_kernel<EqF>());
  set(Op::lt, compare_kernel<LtF>());
  set(Op::gt, compare_kernel<GtF>());
  set(Op::add_scalar, unary_kernel<AddScalarF>());
  set(Op::mul_scalar, unary_kernel<MulScalarF>());
  set(Op::pow_scalar, unary_kernel<PowScalarF>());
  set(Op::neg, unary_kernel<NegF>());
  set(Op::exp, unary_kernel<ExpF>());
  set(Op::log, unary_kernel<LogF>());
  set(Op::sqrt, unary_kernel<SqrtF>());
  set(Op::rsqrt, unary_kernel<RsqrtF>());
  set(Op::tanh, unary_kernel<TanhF>());
  set(Op::sigmoid, unary_kernel<SigmoidF>());
  set(Op::relu, unary_kernel<ReluF>());
  set(Op::gelu_tanh, unary_kernel<GeluTanhF>());
  set(Op::gelu_erf, unary_kernel<GeluErfF>());
  set(Op::silu, unary_kernel<SiluF>());
  set(Op::abs, unary_kernel<AbsF>());
  set(Op::gelu_tanh_backward, unary_backward_kernel<GeluTanhGradF>());
  set(Op::gelu_erf_backward, unary_backward_kernel<GeluErfGradF>());
  set(Op::silu_backward, unary_backward_kernel<SiluGradF>());
  set(Op::swiglu, k_swiglu);
  set(Op::swiglu_backward, k_swiglu_backward);
  set(Op::where, k_where);
  set(Op::random_normal, k_random<true>);
  set(Op::random_uniform, k_random<false>);
}

}  // namespace loom::runtime::cpu
