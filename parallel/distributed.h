// distributed.h: the process's place in the job. The launcher (mpirun, srun) says the rank and
// world size through the environment; Distributed initialises MPI once per process to match
// (MPI_THREAD_MULTIPLE requested) and owns the world communicator. A process started without
// a launcher is a world of one rank: no MPI is initialised and every collective is local.
#pragma once
#include <functional>
#include <string>

#include "parallel/comm.h"

namespace loom::parallel {

struct LaunchEnv {
  std::string launcher = "none";  // "mpirun" (Open MPI), "srun" (Slurm), "pmi" (MPICH Hydra), "none"
  int rank = 0, world_size = 1, local_rank = 0;
  std::string source;  // the variables read, for messages ("OMPI_COMM_WORLD_RANK/SIZE")
};

// Reads, in this order: OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}; PMI_{RANK,SIZE} with
// MPI_LOCALRANKID; SLURM_PROCID, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS), SLURM_LOCALID.
// Throws std::invalid_argument naming the variable when a value is malformed or out of range.
LaunchEnv parse_launch_env(const std::function<const char*(const char*)>& getenv);
LaunchEnv detect_launch_env();  // from this process's environment

struct DistributedOptions {
  double timeout_s = 0;  // collectives' timeout; 0: default_comm_timeout() ($LOOM_COMM_TIMEOUT or 600)
};

class Distributed {
 public:
  // Initialises MPI when a launcher is detected (or MPI is already initialised); checks that
  // MPI agrees with the launcher on rank and size. One instance per process at a time.
  explicit Distributed(const DistributedOptions& opt = {});
  ~Distributed();  // finalises MPI if it initialised it
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  int local_rank() const { return env_.local_rank; }
  const LaunchEnv& launch_env() const { return env_; }
  bool uses_mpi() const { return uses_mpi_; }
  const CommPtr& world() const { return world_; }

 private:
  LaunchEnv env_;
  bool uses_mpi_ = false, finalize_ = false;
  CommPtr world_;
};

// The process-wide instance, created on first call (later calls return it and ignore `opt`);
// MPI is finalised at exit.
Distributed& init_distributed(const DistributedOptions& opt = {});

}  // namespace loom::parallel
