// test_tensor.cpp: Tensor metadata, views sharing storage, copies, casts and printing.
#include <cstring>
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>

#include "runtime/ops.h"

using namespace loom::runtime;

TEST(Tensor, FactoriesAndMetadata) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Dims{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  Tensor f = Tensor::full({3}, 2.5, DType::f64);
  EXPECT_EQ(f.to_vector<double>(), (std::vector<double>{2.5, 2.5, 2.5}));
  EXPECT_EQ(Tensor::arange(4).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::arange(12, DType::f32).view({3, 4});
  Tensor tt = t.transpose(0, 1);
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.storage().get(), t.storage().get());
  EXPECT_EQ(tt.contiguous().to_vector<float>(),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  Tensor n = t.narrow(1, 1, 2);
  EXPECT_EQ(n.to_vector<float>(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
  {
    NoGradGuard ng;
    n.fill_(-1);
  }
  EXPECT_EQ(t.to_vector<float>()[1], -1.0f);
  Tensor e = Tensor::arange(3, DType::f32).view({3, 1}).expand({3, 2});
  EXPECT_EQ(e.stride(1), 0);
  EXPECT_EQ(e.contiguous().to_vector<float>(), (std::vector<float>{0, 0, 1, 1, 2, 2}));
  EXPECT_EQ(t.unsqueeze(0).shape(), (Dims{1, 3, 4}));
  EXPECT_EQ(t.unsqueeze(0).squeeze(0).shape(), (Dims{3, 4}));
  Tensor p = Tensor::arange(24, DType::f32).view({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Dims{4, 2, 3}));
  EXPECT_EQ(p.contiguous().to_vector<float>()[1], 4.0f);
}

TEST(Tensor, ViewOfNonContiguousFollowsStrideRules) {
  Tensor t = Tensor::arange(24, DType::f32).view({2, 3, 4}).transpose(0, 1);  // [3, 2, 4]
  // Merging the last two dims (2 x 4) is impossible without a copy; splitting the last is fine.
  EXPECT_THROW(t.view({3, 8}), std::invalid_argument);
  Tensor s = t.view({3, 2, 2, 2});
  EXPECT_EQ(s.contiguous().to_vector<float>(), t.reshape({3, 2, 2, 2}).contiguous().to_vector<float>());
  EXPECT_EQ(t.reshape({3, 8}).to_vector<float>(), t.contiguous().view({3, 8}).to_vector<float>());
}

TEST(Tensor, CastsRoundTrip) {
  Tensor x = Tensor::from_vector<float>({1.0f, -2.5f, 3.140625f, 65504.0f, 1e-3f});
  for (DType dt : {DType::f64, DType::bf16, DType::f16, DType::f32}) {
    std::vector<float> back = x.to(dt).to(DType::f32).to_vector<float>();
    for (size_t i = 0; i < back.size(); ++i) {
      float tol = dt == DType::bf16 ? 4e-3f : dt == DType::f16 ? 1e-3f : 0.0f;
      EXPECT_NEAR(back[i], x.to_vector<float>()[i], tol * std::abs(x.to_vector<float>()[i]) + 1e-7f) << dtype_name(dt);
    }
  }
  EXPECT_EQ(Tensor::from_vector<float>({2.7f, -1.2f}).to(DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{2, -1}));
  // f16 subnormals and overflow.
  EXPECT_FLOAT_EQ(f16_to_float(float_to_f16(5.9604645e-08f)), 5.9604645e-08f);
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(1e6f))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.00390625f)), 1.0f);  // ties to even
}

TEST(Tensor, HalfPrecisionComputesThroughF32) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3}).to(DType::bf16);
  Tensor b = Tensor::from_vector<float>({0.5, 0.25, 4}).to(DType::bf16);
  Tensor c = a * b;
  EXPECT_EQ(c.dtype(), DType::bf16);
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{0.5f, 0.5f, 12.0f}));
}

TEST(Tensor, Printing) {
  Tensor t = Tensor::arange(6, DType::f32).view({2, 3});
  EXPECT_EQ(t.str(), "Tensor([[0, 1, 2],\n        [3, 4, 5]], shape=[2, 3], dtype=f32)");
  EXPECT_NE(Tensor::zeros({20}).str().find("..."), std::string::npos);
}

TEST(Tensor, ClearErrors) {
  EXPECT_THROW(Tensor::zeros({2, 3}) + Tensor::zeros({4}), std::invalid_argument);
  EXPECT_THROW(Tensor::zeros({2, 3}).view({5}), std::invalid_argument);
  EXPECT_THROW(Tensor::zeros({2}).to(Device::cuda(7)).numel(), std::exception);
  EXPECT_THROW(Tensor::zeros({2}, DType::i64).set_requires_grad(true), std::invalid_argument);
  try {
    matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3] @ [4, 5]"), std::string::npos);
  }
}

