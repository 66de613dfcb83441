// kv_cache.h: key/value cache for incremental decoding. Each row owns a buffer of its own
// positions and may continue a chain of shared prefix segments: fork() gives new rows that
// continue existing rows without copying their keys and values (RL samples many answers per
// prompt). Attention over the segments is computed per segment and merged exactly by
// log-sum-exp (runtime::merge_attention), so a shared prefix is read in place.
#pragma once
#include <memory>
#include <vector>

#include "runtime/tensor.h"

namespace loom::models {

class KVCache {
 public:
  struct LayerKV {
    runtime::Tensor k, v;  // [B, capacity, Hkv, D], rotary already applied to k
  };
  // A prefix shared with the rows of another cache: row b continues source row rows[b], whose
  // first lens[b] positions it sees.
  struct Segment {
    std::shared_ptr<const std::vector<LayerKV>> layers;
    std::vector<int64_t> rows, lens;
  };

  KVCache(int64_t n_layers, int64_t batch, int64_t capacity, int64_t n_kv_heads, int64_t head_dim,
          runtime::DType dtype);

  int64_t batch() const { return int64_t(own_len_.size()); }
  int64_t capacity() const { return capacity_; }
  // Tokens row b has seen in total (shared prefix + own).
  int64_t length(int64_t row) const { return prefix_len_[size_t(row)] + own_len_[size_t(row)]; }
  int64_t own_length(int64_t row) const { return own_len_[size_t(row)]; }
  int64_t prefix_length(int64_t row) const { return prefix_len_[size_t(row)]; }
  // New cache whose row i continues row rows[i] of this one (shared, not copied).
  KVCache fork(const std::vector<int64_t>& rows, int64_t capacity) const;

  // For the model: the own buffers of layer l, the shared segments, and length bookkeeping.
  LayerKV& layer(int l) { return (*own_)[size_t(l)]; }
  const std::vector<Segment>& segments() const { return segments_; }
  void advance(const std::vector<int64_t>& counts);

 private:
  int64_t capacity_;
  std::shared_ptr<std::vector<LayerKV>> own_;
  std::vector<int64_t> own_len_, prefix_len_;
  std::vector<Segment> segments_;
};

}  // namespace loom::models
