// test_cuda.cpp: the CUDA backend against its CPU twins. Each test runs the same inputs through
// the CPU and the CUDA kernel table and compares (exact for copies, fills, binary maps and
// comparisons; per-op tolerances elsewhere), and checks that the CUDA run did not go through
// the host fallback. Without a device every device test skips with the reason; the table and
// error-message tests run everywhere the backend is built.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "runtime/kernels.h"
#include "runtime/ops.h"

#ifdef LOOM_WITH_CUDA
#include "tests/runtime/cuda_test_util.h"
#endif

namespace loom::runtime {
namespace {

#ifndef LOOM_WITH_CUDA

// Without the backend, asking for a CUDA tensor is one clear error, not a crash.
TEST(Cuda, BuiltWithoutCudaRefusesCudaTensorsClearly) {
  try {
    Tensor::zeros({2}).to(Device::cuda(0));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("built without its backend"), std::string::npos) << e.what();
  }
}

#else

using namespace cuda_testing;

const DType kAllDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8};

// ---- tests that run without a device -------------------------------------------------------------
TEST(CudaBackend, TableHasTheSpecialisedKernels) {
  const KernelTable& t = kernel_table(DeviceType::cuda);
  for (Op op : {Op::copy, Op::fill, Op::add, Op::sub, Op::mul, Op::div, Op::maximum, Op::minimum, Op::eq, Op::lt,
                Op::gt, Op::where, Op::add_scalar, Op::mul_scalar, Op::pow_scalar, Op::neg, Op::exp, Op::log,
                Op::sqrt, Op::rsqrt, Op::tanh, Op::sigmoid, Op::relu, Op::abs, Op::gelu_tanh, Op::gelu_erf,
                Op::silu, Op::gelu_tanh_backward, Op::gelu_erf_backward, Op::silu_backward, Op::sum_dim,
                Op::max_dim, Op::matmul, Op::softmax_last, Op::softmax_backward_last, Op::log_softmax_last,
                Op::log_softmax_backward_last, Op::cross_entropy, Op::cross_entropy_backward, Op::rms_norm,
                Op::rms_norm_backward, Op::layer_norm, Op::layer_norm_backward, Op::swiglu, Op::swiglu_backward,
                Op::adamw_step, Op::sgd_step, Op::embedding, Op::embedding_backward, Op::rope, Op::attention,
                Op::attention_backward, Op::sum_squares})
    EXPECT_NE(t.fn[size_t(op)], nullptr) << op_name(op);
  // Ops the first version leaves to the host fallback.
  for (Op op : {Op::dropout, Op::random_normal, Op::multinomial})
    EXPECT_EQ(t.fn[size_t(op)], nullptr) << op_name(op);
}

TEST(CudaBackend, ErrorMessageNamesCallLocationAndReason) {
  std::string m = cuda::error_message(2, "cudaMalloc(&p, n)", "runtime/cuda/x.cu", 42);  // cudaErrorMemoryAllocation
  EXPECT_NE(m.find("cudaMalloc(&p, n)"), std::string::npos) << m;
  EXPECT_NE(m.find("runtime/cuda/x.cu:42"), std::string::npos) << m;
  EXPECT_NE(m.find("out of memory"), std::string::npos) << m;
}

TEST(CudaBackend, RoundsSizeClasses) {
  using A = cuda::CudaCachingAllocator;
  EXPECT_EQ(A::round_size(0), 512u);
  EXPECT_EQ(A::round_size(1), 512u);
  EXPECT_EQ(A::round_size(513), 1024u);
  EXPECT_EQ(A::round_size(size_t(1) << 20), size_t(1) << 20);
  EXPECT_EQ(A::round_size((size_t(1) << 20) + 1), size_t(2) << 20);
  EXPECT_EQ(A::round_size((size_t(5) << 20) + 7), size_t(6) << 20);
}

