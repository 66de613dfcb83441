// distributed.cpp: launcher detection and MPI's one initialisation per process.
#include "parallel/distributed.h"

#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "parallel/mpi_comm.h"

namespace loom::parallel {
namespace {

int parse_int(const char* name, const char* value) {
  char* end = nullptr;
  long v = std::strtol(value, &end, 10);
  if (end == value || *end != '\0' || v < 0 || v > (1 << 30))
    throw std::invalid_argument(std::string("launch environment: ") + name + "='" + value +
                                "' is not a non-negative integer");
  return int(v);
}

bool g_alive = false;  // a Distributed exists
bool g_mpi_finalized_by_us = false;

}  // namespace

LaunchEnv parse_launch_env(const std::function<const char*(const char*)>& getenv) {
  auto get = [&](const char* n) -> const char* {
    const char* v = getenv(n);
    return v && *v ? v : nullptr;
  };
  LaunchEnv e;
  const char *rank = nullptr, *size = nullptr, *local = nullptr;
  const char *rank_name = "", *size_name = "", *local_name = "";
  if (get("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "mpirun";
    rank_name = "OMPI_COMM_WORLD_RANK", size_name = "OMPI_COMM_WORLD_SIZE", local_name = "OMPI_COMM_WORLD_LOCAL_RANK";
  } else if (get("PMI_SIZE")) {
    e.launcher = "pmi";
    rank_name = "PMI_RANK", size_name = "PMI_SIZE", local_name = "MPI_LOCALRANKID";
  } else if (get("SLURM_PROCID") && (get("SLURM_STEP_NUM_TASKS") || get("SLURM_NTASKS"))) {
    e.launcher = "srun";
    rank_name = "SLURM_PROCID", local_name = "SLURM_LOCALID";
    size_name = get("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
  } else {
    return e;
  }
  rank = get(rank_name), size = get(size_name), local = get(local_name);
  e.source = std::string(rank_name) + ", " + size_name;
  if (!rank)
    throw std::invalid_argument(std::string("launch environment: ") + size_name + " is set but " + rank_name +
                                " is not");
  e.rank = parse_int(rank_name, rank);
  e.world_size = parse_int(size_name, size);
  e.local_rank = local ? parse_int(local_name, local) : 0;
  if (e.world_size < 1 || e.rank >= e.world_size)
    throw std::invalid_argument(std::string("launch environment: ") + rank_name + "=" + rank + " is not a rank of " +
                                size_name + "=" + size);
  return e;
}

LaunchEnv detect_launch_env() {
  return parse_launch_env([](const char* n) { return std::getenv(n); });
}

Distributed::Distributed(const DistributedOptions& opt) : env_(detect_launch_env()) {
  if (g_alive) throw std::logic_error("Distributed: one instance per process (use init_distributed())");
  double timeout = opt.timeout_s > 0 ? opt.timeout_s : default_comm_timeout();
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (env_.launcher != "none" || initialized) {
    if (g_mpi_finalized_by_us)
      throw std::logic_error("Distributed: MPI was already finalised; it can be initialised once per process");
    if (!initialized) {
      int provided = MPI_THREAD_SINGLE;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      detail::set_mpi_thread_level(provided);
      finalize_ = true;
    } else {
      int provided = MPI_THREAD_SINGLE;
      MPI_Query_thread(&provided);
      detail::set_mpi_thread_level(provided);
    }
    uses_mpi_ = true;
    int r = 0, n = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (env_.launcher != "none" && (r != env_.rank || n != env_.world_size)) {
      std::string msg = "Distributed: " + env_.launcher + " says rank " + std::to_string(env_.rank) + " of " +
                        std::to_string(env_.world_size) + " (" + env_.source + ") but MPI says rank " +
                        std::to_string(r) + " of " + std::to_string(n) +
                        " (is this binary's MPI the launcher's? under Slurm use srun --mpi=pmix, or mpirun)";
      if (finalize_) MPI_Finalize();
      g_mpi_finalized_by_us = finalize_;
      throw std::runtime_error(msg);
    }
    if (env_.launcher == "none") env_.rank = r, env_.world_size = n;
    world_ = std::make_shared<MpiComm>(MPI_COMM_WORLD, "world", timeout);
  } else {
    world_ = make_self_comm(0, "world");
    world_->set_timeout(timeout);
  }
  g_alive = true;
}

Distributed::~Distributed() {
  double timeout = world_->timeout();
  world_.reset();
  if (finalize_) {
    detail::prepare_finalize();
    detail::BlockingGuard guard("MPI_Finalize", timeout);
    MPI_Finalize();
    g_mpi_finalized_by_us = true;
  }
  g_alive = false;
}

Distributed& init_distributed(const DistributedOptions& opt) {
  static std::mutex mu;
  static std::unique_ptr<Distributed> instance;
  std::lock_guard lk(mu);
  if (!instance) instance = std::make_unique<Distributed>(opt);
  return *instance;
}

}  // namespace loom::parallel