TEST(Tensor, PhiloxIsThreadIndependentAndReproducible) {
  Tensor a = Tensor::randn({1000}, 42);
  Tensor b = Tensor::randn({1000}, 42);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  std::vector<double> v = a.to_double_vector();
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= 1000;
  for (double x : v) s += (x - m) * (x - m);
  EXPECT_NEAR(m, 0.0, 0.1);
  EXPECT_NEAR(std::sqrt(s / 1000), 1.0, 0.1);
  EXPECT_NE(Tensor::randn({4}, 43).to_vector<float>(), Tensor::randn({4}, 42).to_vector<float>());
}

TEST(Allocator, CachesFreedBlocksAndCountsLiveBytes) {
  Allocator& a = cpu_allocator();
  AllocatorStats before = a.stats();
  void* p = a.allocate(1 << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  EXPECT_EQ(a.stats().live_bytes, before.live_bytes + (1 << 20));
  a.deallocate(p, 1 << 20);
  EXPECT_EQ(a.stats().live_bytes, before.live_bytes);
  void* q = a.allocate((1 << 20) - 100);  // same size class: the cached block comes back
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_EQ(p, q);
#endif
  a.deallocate(q, (1 << 20) - 100);
  cpu_empty_cache();
  EXPECT_EQ(cpu_cached_bytes(), 0);
  a.reset_peak();
  { Tensor t = Tensor::empty({1000}); }
  EXPECT_GE(a.stats().peak_bytes, a.stats().live_bytes + 4000);
}

TEST(Allocator, BlocksOfAHugePageOrMoreStartOnOne) {
  if (const char* e = std::getenv("LOOM_HUGE_PAGES"); e && std::string(e) == "0") GTEST_SKIP() << "LOOM_HUGE_PAGES=0";
  Allocator& a = cpu_allocator();
  const size_t bytes = (size_t(5) << 20) + 12345;  // 2.5 huge pages and an odd tail
  void* p = a.allocate(bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t(2) << 20), 0u);
  std::memset(p, 0x5a, bytes);  // every byte of the block is usable
  EXPECT_EQ(static_cast<unsigned char*>(p)[bytes - 1], 0x5a);
  a.deallocate(p, bytes);
  void* small = a.allocate(4096);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small) % 64, 0u);
  a.deallocate(small, 4096);
}

#include "runtime/cpu/vecmath.h"

TEST(VecMath, ExpF32IsAccurateOverItsRange) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.001) {
    double ref = std::exp(double(float(x)));
    double got = loom::runtime::cpu::exp_f32(float(x));
    worst = std::max(worst, std::abs(got - ref) / ref);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(loom::runtime::cpu::exp_f32(-INFINITY), 0.0f);
  EXPECT_EQ(loom::runtime::cpu::exp_f32(-200.0f), 0.0f);
  EXPECT_TRUE(std::isinf(loom::runtime::cpu::exp_f32(100.0f)));
  EXPECT_TRUE(std::isnan(loom::runtime::cpu::exp_f32(NAN)));
  EXPECT_NEAR(loom::runtime::cpu::vtanh(3.0f), std::tanh(3.0f), 3e-7);
}

// The elementwise maps run on the widest vector (16 lanes under AVX-512) and the row kernels on
// 8: each value must get the same bits either way, including the clamped ends, inf and NaN; and
// exp_sub_sum over rows of every length gives the 8-lane sums.
TEST(VecMath, WideVectorsGiveTheEightLaneBits) {
  using namespace loom::runtime::cpu;
  std::vector<float> xs = {-INFINITY, -200.0f, -87.5f, -87.0f, -86.99f, 88.0f, 88.5f, INFINITY, NAN, 0.0f, -0.0f};
  for (float x = -90.0f; x <= 90.0f; x += 0.0137f) xs.push_back(x);
  while (xs.size() % kWideLanes != 0) xs.push_back(1.0f);
  for (size_t i = 0; i < xs.size(); i += size_t(kWideLanes)) {
    const f32xw e = exp_v(loadw(xs.data() + i)), s = sigmoid_v(loadw(xs.data() + i));
    for (int64_t j = 0; j < kWideLanes; j += 8) {
      const f32x8 e8 = exp8(load8(xs.data() + i + size_t(j))), s8 = sigmoid8(load8(xs.data() + i + size_t(j)));
      for (int64_t l = 0; l < 8; ++l) {
        EXPECT_EQ(std::memcmp(&e[j + l], &e8[l], sizeof(float)), 0) << "exp " << xs[i + size_t(j + l)];
        EXPECT_EQ(std::memcmp(&s[j + l], &s8[l], sizeof(float)), 0) << "sigmoid " << xs[i + size_t(j + l)];
      }
    }
  }
  std::vector<float> row(100);
  for (size_t i = 0; i < row.size(); ++i) row[i] = -0.05f * float(i % 37);
  for (int64_t n = 1; n <= 100; ++n) {
    UnitSum es;  // the 8-lane reference: exp8 blocks, as exp_sub_sum did before it went wide
    for_blocks8(0, n, [&](int64_t c, int64_t m) { es.add(exp8(load8(row.data() + c, m, -INFINITY) - 0.5f)); });
    EXPECT_EQ(exp_sub_sum(row.data(), static_cast<float*>(nullptr), n, 0.5f), es.total()) << "n " << n;
  }
}