TEST(CudaBackend, MissingDeviceGivesAClearError) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  try {
    Tensor::empty({4}, DType::f32, kGpu);
    FAIL() << "allocating on cuda:0 without a device did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

// ---- allocator ------------------------------------------------------------------------------------
TEST(CudaAllocator, ReusesFreedBlocksWithoutCudaMalloc) {
  SKIP_WITHOUT_CUDA();
  auto& al = cuda::caching_allocator(0);
  al.empty_cache();
  auto s0 = al.cache_stats();
  int64_t live0 = al.stats().live_bytes, count0 = al.stats().num_allocs;

  void* p = al.allocate(1000);  // -> 1024-byte class
  EXPECT_EQ(al.stats().live_bytes, live0 + 1000);
  al.deallocate(p, 1000);
  EXPECT_EQ(al.stats().live_bytes, live0);
  EXPECT_EQ(al.cache_stats().cached_bytes, s0.cached_bytes + 1024);
  void* q = al.allocate(900);  // same class: the cached block comes back
  EXPECT_EQ(q, p);
  EXPECT_EQ(al.cache_stats().device_mallocs, s0.device_mallocs + 1);
  EXPECT_EQ(al.cache_stats().cache_hits, s0.cache_hits + 1);
  EXPECT_EQ(al.stats().num_allocs, count0 + 2);

  size_t big = (size_t(3) << 20) + 5;  // -> 4 MiB
  void* b1 = al.allocate(big);
  al.deallocate(b1, big);
  void* b2 = al.allocate((size_t(4) << 20) - 1);
  EXPECT_EQ(b2, b1);
  EXPECT_EQ(al.cache_stats().device_mallocs, s0.device_mallocs + 2);
  al.deallocate(b2, (size_t(4) << 20) - 1);
  al.deallocate(q, 900);
  EXPECT_EQ(al.stats().live_bytes, live0);

  // Tensors go through the same cache.
  void* first;
  {
    Tensor t = Tensor::empty({1000}, DType::f32, kGpu);
    first = t.storage()->data();
  }
  Tensor u = Tensor::empty({1000}, DType::f32, kGpu);
  EXPECT_EQ(u.storage()->data(), first);

  int64_t reserved = al.cache_stats().reserved_bytes;
  al.empty_cache();
  auto s1 = al.cache_stats();
  EXPECT_EQ(s1.cached_bytes, 0);
  EXPECT_LT(s1.reserved_bytes, reserved);
  EXPECT_GT(s1.device_frees, s0.device_frees);
}

TEST(CudaAllocator, PeakTracksLiveBytes) {
  SKIP_WITHOUT_CUDA();
  auto& al = cuda::caching_allocator(0);
  al.reset_peak();
  int64_t live0 = al.stats().live_bytes;
  {
    Tensor a = Tensor::empty({1 << 20}, DType::f32, kGpu);
    Tensor b = Tensor::empty({1 << 20}, DType::f32, kGpu);
    EXPECT_EQ(al.stats().live_bytes, live0 + (int64_t(8) << 20));
  }
  EXPECT_EQ(al.stats().live_bytes, live0);
  EXPECT_GE(al.stats().peak_bytes, live0 + (int64_t(8) << 20));
}

TEST(CudaAllocator, HostDeviceCopiesRoundTrip) {
  SKIP_WITHOUT_CUDA();
  auto& al = cuda::caching_allocator(0);
  std::vector<uint8_t> src(10000), back(10000);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint8_t(i * 7 + 3);
  void* d1 = al.allocate(src.size());
  void* d2 = al.allocate(src.size());
  al.copy_from_host(d1, src.data(), src.size());
  al.copy_on_device(d2, d1, src.size());
  al.copy_to_host(back.data(), d2, back.size());
  EXPECT_EQ(back, src);
  al.deallocate(d1, src.size());
  al.deallocate(d2, src.size());
}

TEST(CudaAllocator, BadDeviceIndexIsNamed) {
  SKIP_WITHOUT_CUDA();
  try {
    Tensor::empty({4}, DType::f32, Device::cuda(63));
    FAIL() << "cuda:63 did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:63"), std::string::npos) << e.what();
  }
}

