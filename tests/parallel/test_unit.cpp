// test_unit.cpp: single-process tests of the parallel layer: launcher detection from the
// environment, the world of one rank without a launcher, the one-rank backend, the timeout
// setting.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "parallel/distributed.h"
#include "parallel/mesh.h"
#include "parallel_test_util.h"

namespace loom::parallel::testing {
namespace {

LaunchEnv parse(const std::map<std::string, std::string>& env) {
  return parse_launch_env([&](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(ParallelUnit, LaunchEnvFromEachLauncher) {
  LaunchEnv none = parse({});
  EXPECT_EQ(none.launcher, "none");
  EXPECT_EQ(none.world_size, 1);
  EXPECT_EQ(none.rank, 0);

  LaunchEnv o = parse({{"OMPI_COMM_WORLD_RANK", "3"},
                       {"OMPI_COMM_WORLD_SIZE", "8"},
                       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                       {"SLURM_PROCID", "0"},
                       {"SLURM_NTASKS", "2"}});
  EXPECT_EQ(o.launcher, "mpirun");  // mpirun inside a Slurm allocation: mpirun's numbering
  EXPECT_EQ(o.rank, 3);
  EXPECT_EQ(o.world_size, 8);
  EXPECT_EQ(o.local_rank, 1);

  LaunchEnv s =
      parse({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "16"}, {"SLURM_STEP_NUM_TASKS", "6"}, {"SLURM_LOCALID", "2"}});
  EXPECT_EQ(s.launcher, "srun");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.world_size, 6);  // the step's tasks, not the allocation's
  EXPECT_EQ(s.local_rank, 2);

  LaunchEnv p = parse({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}});
  EXPECT_EQ(p.launcher, "pmi");
  EXPECT_EQ(p.rank, 1);
}

TEST(ParallelUnit, LaunchEnvErrorsNameTheVariable) {
  auto expect_error = [](const std::map<std::string, std::string>& env, const std::string& part) {
    try {
      parse(env);
      ADD_FAILURE() << "no error; expected '" << part << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error({{"OMPI_COMM_WORLD_RANK", "x"}, {"OMPI_COMM_WORLD_SIZE", "2"}}, "OMPI_COMM_WORLD_RANK='x'");
  expect_error({{"OMPI_COMM_WORLD_SIZE", "2"}}, "OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not");
  expect_error({{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}}, "SLURM_PROCID=4 is not a rank of SLURM_NTASKS=4");
}

TEST(ParallelUnit, WorldWithoutLauncher) {
  Distributed& d = init_distributed();
  if (detect_launch_env().launcher != "none") GTEST_SKIP() << "started by a launcher";
  EXPECT_FALSE(d.uses_mpi());
  EXPECT_EQ(d.world_size(), 1);
  EXPECT_EQ(d.rank(), 0);
  EXPECT_EQ(d.world()->backend(), std::string("self"));
  EXPECT_EQ(d.world()->name(), "world");
}

TEST(ParallelUnit, SelfCommCopiesAndMailbox) {
  CommPtr c = make_self_comm(0, "solo");
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  c->all_reduce(x, ReduceOp::avg);
  expect_values(
      x, [](int64_t i) { return i + 1.0; }, "self all_reduce");
  Tensor out = Tensor::empty({2, 2});
  c->all_gather(x.transpose(0, 1), out);  // a strided input is copied in row-major order
  expect_values(
      out,
      [](int64_t i) {
        return std::vector<double>{1, 3, 2, 4}[i];
      },
      "self all_gather");
  c->send(x, 0, 4);
  Tensor y = Tensor::empty({2, 2});
  c->recv(y, 0, 4);
  expect_equal(y, x, "self send/recv");
  EXPECT_THROW(c->recv(y, 0, 4), std::invalid_argument);  // nothing left to receive
  EXPECT_EQ(c->split(-1, 0, "none"), nullptr);
  EXPECT_EQ(c->split(0, 0, "again")->name(), "again");
}

TEST(ParallelUnit, TimeoutSetting) {
  CommPtr c = make_self_comm(0);
  c->set_timeout(2.5);
  EXPECT_EQ(c->timeout(), 2.5);
  EXPECT_THROW(c->set_timeout(0), std::invalid_argument);
  const char* old = std::getenv("LOOM_COMM_TIMEOUT");
  std::string saved = old ? old : "";
  setenv("LOOM_COMM_TIMEOUT", "12", 1);
  EXPECT_EQ(default_comm_timeout(), 12);
  setenv("LOOM_COMM_TIMEOUT", "soon", 1);
  EXPECT_THROW(default_comm_timeout(), std::invalid_argument);
  if (old)
    setenv("LOOM_COMM_TIMEOUT", saved.c_str(), 1);
  else
    unsetenv("LOOM_COMM_TIMEOUT");
}

TEST(ParallelUnit, NcclCommOfOneRankIsTheGroup) {
  CommPtr c = make_self_comm(0);
  EXPECT_EQ(make_nccl_comm(c, 0), c);
}

}  // namespace
}  // namespace loom::parallel::testing