// Row tails go through load8/store8 with n < 8 (masked moves under AVX): the first n lanes
// come from memory and the rest are the pad; a store writes exactly n floats, nothing past them.
TEST(VecMath, TailLoadsAndStoresTouchOnlyTheirLanes) {
  using namespace loom::runtime::cpu;
  float src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  for (int64_t n = 0; n <= 8; ++n) {
    const f32x8 v = load8(src, n, -9.0f);
    for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(v[i], i < n ? src[i] : -9.0f) << "n = " << n << ", lane " << i;
    float dst[10];
    std::fill(dst, dst + 10, 42.0f);
    store8(dst + 1, v, n);
    EXPECT_EQ(dst[0], 42.0f);
    for (int64_t i = 0; i < 9; ++i) EXPECT_EQ(dst[1 + i], i < n ? src[i] : 42.0f) << "n = " << n << ", slot " << i;
  }
}

// linear() with a bias starts y as the bias rows and lets the GEMM accumulate into it
// (matmul's beta = 1). Check that against matmul + add in f64 for every float storage dtype
// (half storage goes through the widened f32 path, which must read y's initial contents),
// for a single row (where a broadcast bias view is already contiguous), and that the bias
// itself is never written.
TEST(Linear, BiasAccumulatedByTheGemmEqualsMatmulPlusBias) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (Dims xs : {Dims{3, 5, 7}, Dims{1, 7}}) {
      Tensor x = Tensor::randn(xs, 1).to(dt), w = Tensor::randn({4, 7}, 2).to(dt), b = Tensor::randn({4}, 3).to(dt);
      std::vector<double> b_before = b.to(DType::f64).to_vector<double>();
      Tensor y = linear(x, w, b);
      Tensor ref = add(matmul(x.to(DType::f64), transpose(w.to(DType::f64), 0, 1)), b.to(DType::f64));
      ASSERT_EQ(y.shape(), ref.shape());
      std::vector<double> got = y.to(DType::f64).to_vector<double>(), want = ref.to_vector<double>();
      const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-5 : 5e-2;
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << dtype_name(dt) << " " << i;
      EXPECT_EQ(b.to(DType::f64).to_vector<double>(), b_before) << dtype_name(dt);
    }
  }
}

// linear's backward on the CPU takes the bias gradient from the weight gradient's product (the
// row sums of g^T, summed as g^T is packed): it must equal sum(g, {0}) and leave gW as matmul's,
// for f32 (the AVX-512 path at 300 rows of 2048 tokens; a small product through the library),
// f64 and bf16 storage; with a frozen weight the bias gradient is the plain sum.
TEST(Linear, BiasGradientFromTheWeightGradientsProductIsTheRowSum) {
  for (DType dt : {DType::f32, DType::f64, DType::bf16})
    for (Dims xs : {Dims{8, 256, 96}, Dims{3, 5, 7}})
      for (bool weight_grad : {true, false}) {
        const int64_t N = xs.back() == 96 ? 300 : 4;
        Tensor x = Tensor::randn(xs, 11).to(dt), w = Tensor::randn({N, xs.back()}, 12).to(dt);
        Tensor b = Tensor::randn({N}, 13).to(dt);
        w.set_requires_grad(weight_grad);
        b.set_requires_grad(true);
        Dims ys = xs;
        ys[ys.size() - 1] = N;
        Tensor g = Tensor::randn(ys, 14).to(dt);
        linear(x, w, b).backward(g);
        Tensor g2 = g.view({-1, N});
        std::vector<double> got = b.grad().to(DType::f64).to_vector<double>();
        std::vector<double> want = sum(g2, {0}).to(DType::f64).to_vector<double>();
        std::vector<double> mag = sum(abs(g2.to(DType::f64)), {0}).to_vector<double>();
        ASSERT_EQ(got.size(), size_t(N));
        const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f32 ? 1e-7 : 1e-13;
        for (int64_t j = 0; j < N; ++j)
          ASSERT_NEAR(got[size_t(j)], want[size_t(j)], tol * mag[size_t(j)])
              << dtype_name(dt) << " column " << j;
        if (weight_grad) {
          Tensor gw = matmul(transpose(g2, 0, 1), x.view({-1, xs.back()}));
          EXPECT_EQ(w.grad().to_vector<double>(), gw.to_vector<double>()) << dtype_name(dt);
        }
      }
}