// ---- copy and fill ------------------------------------------------------------------------------
// Values every dtype holds sensibly (non-negative, < 150) including fractions.
Tensor cast_source(DType dt, const Dims& shape) {
  std::vector<double> v(size_t(numel_of(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(i % 200) * 0.75 + (i % 3 == 0 ? 0.1 : 0.0);
  return values(v, shape, dt);
}

TEST(CudaCopy, ContiguousCastsAmongAllDtypesAreExact) {
  SKIP_WITHOUT_CUDA();
  Dims shape{7, 129};
  for (DType s : kAllDtypes) {
    for (DType d : kAllDtypes) {
      Tensor src = cast_source(s, shape);
      Both r = run_both(Op::copy, {src}, {{shape, d}});
      expect_equal(r.cuda[0], r.cpu[0], std::string("copy ") + dtype_name(s) + " -> " + dtype_name(d));
    }
  }
}

TEST(CudaCopy, SignedAndSpecialValuesCastLikeTheCpu) {
  SKIP_WITHOUT_CUDA();
  double inf = std::numeric_limits<double>::infinity();
  std::vector<double> v = {-3.7, -0.5, -0.0, 0.0, 1e-8, 6.1e-5, 65519.0, 65520.0, 1e30, -1e30, inf, -inf,
                           3.3895e38, 1.0 / 3.0, -2.5, 2.5, 1e-40, 5.9604644775390625e-08};
  Dims shape{int64_t(v.size())};
  for (DType s : {DType::f32, DType::f64}) {
    for (DType d : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
      Tensor src = values(v, shape, s);
      Both r = run_both(Op::copy, {src}, {{shape, d}});
      expect_equal(r.cuda[0], r.cpu[0], std::string("copy ") + dtype_name(s) + " -> " + dtype_name(d));
    }
  }
  std::vector<double> small = {-3.7, -0.5, 0.0, 2.5, -100.9, 99.99, 1234.5};
  for (DType s : {DType::f32, DType::f64, DType::bf16, DType::f16})
    for (DType d : {DType::i32, DType::i64}) {
      Tensor src = values(small, {7}, s);
      Both r = run_both(Op::copy, {src}, {{Dims{7}, d}});
      expect_equal(r.cuda[0], r.cpu[0], std::string("copy ") + dtype_name(s) + " -> " + dtype_name(d));
    }
}

TEST(CudaCopy, StridedSourcesAndDestinations) {
  SKIP_WITHOUT_CUDA();
  Tensor x = randn({4, 5, 6}, 1);
  Tensor xg = gpu(x);
  // Permuted source, contiguous destination (same dtype and with a cast).
  for (DType d : {DType::f32, DType::bf16, DType::f64}) {
    Both r = run_both(Op::copy, {x.permute({2, 0, 1})}, {xg.permute({2, 0, 1})}, {{Dims{6, 4, 5}, d}});
    expect_equal(r.cuda[0], r.cpu[0], std::string("permuted copy -> ") + dtype_name(d));
  }
  // Broadcast (stride 0) source.
  Tensor row = randn({1, 6}, 2);
  Both r = run_both(Op::copy, {row.expand({5, 6})}, {gpu(row).expand({5, 6})}, {{Dims{5, 6}, DType::f32}});
  expect_equal(r.cuda[0], r.cpu[0], "expanded copy");
  // Strided destination: write a transposed block into a narrowed view; the rest stays.
  Tensor base_c = Tensor::zeros({6, 8}), base_g = Tensor::zeros({6, 8}, DType::f32, kGpu);
  Tensor src = randn({5, 6}, 3);
  Tensor dst_c = base_c.narrow(1, 1, 5).transpose(0, 1), dst_g = base_g.narrow(1, 1, 5).transpose(0, 1);
  dispatch(Op::copy, {src}, {dst_c});
  int64_t before = host_fallback_count(Op::copy);
  dispatch(Op::copy, {gpu(src)}, {dst_g});
  EXPECT_EQ(host_fallback_count(Op::copy), before);
  expect_equal(base_g, base_c, "strided destination");
  // Empty tensors are a no-op.
  Tensor e = Tensor::empty({0, 3}, DType::f32, kGpu);
  dispatch(Op::copy, {Tensor::empty({0, 3}, DType::f32, kGpu)}, {e});
}

TEST(CudaFill, ContiguousAndStridedAllDtypes) {
  SKIP_WITHOUT_CUDA();
  for (DType d : kAllDtypes) {
    for (double v : {0.0, 1.5, 7.0, 0.1}) {
      OpAttrs at;
      at.alpha = v;
      Both r = run_both(Op::fill, {}, {}, {{Dims{1000}, d}}, at);
      expect_equal(r.cuda[0], r.cpu[0], std::string("fill ") + dtype_name(d) + " " + std::to_string(v));
    }
  }
  Tensor base_c = Tensor::zeros({6, 8}), base_g = Tensor::zeros({6, 8}, DType::f32, kGpu);
  OpAttrs at;
  at.alpha = -2.25;
  Tensor vc = base_c.narrow(1, 2, 3).transpose(0, 1), vg = base_g.narrow(1, 2, 3).transpose(0, 1);
  dispatch(Op::fill, {}, {vc}, at);
  dispatch(Op::fill, {}, {vg}, at);
  expect_equal(base_g, base_c, "strided fill");
}

// ---- binary maps -------------------------------------------------------------------------------------
struct BinaryCase {
  Dims a, b;
  bool transpose_a = false;
};
const BinaryCase kBinaryCases[] = {
    {{33, 65}, {33, 65}},         // same shape, contiguous
    {{33, 65}, {65}},             // row broadcast (bias)
    {{65}, {33, 65}},             // row broadcast, vector first
    {{33, 65}, {1}},              // scalar tensor
    {{33, 65}, {33, 1}},          // column broadcast: general path
    {{4, 1, 6}, {1, 5, 6}},       // both broadcast
    {{65, 33}, {33, 65}, true},   // transposed operand
    {{2, 3, 4, 5, 6}, {3, 1, 5, 1}},
};

Tensor binary_input(const Dims& shape, uint64_t seed, DType dt) {
  if (dt == DType::i32 || dt == DType::i64) {  // 1..9 so integer division is defined
    std::vector<double> v(size_t(numel_of(shape)));
    for (size_t i = 0; i < v.size(); ++i) v[i] = double((i * 7 + seed * 3) % 9 + 1);
    return values(v, shape, dt);
  }
  return randn(shape, seed, dt);
}

TEST(CudaBinary, ArithmeticMatchesCpuExactly) {
  SKIP_WITHOUT_CUDA();
  for (Op op : {Op::add, Op::sub, Op::mul, Op::div, Op::maximum, Op::minimum}) {
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
      for (const BinaryCase& c : kBinaryCases) {
        Tensor a = binary_input(c.a, 11, dt), b = binary_input(c.b, 12, dt);
        Tensor ag = gpu(a), bg = gpu(b);
        if (c.transpose_a) a = a.transpose(0, 1), ag = ag.transpose(0, 1);
        Dims out = broadcast_shapes(a.shape(), b.shape());
        Both r = run_both(op, {a, b}, {ag, bg}, {{out, dt}});
        expect_equal(r.cuda[0], r.cpu[0],
                     std::string(op_name(op)) + " " + dtype_name(dt) + " " + a.shape().str() + " " + b.shape().str());
      }
    }
  }
}

TEST(CudaBinary, ComparisonsAndWhere) {
  SKIP_WITHOUT_CUDA();
  for (Op op : {Op::eq, Op::lt, Op::gt}) {
    for (DType dt : {DType::f32, DType::i64, DType::u8}) {
      for (const BinaryCase& c : kBinaryCases) {
        if (c.transpose_a) continue;
        Tensor a = binary_input(c.a, 1, dt == DType::u8 ? DType::i32 : dt).to(dt);
        Tensor b = binary_input(c.b, 2, dt == DType::u8 ? DType::i32 : dt).to(dt);
        Both r = run_both(op, {a, b}, {{broadcast_shapes(a.shape(), b.shape()), DType::u8}});
        expect_equal(r.cuda[0], r.cpu[0], std::string(op_name(op)) + " " + dtype_name(dt));
      }
    }
  }
  Tensor x = randn({5, 7}, 3), y = randn({7}, 4);
  Tensor cond = Tensor::empty({5, 1}, DType::u8);
  dispatch(Op::gt, {randn({5, 1}, 5), Tensor::zeros({1})}, {cond});
  Both r = run_both(Op::where, {cond, x, y}, {{Dims{5, 7}, DType::f32}});
  expect_equal(r.cuda[0], r.cpu[0], "where");
}

// ---- unary maps -------------------------------------------------------------------------------------
TEST(CudaUnary, MapsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  struct Case {
    Op op;
    double alpha;
    bool positive;
  };
  const Case cases[] = {{Op::add_scalar, 0.75, false}, {Op::mul_scalar, -1.5, false}, {Op::pow_scalar, 2.0, false},
                        {Op::pow_scalar, 1.5, true},   {Op::neg, 0, false},         {Op::exp, 0, false},
                        {Op::log, 0, true},            {Op::sqrt, 0, true},         {Op::rsqrt, 0, true},
                        {Op::tanh, 0, false},          {Op::sigmoid, 0, false},     {Op::relu, 0, false},
                        {Op::abs, 0, false},           {Op::gelu_tanh, 0, false},   {Op::gelu_erf, 0, false},
                        {Op::silu, 0, false}};
  for (const Case& c : cases) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = randn({3, 1001}, 21, DType::f64, 2.0);
      if (c.positive) {
        std::vector<double> v = x.to_double_vector();
        for (double& e : v) e = std::abs(e) + 0.05;
        x = values(v, x.shape(), DType::f64);
      }
      x = x.to(dt);
      OpAttrs at;
      at.alpha = c.alpha;
      Both r = run_both(c.op, {x}, {{x.shape(), dt}}, at);
      double rtol = dt == DType::f32 ? 1e-6 : 1e-13, atol = dt == DType::f32 ? 1e-6 : 1e-14;
      expect_close(r.cuda[0], r.cpu[0], rtol, atol, std::string(op_name(c.op)) + " " + dtype_name(dt));
    }
  }
}

