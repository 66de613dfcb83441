// shard.cpp: block ranges and the runs of a shard in the full tensor.
#include "parallel/shard.h"

#include <algorithm>
#include <stdexcept>

namespace loom::parallel {

Range split_range(int64_t n, int parts, int index) {
  if (parts < 1 || index < 0 || index >= parts)
    throw std::invalid_argument("split_range: block " + std::to_string(index) + " of " + std::to_string(parts));
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

Shard Shard::split(const runtime::Dims& full, int dim, int parts, int index) {
  if (dim < 0 || dim >= full.size())
    throw std::invalid_argument("Shard::split: dim " + std::to_string(dim) + " out of range for " + full.str());
  if (full[dim] < parts)
    throw std::invalid_argument("Shard::split: " + std::to_string(full[dim]) + " entries along dim " +
                                std::to_string(dim) + " of " + full.str() + " cannot be split over " +
                                std::to_string(parts) + " ranks");
  return {full, dim, split_range(full[dim], parts, index)};
}

runtime::Dims Shard::local_shape() const {
  runtime::Dims s = full;
  if (dim >= 0) s[dim] = range.size();
  return s;
}

int64_t Shard::local_numel() const { return runtime::numel_of(local_shape()); }

std::vector<Run> Shard::runs(int64_t local_begin, int64_t local_end) const {
  std::vector<Run> out;
  if (local_end <= local_begin) return out;
  if (dim < 0) return {{local_begin, local_end - local_begin}};
  // The local tensor is [A, s, B] inside the full [A, S, B]: local row a (s * B elements)
  // starts at full offset (a * S + range.begin) * B.
  int64_t A = 1, B = 1;
  for (int i = 0; i < dim; ++i) A *= full[i];
  for (int i = dim + 1; i < full.size(); ++i) B *= full[i];
  const int64_t S = full[dim], row = range.size() * B;
  for (int64_t a = local_begin / row; a < A && a * row < local_end; ++a) {
    const int64_t lo = std::max(local_begin, a * row), hi = std::min(local_end, (a + 1) * row);
    out.push_back({(a * S + range.begin) * B + (lo - a * row), hi - lo});
  }
  coalesce(out);
  return out;
}

std::string Shard::str() const {
  if (dim < 0) return full.str() + " whole";
  return full.str() + " dim " + std::to_string(dim) + " " + std::to_string(range.begin) + ":" +
         std::to_string(range.end);
}

runtime::Tensor take_local(const runtime::Tensor& full, const Shard& shard, int64_t local_begin, int64_t local_end) {
  if (full.shape() != shard.full)
    throw std::invalid_argument("take_local: tensor of shape " + full.shape().str() + " for shard " + shard.str());
  runtime::Tensor flat = full.contiguous().view({full.numel()});
  runtime::Tensor out = runtime::Tensor::empty({local_end - local_begin}, full.dtype(), full.device());
  int64_t at = 0;
  for (const Run& r : shard.runs(local_begin, local_end)) {
    out.narrow(0, at, r.length).copy_(flat.narrow(0, r.offset, r.length));
    at += r.length;
  }
  return out;
}

void coalesce(std::vector<Run>& runs) {
  std::vector<Run> out;
  for (const Run& r : runs) {
    if (r.length == 0) continue;
    if (!out.empty() && out.back().offset + out.back().length == r.offset) out.back().length += r.length;
    else out.push_back(r);
  }
  runs = std::move(out);
}

}  // namespace loom::parallel