// With several threads the CPU GEMM splits C's rows into one single-threaded panel per thread;
// each element is the same library dot product either way, so the product is bit-identical.
// Both GEMM paths, each with B row-major and B stored transposed: A row-major with 600 rows
// (cpu/gemm_rows.cpp) and A stored transposed with 300 rows (the BLAS). The BLAS path is only
// checked where it holds: OpenBLAS split into 3 panels of a 600-row A^T product (192/208/200
// rows) measured different last bits than one call, while 2 panels, and 300 rows, agree.
TEST(Matmul, RowPanelsGiveTheSameBitsAtAnyThreadCount) {
  const int before = omp_get_max_threads();
  auto stored_transposed = [](const Tensor& t) { return transpose(t.contiguous().transpose(0, 1).contiguous(), 0, 1); };
  Tensor rows_a = Tensor::randn({600, 96}, 4), blas_a = stored_transposed(Tensor::randn({300, 96}, 6));
  Tensor b = Tensor::randn({96, 200}, 5), b_t = stored_transposed(b);
  std::vector<std::pair<Tensor, Tensor>> products = {{rows_a, b}, {rows_a, b_t}, {blas_a, b}, {blas_a, b_t}};
  std::vector<std::vector<float>> one;
  omp_set_num_threads(1);
  for (const auto& [x, y] : products) one.push_back(matmul(x, y).to_vector<float>());
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    for (size_t i = 0; i < products.size(); ++i)
      EXPECT_EQ(matmul(products[i].first, products[i].second).to_vector<float>(), one[i]) << threads << " threads, product " << i;
  }
  omp_set_num_threads(before);
  // B's layout changes the packing, never the values.
  for (size_t j = 0; j < one[0].size(); ++j) ASSERT_NEAR(one[1][j], one[0][j], 1e-4) << j;
}

// The gradient-norm reduction: one pass in f64 over fixed blocks of 16384 elements. Sizes
// cover an empty tensor, a tail shorter than a vector, exactly one block and a partial last
// block; it equals a long-double loop over the exact squares, has the same bits at any thread
// count, and takes f64 and strided (transposed) inputs.
TEST(SumSquares, MatchesAnExactLoopAtAnyThreadCount) {
  const int before = omp_get_max_threads();
  for (int64_t n : {int64_t(0), int64_t(5), int64_t(16384), int64_t(3 * 16384 + 77)}) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = Tensor::randn({n}, 12, dt);
      const std::vector<double> v = x.to_double_vector();
      long double ref = 0;
      for (double e : v) ref += (long double)e * (long double)e;
      omp_set_num_threads(1);
      Tensor s = sum_squares(x);
      ASSERT_EQ(s.dtype(), DType::f64);
      ASSERT_EQ(s.dim(), 0);
      const double one = s.item();
      EXPECT_NEAR(one, double(ref), 1e-13 * double(ref)) << n << " " << dtype_name(dt);
      for (int threads : {2, 3}) {
        omp_set_num_threads(threads);
        EXPECT_EQ(sum_squares(x).item(), one) << n << " " << dtype_name(dt) << ", " << threads << " threads";
      }
    }
  }
  omp_set_num_threads(before);
  Tensor m = Tensor::randn({37, 300}, 13);
  EXPECT_NEAR(sum_squares(m.transpose(0, 1)).item(), sum_squares(m).item(), 1e-12 * sum_squares(m).item());
  // Half-precision gradients are widened to f32 by dispatch: their squares are exact as well.
  Tensor h = Tensor::randn({1000}, 14).to(DType::bf16);
  double href = 0;
  for (double e : h.to_double_vector()) href += e * e;
  EXPECT_NEAR(sum_squares(h).item(), href, 1e-12 * href);
  EXPECT_THROW(sum_squares(Tensor::zeros({3}, DType::i64)), std::invalid_argument);
}