TEST(CudaUnary, BackwardMapsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (Op op : {Op::gelu_tanh_backward, Op::gelu_erf_backward, Op::silu_backward}) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = randn({7, 301}, 31, dt, 2.0), gy = randn({7, 301}, 32, dt);
      Both r = run_both(op, {x, gy}, {{x.shape(), dt}});
      // f32: (1 - tanh^2) and (1 + erf) cancel, so a 1-2 ulp difference between CUDA's and the
      // host libm's tanhf/erff/expf shows up as ~1e-6 of gy; allow a few of those.
      double rtol = dt == DType::f32 ? 1e-5 : 1e-13, atol = dt == DType::f32 ? 5e-6 : 1e-14;
      expect_close(r.cuda[0], r.cpu[0], rtol, atol, std::string(op_name(op)) + " " + dtype_name(dt));
    }
  }
}

// Maps read 16-byte packs when every pointer is aligned and fall back to scalar accesses when
// not (a contiguous view starting one element in); both paths, and the n % 4 tail, match the CPU.
TEST(CudaUnary, PackedAndUnalignedPathsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t offset : {0, 1}) {
      const int64_t n = 1031;  // 17 x 60 bias rows fit; n % 4 = 3 leaves a tail
      Tensor x = randn({n + 1}, 33, dt, 2.0).narrow(0, offset, n), y = randn({n + 1}, 34, dt).narrow(0, offset, n);
      Tensor xg = gpu(randn({n + 1}, 33, dt, 2.0)).narrow(0, offset, n);
      Tensor yg = gpu(randn({n + 1}, 34, dt)).narrow(0, offset, n);
      const std::string what = std::string(dtype_name(dt)) + " offset " + std::to_string(offset);
      double rtol = dt == DType::f32 ? 1e-5 : 1e-13, atol = dt == DType::f32 ? 5e-6 : 1e-14;
      Both u = run_both(Op::gelu_tanh, {x}, {xg}, {{Dims{n}, dt}});
      expect_close(u.cuda[0], u.cpu[0], rtol, atol, "gelu_tanh " + what);
      Both b = run_both(Op::mul, {x, y}, {xg, yg}, {{Dims{n}, dt}});
      expect_equal(b.cuda[0], b.cpu[0], "mul " + what);
      Both ub = run_both(Op::silu_backward, {x, y}, {xg, yg}, {{Dims{n}, dt}});
      expect_close(ub.cuda[0], ub.cpu[0], rtol, atol, "silu_backward " + what);
      // A bias row over [17, 59] (59 columns: no packs) and [17, 60] (packs of 4 floats / 2 doubles).
      for (int64_t cols : {59, 60}) {
        Tensor full = x.narrow(0, 0, 17 * cols).view({17, cols}), bias = y.narrow(0, 0, cols);
        Tensor fullg = xg.narrow(0, 0, 17 * cols).view({17, cols}), biasg = yg.narrow(0, 0, cols);
        Both r = run_both(Op::add, {full, bias}, {fullg, biasg}, {{Dims{17, cols}, dt}});
        expect_equal(r.cuda[0], r.cpu[0], "bias add " + std::to_string(cols) + " columns " + what);
        Both rf = run_both(Op::sub, {bias, full}, {biasg, fullg}, {{Dims{17, cols}, dt}});
        expect_equal(rf.cuda[0], rf.cpu[0], "bias-first sub " + std::to_string(cols) + " columns " + what);
      }
    }
  }
}

TEST(CudaUnary, SwigluForwardBackwardMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t offset : {0, 1}) {
      const int64_t n = 2 * 517;
      Tensor g = randn({n + 1}, 35, dt, 2.0).narrow(0, offset, n), u = randn({n + 1}, 36, dt).narrow(0, offset, n);
      Tensor go = randn({n}, 37, dt);
      Tensor gg = gpu(randn({n + 1}, 35, dt, 2.0)).narrow(0, offset, n);
      Tensor ug = gpu(randn({n + 1}, 36, dt)).narrow(0, offset, n);
      const std::string what = std::string(dtype_name(dt)) + " offset " + std::to_string(offset);
      // The CPU's f32 path uses its vectorised sigmoid (a few ulp from expf).
      double rtol = dt == DType::f32 ? 2e-5 : 1e-13, atol = dt == DType::f32 ? 1e-5 : 1e-14;
      Both f = run_both(Op::swiglu, {g, u}, {gg, ug}, {{Dims{n}, dt}});
      expect_close(f.cuda[0], f.cpu[0], rtol, atol, "swiglu " + what);
      Both b = run_both(Op::swiglu_backward, {g, u, go}, {gg, ug, gpu(go)}, {{Dims{n}, dt}, {Dims{n}, dt}});
      expect_close(b.cuda[0], b.cpu[0], rtol, atol, "swiglu_backward ggate " + what);
      expect_close(b.cuda[1], b.cpu[1], rtol, atol, "swiglu_backward gup " + what);
    }
  }
}

