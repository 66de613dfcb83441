// generate.h: batched sampling from a TransformerLM with a KV cache. Prompts of different
// lengths are prefilled together (per-row counts); with samples_per_prompt > 1 each prompt's
// cache is forked, not copied, into its continuations.
#pragma once
#include <cstdint>
#include <vector>

#include "models/transformer.h"

namespace loom::models {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // nucleus sampling; 1: off
  int64_t max_new_tokens = 64;
  std::vector<int32_t> stop_tokens;  // generation of a row ends after emitting one of these
  uint64_t seed = 0;
};

struct Generation {
  int64_t prompt_index;
  std::vector<int32_t> tokens;  // the new tokens (including a final stop token, if any)
};

// Returns prompts.size() * samples_per_prompt generations, prompt-major. Uses its own random
// stream (seed), leaving the process-wide generator as it was.
std::vector<Generation> generate(const TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                 const SamplingOptions& opt, int64_t samples_per_prompt = 1);

// Picks one token id per row of logits [R, V] under the options (uses the global generator).
std::vector<int32_t> sample_tokens(const runtime::Tensor& logits, const SamplingOptions& opt);

}  // namespace loom::models
