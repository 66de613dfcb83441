// parallel_test_util.h: helpers of the parallel suite: the world, a fixed set of sub-groups
// (created in the same order on every rank), and rank-valued tensors built from a formula.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "parallel/comm.h"
#include "parallel/distributed.h"
#include "runtime/ops.h"

namespace loom::parallel::testing {

using runtime::Dims;

inline const CommPtr& world() { return init_distributed().world(); }

// The world, then sub-groups splitting it: the first n-1 ranks and the last one (n >= 2), and
// pairs of neighbours (n = 4). Every group size from 1 to the world size appears.
inline const std::vector<CommPtr>& groups() {
  static std::vector<CommPtr> g = [] {
    std::vector<CommPtr> v{world()};
    const int n = world()->size(), r = world()->rank();
    if (n >= 2) v.push_back(world()->split(r == n - 1, r, r == n - 1 ? "last" : "first"));
    if (n == 4) v.push_back(world()->split(r / 2, r, "pair"));
    return v;
  }();
  return g;
}

// A tensor whose flat element i is f(i), in dtype dt.
inline Tensor make(const Dims& shape, DType dt, const std::function<double(int64_t)>& f) {
  std::vector<double> v(runtime::numel_of(shape));
  for (size_t i = 0; i < v.size(); ++i) v[i] = f(int64_t(i));
  return Tensor::from_vector<double>(v, shape).to(dt);
}

// Exact comparison with the values f(i).
inline void expect_values(const Tensor& t, const std::function<double(int64_t)>& f, const std::string& what) {
  std::vector<double> got = t.to_double_vector();
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i)
    if (got[i] != f(int64_t(i))) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", expected " << f(int64_t(i));
      ++bad;
    }
}

inline void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  std::vector<double> w = want.to_double_vector();
  expect_values(
      got, [&](int64_t i) { return w[i]; }, what);
}

inline std::string group_str(const Comm& c) {
  return c.name() + " (size " + std::to_string(c.size()) + ", rank " + std::to_string(c.rank()) + ")";
}

}  // namespace loom::parallel::testing
