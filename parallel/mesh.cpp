// mesh.cpp: coordinates and per-dimension communicators of a Mesh (layout in mesh.h).
#include "parallel/mesh.h"

#include <set>
#include <stdexcept>

namespace loom::parallel {

Mesh::Mesh(CommPtr world, std::vector<MeshDim> dims) : world_(std::move(world)), dims_(std::move(dims)) {
  if (!world_) throw std::invalid_argument("mesh: no world communicator");
  if (dims_.empty() || dims_.size() > 8) throw std::invalid_argument("mesh: needs 1 to 8 dimensions");
  std::set<std::string> seen;
  int64_t product = 1;
  for (const MeshDim& d : dims_) {
    if (d.name.empty() || !seen.insert(d.name).second)
      throw std::invalid_argument("mesh: dimension names must be distinct and non-empty (" + str() + ")");
    if (d.degree < 1)
      throw std::invalid_argument("mesh: " + d.name + " has degree " + std::to_string(d.degree) + " (" + str() + ")");
    product *= d.degree;
  }
  if (product != world_->size())
    throw std::invalid_argument("mesh: " + str() + " = " + std::to_string(product) + " ranks, but the world has " +
                                std::to_string(world_->size()) + "; the degrees must multiply to the world size");
  const int k = int(dims_.size());
  strides_.assign(k, 1);
  for (int i = k - 2; i >= 0; --i) strides_[i] = strides_[i + 1] * dims_[i + 1].degree;
  coords_ = coords_of(world_->rank());
  for (int i = 0; i < k; ++i)
    if (dims_[i].degree > 1) nontrivial_ |= 1u << i;

  // One group per combination of non-trivial dims, in the same order on every rank. Within a
  // group the other coordinates are fixed (the color); ordering by world rank is row-major.
  std::map<unsigned, CommPtr> groups;
  const int r = world_->rank();
  for (unsigned m = 1; m < (1u << k); ++m) {
    if ((m & nontrivial_) != m) continue;
    if (m == nontrivial_) {
      groups[m] = world_;
      continue;
    }
    int color = r;
    for (int i = 0; i < k; ++i)
      if (m & (1u << i)) color -= int(coords_[i] * strides_[i]);
    groups[m] = world_->split(color, r, name_of(m));
  }
  for (unsigned m = 1; m < (1u << k); ++m) {
    unsigned g = m & nontrivial_;
    comms_[m] = g ? groups.at(g) : make_self_comm(world_->world_rank(), name_of(m));
    if (!g) comms_[m]->set_timeout(world_->timeout());
  }
}

std::vector<int> Mesh::coords_of(int world_rank) const {
  if (world_rank < 0 || world_rank >= world_->size())
    throw std::invalid_argument("mesh: rank " + std::to_string(world_rank) + " is not in the world of " +
                                std::to_string(world_->size()));
  std::vector<int> c(dims_.size());
  for (size_t i = 0; i < dims_.size(); ++i) c[i] = int(world_rank / strides_[i] % dims_[i].degree);
  return c;
}

int Mesh::rank_of(const std::vector<int>& coords) const {
  if (coords.size() != dims_.size())
    throw std::invalid_argument("mesh: " + std::to_string(coords.size()) + " coordinates for " + str());
  int64_t r = 0;
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (coords[i] < 0 || coords[i] >= dims_[i].degree)
      throw std::invalid_argument("mesh: coordinate " + dims_[i].name + "=" + std::to_string(coords[i]) +
                                  " outside [0, " + std::to_string(dims_[i].degree) + ")");
    r += coords[i] * strides_[i];
  }
  return int(r);
}

std::string Mesh::str() const {
  std::string s;
  for (const MeshDim& d : dims_) s += (s.empty() ? "" : " x ") + d.name + " " + std::to_string(d.degree);
  return s;
}

int Mesh::index(const std::string& dim) const {
  for (size_t i = 0; i < dims_.size(); ++i)
    if (dims_[i].name == dim) return int(i);
  std::string names;
  for (const MeshDim& d : dims_) names += (names.empty() ? "" : ", ") + d.name;
  throw std::invalid_argument("mesh: no dimension '" + dim + "' (the mesh has " + names + ")");
}

unsigned Mesh::mask_of(const std::vector<std::string>& dims) const {
  if (dims.empty()) throw std::invalid_argument("mesh: comm() needs at least one dimension");
  unsigned m = 0;
  for (const std::string& d : dims) m |= 1u << index(d);
  return m;
}

std::string Mesh::name_of(unsigned mask) const {
  std::string s;
  for (size_t i = 0; i < dims_.size(); ++i)
    if (mask & (1u << i)) s += (s.empty() ? "" : ",") + dims_[i].name;
  return s;
}

const CommPtr& Mesh::comm_for(unsigned mask) const { return comms_.at(mask); }

CommPtr Mesh::comm(const std::vector<std::string>& dims, Device device) {
  unsigned m = mask_of(dims);
  const CommPtr& c = comm_for(m);
  if (device.is_cpu() || c->size() == 1) return c;
  auto key = std::make_pair(m & nontrivial_, device.index);
  auto it = device_comms_.find(key);
  if (it != device_comms_.end()) return it->second;
  CommPtr nc = make_nccl_comm(c, device.index);
  device_comms_[key] = nc;
  return nc;
}

}  // namespace loom::parallel