TEST(CudaUnary, StridedInputRunsThroughTheHostFallback) {
  SKIP_WITHOUT_CUDA();
  // The CPU kernel wants a contiguous input; the host fallback hands it contiguous host copies.
  Tensor x = randn({8, 9}, 5);
  Tensor out_c = Tensor::empty({9, 8}), out_g = Tensor::empty({9, 8}, DType::f32, kGpu);
  dispatch(Op::exp, {x.transpose(0, 1).contiguous()}, {out_c});
  int64_t before = host_fallback_count(Op::exp);
  dispatch(Op::exp, {gpu(x).transpose(0, 1)}, {out_g});
  EXPECT_EQ(host_fallback_count(Op::exp), before + 1);
  expect_close(out_g, out_c, 0, 0, "exp of a transposed input");
}

// ---- softmax family ----------------------------------------------------------------------------------
TEST(CudaSoftmax, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-6 : 1e-14;
    for (Dims shape : {Dims{37, 1000}, Dims{5, 1}, Dims{3, 4, 3000}, Dims{64, 33}}) {
      Tensor x = randn(shape, 41, dt, 3.0), gy = randn(shape, 42, dt);
      for (bool log : {false, true}) {
        Op fwd = log ? Op::log_softmax_last : Op::softmax_last;
        Op bwd = log ? Op::log_softmax_backward_last : Op::softmax_backward_last;
        Both y = run_both(fwd, {x}, {{shape, dt}});
        std::string what = std::string(op_name(fwd)) + " " + dtype_name(dt) + " " + shape.str();
        expect_close(y.cuda[0], y.cpu[0], rtol, log ? rtol * 10 : atol, what);
        Both gx = run_both(bwd, {y.cpu[0], gy}, {gpu(y.cpu[0]), gpu(gy)}, {{shape, dt}});
        expect_close(gx.cuda[0], gx.cpu[0], rtol * 10, atol * 10, std::string(op_name(bwd)) + " " + what);
      }
    }
  }
}

// ---- norms -------------------------------------------------------------------------------------------
TEST(CudaNorm, RmsNormForwardBackwardMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (Dims shape : {Dims{64, 768}, Dims{3, 7, 5}, Dims{3000, 70}, Dims{2, 2500}}) {
      int64_t C = shape.back();
      Tensor x = randn(shape, 51, dt), w = randn({C}, 52, dt), gy = randn(shape, 53, dt);
      OpAttrs at;
      at.eps = 1e-6;
      int64_t R = numel_of(shape) / C;
      std::string what = std::string(dtype_name(dt)) + " " + shape.str();
      Both y = run_both(Op::rms_norm, {x, w}, {{shape, dt}, {Dims{R}, dt}}, at);
      expect_close(y.cuda[0], y.cpu[0], rtol, atol, "rms_norm y " + what);
      expect_close(y.cuda[1], y.cpu[1], rtol, atol, "rms_norm rstd " + what);
      Both g = run_both(Op::rms_norm_backward, {x, w, y.cpu[1], gy}, {{shape, dt}, {Dims{C}, dt}});
      expect_close(g.cuda[0], g.cpu[0], rtol, atol, "rms_norm gx " + what);
      expect_close(g.cuda[1], g.cpu[1], rtol, atol * 10, "rms_norm gweight " + what);
      // Without a weight.
      Both y2 = run_both(Op::rms_norm, {x, Tensor()}, {{shape, dt}, {Dims{R}, dt}}, at);
      expect_close(y2.cuda[0], y2.cpu[0], rtol, atol, "rms_norm (no weight) " + what);
    }
  }
}

TEST(CudaNorm, RmsNormBackwardWithoutWeightGrad) {
  SKIP_WITHOUT_CUDA();
  Tensor x = randn({10, 40}, 1), w = randn({40}, 2), gy = randn({10, 40}, 3);
  Tensor rstd = Tensor::empty({10}), y = Tensor::empty({10, 40});
  dispatch(Op::rms_norm, {x, w}, {y, rstd});
  Both g = run_both(Op::rms_norm_backward, {x, w, rstd, gy}, {{Dims{10, 40}, DType::f32}});
  expect_close(g.cuda[0], g.cpu[0], 1e-5, 1e-5, "rms_norm gx only");
}

TEST(CudaNorm, LayerNormForwardBackwardMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (Dims shape : {Dims{64, 768}, Dims{3000, 70}, Dims{4, 3}}) {
      int64_t C = shape.back(), R = numel_of(shape) / C;
      Tensor x = randn(shape, 61, dt, 2.0), w = randn({C}, 62, dt), b = randn({C}, 63, dt), gy = randn(shape, 64, dt);
      std::string what = std::string(dtype_name(dt)) + " " + shape.str();
      Both y = run_both(Op::layer_norm, {x, w, b}, {{shape, dt}, {Dims{R}, dt}, {Dims{R}, dt}});
      for (int i = 0; i < 3; ++i) expect_close(y.cuda[size_t(i)], y.cpu[size_t(i)], rtol, atol, "layer_norm " + what);
      Both g = run_both(Op::layer_norm_backward, {x, w, y.cpu[1], y.cpu[2], gy},
                        {{shape, dt}, {Dims{C}, dt}, {Dims{C}, dt}});
      expect_close(g.cuda[0], g.cpu[0], rtol, atol, "layer_norm gx " + what);
      expect_close(g.cuda[1], g.cpu[1], rtol, atol * 10, "layer_norm gweight " + what);
      expect_close(g.cuda[2], g.cpu[2], rtol, atol * 10, "layer_norm gbias " + what);
    }
  }
}

