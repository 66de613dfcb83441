// test_f32_paths.cpp: the f32 CPU kernels run vector code (exp8 and its 16-lane form, f32 maps
// with f64 row sums) that the f64 finite-difference and golden tests never reach, since f64 takes the scalar
// path. Here each op's f32 forward and backward are compared with the same op run in f64 on
// the same values: the f64 path is the one gradcheck proves, so this pins the f32 one to it.
// Shapes have a column count that is not a multiple of 8, so the vector tails run too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "runtime/ops.h"

using namespace loom::runtime;

namespace {

// max |a - b| / max |b| over a tensor (b is the f64 result).
double rel_error(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double err = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err = std::max(err, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return err / std::max(scale, 1e-300);
}

// Runs op on f32 inputs and on the same values in f64, backpropagates the same output gradient,
// and checks the output and every input gradient to `tol`.
void check_f32_against_f64(const std::string& name, std::vector<Tensor> inputs,
                           const std::function<Tensor(const std::vector<Tensor>&)>& op, double tol) {
  std::vector<Tensor> f32, f64;
  for (const Tensor& t : inputs) {  // fresh leaves holding the same f32-rounded values
    f32.push_back(t.detach().to(DType::f64).to(DType::f32));
    f64.push_back(f32.back().to(DType::f64));
  }
  for (std::vector<Tensor>* set : {&f32, &f64})
    for (Tensor& x : *set) x.set_requires_grad(true);
  GradModeGuard grad(true);
  Tensor y32 = op(f32), y64 = op(f64);
  Tensor gy = Tensor::randn(y32.shape(), 99);
  y32.backward(gy);
  y64.backward(gy.to(DType::f64));
  EXPECT_LT(rel_error(y32, y64), tol) << name << " output";
  for (size_t i = 0; i < f32.size(); ++i)
    EXPECT_LT(rel_error(f32[i].grad(), f64[i].grad()), tol) << name << " gradient of input " << i;
}

TEST(F32Paths, GeluTanhMatchesF64) {
  Tensor x = Tensor::randn({37, 45}, 1) * 3.0;  // covers the saturated tails
  check_f32_against_f64("gelu_tanh", {x}, [](const auto& v) { return gelu(v[0], true); }, 1e-6);
}

TEST(F32Paths, SiluAndSwigluMatchF64) {
  Tensor g = Tensor::randn({29, 51}, 2) * 3.0, u = Tensor::randn({29, 51}, 3);
  check_f32_against_f64("silu", {g}, [](const auto& v) { return silu(v[0]); }, 1e-6);
  check_f32_against_f64("swiglu", {g, u}, [](const auto& v) { return swiglu(v[0], v[1]); }, 1e-6);
}

TEST(F32Paths, LayerNormMatchesF64) {
  Tensor x = Tensor::randn({33, 75}, 4) * 2.0 + 0.5, w = Tensor::randn({75}, 5), b = Tensor::randn({75}, 6);
  check_f32_against_f64("layer_norm", {x, w, b}, [](const auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); },
                        1e-6);
}

TEST(F32Paths, RmsNormMatchesF64) {
  Tensor x = Tensor::randn({33, 75}, 7) * 2.0, w = Tensor::randn({75}, 8);
  check_f32_against_f64("rms_norm", {x, w}, [](const auto& v) { return rms_norm(v[0], v[1], 1e-6); }, 1e-6);
}

TEST(F32Paths, SoftmaxAndLogSoftmaxMatchF64) {
  Tensor x = Tensor::randn({21, 301}, 9) * 4.0;
  check_f32_against_f64("softmax", {x}, [](const auto& v) { return softmax(v[0], -1); }, 1e-6);
  check_f32_against_f64("log_softmax", {x}, [](const auto& v) { return log_softmax(v[0], -1); }, 1e-6);
}

}  // namespace
