// shape.h: Dims, a fixed-capacity (8) list of extents or strides, and shape helpers
// (numel, contiguous strides, broadcasting). Fixed capacity keeps per-op overhead free of
// heap allocations on the hot path.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::runtime {

constexpr int kMaxDims = 8;

class Dims {
 public:
  Dims() = default;
  Dims(std::initializer_list<int64_t> v) { assign(v.begin(), v.end()); }
  explicit Dims(const std::vector<int64_t>& v) { assign(v.begin(), v.end()); }
  template <class It> Dims(It b, It e) { assign(b, e); }

  int size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int64_t& operator[](int i) { return d_[i]; }
  int64_t operator[](int i) const { return d_[i]; }
  int64_t* begin() { return d_; }
  int64_t* end() { return d_ + n_; }
  const int64_t* begin() const { return d_; }
  const int64_t* end() const { return d_ + n_; }
  int64_t back() const { return d_[n_ - 1]; }
  void push_back(int64_t v) {
    if (n_ == kMaxDims) throw std::invalid_argument("tensors have at most 8 dimensions");
    d_[n_++] = v;
  }
  void pop_back() { --n_; }
  void insert(int pos, int64_t v) {
    push_back(0);
    for (int i = n_ - 1; i > pos; --i) d_[i] = d_[i - 1];
    d_[pos] = v;
  }
  void erase(int pos) {
    for (int i = pos; i + 1 < n_; ++i) d_[i] = d_[i + 1];
    --n_;
  }
  void resize(int n, int64_t fill = 0) {
    if (n > kMaxDims) throw std::invalid_argument("tensors have at most 8 dimensions");
    for (int i = n_; i < n; ++i) d_[i] = fill;
    n_ = n;
  }
  std::vector<int64_t> vec() const { return std::vector<int64_t>(begin(), end()); }
  bool operator==(const Dims& o) const {
    if (n_ != o.n_) return false;
    for (int i = 0; i < n_; ++i)
      if (d_[i] != o.d_[i]) return false;
    return true;
  }
  bool operator!=(const Dims& o) const { return !(*this == o); }
  std::string str() const;

 private:
  template <class It> void assign(It b, It e) {
    n_ = 0;
    for (; b != e; ++b) push_back(int64_t(*b));
  }
  int64_t d_[kMaxDims] = {};
  int n_ = 0;
};

int64_t numel_of(const Dims& shape);
Dims contiguous_strides(const Dims& shape);
// Normalises a possibly negative dim index against ndim; throws naming the op.
int wrap_dim(int64_t dim, int ndim, const char* op);
// Numpy broadcasting of two shapes; throws naming both shapes.
Dims broadcast_shapes(const Dims& a, const Dims& b);
// Strides that view a tensor of `shape`/`strides` as `target` (0 on broadcast dims).
Dims broadcast_strides(const Dims& shape, const Dims& strides, const Dims& target);

}  // namespace loom::runtime
