// golden_compare.h: llm.c-style comparison against golden tensors: one OK / NOT OK line per
// tensor with its max difference (relative to the golden tensor's max magnitude), then one
// verdict that fails the test if any tensor was outside its tolerance.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace loom::testing {

// Prints one line per tensor and counts failures; verdict() asserts on the count.
class Comparer {
 public:
  explicit Comparer(double default_tol = 1e-5) : default_tol_(default_tol) {}
  void check(const std::string& label, const runtime::Tensor& got, const runtime::Tensor& want) {
    check(label, got, want, default_tol_);
  }
  // rel = max|got - want| / max(max|want|, scale): `scale` stands in for a tensor whose exact
  // value is 0 (both sides hold only rounding noise), measuring it against its neighbours' size.
  void check(const std::string& label, const runtime::Tensor& got, const runtime::Tensor& want, double tol,
             double scale = 0) {
    if (!got.defined()) {
      std::printf("NOT OK %-52s missing (no gradient reached it)\n", label.c_str());
      fail(label);
      return;
    }
    if (got.numel() != want.numel() || (got.dim() > 0 && got.shape() != want.shape())) {
      std::printf("NOT OK %-52s shape %s, golden %s\n", label.c_str(), got.shape().str().c_str(),
                  want.shape().str().c_str());
      fail(label);
      return;
    }
    std::vector<double> a = got.to_double_vector(), b = want.to_double_vector();
    double max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      double d = std::abs(a[i] - b[i]);
      max_diff = std::isnan(d) ? INFINITY : std::max(max_diff, d);
      max_ref = std::max(max_ref, std::abs(b[i]));
    }
    const double denom = std::max(max_ref, scale);
    double rel = denom > 0 ? max_diff / denom : max_diff;
    bool ok = rel <= tol;
    std::printf("%-6s %-52s max|diff| %.3e  max|ref| %.3e  rel %.3e  tol %.0e\n", ok ? "OK" : "NOT OK", label.c_str(),
                max_diff, max_ref, rel, tol);
    if (rel / tol >= worst_ / worst_tol_) worst_ = rel, worst_tol_ = tol;
    if (!ok) fail(label);
  }

  void verdict(const std::string& what) const {
    std::printf("%s: %s (closest to its tolerance: rel %.3e, tol %.0e)\n", what.c_str(), failures_ ? "NOT OK" : "OK",
                worst_, worst_tol_);
    std::string list;
    for (const auto& f : failed_) list += " " + f;
    EXPECT_EQ(failures_, 0) << what << ": tensors outside tolerance:" << list;
  }

 private:
  void fail(const std::string& label) {
    ++failures_;
    failed_.push_back(label);
  }
  double default_tol_;
  double worst_ = 0, worst_tol_ = 1;
  int failures_ = 0;
  std::vector<std::string> failed_;
};

}  // namespace loom::testing
