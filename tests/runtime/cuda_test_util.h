// cuda_test_util.h: helpers of the CUDA backend's tests (test_cuda*.cpp): deterministic inputs
// made in f64 and cast, device copies, elementwise comparison reporting the worst element, and
// run_both, which runs one op on the CPU and on the device and checks the device did not fall
// back to the host. Only for builds with LOOM_WITH_CUDA.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"

namespace loom::runtime::cuda_testing {

#define SKIP_WITHOUT_CUDA()                                                               \
  do {                                                                                    \
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason(); \
  } while (0)

inline const Device kGpu = Device::cuda(0);

// ---- helpers ---------------------------------------------------------------------------------
inline Tensor randn(const Dims& shape, uint64_t seed, DType dt = DType::f32, double scale = 1.0) {
  Tensor t = Tensor::randn(shape, seed, DType::f64);
  std::vector<double> v = t.to_double_vector();
  for (double& x : v) x *= scale;
  return Tensor::from_vector(v, shape).to(dt);
}
inline Tensor values(const std::vector<double>& v, const Dims& shape, DType dt) {
  return Tensor::from_vector(v, shape).to(dt);
}
inline Tensor gpu(const Tensor& t) { return t.to(kGpu); }

// |got - want| <= atol + rtol |want| elementwise (NaN matches NaN, an infinity itself), reporting
// the worst element.
inline void expect_close(const Tensor& got, const Tensor& want, double rtol, double atol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  std::vector<double> g = got.to_double_vector(), w = want.to_double_vector();
  int64_t bad = 0, worst = -1;
  double worst_excess = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (g[i] == w[i] || (std::isnan(g[i]) && std::isnan(w[i]))) continue;  // equal infinities too
    double err = std::abs(g[i] - w[i]), lim = atol + rtol * std::abs(w[i]);
    if (!(err <= lim)) {
      ++bad;
      if (worst < 0 || err - lim > worst_excess || std::isnan(err)) worst = int64_t(i), worst_excess = err - lim;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.size() << " elements differ; worst at " << worst << ": cuda "
                    << (worst >= 0 ? g[size_t(worst)] : 0) << " vs cpu " << (worst >= 0 ? w[size_t(worst)] : 0);
}
inline void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  expect_close(got, want, 0, 0, what);
}

struct Spec {
  Dims shape;
  DType dtype;
};
struct Both {
  std::vector<Tensor> cpu, cuda;
};

// Runs `op` on CPU inputs and on their device twins (given, so tests can pass strided views);
// outputs are fresh contiguous tensors (a spec with an empty dtype list entry is undefined).
// Fails the test when the CUDA run used the host fallback (unless allow_fallback).
inline Both run_both(Op op, const std::vector<Tensor>& in_cpu, const std::vector<Tensor>& in_gpu,
              const std::vector<Spec>& outs, const OpAttrs& attrs = {}, bool allow_fallback = false) {
  Both r;
  for (const Spec& s : outs) {
    r.cpu.push_back(Tensor::empty(s.shape, s.dtype));
    r.cuda.push_back(Tensor::empty(s.shape, s.dtype, kGpu));
  }
  dispatch(op, in_cpu, r.cpu, attrs);
  int64_t before = host_fallback_count(op);
  dispatch(op, in_gpu, r.cuda, attrs);
  if (!allow_fallback) {
    EXPECT_EQ(host_fallback_count(op), before) << op_name(op) << " ran through the host fallback";
  }
  return r;
}
inline std::vector<Tensor> to_gpu(const std::vector<Tensor>& v) {
  std::vector<Tensor> r;
  for (const Tensor& t : v) r.push_back(t.defined() ? gpu(t) : t);
  return r;
}
inline Both run_both(Op op, const std::vector<Tensor>& in_cpu, const std::vector<Spec>& outs,
                     const OpAttrs& attrs = {}) {
  return run_both(op, in_cpu, to_gpu(in_cpu), outs, attrs);
}

}  // namespace loom::runtime::cuda_testing
