// test_optim.cpp: schedules, SGD with momentum, clipping and optimizer state round trips
// (AdamW itself is checked against PyTorch in test_model_golden.cpp).
#include <gtest/gtest.h>

#include <cmath>

#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "runtime/ops.h"

using namespace loom;
using runtime::Tensor;

TEST(Schedule, WarmupCosineAndWsd) {
  optim::ScheduleOptions s;
  s.lr = 1.0;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_lr_ratio = 0.1;
  s.kind = "cosine";
  EXPECT_DOUBLE_EQ(optim::learning_rate(s, 0), 0.1);
  EXPECT_DOUBLE_EQ(optim::learning_rate(s, 9), 1.0);
  EXPECT_DOUBLE_EQ(optim::learning_rate(s, 10), 1.0);
  EXPECT_NEAR(optim::learning_rate(s, 60), 0.55, 1e-12);  // halfway: (1 + 0.1) / 2
  EXPECT_NEAR(optim::learning_rate(s, 110), 0.1, 1e-12);
  EXPECT_NEAR(optim::learning_rate(s, 500), 0.1, 1e-12);  // clamped past the end
  s.kind = "wsd";
  s.decay_fraction = 0.2;  // decays over the last 22 steps
  EXPECT_DOUBLE_EQ(optim::learning_rate(s, 50), 1.0);
  EXPECT_DOUBLE_EQ(optim::learning_rate(s, 88), 1.0);
  EXPECT_NEAR(optim::learning_rate(s, 99), 1.0 - 0.9 * 11.0 / 22.0, 1e-12);
  EXPECT_NEAR(optim::learning_rate(s, 110), 0.1, 1e-12);
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(optim::learning_rate(s, 100), 1.0);
  s.kind = "linear";
  EXPECT_THROW(optim::learning_rate(s, 20), std::invalid_argument);
}

TEST(Optimizer, SgdMomentumMatchesTheRecurrence) {
  Tensor w = Tensor::from_vector<double>({1.0, -2.0});
  w.set_requires_grad(true);
  optim::SGD sgd({{"w", w, true}}, {0.9, 0.01});
  double v[2] = {0, 0}, ref[2] = {1.0, -2.0};
  for (int step = 0; step < 3; ++step) {
    sgd.zero_grad();
    runtime::sum(runtime::mul(w, w)).backward();  // grad = 2w
    sgd.step(0.1);
    for (int i = 0; i < 2; ++i) {
      double g = 2 * ref[i] + 0.01 * ref[i];
      v[i] = 0.9 * v[i] + g;
      ref[i] -= 0.1 * v[i];
    }
  }
  std::vector<double> got = w.to_vector<double>();
  EXPECT_NEAR(got[0], ref[0], 1e-15);
  EXPECT_NEAR(got[1], ref[1], 1e-15);
  EXPECT_EQ(sgd.state().size(), 1u);
}

TEST(Optimizer, ClipGradNormScalesToTheLimit) {
  Tensor a = Tensor::from_vector<double>({3.0}), b = Tensor::from_vector<double>({4.0});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  runtime::sum(runtime::add(runtime::mul_scalar(a, 3.0), runtime::mul_scalar(b, 4.0))).backward();  // grads 3, 4
  std::vector<optim::ParamRef> ps{{"a", a, true}, {"b", b, true}};
  EXPECT_DOUBLE_EQ(optim::grad_norm(ps), 5.0);
  EXPECT_DOUBLE_EQ(optim::clip_grad_norm(ps, 1.0), 5.0);
  EXPECT_NEAR(optim::grad_norm(ps), 1.0, 1e-6);
  EXPECT_NEAR(a.grad().item(), 0.6, 1e-6);
}

// f32 gradients of several blocks: the norm is the f64 sum of the exact squares, and clipping
// scales each gradient in place (same storage, every element times the same factor).
TEST(Optimizer, ClipScalesF32GradientsInPlace) {
  std::vector<optim::ParamRef> ps;
  std::vector<std::vector<float>> before;
  long double ref = 0;
  for (int64_t n : {int64_t(7), int64_t(40000)}) {
    Tensor p = Tensor::zeros({n});
    p.set_requires_grad(true);
    p.set_grad(Tensor::randn({n}, uint64_t(n)));
    before.push_back(p.grad().to_vector<float>());
    for (float g : before.back()) ref += (long double)g * (long double)g;
    ps.push_back({"p" + std::to_string(n), p, true});
  }
  const double norm = double(std::sqrt(ref));
  const void* storage = ps[1].tensor.grad().raw_data();
  EXPECT_NEAR(optim::clip_grad_norm(ps, 2.0), norm, 1e-12 * norm);
  EXPECT_EQ(ps[1].tensor.grad().raw_data(), storage);
  const float s = float(2.0 / (norm + 1e-6));
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::vector<float> after = ps[i].tensor.grad().to_vector<float>();
    for (size_t j = 0; j < after.size(); ++j) ASSERT_EQ(after[j], before[i][j] * s) << i << ", " << j;
  }
  EXPECT_NEAR(optim::grad_norm(ps), 2.0, 1e-5);
}

TEST(Optimizer, StateRoundTripsByName) {
  Tensor w = Tensor::from_vector<float>({1.0f, 2.0f});
  w.set_requires_grad(true);
  optim::AdamW a({{"w", w, true}}, {});
  runtime::sum(runtime::mul(w, w)).backward();
  a.step(0.1);
  auto st = a.state();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st[0].first, "w/exp_avg");
  Tensor w2 = Tensor::from_vector<float>({1.0f, 2.0f});
  w2.set_requires_grad(true);
  optim::AdamW b({{"w", w2, true}}, {});
  b.load_state(st);
  EXPECT_EQ(b.state()[1].second.to_vector<float>(), st[1].second.to_vector<float>());
  EXPECT_THROW(b.load_state({}), std::runtime_error);
}