// ---- cross-entropy --------------------------------------------------------------------------------------
TEST(CudaCrossEntropy, ForwardBackwardMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const int64_t N = 50, V = 1000;
  std::vector<double> t(N);
  for (int64_t i = 0; i < N; ++i) t[size_t(i)] = i % 7 == 3 ? -100.0 : double((i * 37) % V);
  Tensor target = values(t, {N}, DType::i64);
  for (DType dt : {DType::f32, DType::f64}) {
    for (double eps : {0.0, 0.1}) {
      double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-5 : 1e-12;
      Tensor x = randn({N, V}, 71, dt, 3.0), gl = randn({N}, 72, dt);
      OpAttrs at;
      at.ignore_index = -100;
      at.label_smoothing = eps;
      std::string what = std::string(dtype_name(dt)) + " eps " + std::to_string(eps);
      Both f = run_both(Op::cross_entropy, {x, target}, {{Dims{N}, dt}, {Dims{N}, dt}}, at);
      expect_close(f.cuda[0], f.cpu[0], rtol, atol, "cross_entropy loss " + what);
      expect_close(f.cuda[1], f.cpu[1], rtol, atol, "cross_entropy lse " + what);
      Both b = run_both(Op::cross_entropy_backward, {x, target, f.cpu[1], gl}, {{Dims{N, V}, dt}}, at);
      expect_close(b.cuda[0], b.cpu[0], rtol * 10, atol, "cross_entropy_backward " + what);
    }
  }
}

TEST(CudaCrossEntropy, BadTargetThrowsTheCpuMessage) {
  SKIP_WITHOUT_CUDA();
  Tensor x = randn({4, 10}, 1), target = values({1, 2, 10, 3}, {4}, DType::i64);
  OpAttrs at;
  std::string cpu_msg, gpu_msg;
  try {
    Tensor l = Tensor::empty({4}), s = Tensor::empty({4});
    dispatch(Op::cross_entropy, {x, target}, {l, s}, at);
  } catch (const std::invalid_argument& e) {
    cpu_msg = e.what();
  }
  try {
    Tensor l = Tensor::empty({4}, DType::f32, kGpu), s = Tensor::empty({4}, DType::f32, kGpu);
    dispatch(Op::cross_entropy, {gpu(x), gpu(target)}, {l, s}, at);
  } catch (const std::invalid_argument& e) {
    gpu_msg = e.what();
  }
  EXPECT_FALSE(cpu_msg.empty());
  EXPECT_EQ(gpu_msg, cpu_msg);
}

// ---- reductions -------------------------------------------------------------------------------------------
TEST(CudaReduce, SumDimMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  for (Dims shape : {Dims{7, 1000, 1}, Dims{3, 5, 4000}, Dims{2, 5000, 3}, Dims{40, 20, 1}, Dims{3, 0, 4}}) {
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
      Tensor x = binary_input(shape, 81, dt);
      if (dt == DType::f32 || dt == DType::f64) x = randn(shape, 81, dt);
      Both r = run_both(Op::sum_dim, {x}, {{Dims{shape[0], shape[2]}, dt}});
      double tol = dt == DType::f32 ? 1e-5 : dt == DType::f64 ? 1e-12 : 0;
      expect_close(r.cuda[0], r.cpu[0], tol, tol, std::string("sum_dim ") + dtype_name(dt) + " " + shape.str());
    }
  }
}

TEST(CudaReduce, SumSquaresMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  for (int64_t n : {int64_t(0), int64_t(5), int64_t(16384), int64_t(100003)})
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = randn({n}, 83, dt);
      Both r = run_both(Op::sum_squares, {x}, {{Dims{}, DType::f64}});
      expect_close(r.cuda[0], r.cpu[0], 1e-12, 1e-12, std::string("sum_squares ") + dtype_name(dt));
    }
}

TEST(CudaReduce, MaxDimMatchesCpuIncludingTiesAndNaN) {
  SKIP_WITHOUT_CUDA();
  for (Dims shape : {Dims{5, 300, 1}, Dims{4, 7, 9}, Dims{3, 2000, 1}}) {
    int64_t n = numel_of(shape);
    std::vector<double> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double((i * 7919) % 50);  // many ties
    for (DType dt : {DType::f32, DType::i64}) {
      std::vector<double> w = v;
      if (dt == DType::f32) w[size_t(n / 2)] = std::nan(""), w[size_t(n / 2 + 3)] = std::nan("");
      Tensor x = values(w, shape, dt);
      Both r = run_both(Op::max_dim, {x}, {{Dims{shape[0], shape[2]}, dt}, {Dims{shape[0], shape[2]}, DType::i64}});
      std::string what = std::string("max_dim ") + dtype_name(dt) + " " + shape.str();
      expect_equal(r.cuda[0], r.cpu[0], what + " values");
      expect_equal(r.cuda[1], r.cpu[1], what + " indices");
    }
  }
}

