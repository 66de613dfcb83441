// transformer.h: a decoder-only transformer LM (Llama and GPT-2 variants from one config).
// The model is plain: parameters are registered under Hugging Face Llama names, and each
// initial value is a pure function of (seed, name, full shape), so every parallel layout and
// every resumed run starts from the same model. With tensor parallelism each rank holds the
// Megatron shards of the weights (parallel/tensor_parallel.h), initialised from the same
// full-tensor definition, so the sharded model equals the single-process one.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/kv_cache.h"
#include "parallel/tensor_parallel.h"
#include "runtime/ops.h"

namespace loom::models {

using runtime::Tensor;

struct NamedParameter {
  std::string name;  // e.g. "model.layers.3.self_attn.q_proj.weight"
  Tensor tensor;
  bool no_decay;     // norms, biases and embeddings (AdamW excludes them when configured)
  parallel::Shard shard;  // the part of the full tensor this rank holds (whole without TP)
};

// Deterministic initial value of a parameter: N(0, std^2) from Philox keyed by (seed, name);
// element i of the full tensor is drawn from counter i, so a shard draws only its own elements
// and equals the same slice of the full tensor.
Tensor init_normal(uint64_t seed, const std::string& name, const parallel::Shard& shard, double std,
                   runtime::DType dtype);
inline Tensor init_normal(uint64_t seed, const std::string& name, const runtime::Dims& shape, double std,
                          runtime::DType dtype) {
  return init_normal(seed, name, parallel::Shard::whole(shape), std, dtype);
}

// The part of the model a pipeline stage holds: blocks [first_layer, end_layer), the
// embeddings on the first stage, the final norm and LM head on the last (with tied embeddings
// the last stage holds its own copy of model.embed_tokens.weight, kept equal by summing the two
// copies' gradients). The default is the whole model.
struct PipelineStage {
  int first_layer = 0, end_layer = -1;  // -1: n_layers
  bool embedding = true, head = true;
};

class TransformerLM {
 public:
  // tp: the tensor-parallel group this rank's shards belong to (none by default). Heads and
  // key/value heads must divide by its size; the MLP hidden size and the vocabulary may not.
  TransformerLM(ModelConfig cfg, uint64_t seed, runtime::DType dtype = runtime::DType::f32,
                parallel::TensorParallel tp = {}, PipelineStage stage = {});

  // ids [B, T] i64 -> logits [B, T, V] (with tensor parallelism: [B, T, V_r], this rank's
  // vocabulary columns vocab_range()). positions [B, T] i64 default to 0..T-1 (they may
  // repeat or jump: parallel reasoning paths share start positions). `mask` adds structure to
  // the causal mask (packed documents, paths that must not see each other).
  Tensor forward(const Tensor& ids, const Tensor& positions = Tensor(),
                 const runtime::AttentionMask* mask = nullptr) const;
  // This pipeline stage's part of forward: `input` is ids [B, T] on the first stage, else the
  // previous stage's output [B, T, C] ([B, T/t, C] under sequence parallelism); returns the
  // logits on the last stage, else the activation to send on.
  Tensor forward_stage(const Tensor& input, const Tensor& positions = Tensor(),
                       const runtime::AttentionMask* mask = nullptr) const;
  const PipelineStage& stage() const { return stage_; }
  // Incremental decoding: appends ids [B, t] at each row's current cache length and returns
  // logits [B, t, V]. Rows attend to their prefix (possibly shared, see KVCache::fork).
  // counts[b] (default: all t) is how many of row b's t ids are real; the rest are padding.
  Tensor forward_cached(const Tensor& ids, KVCache& cache, const std::vector<int64_t>& counts = {}) const;
  KVCache new_cache(int64_t batch, int64_t capacity) const;
  // Cross-entropy summed over the targets != -100, from forward's logits (vocabulary-parallel
  // under tensor parallelism: the full logits are never gathered).
  Tensor loss_sum(const Tensor& logits, const Tensor& targets) const;
  // loss_sum(forward_stage(input, ...), targets) on the last stage, for training: without tensor
  // parallelism the LM head and the loss run fused (runtime::linear_cross_entropy), so the
  // logits are never a separate tensor and their gradient reuses their memory.
  Tensor stage_loss_sum(const Tensor& input, const Tensor& targets, const Tensor& positions = Tensor(),
                        const runtime::AttentionMask* mask = nullptr) const;

  const parallel::TensorParallel& tensor_parallel() const { return tp_; }
  parallel::Range vocab_range() const { return vocab_; }  // the vocabulary rows this rank holds

  const ModelConfig& config() const { return cfg_; }
  std::vector<NamedParameter>& parameters() { return params_; }
  const std::vector<NamedParameter>& parameters() const { return params_; }
  Tensor& param(const std::string& name);
  const Tensor& param(const std::string& name) const;
  bool has_param(const std::string& name) const { return index_.count(name) > 0; }
  // Moves every parameter to `dev` (each again a leaf that requires grad); inputs, targets and
  // masks must then live there too, and an optimizer must be made after the move.
  void to(runtime::Device dev);
  void set_training(bool t) { training_ = t; }
  bool training() const { return training_; }
  // Activation checkpointing per block (recompute in backward).
  void set_recompute(bool r) { recompute_ = r; }

 private:
  // split_dim: the dimension tensor parallelism splits (-1: replicated on every tp rank).
  void add_param(const std::string& name, const runtime::Dims& shape, double std, bool no_decay, uint64_t seed,
                 double fill = 0.0, int split_dim = -1);
  Tensor drop(const Tensor& x) const;  // residual dropout (per-tp-rank stream under SP)
  Tensor norm(const Tensor& x, const std::string& prefix) const;
  Tensor mlp(const Tensor& h, const std::string& prefix) const;
  Tensor proj(const Tensor& x, const std::string& name) const;  // linear with optional bias
  // Row-parallel output projection: partial products summed over tp, then the bias.
  Tensor row_proj(const Tensor& x, const std::string& name) const;
  Tensor embed(const Tensor& ids, const Tensor& positions) const;
  Tensor head(const Tensor& x) const;
  const Tensor& head_weight() const;
  // forward_stage up to (not including) the head: the last block's output [B, T, C].
  Tensor stage_body(const Tensor& input, const Tensor& positions, const runtime::AttentionMask* mask) const;
  // One decoder block; `attend` maps rotated q [B, T, H, D] and k, v [B, T, Hkv, D] to the
  // attention output [B, T, H, D] (full-sequence attention in training, the cache in decoding).
  using AttendFn = std::function<Tensor(const Tensor& q, const Tensor& k, const Tensor& v)>;
  Tensor block(const Tensor& x, int layer, const Tensor& positions, const AttendFn& attend) const;
  Tensor attention_cached(const Tensor& q, const Tensor& k, const Tensor& v, int layer, KVCache& cache) const;

  ModelConfig cfg_;
  runtime::DType dtype_;
  parallel::TensorParallel tp_;
  PipelineStage stage_;
  parallel::Range vocab_;
  std::vector<NamedParameter> params_;
  std::map<std::string, size_t> index_;
  bool training_ = true;
  bool recompute_ = false;
};

}  // namespace loom::models
