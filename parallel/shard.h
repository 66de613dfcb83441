// shard.h: which part of a full ("global") tensor a rank holds. Tensor parallelism splits a
// parameter along one dimension into contiguous, possibly uneven, blocks; ZeRO then splits a
// rank's local tensor into flat element ranges. Both are described in the coordinates of the
// full tensor as runs (flat offset, length) in row-major order, which is how checkpoints address
// a piece independently of the layout that wrote it.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace loom::parallel {

// [begin, end): block `index` of `parts` over n items. Uneven splits give the first n % parts
// blocks one extra item (so the blocks of a 50257-token vocabulary over 4 ranks are 12565,
// 12564, 12564, 12564).
struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
Range split_range(int64_t n, int parts, int index);

// A flat run of elements: [offset, offset + length) in the full tensor's row-major order.
struct Run {
  int64_t offset = 0, length = 0;
};

struct Shard {
  runtime::Dims full;  // the global shape
  int dim = -1;        // the split dimension; -1: the whole tensor (replicated)
  Range range;         // along `dim`

  static Shard whole(const runtime::Dims& full) { return {full, -1, {}}; }
  // Block `index` of `parts` along `dim` (uneven allowed).
  static Shard split(const runtime::Dims& full, int dim, int parts, int index);

  bool is_whole() const { return dim < 0; }
  runtime::Dims local_shape() const;
  int64_t local_numel() const;
  // The runs, in local row-major order, of the local elements [local_begin, local_end).
  std::vector<Run> runs(int64_t local_begin, int64_t local_end) const;
  std::vector<Run> runs() const { return runs(0, local_numel()); }
  std::string str() const;  // "[8192, 256] rows 0:4096" / "[256, 688] cols 344:688" / "[256] whole"
};

// Merges adjacent runs (offset + length == next offset) in place.
void coalesce(std::vector<Run>& runs);

// A part of a named full tensor: the elements at `runs` (in order) of a tensor of shape `full`,
// as a 1-D tensor. What a rank writes to a checkpoint, whatever the layout.
struct Piece {
  std::string name;
  runtime::Dims full;
  std::vector<Run> runs;
  runtime::Tensor data;
};

// The elements [local_begin, local_end) of `shard`, read out of the full tensor, as 1-D.
runtime::Tensor take_local(const runtime::Tensor& full, const Shard& shard, int64_t local_begin, int64_t local_end);

}  // namespace loom::parallel
