// test_mappings.cpp: each conjugate pair of mappings.h, forward and backward, exactly, with
// rank-valued tensors (as Megatron's test_mappings.py does): on every group of the suite and
// on a mesh's tp group, along dims 0, 1 and 2 of a 3-d tensor, in f64 and f32.
#include <gtest/gtest.h>

#include "parallel/mappings.h"
#include "parallel/mesh.h"
#include "parallel_test_util.h"

namespace loom::parallel::testing {
namespace {

// The groups of the suite, plus the tp group of a dp x tp mesh when the world is even.
std::vector<CommPtr> mapping_groups() {
  static std::vector<CommPtr> g = [] {
    std::vector<CommPtr> v = groups();
    const int n = world()->size();
    if (n % 2 == 0) {
      static Mesh mesh(world(), ParallelDims{.dp = n / 2, .tp = 2});
      v.push_back(mesh.comm("tp"));
    }
    return v;
  }();
  return g;
}

const DType kFloat[] = {DType::f64, DType::f32};

Tensor leaf(const Dims& shape, DType dt, const std::function<double(int64_t)>& f) {
  Tensor t = make(shape, dt, f);
  t.set_requires_grad(true);
  return t;
}

// Block j along dim d of the tensor whose blocks are f_j (each of shape `block`): the full
// tensor every rank would hold after a gather, built with concat (independent of mappings.cpp).
Tensor blocks_along(const Dims& block, DType dt, int n, int64_t d, const std::function<double(int, int64_t)>& f) {
  std::vector<Tensor> parts;
  for (int j = 0; j < n; ++j) parts.push_back(make(block, dt, [&](int64_t i) { return f(j, i); }));
  return runtime::concat(parts, d);
}

TEST(Mapping, CopyToRegion) {
  for (const CommPtr& g : mapping_groups())
    for (DType dt : kFloat) {
      const int n = g->size(), r = g->rank();
      Tensor x = leaf({2, 3}, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
      Tensor y = copy_to_region(x, g);
      expect_equal(y, x, "copy_to_region forward " + group_str(*g));
      ASSERT_TRUE(y.requires_grad());
      y.backward(make({2, 3}, dt, [&](int64_t i) { return (r + 1) * (i + 1); }));
      expect_values(
          x.grad(), [&](int64_t i) { return n * (n + 1) / 2.0 * (i + 1); },
          "copy_to_region backward (all_reduce) " + group_str(*g));
    }
}

TEST(Mapping, ReduceFromRegion) {
  for (const CommPtr& g : mapping_groups())
    for (DType dt : kFloat) {
      const int n = g->size(), r = g->rank();
      Tensor x = leaf({2, 3}, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
      Tensor y = reduce_from_region(x, g);
      expect_values(
          y, [&](int64_t i) { return n * (n + 1) / 2.0 * (i + 1); }, "reduce_from_region forward " + group_str(*g));
      expect_values(
          x, [&](int64_t i) { return (r + 1) * (i + 1.0); }, "reduce_from_region leaves x");
      y.backward(make({2, 3}, dt, [&](int64_t i) { return (r + 1) * 10 + i; }));
      expect_values(
          x.grad(), [&](int64_t i) { return (r + 1) * 10 + i; },
          "reduce_from_region backward (identity) " + group_str(*g));
    }
}

TEST(Mapping, ScatterToRegionAndGatherFromRegion) {
  for (const CommPtr& g : mapping_groups())
    for (DType dt : kFloat)
      for (int64_t d : {0, 1, 2}) {
        const int n = g->size(), r = g->rank();
        Dims block = {2, 3, 2};
        Dims full = block;
        full[d] *= n;
        std::string at = "dim " + std::to_string(d) + " " + group_str(*g) + " " + dtype_name(dt);

        // scatter: x is the same on every rank; y = chunk r; grad = all_gather of the chunks' grads.
        Tensor x = leaf(full, dt, [](int64_t i) { return double(i); });
        Tensor y = scatter_to_region(x, g, d);
        expect_equal(y, x.detach().narrow(d, r * block[d], block[d]), "scatter_to_region forward " + at);
        y.backward(make(block, dt, [&](int64_t i) { return (r + 1) * 100 + i; }));
        expect_equal(x.grad(), blocks_along(block, dt, n, d, [](int j, int64_t i) { return (j + 1) * 100 + i; }),
                     "scatter_to_region backward (all_gather) " + at);

        // gather: y = the ranks' blocks concatenated; grad = this rank's chunk of y's grad.
        Tensor xl = leaf(block, dt, [&](int64_t i) { return (r + 1) * 1000 + i; });
        Tensor yg = gather_from_region(xl, g, d);
        expect_equal(yg, blocks_along(block, dt, n, d, [](int j, int64_t i) { return (j + 1) * 1000 + i; }),
                     "gather_from_region forward " + at);
        Tensor gy = make(full, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
        yg.backward(gy);
        expect_equal(xl.grad(), gy.narrow(d, r * block[d], block[d]), "gather_from_region backward (chunk) " + at);
      }
}

TEST(Mapping, SequenceParallelPair) {
  for (const CommPtr& g : mapping_groups())
    for (DType dt : kFloat)
      for (int64_t d : {0, 1}) {
        const int n = g->size(), r = g->rank();
        const double S = n * (n + 1) / 2.0;
        Dims block = d == 0 ? Dims{2, 3, 2} : Dims{3, 2, 2};
        Dims full = block;
        full[d] *= n;
        std::string at = "dim " + std::to_string(d) + " " + group_str(*g) + " " + dtype_name(dt);

        // reduce_scatter: y = chunk r of the sum over ranks; grad = all_gather.
        Tensor x = leaf(full, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
        Tensor y = reduce_scatter_to_sequence(x, g, d);
        Tensor ones_full = make(full, dt, [](int64_t i) { return double(i + 1); });
        expect_equal(y, (ones_full * S).narrow(d, r * block[d], block[d]), "reduce_scatter_to_sequence forward " + at);
        y.backward(make(block, dt, [&](int64_t i) { return (r + 1) * 100 + i; }));
        expect_equal(x.grad(), blocks_along(block, dt, n, d, [](int j, int64_t i) { return (j + 1) * 100 + i; }),
                     "reduce_scatter_to_sequence backward (all_gather) " + at);

        // all_gather: y = blocks concatenated; grad = reduce_scatter (partial) or chunk.
        for (bool partial : {true, false}) {
          Tensor xl = leaf(block, dt, [&](int64_t i) { return (r + 1) * 1000 + i; });
          Tensor yg = all_gather_from_sequence(xl, g, d, partial);
          expect_equal(yg, blocks_along(block, dt, n, d, [](int j, int64_t i) { return (j + 1) * 1000 + i; }),
                       "all_gather_from_sequence forward " + at);
          Tensor gy = make(full, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
          yg.backward(gy);
          Tensor want =
              partial ? (ones_full * S).narrow(d, r * block[d], block[d]) : gy.narrow(d, r * block[d], block[d]);
          expect_equal(
              xl.grad(), want,
              std::string("all_gather_from_sequence backward (") + (partial ? "reduce_scatter" : "chunk") + ") " + at);
        }
      }
}

TEST(Mapping, ComposedTensorParallelLinearMatchesOneRank) {
  // A column-then-row parallel MLP slice, y = (x W1_r^T) W2_r^T summed over ranks, equals the
  // unsharded y = x W1^T W2^T, and so do the gradients of x (f64, exact up to rounding).
  for (const CommPtr& g : mapping_groups()) {
    const int n = g->size(), r = g->rank();
    const int64_t B = 3, C = 4, F = 2 * n;
    Tensor W1 = Tensor::randn({F, C}, 7, DType::f64), W2 = Tensor::randn({C, F}, 8, DType::f64);
    Tensor xin = Tensor::randn({B, C}, 9, DType::f64);
    Tensor x1 = xin.clone().set_requires_grad(true);
    Tensor ref = runtime::linear(runtime::linear(x1, W1), W2);
    ref.backward(Tensor::ones({B, C}, DType::f64));

    Tensor x2 = xin.clone().set_requires_grad(true);
    Tensor h = runtime::linear(copy_to_region(x2, g), W1.narrow(0, r * 2, 2));
    Tensor y = reduce_from_region(runtime::linear(h, W2.narrow(1, r * 2, 2)), g);
    y.backward(Tensor::ones({B, C}, DType::f64));
    std::vector<double> a = y.to_double_vector(), b = ref.to_double_vector();
    std::vector<double> ga = x2.grad().to_double_vector(), gb = x1.grad().to_double_vector();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12) << group_str(*g);
    for (size_t i = 0; i < ga.size(); ++i) EXPECT_NEAR(ga[i], gb[i], 1e-12) << group_str(*g);
  }
}

TEST(Mapping, IndivisibleSizeIsAnError) {
  const CommPtr& g = world();
  if (g->size() == 1) GTEST_SKIP() << "every size divides by 1";
  try {
    scatter_to_region(Tensor::zeros({2, g->size() + 1}), g, 1);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("scatter_to_region on group world: size " + std::to_string(g->size() + 1) +
                                         " along dim 1"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace loom::parallel::testing
