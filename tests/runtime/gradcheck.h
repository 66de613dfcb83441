// gradcheck.h: central finite differences in f64 against autograd, for the op table tests.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "runtime/ops.h"

namespace loom::testing {
using runtime::Tensor;

// Checks d(sum(f(inputs) * R))/d(inputs) for a fixed random R: autograd vs central differences.
// Inputs are f64 leaves; `tolerance` bounds max |analytic - numeric| / max(1, max |numeric|).
inline void expect_gradients_match(const std::string& name, const std::function<Tensor(std::vector<Tensor>&)>& f,
                                   std::vector<Tensor> inputs, double tolerance = 1e-7, double eps = 1e-6) {
  using namespace runtime;
  for (Tensor& t : inputs) t.set_requires_grad(true);
  Tensor out = f(inputs);
  Tensor R = Tensor::randn(out.shape(), 1234, DType::f64);
  sum(mul(out, R)).backward();
  auto loss_at = [&]() {
    NoGradGuard ng;
    return sum(mul(f(inputs), R)).item();
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    ASSERT_TRUE(x.grad().defined()) << name << ": input " << k << " got no gradient";
    std::vector<double> analytic = x.grad().to_double_vector();
    // Perturb through a contiguous view of the leaf's storage element by element.
    Tensor flat = x.detach();
    std::vector<double> numeric(size_t(x.numel()));
    std::vector<double> base = flat.to_double_vector();
    for (int64_t i = 0; i < x.numel(); ++i) {
      auto set = [&](double v) {
        std::vector<double> vals = base;
        vals[size_t(i)] = v;
        NoGradGuard ng;
        flat.copy_(Tensor::from_vector(vals, x.shape()));
      };
      set(base[size_t(i)] + eps);
      double lp = loss_at();
      set(base[size_t(i)] - eps);
      double lm = loss_at();
      set(base[size_t(i)]);
      numeric[size_t(i)] = (lp - lm) / (2 * eps);
    }
    double max_err = 0, scale = 1;
    for (size_t i = 0; i < numeric.size(); ++i) {
      max_err = std::max(max_err, std::abs(analytic[i] - numeric[i]));
      scale = std::max(scale, std::abs(numeric[i]));
    }
    EXPECT_LE(max_err / scale, tolerance) << name << ": input " << k << " max gradient error " << max_err
                                          << " (scale " << scale << ")";
  }
}

inline Tensor randn64(const runtime::Dims& shape, uint64_t seed) {
  return Tensor::randn(shape, seed, runtime::DType::f64);
}

}  // namespace loom::testing
