// test_linear_cross_entropy.cpp: the fused LM head + loss is cross_entropy(linear(x, W), t):
// the same loss and the same gradients of x and W (relative to 1e-12 in f64, 1e-6 in f32) for every
// reduction, with ignored rows and label smoothing, for uniform and per-row upstream gradients;
// and it keeps one [N, V] buffer where the composition keeps two.
// (Finite differences: test_gradcheck.cpp; against PyTorch through a whole model:
// tests/models/test_model_golden.cpp, ModelGolden.*Fused.)
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/autograd.h"
#include "runtime/ops.h"

namespace loom::runtime {
namespace {

struct Result {
  std::vector<double> loss, gx, gw;
};

// max |a - b| / max(1, max |b|): the products round differently (the loss gradient scales the
// GEMM instead of the logits' gradient), so f32 agrees to rounding, not bit for bit.
double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0, scale = 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    m = std::max(m, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return m / scale;
}

// loss (reduced per opt) and the gradients of sum(loss * R) for x [N, C] and W [V, C].
Result run(bool fused, DType dt, const CrossEntropyOptions& opt, const Tensor& target, int64_t N, int64_t C, int64_t V) {
  Tensor x = Tensor::randn({N, C}, 1, dt), w = Tensor::randn({V, C}, 2, dt);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  Tensor loss = fused ? linear_cross_entropy(x, w, target, opt) : cross_entropy(linear(x, w), target, opt);
  Tensor R = Tensor::randn(loss.shape(), 3, dt);
  sum(mul(loss, R)).backward();
  return {loss.to_double_vector(), x.grad().to_double_vector(), w.grad().to_double_vector()};
}

Tensor targets(int64_t N, int64_t V, int64_t ignore_every) {
  std::vector<int64_t> t(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) t[size_t(i)] = ignore_every && i % ignore_every == 2 ? -100 : (i * 7 + 3) % V;
  return Tensor::from_vector(t, {N});
}

TEST(LinearCrossEntropy, MatchesCompositionForEveryReduction) {
  const int64_t N = 37, C = 20, V = 53;  // V not a multiple of 8: the kernels' vector tails
  for (DType dt : {DType::f64, DType::f32}) {
    const double tol = dt == DType::f64 ? 1e-12 : 1e-6;
    for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none}) {
      for (double smoothing : {0.0, 0.1}) {
        CrossEntropyOptions opt;
        opt.reduction = red;
        opt.label_smoothing = smoothing;
        Tensor t = targets(N, V, 5);
        Result a = run(false, dt, opt, t, N, C, V), b = run(true, dt, opt, t, N, C, V);
        std::string what = std::string(dtype_name(dt)) + " reduction " + std::to_string(int(red)) + " smoothing " +
                           std::to_string(smoothing);
        EXPECT_LE(max_rel_diff(b.loss, a.loss), tol) << what;
        EXPECT_LE(max_rel_diff(b.gx, a.gx), tol) << what;
        EXPECT_LE(max_rel_diff(b.gw, a.gw), tol) << what;
      }
    }
  }
}

// V = 1024: the logits rows are padded (the AVX-512 GEMM would otherwise repack them for the
// input gradient) and 1040 rows are enough for that product to read them in place (520 per
// thread at 2 threads).
TEST(LinearCrossEntropy, PaddedLogitsRowsMatchTheComposition) {
  const int64_t N = 1040, C = 24, V = 1024;
  for (Reduction red : {Reduction::mean, Reduction::none}) {  // none: per-row loss gradients
    CrossEntropyOptions opt;
    opt.reduction = red;
    Tensor t = targets(N, V, 7);
    Result a = run(false, DType::f32, opt, t, N, C, V), b = run(true, DType::f32, opt, t, N, C, V);
    EXPECT_LE(max_rel_diff(b.loss, a.loss), 1e-6) << int(red);
    EXPECT_LE(max_rel_diff(b.gx, a.gx), 1e-6) << int(red);
    EXPECT_LE(max_rel_diff(b.gw, a.gw), 1e-6) << int(red);
  }
}

