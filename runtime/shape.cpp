// shape.cpp: shape arithmetic and broadcasting rules.
#include "runtime/shape.h"

namespace loom::runtime {

std::string Dims::str() const {
  std::string s = "[";
  for (int i = 0; i < n_; ++i) s += (i ? ", " : "") + std::to_string(d_[i]);
  return s + "]";
}

int64_t numel_of(const Dims& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Dims contiguous_strides(const Dims& shape) {
  Dims s;
  s.resize(shape.size());
  int64_t acc = 1;
  for (int i = shape.size() - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i] > 0 ? shape[i] : 1;
  }
  return s;
}

int wrap_dim(int64_t dim, int ndim, const char* op) {
  int64_t d = dim < 0 ? dim + ndim : dim;
  if (d < 0 || d >= ndim)
    throw std::invalid_argument(std::string(op) + ": dim " + std::to_string(dim) + " out of range for a " +
                                std::to_string(ndim) + "-d tensor");
  return int(d);
}

Dims broadcast_shapes(const Dims& a, const Dims& b) {
  int n = std::max(a.size(), b.size());
  Dims out;
  out.resize(n);
  for (int i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument("shapes " + a.str() + " and " + b.str() + " cannot be broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Dims broadcast_strides(const Dims& shape, const Dims& strides, const Dims& target) {
  Dims out;
  out.resize(target.size());
  int lead = target.size() - shape.size();
  if (lead < 0) throw std::invalid_argument("cannot broadcast " + shape.str() + " to " + target.str());
  for (int i = 0; i < target.size(); ++i) {
    if (i < lead) { out[i] = 0; continue; }
    int64_t d = shape[i - lead];
    if (d == target[i]) out[i] = strides[i - lead];
    else if (d == 1) out[i] = 0;
    else throw std::invalid_argument("cannot broadcast " + shape.str() + " to " + target.str());
  }
  return out;
}

}  // namespace loom::runtime