// ---- matmul ----------------------------------------------------------------------------------------------
TEST(CudaMatmul, LayoutsAndBroadcastMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const int64_t B = 3, M = 33, K = 47, N = 29;
  for (DType dt : {DType::f32, DType::f64}) {
    double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-4 : 1e-12;
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (bool bcast_a : {false, true}) {
          Tensor a = ta ? randn({bcast_a ? 1 : B, K, M}, 91, dt) : randn({bcast_a ? 1 : B, M, K}, 91, dt);
          Tensor b = tb ? randn({B, N, K}, 92, dt) : randn({B, K, N}, 92, dt);
          Tensor ag = gpu(a), bg = gpu(b);
          if (ta) a = a.transpose(1, 2), ag = ag.transpose(1, 2);
          if (tb) b = b.transpose(1, 2), bg = bg.transpose(1, 2);
          Both r = run_both(Op::matmul, {a, b}, {ag, bg}, {{Dims{B, M, N}, dt}});
          expect_close(r.cuda[0], r.cpu[0], rtol, atol,
                       std::string("matmul ") + dtype_name(dt) + (ta ? " aT" : "") + (tb ? " bT" : "") +
                           (bcast_a ? " a-broadcast" : ""));
        }
      }
    }
    // Batch stride 0 through expand, and a narrowed (ld > cols) operand.
    Tensor a = randn({1, M, K}, 93, dt), wide = randn({B, K, N + 5}, 94, dt);
    Tensor ae = a.expand({B, M, K}), aeg = gpu(a).expand({B, M, K});
    Both r = run_both(Op::matmul, {ae, wide.narrow(2, 2, N)}, {aeg, gpu(wide).narrow(2, 2, N)}, {{Dims{B, M, N}, dt}});
    expect_close(r.cuda[0], r.cpu[0], rtol, atol, std::string("matmul expanded/narrowed ") + dtype_name(dt));
  }
  // K = 0 gives zeros.
  Tensor out = Tensor::full({2, 3, 4}, 5.0, DType::f32, kGpu);
  dispatch(Op::matmul, {Tensor::empty({2, 3, 0}, DType::f32, kGpu), Tensor::empty({2, 0, 4}, DType::f32, kGpu)},
           {out});
  for (double v : out.to_double_vector()) EXPECT_EQ(v, 0.0);
}

// attrs.scale and attrs.beta are GEMM's alpha and beta (C = scale A B + beta C), as on the CPU:
// the fused LM-head loss passes the loss gradient as scale.
TEST(CudaMatmul, ScaleAndBetaMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, M = 17, K = 23, N = 11;
  for (DType dt : {DType::f32, DType::f64}) {
    double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-4 : 1e-12;
    Tensor a = randn({B, M, K}, 95, dt), b = randn({B, K, N}, 96, dt), c0 = randn({B, M, N}, 97, dt);
    OpAttrs at;
    at.scale = -0.75;
    at.beta = 0.5;
    Tensor oc = c0.clone(), og = gpu(c0);
    dispatch(Op::matmul, {a, b}, {oc}, at);
    dispatch(Op::matmul, {gpu(a), gpu(b)}, {og}, at);
    expect_close(og, oc, rtol, atol, std::string("matmul scale -0.75 beta 0.5 ") + dtype_name(dt));
    // The reference by hand: the CPU kernel itself must agree with -0.75 A B + 0.5 C.
    Tensor ref = add(mul_scalar(matmul(a, b), -0.75), mul_scalar(c0, 0.5));
    expect_close(oc, ref, rtol, atol, std::string("cpu matmul scale/beta ") + dtype_name(dt));
  }
}

TEST(CudaMatmul, OperandWithoutUnitStrideGoesToTheHostKernel) {
  SKIP_WITHOUT_CUDA();
  Tensor base = randn({2, 4, 6, 2}, 1);  // a [2, 4, 6] view with strides (48, 12, 2): no unit stride
  Tensor a = base.narrow(3, 0, 1).squeeze(3), b = randn({2, 6, 3}, 2);
  Tensor ag = gpu(base).narrow(3, 0, 1).squeeze(3);
  Tensor oc = Tensor::empty({2, 4, 3}), og = Tensor::empty({2, 4, 3}, DType::f32, kGpu);
  dispatch(Op::matmul, {a.contiguous(), b}, {oc});
  int64_t before = host_fallback_count(Op::matmul);
  dispatch(Op::matmul, {ag, gpu(b)}, {og});  // host copies are contiguous, so the CPU kernel runs
  EXPECT_EQ(host_fallback_count(Op::matmul), before + 1);
  expect_close(og, oc, 0, 0, "matmul through the host fallback");
}

// ---- optimizer steps ---------------------------------------------------------------------------------------
// Three AdamW steps (bias corrections change with the step) and SGD with and without momentum,
// in place on the device, against the same updates on the CPU.
TEST(CudaOptim, AdamwAndSgdStepsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    double rtol = dt == DType::f32 ? 1e-6 : 1e-14, atol = dt == DType::f32 ? 1e-7 : 1e-15;
    for (int64_t offset : {0, 1}) {
      const int64_t n = 1001;
      const std::string what = std::string(dtype_name(dt)) + " offset " + std::to_string(offset);
      auto slice = [&](const Tensor& t) { return t.narrow(0, offset, n); };
      Tensor p = randn({n + 1}, 81, dt), m = Tensor::zeros({n + 1}, dt), v = Tensor::zeros({n + 1}, dt);
      Tensor pg = gpu(p), mg = gpu(m), vg = gpu(v);
      OpAttrs at;
      at.alpha = 1e-2, at.beta = 0.9, at.p = 0.95, at.eps = 1e-8, at.scale = 0.1;
      for (int step = 1; step <= 3; ++step) {
        at.k = step;
        Tensor g = randn({n}, 82 + uint64_t(step), dt);
        dispatch(Op::adamw_step, {g}, {slice(p), slice(m), slice(v)}, at);
        int64_t before = host_fallback_count(Op::adamw_step);
        dispatch(Op::adamw_step, {gpu(g)}, {slice(pg), slice(mg), slice(vg)}, at);
        EXPECT_EQ(host_fallback_count(Op::adamw_step), before) << what;
      }
      expect_close(pg, p, rtol, atol, "adamw param " + what);
      expect_close(mg, m, rtol, atol, "adamw exp_avg " + what);
      expect_close(vg, v, rtol, atol, "adamw exp_avg_sq " + what);

      OpAttrs sa;
      sa.alpha = 0.05, sa.beta = 0.9, sa.scale = 1e-3;
      Tensor q = randn({n + 1}, 91, dt), mom = Tensor::zeros({n + 1}, dt), q2 = randn({n + 1}, 92, dt);
      Tensor qg = gpu(q), momg = gpu(mom), q2g = gpu(q2);
      for (int step = 0; step < 2; ++step) {
        Tensor g = randn({n}, 93 + uint64_t(step), dt);
        dispatch(Op::sgd_step, {g}, {slice(q), slice(mom)}, sa);
        dispatch(Op::sgd_step, {gpu(g)}, {slice(qg), slice(momg)}, sa);
        dispatch(Op::sgd_step, {g}, {slice(q2), Tensor()}, sa);
        dispatch(Op::sgd_step, {gpu(g)}, {slice(q2g), Tensor()}, sa);
      }
      expect_close(qg, q, rtol, atol, "sgd momentum param " + what);
      expect_close(momg, mom, rtol, atol, "sgd momentum buffer " + what);
      expect_close(q2g, q2, rtol, atol, "sgd without momentum " + what);
    }
  }
}

