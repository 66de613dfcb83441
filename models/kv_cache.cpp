// kv_cache.cpp: buffers, forking and length bookkeeping.
#include "models/kv_cache.h"

#include <stdexcept>

namespace loom::models {

using runtime::Tensor;

KVCache::KVCache(int64_t n_layers, int64_t batch, int64_t capacity, int64_t n_kv_heads, int64_t head_dim,
                 runtime::DType dtype)
    : capacity_(capacity),
      own_(std::make_shared<std::vector<LayerKV>>()),
      own_len_(size_t(batch), 0),
      prefix_len_(size_t(batch), 0) {
  for (int64_t l = 0; l < n_layers; ++l)
    own_->push_back({Tensor::zeros({batch, capacity, n_kv_heads, head_dim}, dtype),
                     Tensor::zeros({batch, capacity, n_kv_heads, head_dim}, dtype)});
}

KVCache KVCache::fork(const std::vector<int64_t>& rows, int64_t capacity) const {
  const LayerKV& l0 = (*own_)[0];
  KVCache child(int64_t(own_->size()), int64_t(rows.size()), capacity, l0.k.size(2), l0.k.size(3), l0.k.dtype());
  for (int64_t r : rows)
    if (r < 0 || r >= batch()) throw std::invalid_argument("KVCache::fork: row " + std::to_string(r) + " out of range");
  for (const Segment& s : segments_) {
    Segment c{s.layers, {}, {}};
    for (int64_t r : rows) {
      c.rows.push_back(s.rows[size_t(r)]);
      c.lens.push_back(s.lens[size_t(r)]);
    }
    child.segments_.push_back(std::move(c));
  }
  Segment mine{own_, {}, {}};
  for (size_t i = 0; i < rows.size(); ++i) {
    int64_t r = rows[i];
    mine.rows.push_back(r);
    mine.lens.push_back(own_len_[size_t(r)]);
    child.prefix_len_[i] = length(r);
  }
  child.segments_.push_back(std::move(mine));
  return child;
}

void KVCache::advance(const std::vector<int64_t>& counts) {
  for (size_t b = 0; b < counts.size(); ++b) {
    own_len_[b] += counts[b];
    if (own_len_[b] > capacity_)
      throw std::runtime_error("KVCache: row " + std::to_string(b) + " exceeds its capacity of " +
                               std::to_string(capacity_) + " positions");
  }
}

}  // namespace loom::models