TEST(LinearCrossEntropy, EveryTargetIgnoredGivesZeroLossAndGradients) {
  CrossEntropyOptions opt;  // mean
  Tensor t = Tensor::from_vector(std::vector<int64_t>{-100, -100, -100}, {3});
  Result r = run(true, DType::f64, opt, t, 3, 4, 6);
  ASSERT_EQ(r.loss.size(), 1u);
  EXPECT_EQ(r.loss[0], 0.0);
  for (double g : r.gx) EXPECT_EQ(g, 0.0);
  for (double g : r.gw) EXPECT_EQ(g, 0.0);
}

TEST(LinearCrossEntropy, LeadingDimsAndNoGradMode) {
  // x [B, T, C] with target [B, T]; under NoGradGuard the composition's value.
  Tensor x = Tensor::randn({2, 3, 4}, 1, DType::f64), w = Tensor::randn({5, 4}, 2, DType::f64);
  Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 4, 2, -100, 1, 3}, {2, 3});
  CrossEntropyOptions none;
  none.reduction = Reduction::none;
  Tensor expect = cross_entropy(linear(x, w), t, none);
  Tensor got;
  {
    NoGradGuard ng;
    got = linear_cross_entropy(x, w, t, none);
  }
  EXPECT_EQ(got.shape(), expect.shape());
  EXPECT_LE(max_rel_diff(got.to_double_vector(), expect.to_double_vector()), 1e-12);
  x.set_requires_grad(true);
  Tensor loss = linear_cross_entropy(x, w, t);
  loss.backward();
  EXPECT_EQ(x.grad().shape(), x.shape());
  EXPECT_FALSE(w.grad().defined());  // only what requires a gradient gets one
}

TEST(LinearCrossEntropy, BadArgumentsNameTheOpAndShapes) {
  Tensor x = Tensor::randn({4, 3}, 1), w = Tensor::randn({6, 3}, 2);
  auto message_of = [](auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string m = message_of([&] { linear_cross_entropy(x, w, Tensor::from_vector(std::vector<int64_t>{1, 2, 3}, {3})); });
  EXPECT_NE(m.find("linear_cross_entropy"), std::string::npos) << m;
  EXPECT_NE(m.find("[4, 3]"), std::string::npos) << m;
  m = message_of([&] { linear_cross_entropy(x, Tensor::randn({6, 2}, 2), Tensor::zeros({4}, DType::i64)); });
  EXPECT_NE(m.find("does not match weight"), std::string::npos) << m;
  m = message_of([&] { linear_cross_entropy(x, w, Tensor::from_vector(std::vector<int64_t>{0, 9, 1, 2}, {4})); });
  EXPECT_NE(m.find("target 9 at row 1"), std::string::npos) << m;
}

// The point of the fusion: the composition holds the logits and allocates their gradient in
// backward (two [N, V] buffers at its peak); the fused op's logits become their own gradient.
TEST(LinearCrossEntropy, KeepsOneLogitsBufferWhereTheCompositionKeepsTwo) {
  const int64_t N = 256, C = 16, V = 4096;  // [N, V] f32: 4 MiB
  const int64_t logits_bytes = N * V * 4;
  auto peak_during = [&](bool fused) {
    Tensor x = Tensor::randn({N, C}, 1), w = Tensor::randn({V, C}, 2);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    Tensor t = targets(N, V, 0);
    Allocator& al = cpu_allocator();
    const int64_t base = al.stats().live_bytes;
    al.reset_peak();
    {
      Tensor loss = fused ? linear_cross_entropy(x, w, t) : cross_entropy(linear(x, w), t);
      loss.backward();
    }
    return al.stats().peak_bytes - base;
  };
  const int64_t composed = peak_during(false), fused = peak_during(true);
  EXPECT_GE(composed, 2 * logits_bytes);
  EXPECT_LT(fused, 2 * logits_bytes);
  EXPECT_GE(fused, logits_bytes);
}

}  // namespace
}  // namespace loom::runtime
