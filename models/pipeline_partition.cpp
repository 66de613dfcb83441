// pipeline_partition.cpp: stage costs and the min-max contiguous split (dynamic programming).
#include "models/pipeline_partition.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace loom::models {

StageCosts parameter_costs(const ModelConfig& cfg) {
  const double C = double(cfg.d_model), D = double(cfg.head_dim()), F = double(cfg.ffn_hidden);
  const double attn = C * D * double(cfg.n_heads + 2 * cfg.n_kv_heads) + double(cfg.n_heads) * D * C;
  const double mlp = (cfg.activation == "swiglu" ? 3.0 : 2.0) * C * F;
  StageCosts c;
  c.layer.assign(size_t(cfg.n_layers), attn + mlp + 2 * C);
  c.first_extra = double(cfg.vocab_size) * C + (cfg.positions == "learned" ? double(cfg.max_seq_len) * C : 0.0);
  c.last_extra = double(cfg.vocab_size) * C + C;
  return c;
}

std::vector<PipelineStage> stages_from_counts(const std::vector<int64_t>& blocks, int64_t n_layers) {
  std::vector<PipelineStage> out;
  int64_t at = 0;
  for (size_t s = 0; s < blocks.size(); ++s) {
    if (blocks[s] < 1) throw std::invalid_argument("pipeline stage " + std::to_string(s) + " has no blocks");
    out.push_back({int(at), int(at + blocks[s]), s == 0, s + 1 == blocks.size()});
    at += blocks[s];
  }
  if (at != n_layers)
    throw std::invalid_argument("pipeline stages hold " + std::to_string(at) + " blocks in all, the model has " +
                                std::to_string(n_layers));
  return out;
}

std::vector<PipelineStage> balanced_stages(const StageCosts& costs, int pp) {
  const int L = int(costs.layer.size());
  if (pp < 1 || pp > L)
    throw std::invalid_argument("cannot split " + std::to_string(L) + " blocks into " + std::to_string(pp) +
                                " pipeline stages (each needs at least one)");
  std::vector<double> prefix(size_t(L) + 1, 0.0);
  for (int l = 0; l < L; ++l) prefix[size_t(l) + 1] = prefix[size_t(l)] + costs.layer[size_t(l)];
  auto cost = [&](int s, int a, int b) {  // stage s holding blocks [a, b)
    return prefix[size_t(b)] - prefix[size_t(a)] + (s == 0 ? costs.first_extra : 0) +
           (s == pp - 1 ? costs.last_extra : 0);
  };
  const double inf = std::numeric_limits<double>::infinity();
  // best[s][b]: smallest max cost of stages 0..s holding blocks [0, b); cut[s][b]: where s starts.
  std::vector<std::vector<double>> best(size_t(pp), std::vector<double>(size_t(L) + 1, inf));
  std::vector<std::vector<int>> cut(size_t(pp), std::vector<int>(size_t(L) + 1, 0));
  for (int b = 1; b <= L; ++b) best[0][size_t(b)] = cost(0, 0, b);
  for (int s = 1; s < pp; ++s)
    for (int b = s + 1; b <= L; ++b)
      for (int a = s; a < b; ++a) {
        double v = std::max(best[size_t(s) - 1][size_t(a)], cost(s, a, b));
        if (v < best[size_t(s)][size_t(b)]) {
          best[size_t(s)][size_t(b)] = v;
          cut[size_t(s)][size_t(b)] = a;
        }
      }
  std::vector<int64_t> blocks(static_cast<size_t>(pp));
  for (int s = pp - 1, b = L; s >= 0; --s) {
    const int a = s == 0 ? 0 : cut[size_t(s)][size_t(b)];
    blocks[size_t(s)] = b - a;
    b = a;
  }
  return stages_from_counts(blocks, L);
}

}  // namespace loom::models