// Sums over a middle axis run in fixed blocks of rows (cpu/common.h reduce_rows_fixed): blocks
// and columns in parallel, blocks added in order. The result equals an f64 loop to f32 rounding
// and has the same bits at any thread count; shapes cover one block, a partial last block, and
// several outer slices (o > 1).
TEST(Sum, MiddleAxisIsExactAndIndependentOfThreadCount) {
  const int before = omp_get_max_threads();
  for (Dims shape : {Dims{40, 7}, Dims{1000, 256}, Dims{3, 301, 5}, Dims{2, 130, 1, 17}}) {
    Tensor x = Tensor::randn(shape, 11);
    const int64_t dim = shape.size() == 2 ? 0 : 1;
    omp_set_num_threads(1);
    const std::vector<float> one = sum(x, {dim}).to_vector<float>();
    for (int threads : {2, 3}) {
      omp_set_num_threads(threads);
      EXPECT_EQ(sum(x, {dim}).to_vector<float>(), one) << shape.size() << "-d, " << threads << " threads";
    }
    const int64_t o = dim == 0 ? 1 : shape[0], n = shape[size_t(dim)], i = x.numel() / (o * n);
    const std::vector<float> v = x.to_vector<float>();
    for (int64_t a = 0; a < o; ++a)
      for (int64_t c = 0; c < i; ++c) {
        double ref = 0;
        for (int64_t r = 0; r < n; ++r) ref += double(v[size_t((a * n + r) * i + c)]);
        ASSERT_NEAR(one[size_t(a * i + c)], ref, 1e-6 * (1 + std::abs(ref))) << a << ", " << c;
      }
  }
  omp_set_num_threads(before);
}

namespace loom::runtime {
namespace {
// rope keeps a table of angles per (theta, D, direction) between calls, grown when positions go
// further: a call after a longer one (the table has more rows than it needs), one that needs
// more rows, the inverse rotation, and positions past B * T (angles per token, no table) must
// all give the rotate-half formula (checked in f64), and the inverse must undo the rotation.
// f32 rotates 8 lanes at a time (D = 20: two blocks of 8 and 2 scalar pairs), f64 one pair at a
// time: both within rounding of the formula (f32: 1e-6).
TEST(Rope, TabulatedAnglesAcrossCallsMatchTheFormula) {
  for (DType dt : {DType::f64, DType::f32})
    for (int64_t D : {int64_t(8), int64_t(20)}) {
      const int64_t H = 2, half = D / 2;
      const double theta = 500.0, tol = dt == DType::f64 ? 1e-12 : 1e-6;
      auto check = [&](const std::vector<int64_t>& positions, int64_t B, int64_t T) {
        Tensor x = Tensor::randn({B, T, H, D}, 21).to(dt);
        Tensor pos = Tensor::from_vector(positions, Dims{B, T});
        std::vector<double> xv = x.to(DType::f64).to_vector<double>();
        std::vector<double> y = rope(x, pos, theta).to(DType::f64).to_vector<double>();
        for (int64_t bt = 0; bt < B * T; ++bt)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < half; ++i) {
              const double ang = double(positions[size_t(bt)]) / std::pow(theta, double(2 * i) / double(D));
              const size_t at = size_t((bt * H + h) * D + i);
              EXPECT_NEAR(y[at], xv[at] * std::cos(ang) - xv[at + half] * std::sin(ang), tol) << bt << " " << i;
              EXPECT_NEAR(y[at + half], xv[at + half] * std::cos(ang) + xv[at] * std::sin(ang), tol) << bt << " " << i;
            }
        // The backward rotates by -angle: back-propagating y itself gives x again.
        Tensor xg = x.detach();
        xg.set_requires_grad(true);
        Tensor yg = rope(xg, pos, theta);
        yg.backward(yg.detach());
        const std::vector<double> back = xg.grad().to(DType::f64).to_vector<double>();
        for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(back[i], xv[i], tol) << i;
      };
      check({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 2, 6);  // a table of 12 rows
      check({0, 1, 2, 3}, 1, 4);                           // fewer rows than the table holds
      std::vector<int64_t> shuffled(32);
      for (int64_t i = 0; i < 32; ++i) shuffled[size_t(i)] = (i * 7) % 32;
      check(shuffled, 4, 8);                               // the table grows to 32 rows
      check({100, 7, 250, 3}, 2, 2);                       // past B * T: angles per token
    }
}
}  // namespace
}  // namespace loom::runtime
