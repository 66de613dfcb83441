// pipeline_partition.h: splitting the model's blocks into pp contiguous pipeline stages (the
// embeddings go with the first stage, the final norm and head with the last). Balanced by a
// cost per block plus the first and last stages' extra cost (parameter counts by default, or
// measured times), or given explicitly as blocks per stage.
#pragma once
#include <vector>

#include "models/config.h"
#include "models/transformer.h"

namespace loom::models {

struct StageCosts {
  std::vector<double> layer;  // per block
  double first_extra = 0;     // embeddings
  double last_extra = 0;      // final norm + LM head (+ loss)
};

// Parameter counts (the LM head counted even when tied: it costs a GEMM either way).
StageCosts parameter_costs(const ModelConfig& cfg);

// The contiguous split with the smallest largest stage cost, every stage at least one block
// (ties: the earliest split). Throws std::invalid_argument when pp > n_layers.
std::vector<PipelineStage> balanced_stages(const StageCosts& costs, int pp);

// Explicit blocks per stage; they must be >= 1 each and sum to n_layers.
std::vector<PipelineStage> stages_from_counts(const std::vector<int64_t>& blocks, int64_t n_layers);

}  // namespace loom::models