// ---- end to end: a small MLP step through ops.h and autograd ------------------------------------------------
TEST(CudaEndToEnd, MlpLossAndGradientsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const int64_t T = 24, C = 32, F = 64, V = 50;
  auto make = [&](Device dev) {
    std::vector<Tensor> p = {randn({F, C}, 1, DType::f32, 0.2), randn({V, F}, 2, DType::f32, 0.2),
                             randn({C}, 3, DType::f32, 0.1)};
    for (Tensor& t : p) {
      t = t.to(dev);
      t.set_requires_grad(true);
    }
    return p;
  };
  std::vector<double> ids(T);
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = double((i * 13) % V);
  auto run = [&](Device dev, std::vector<Tensor>& p) {
    Tensor x = randn({T, C}, 4).to(dev), target = values(ids, {T}, DType::i64).to(dev);
    Tensor h = silu(linear(rms_norm(x, add_scalar(p[2], 1.0)), p[0]));
    Tensor loss = cross_entropy(linear(h, p[1]), target);
    loss.backward();
    return loss;
  };
  std::vector<Tensor> pc = make(Device::cpu()), pg = make(kGpu);
  Tensor lc = run(Device::cpu(), pc), lg = run(kGpu, pg);
  expect_close(lg.to(Device::cpu()), lc, 1e-5, 1e-6, "loss");
  for (size_t i = 0; i < pc.size(); ++i)
    expect_close(pg[i].grad().to(Device::cpu()), pc[i].grad(), 1e-4, 1e-6, "grad " + std::to_string(i));
}

// linear_cross_entropy on the device is the composition; its loss and gradients match the CPU's
// fused path. The cross-entropy kernel's third output (the logits' gradient written in place)
// has no device kernel: it runs through the host fallback and still gives the CPU's values.
TEST(CudaCrossEntropy, LinearCrossEntropyAndInPlaceGradientMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const int64_t N = 37, C = 24, V = 53;
  std::vector<double> ids(N);
  for (int64_t i = 0; i < N; ++i) ids[size_t(i)] = double(i % 9 == 4 ? -100 : (i * 11) % V);
  CrossEntropyOptions opt;
  opt.label_smoothing = 0.1;
  auto run = [&](Device dev, Tensor* gx, Tensor* gw) {
    Tensor x = randn({N, C}, 21, DType::f32, 0.5).to(dev), w = randn({V, C}, 22, DType::f32, 0.3).to(dev);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    Tensor loss = linear_cross_entropy(x, w, values(ids, {N}, DType::i64).to(dev), opt);
    loss.backward();
    *gx = x.grad().to(Device::cpu());
    *gw = w.grad().to(Device::cpu());
    return loss.to(Device::cpu());
  };
  Tensor gxc, gwc, gxg, gwg;
  Tensor lc = run(Device::cpu(), &gxc, &gwc), lg = run(kGpu, &gxg, &gwg);
  expect_close(lg, lc, 1e-5, 1e-6, "linear_cross_entropy loss");
  expect_close(gxg, gxc, 1e-4, 1e-6, "linear_cross_entropy grad x");
  expect_close(gwg, gwc, 1e-4, 1e-6, "linear_cross_entropy grad weight");

  Tensor logits = randn({N, V}, 23), target = values(ids, {N}, DType::i64);
  OpAttrs at;
  at.ignore_index = -100;
  at.label_smoothing = 0.1;
  Tensor gc = logits.clone(), gg = gpu(logits);
  Tensor lcpu = Tensor::empty({N}), lse_c = Tensor::empty({N});
  Tensor lgpu = Tensor::empty({N}, DType::f32, kGpu), lse_g = Tensor::empty({N}, DType::f32, kGpu);
  dispatch(Op::cross_entropy, {gc, target}, {lcpu, lse_c, gc}, at);
  const int64_t before = host_fallback_count(Op::cross_entropy);
  dispatch(Op::cross_entropy, {gg, gpu(target)}, {lgpu, lse_g, gg}, at);
  EXPECT_EQ(host_fallback_count(Op::cross_entropy), before + 1);
  expect_close(lgpu, lcpu, 1e-5, 1e-6, "cross_entropy loss with the in-place gradient");
  expect_close(gg, gc, 1e-5, 1e-7, "cross_entropy in-place logits gradient");
}

#endif  // LOOM_WITH_CUDA

}  // namespace
}  // namespace loom::runtime
