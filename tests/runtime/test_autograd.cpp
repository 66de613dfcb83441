// test_autograd.cpp: the tape: accumulation, grad mode, hooks, checkpoint replay, errors.
#include <gtest/gtest.h>

#include "runtime/kernels.h"
#include "runtime/ops.h"

using namespace loom::runtime;

namespace {
Tensor param(std::vector<double> v, Dims s) {
  Tensor t = Tensor::from_vector(v, s);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST(Autograd, ReusedTensorAccumulatesAllPaths) {
  Tensor x = param({1, 2, 3}, {3});
  Tensor y = sum(add(mul(x, x), x));  // d/dx = 2x + 1
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 5, 7}));
  // A second backward accumulates into .grad.
  sum(mul_scalar(x, 2.0)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 7, 9}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, BackwardWithGivenGradient) {
  Tensor x = param({1, 2}, {2});
  Tensor y = mul_scalar(x, 3.0);
  y.backward(Tensor::from_vector<double>({1, 10}, {2}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 30}));
  Tensor z = mul_scalar(x, 3.0);
  EXPECT_THROW(z.backward(), std::invalid_argument);  // non-scalar needs a gradient
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = param({1, 2}, {2});
  {
    NoGradGuard ng;
    Tensor y = mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  EXPECT_TRUE(mul(x, x).requires_grad());
  EXPECT_THROW(sum(Tensor::zeros({2})).backward(), std::invalid_argument);
  EXPECT_THROW(x.fill_(0), std::invalid_argument);  // in-place on a grad leaf
}

TEST(Autograd, PostAccumulateHooksRunLateLayersFirst) {
  Tensor w1 = param({2}, {1}), w2 = param({3}, {1});
  std::vector<std::string> order;
  w1.register_post_accumulate_hook([&](const Tensor& g) {
    order.push_back("w1");
    EXPECT_EQ(g.to_vector<double>()[0], 3.0 * 5.0);
  });
  w2.register_post_accumulate_hook([&](const Tensor&) { order.push_back("w2"); });
  Tensor x = Tensor::from_vector<double>({5}, {1});
  Tensor h = mul(x, w1);   // layer 1
  Tensor y = mul(h, w2);   // layer 2
  sum(y).backward();
  EXPECT_EQ(order, (std::vector<std::string>{"w2", "w1"}));
}

TEST(Autograd, CheckpointMatchesPlainBackwardAndReplaysDropout) {
  auto region = [](const std::vector<Tensor>& in) -> std::vector<Tensor> {
    Tensor h = dropout(tanh(matmul(in[0], in[1])), 0.5, true);
    return {mul(h, h)};
  };
  Tensor x = Tensor::randn({4, 6}, 1, DType::f64), w = Tensor::randn({6, 5}, 2, DType::f64);
  auto run = [&](bool use_checkpoint) {
    Tensor xi = x.clone(), wi = w.clone();
    xi.set_requires_grad(true);
    wi.set_requires_grad(true);
    manual_seed(99);
    Tensor out = use_checkpoint ? checkpoint(region, {xi, wi})[0] : region({xi, wi})[0];
    manual_seed(12345);  // disturb the generator between forward and backward
    sum(out).backward();
    return std::make_tuple(out.to_double_vector(), xi.grad().to_double_vector(), wi.grad().to_double_vector());
  };
  auto [o1, gx1, gw1] = run(false);
  auto [o2, gx2, gw2] = run(true);
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(gx1, gx2);
  EXPECT_EQ(gw1, gw2);
}

TEST(Autograd, CheckpointFreesInternalActivations) {
  Tensor w = Tensor::randn({256, 256}, 3);
  w.set_requires_grad(true);
  auto region = [&](const std::vector<Tensor>& in) -> std::vector<Tensor> {
    Tensor h = in[0];
    for (int i = 0; i < 4; ++i) h = tanh(matmul(h, w));
    return {h};
  };
  Tensor x = Tensor::randn({64, 256}, 4);
  Allocator& alloc = cpu_allocator();
  int64_t before = alloc.stats().live_bytes;
  Tensor plain = region({x})[0];
  int64_t plain_bytes = alloc.stats().live_bytes - before;
  plain = Tensor();
  int64_t before_ckpt = alloc.stats().live_bytes;
  Tensor ck = checkpoint(region, {x})[0];
  int64_t ckpt_bytes = alloc.stats().live_bytes - before_ckpt;
  // Plain keeps every layer's activations; checkpoint keeps only the output.
  EXPECT_LT(ckpt_bytes * 3, plain_bytes);
  sum(ck).backward();
  EXPECT_TRUE(w.grad().defined());
}

TEST(KernelTable, CpuImplementsEveryOp) {
  KernelTable& t = kernel_table(DeviceType::cpu);
  for (int i = 0; i < kNumOps; ++i) EXPECT_NE(t.fn[size_t(i)], nullptr) << op_name(Op(i));
}

TEST(Sampling, TopKAndMultinomial) {
  Tensor x = Tensor::from_vector<float>({0.1f, 3.0f, -1.0f, 3.0f, 2.0f}, {1, 5});
  TopK tk = topk(x, 3);
  EXPECT_EQ(tk.values.to_vector<float>(), (std::vector<float>{3.0f, 3.0f, 2.0f}));
  EXPECT_EQ(tk.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 4}));
  manual_seed(5);
  Tensor probs = Tensor::from_vector<float>({0.0f, 0.7f, 0.3f, 0.0f}, {1, 4});
  Tensor s = multinomial(probs, 2000, true);
  std::vector<int64_t> v = s.to_vector<int64_t>();
  int64_t ones = std::count(v.begin(), v.end(), 1), twos = std::count(v.begin(), v.end(), 2);
  EXPECT_EQ(ones + twos, 2000);
  EXPECT_NEAR(double(ones) / 2000.0, 0.7, 0.04);
  Tensor nr = multinomial(probs, 2, false);
  std::vector<int64_t> w = nr.to_vector<int64_t>();
  std::sort(w.begin(), w.end());
  EXPECT_EQ(w, (std::vector<int64_t>{1, 2}));
  EXPECT_THROW(multinomial(probs, 3, false), std::invalid_argument);
  // Same seed, same draws.
  manual_seed(5);
  EXPECT_EQ(multinomial(probs, 2000, true).to_vector<int64_t>(), v);
}
