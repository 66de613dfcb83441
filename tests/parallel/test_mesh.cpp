// test_mesh.cpp: Mesh coordinates and sub-communicators for every way of factoring the world
// into [pp][dp][sp][tp]: each group has the expected members, and an all_reduce over it sums
// exactly those ranks; the named dp=2 x tp=2 layout; the size error.
#include <gtest/gtest.h>

#include "parallel/mesh.h"
#include "parallel_test_util.h"

namespace loom::parallel::testing {
namespace {

std::vector<ParallelDims> factorizations(int n) {
  std::vector<ParallelDims> out;
  for (int pp = 1; pp <= n; ++pp)
    for (int dp = 1; dp <= n; ++dp)
      for (int sp = 1; sp <= n; ++sp)
        for (int tp = 1; tp <= n; ++tp)
          if (pp * dp * sp * tp == n) out.push_back({pp, dp, sp, tp});
  return out;
}

TEST(Mesh, EveryFactorizationGroupsAndSums) {
  const CommPtr& w = world();
  const int n = w->size(), me = w->rank();
  const std::vector<std::string> names = {"pp", "dp", "sp", "tp"};
  for (const ParallelDims& p : factorizations(n)) {
    Mesh mesh(w, p);
    const int deg[4] = {p.pp, p.dp, p.sp, p.tp};
    const std::string at = mesh.str();
    // Coordinates: world_rank = ((pp * DP + dp) * SP + sp) * TP + tp.
    std::vector<int> c = {me / (p.tp * p.sp * p.dp), me / (p.tp * p.sp) % p.dp, me / p.tp % p.sp, me % p.tp};
    EXPECT_EQ(mesh.coords(), c) << at;
    for (int i = 0; i < 4; ++i) EXPECT_EQ(mesh.coord(names[i]), c[i]) << at << " " << names[i];
    EXPECT_EQ(mesh.rank_of(c), me) << at;
    for (unsigned m = 1; m < 16; ++m) {
      std::vector<std::string> dims;
      for (int i = 0; i < 4; ++i)
        if (m & (1u << i)) dims.push_back(names[i]);
      const CommPtr& g = mesh.comm(dims);
      // Members: every rank whose coordinates outside `dims` equal mine, by world rank.
      std::vector<int> members;
      for (int q = 0; q < n; ++q) {
        std::vector<int> cq = mesh.coords_of(q);
        bool same = true;
        for (int i = 0; i < 4; ++i)
          if (!(m & (1u << i)) && cq[i] != c[i]) same = false;
        if (same) members.push_back(q);
      }
      int size = 1;
      for (int i = 0; i < 4; ++i)
        if (m & (1u << i)) size *= deg[i];
      std::string what = at + " group " + g->name();
      ASSERT_EQ(g->size(), size) << what;
      EXPECT_EQ(g->world_ranks(), members) << what;
      Tensor x = Tensor::from_vector<int64_t>({me, 1});
      g->all_reduce(x);
      int64_t sum = 0;
      for (int q : members) sum += q;
      EXPECT_EQ(x.to_vector<int64_t>(), (std::vector<int64_t>{sum, size})) << what;
    }
  }
}

TEST(Mesh, DataTimesTensorParallelOnFourRanks) {
  const CommPtr& w = world();
  if (w->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  Mesh mesh(w, ParallelDims{.dp = 2, .tp = 2});
  const int r = w->rank();
  const int want_dp[4] = {0, 0, 1, 1}, want_tp[4] = {0, 1, 0, 1};
  EXPECT_EQ(mesh.coord("dp"), want_dp[r]);
  EXPECT_EQ(mesh.coord("tp"), want_tp[r]);
  EXPECT_EQ(mesh.coord("pp"), 0);
  EXPECT_EQ(mesh.comm("tp")->name(), "tp");
  EXPECT_EQ(mesh.comm("tp")->rank(), want_tp[r]);
  EXPECT_EQ(mesh.comm("dp")->rank(), want_dp[r]);
  EXPECT_EQ(mesh.comm("pp")->size(), 1);
  EXPECT_EQ(mesh.comm("pp")->backend(), std::string("self"));
  // tp groups are {0, 1} and {2, 3}; dp groups {0, 2} and {1, 3}.
  Tensor t = Tensor::full({3}, double(r), DType::f64);
  mesh.comm("tp")->all_reduce(t);
  expect_values(
      t, [&](int64_t) { return r < 2 ? 1.0 : 5.0; }, "tp all_reduce");
  Tensor d = Tensor::full({3}, double(r), DType::f64);
  mesh.comm("dp")->all_reduce(d);
  expect_values(
      d, [&](int64_t) { return r % 2 == 0 ? 2.0 : 4.0; }, "dp all_reduce");
  // Combined dims in any order, degree-1 dims ignored: {"tp", "dp", "sp"} is the world.
  EXPECT_EQ(mesh.comm({"tp", "dp", "sp"})->size(), 4);
  EXPECT_EQ(mesh.comm({"dp", "sp"})->world_ranks(), mesh.comm("dp")->world_ranks());
}

TEST(Mesh, SizeErrorNamesEachFactor) {
  const CommPtr& w = world();
  const int n = w->size();
  try {
    Mesh mesh(w, ParallelDims{.pp = 1, .dp = n + 1, .sp = 1, .tp = 2});
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    std::string want = "mesh: pp 1 x dp " + std::to_string(n + 1) + " x sp 1 x tp 2 = " + std::to_string(2 * (n + 1)) +
                       " ranks, but the world has " + std::to_string(n);
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
  EXPECT_THROW(Mesh(w, ParallelDims{.dp = 0}), std::invalid_argument);
  Mesh mesh(w, ParallelDims{.dp = n});
  try {
    mesh.comm("cp");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no dimension 'cp' (the mesh has pp, dp, sp, tp)"), std::string::npos)
        << e.what();
  }
}

TEST(Mesh, CpuDeviceCommIsTheMpiOne) {
  Mesh mesh(world(), ParallelDims{.dp = world()->size()});
  EXPECT_EQ(mesh.comm("dp", Device::cpu()), mesh.comm("dp"));
}

}  // namespace
}  // namespace loom::parallel::testing
