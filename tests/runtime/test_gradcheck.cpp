// test_gradcheck.cpp: every differentiable op's backward against central finite differences in
// f64, from the table of cases in op_cases.h (broadcast and non-contiguous inputs included). Tolerance: max
// |analytic - numeric| <= 1e-7 x max(1, max |numeric|) with eps = 1e-6 (truncation error of the
// central difference is O(eps^2) ~ 1e-12, rounding ~1e-16/eps ~ 1e-10).
#include "tests/runtime/op_cases.h"

using namespace loom::runtime;
using loom::testing::expect_gradients_match;
using loom::testing::randn64;

namespace {

class GradCheck : public ::testing::TestWithParam<loom::testing::OpCase> {};

TEST_P(GradCheck, MatchesFiniteDifferences) {
  const loom::testing::OpCase& gc = GetParam();
  expect_gradients_match(gc.name, gc.f, gc.inputs(), gc.tolerance, gc.eps);
}

INSTANTIATE_TEST_SUITE_P(Ops, GradCheck, ::testing::ValuesIn(loom::testing::op_cases()),
                         [](const ::testing::TestParamInfo<loom::testing::OpCase>& i) { return i.param.name; });

}  // namespace
