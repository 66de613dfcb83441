// mesh.h: ranks laid out over named dimensions, outermost first; Loom's layout is
// [pp][dp][sp][tp], tp innermost (consecutive ranks, the fastest links):
//   world_rank = ((pp * DP + dp) * SP + sp) * TP + tp
// Each dimension, and each combination of dimensions ({"dp","sp"} for ZeRO over dp x sp),
// yields a communicator over the ranks that share every other coordinate; members are ordered
// by world rank, which is row-major order over the chosen dimensions.
// The degrees must multiply to the world size (the error names each factor, as torchtitan's
// ParallelDims does).
#pragma once
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace loom::parallel {

struct MeshDim {
  std::string name;
  int degree = 1;
};

// The degrees of Loom's four dimensions.
struct ParallelDims {
  int pp = 1, dp = 1, sp = 1, tp = 1;
  std::vector<MeshDim> dims() const { return {{"pp", pp}, {"dp", dp}, {"sp", sp}, {"tp", tp}}; }
};

class Mesh {
 public:
  // Collective over `world`: builds the MPI communicator of every combination of the
  // dimensions of degree > 1 up front, so later comm() calls never communicate.
  Mesh(CommPtr world, std::vector<MeshDim> dims);
  Mesh(CommPtr world, const ParallelDims& p) : Mesh(std::move(world), p.dims()) {}

  const std::vector<MeshDim>& dims() const { return dims_; }
  int degree(const std::string& dim) const { return dims_[index(dim)].degree; }
  int coord(const std::string& dim) const { return coords_[index(dim)]; }  // this rank's
  const std::vector<int>& coords() const { return coords_; }               // in dims() order
  std::vector<int> coords_of(int world_rank) const;
  int rank_of(const std::vector<int>& coords) const;  // the world rank at these coordinates
  const CommPtr& world() const { return world_; }
  std::string str() const;  // "pp 1 x dp 2 x sp 1 x tp 2"

  // The communicator over one dimension, or several (any order; named in layout order).
  const CommPtr& comm(const std::string& dim) const { return comm_for(mask_of({dim})); }
  const CommPtr& comm(std::initializer_list<std::string> dims) const { return comm_for(mask_of(dims)); }
  const CommPtr& comm(const std::vector<std::string>& dims) const { return comm_for(mask_of(dims)); }
  // The same group for tensors on `device`: the MPI (or one-rank) communicator for the CPU,
  // an NCCL communicator for CUDA, created on first request (collective over the group).
  CommPtr comm(const std::vector<std::string>& dims, Device device);
  CommPtr comm(const std::string& dim, Device device) { return comm(std::vector<std::string>{dim}, device); }

 private:
  int index(const std::string& dim) const;
  unsigned mask_of(const std::vector<std::string>& dims) const;
  const CommPtr& comm_for(unsigned mask) const;
  std::string name_of(unsigned mask) const;

  CommPtr world_;
  std::vector<MeshDim> dims_;
  std::vector<int> coords_;
  std::vector<int64_t> strides_;       // world-rank stride of each dimension
  unsigned nontrivial_ = 0;            // dims with degree > 1
  std::map<unsigned, CommPtr> comms_;  // by requested mask (degree-1 dims share their group)
  std::map<std::pair<unsigned, int>, CommPtr> device_comms_;
};

}  // namespace loom::parallel
