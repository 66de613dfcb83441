// transformer.cpp: the decoder-only LM: parameters, forward, and cached incremental decoding.
//   x = embed(ids) (+ learned positions)
//   per block: x = x + o_proj(attn(rope(q_proj(n1(x))), rope(k_proj(.)), v_proj(.)))
//              x = x + down_proj(act(gate_proj(n2(x))) * up_proj(n2(x)))   (swiglu)
//              x = x + down_proj(gelu(up_proj(n2(x))))                      (gelu)
//   logits = lm_head(norm(x))   (lm_head tied to embed_tokens when configured)
#include "models/transformer.h"

#include "runtime/kernels.h"

#include <cmath>
#include <map>

#include "runtime/kernels.h"

namespace loom::models {

using namespace runtime;

// Each element is dtype(std * n) with n the f64 Box-Muller normal of its Philox block (counter =
// the element's index in the full tensor); the kernel writes it directly, at this shard's runs
// (the same values as drawing the full f64 tensor, scaling, casting and slicing, without the f64
// temporaries: at GPT-2 124M those were 2 x 309 MB that the allocator's cache then kept).
Tensor init_normal(uint64_t seed, const std::string& name, const parallel::Shard& shard, double std, DType dtype) {
  NoGradGuard ng;
  const bool direct = dtype == DType::f32 || dtype == DType::f64;
  Tensor t = Tensor::empty(shard.local_shape(), direct ? dtype : DType::f64);
  Tensor flat = t.view({t.numel()});
  OpAttrs a;
  a.seed = mix64(mix64(seed) ^ hash_string(name.c_str()));  // as Tensor::randn(full, that seed), stream 0
  a.alpha = 0.0;
  a.beta = direct ? std : 1.0;
  int64_t at = 0;
  for (const parallel::Run& r : shard.runs()) {
    a.offset = uint64_t(r.offset);
    dispatch(Op::random_normal, {}, {flat.narrow(0, at, r.length)}, a);
    at += r.length;
  }
  return direct ? t : mul_scalar(t, std).to(dtype);
}

namespace {
std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }
}  // namespace

TransformerLM::TransformerLM(ModelConfig cfg, uint64_t seed, DType dtype, parallel::TensorParallel tp,
                             PipelineStage stage)
    : cfg_(std::move(cfg)), dtype_(dtype), tp_(std::move(tp)), stage_(stage) {
  cfg_.validate();
  if (stage_.end_layer < 0) stage_.end_layer = int(cfg_.n_layers);
  if (stage_.first_layer < 0 || stage_.first_layer > stage_.end_layer || stage_.end_layer > cfg_.n_layers)
    throw std::invalid_argument("pipeline stage layers " + std::to_string(stage_.first_layer) + ":" +
                                std::to_string(stage_.end_layer) + " out of range for " + std::to_string(cfg_.n_layers) +
                                " layers");
  const int t = tp_.size();
  if (cfg_.n_heads % t || cfg_.n_kv_heads % t)
    throw std::invalid_argument("tensor parallelism splits attention by whole heads: n_heads " +
                                std::to_string(cfg_.n_heads) + " and n_kv_heads " + std::to_string(cfg_.n_kv_heads) +
                                " must both divide by the tensor-parallel degree " + std::to_string(t));
  vocab_ = parallel::split_range(cfg_.vocab_size, t, tp_.rank());
  const int64_t C = cfg_.d_model, D = cfg_.head_dim(), H = cfg_.n_heads, Hkv = cfg_.n_kv_heads, F = cfg_.ffn_hidden;
  const double std = cfg_.init_std;
  // Residual output projections get std / sqrt(2 L) (GPT-2 paper, section 2.3).
  const double out_std = std / std::sqrt(2.0 * double(cfg_.n_layers));
  const bool ln = cfg_.norm == "layernorm";
  auto add_norm = [&](const std::string& p) {
    add_param(p + ".weight", {C}, 0.0, true, seed, 1.0);
    if (ln) add_param(p + ".bias", {C}, 0.0, true, seed);
  };
  // Column-parallel: output rows (and bias) split. Row-parallel: input columns split, the bias
  // is added once after the reduction.
  auto add_column = [&](const std::string& p, int64_t out, int64_t in, double s, bool with_bias) {
    add_param(p + ".weight", {out, in}, s, false, seed, 0.0, 0);
    if (with_bias) add_param(p + ".bias", {out}, 0.0, true, seed, 0.0, 0);
  };
  auto add_row = [&](const std::string& p, int64_t out, int64_t in, double s, bool with_bias) {
    add_param(p + ".weight", {out, in}, s, false, seed, 0.0, 1);
    if (with_bias) add_param(p + ".bias", {out}, 0.0, true, seed);
  };
  const bool qkv_bias = cfg_.bias || cfg_.qkv_bias;
  if (stage_.embedding || (stage_.head && cfg_.tie_embeddings))
    add_param("model.embed_tokens.weight", {cfg_.vocab_size, C}, std, true, seed, 0.0, 0);
  if (stage_.embedding && cfg_.positions == "learned")
    add_param("model.embed_positions.weight", {cfg_.max_seq_len, C}, std, true, seed);
  for (int l = stage_.first_layer; l < stage_.end_layer; ++l) {
    std::string p = layer_prefix(l);
    add_norm(p + "input_layernorm");
    add_column(p + "self_attn.q_proj", H * D, C, std, qkv_bias);
    add_column(p + "self_attn.k_proj", Hkv * D, C, std, qkv_bias);
    add_column(p + "self_attn.v_proj", Hkv * D, C, std, qkv_bias);
    add_row(p + "self_attn.o_proj", C, H * D, out_std, cfg_.bias);
    add_norm(p + "post_attention_layernorm");
    if (cfg_.activation == "swiglu") add_column(p + "mlp.gate_proj", F, C, std, cfg_.bias);
    add_column(p + "mlp.up_proj", F, C, std, cfg_.bias);
    add_row(p + "mlp.down_proj", C, F, out_std, cfg_.bias);
  }
  if (!stage_.head) return;
  add_norm("model.norm");
  if (!cfg_.tie_embeddings) add_param("lm_head.weight", {cfg_.vocab_size, C}, std, false, seed, 0.0, 0);
}

void TransformerLM::add_param(const std::string& name, const Dims& shape, double std, bool no_decay, uint64_t seed,
                              double fill, int split_dim) {
  parallel::Shard shard = tp_.active() && split_dim >= 0 ? parallel::Shard::split(shape, split_dim, tp_.size(), tp_.rank())
                                                         : parallel::Shard::whole(shape);
  Tensor t = std > 0 ? init_normal(seed, name, shard, std, dtype_) : Tensor::full(shard.local_shape(), fill, dtype_);
  t.set_requires_grad(true);
  index_[name] = params_.size();
  params_.push_back({name, t, no_decay, shard});
}

void TransformerLM::to(runtime::Device dev) {
  for (NamedParameter& p : params_) {
    if (p.tensor.device() == dev) continue;
    Tensor t = p.tensor.detach().to(dev);
    t.set_requires_grad(true);
    p.tensor = t;
  }
}

Tensor& TransformerLM::param(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) throw std::out_of_range("model has no parameter '" + name + "'");
  return params_[it->second].tensor;
}
const Tensor& TransformerLM::param(const std::string& name) const {
  return const_cast<TransformerLM*>(this)->param(name);
}

Tensor TransformerLM::norm(const Tensor& x, const std::string& p) const {
  if (cfg_.norm == "rmsnorm") return rms_norm(x, param(p + ".weight"), cfg_.norm_eps);
  return layer_norm(x, param(p + ".weight"), param(p + ".bias"), cfg_.norm_eps);
}

Tensor TransformerLM::proj(const Tensor& x, const std::string& p) const {
  // A projection has a bias when the config gave it one (all with bias, q/k/v with qkv_bias).
  auto it = index_.find(p + ".bias");
  return linear(x, param(p + ".weight"), it != index_.end() ? params_[it->second].tensor : Tensor());
}

Tensor TransformerLM::row_proj(const Tensor& x, const std::string& p) const {
  // Under tensor parallelism the bias is added once, after the partial sums are reduced; on one
  // rank the GEMM adds it as it writes y (no separate pass over y).
  if (!tp_.active()) return linear(x, param(p + ".weight"), cfg_.bias ? param(p + ".bias") : Tensor());
  Tensor y = parallel::exit_region(linear(x, param(p + ".weight")), tp_);
  return cfg_.bias ? add(y, param(p + ".bias")) : y;
}

Tensor TransformerLM::drop(const Tensor& x) const {
  // Under sequence parallelism each tp rank holds different tokens: a per-rank stream.
  return dropout(x, cfg_.dropout, training_, tp_.sp() ? uint64_t(tp_.rank()) + 1 : 0);
}

// h: the normed input (replicated, or this rank's tokens under SP).
Tensor TransformerLM::mlp(const Tensor& h, const std::string& p) const {
  Tensor x = parallel::enter_region(h, tp_);
  if (cfg_.activation == "swiglu") return row_proj(swiglu(proj(x, p + "gate_proj"), proj(x, p + "up_proj")), p + "down_proj");
  return row_proj(gelu(proj(x, p + "up_proj"), true), p + "down_proj");
}

Tensor TransformerLM::embed(const Tensor& ids, const Tensor& positions) const {
  Tensor x = parallel::vocab_parallel_embedding(ids, param("model.embed_tokens.weight"), vocab_, tp_);
  if (cfg_.positions == "learned") {
    if (amax(positions).item() >= double(cfg_.max_seq_len))
      throw std::invalid_argument("position " + std::to_string(int64_t(amax(positions).item())) +
                                  " exceeds max_seq_len " + std::to_string(cfg_.max_seq_len));
    x = add(x, embedding(param("model.embed_positions.weight"), parallel::sequence_chunk(positions, tp_)));
  }
  return drop(x);
}

const Tensor& TransformerLM::head_weight() const {
  return cfg_.tie_embeddings ? param("model.embed_tokens.weight") : param("lm_head.weight");
}

Tensor TransformerLM::head(const Tensor& x) const {
  return linear(parallel::enter_region(norm(x, "model.norm"), tp_), head_weight());
}

Tensor TransformerLM::loss_sum(const Tensor& logits, const Tensor& targets) const {
  return parallel::vocab_parallel_cross_entropy(logits.view({-1, logits.size(-1)}), targets.reshape({-1}), vocab_, tp_);
}

Tensor TransformerLM::stage_loss_sum(const Tensor& input, const Tensor& targets, const Tensor& positions,
                                     const AttentionMask* mask) const {
  if (!stage_.head) throw std::logic_error("stage_loss_sum: this pipeline stage has no LM head");
  Tensor x = stage_body(input, positions, mask);
  if (tp_.active()) return loss_sum(head(x), targets);
  CrossEntropyOptions ce;
  ce.reduction = Reduction::sum;
  Tensor h = norm(x, "model.norm");
  return linear_cross_entropy(h.reshape({-1, h.size(-1)}), head_weight(), targets.reshape({-1}), ce);
}

Tensor TransformerLM::block(const Tensor& x, int l, const Tensor& positions, const AttendFn& attend) const {
  const int t = tp_.size();
  const int64_t H = cfg_.n_heads / t, Hkv = cfg_.n_kv_heads / t, D = cfg_.head_dim();
  std::string p = layer_prefix(l);
  Tensor h = parallel::enter_region(norm(x, p + "input_layernorm"), tp_);  // [B, T, C], all tokens
  const int64_t B = h.size(0), T = h.size(1);
  Tensor q = proj(h, p + "self_attn.q_proj").view({B, T, H, D});
  Tensor k = proj(h, p + "self_attn.k_proj").view({B, T, Hkv, D});
  Tensor v = proj(h, p + "self_attn.v_proj").view({B, T, Hkv, D});
  if (cfg_.positions == "rope") {
    q = rope(q, positions, cfg_.rope_theta);
    k = rope(k, positions, cfg_.rope_theta);
  }
  Tensor a = attend(q, k, v).reshape({B, T, H * D});
  Tensor y = add(x, drop(row_proj(a, p + "self_attn.o_proj")));
  Tensor m = mlp(norm(y, p + "post_attention_layernorm"), p + "mlp.");
  return add(y, drop(m));
}

Tensor TransformerLM::forward(const Tensor& ids, const Tensor& positions, const AttentionMask* mask) const {
  if (!stage_.embedding || !stage_.head || stage_.first_layer != 0 || stage_.end_layer != cfg_.n_layers)
    throw std::logic_error("forward: this model holds one pipeline stage; use forward_stage");
  return forward_stage(ids, positions, mask);
}

Tensor TransformerLM::forward_stage(const Tensor& input, const Tensor& positions, const AttentionMask* mask) const {
  Tensor x = stage_body(input, positions, mask);
  return stage_.head ? head(x) : x;
}

Tensor TransformerLM::stage_body(const Tensor& input, const Tensor& positions, const AttentionMask* mask) const {
  if (stage_.embedding && (input.dim() != 2 || input.dtype() != DType::i64))
    throw std::invalid_argument("forward: ids must be i64 [B, T]");
  if (!stage_.embedding && input.dim() != 3)
    throw std::invalid_argument("forward_stage: expected the previous stage's activation [B, T, C], got " +
                                input.shape().str());
  // The full sequence length (the activation holds 1/t of it under sequence parallelism).
  const int64_t B = input.size(0), T = stage_.embedding ? input.size(1) : input.size(1) * (tp_.sp() ? tp_.size() : 1);
  Tensor pos = positions.defined() ? positions
                                   : Tensor::arange(T, DType::i64, input.device()).view({1, T}).expand({B, T}).contiguous();
  AttentionMask m = mask ? *mask : AttentionMask{};
  m.causal = true;
  Tensor x = stage_.embedding ? embed(input, pos) : input;
  for (int l = stage_.first_layer; l < stage_.end_layer; ++l) {
    if (recompute_ && grad_enabled()) {
      // The region runs again in backward, after this frame is gone: capture by value.
      x = checkpoint(
          [this, l, pos, m](const std::vector<Tensor>& in) {
            return std::vector<Tensor>{block(in[0], l, pos, [&m](const Tensor& q, const Tensor& k, const Tensor& v) {
              return attention(q, k, v, m).out;
            })};
          },
          {x})[0];
    } else {
      x = block(x, l, pos, [&m](const Tensor& q, const Tensor& k, const Tensor& v) { return attention(q, k, v, m).out; });
    }
  }
  return x;
}

// ---- cached decoding ------------------------------------------------------------------------------
KVCache TransformerLM::new_cache(int64_t batch, int64_t capacity) const {
  return KVCache(cfg_.n_layers, batch, capacity, cfg_.n_kv_heads, cfg_.head_dim(), dtype_);
}

// q [B, t, H, D]; k, v [B, t, Hkv, D] for the new positions (already rotated).
Tensor TransformerLM::attention_cached(const Tensor& q, const Tensor& k, const Tensor& v, int l,
                                       KVCache& cache) const {
  const int64_t B = q.size(0), t = q.size(1), H = q.size(2), D = q.size(3);
  KVCache::LayerKV& own = cache.layer(l);
  int64_t keys = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t at = cache.own_length(b);
    if (at + t > cache.capacity())
      throw std::runtime_error("KVCache: row " + std::to_string(b) + " needs " + std::to_string(at + t) +
                               " positions but has capacity " + std::to_string(cache.capacity()));
    own.k.narrow(0, b, 1).narrow(1, at, t).copy_(k.narrow(0, b, 1));
    own.v.narrow(0, b, 1).narrow(1, at, t).copy_(v.narrow(0, b, 1));
    keys = std::max(keys, at + t);
  }
  // Own positions: query i of row b sees keys j <= own_length(b) + i.
  std::vector<uint8_t> mask(static_cast<size_t>(B * t * keys), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j <= cache.own_length(b) + i; ++j) mask[size_t((b * t + i) * keys + j)] = 1;
  AttentionMask m;
  m.mask = Tensor::from_vector(mask, {B, t, keys});
  AttentionResult res = attention(q, own.k.narrow(1, 0, keys).contiguous(), own.v.narrow(1, 0, keys).contiguous(), m);
  // Shared prefixes: rows continuing the same source row read its keys in place, together.
  for (const KVCache::Segment& seg : cache.segments()) {
    std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> groups;  // (source row, length) -> rows
    for (int64_t b = 0; b < B; ++b)
      if (seg.lens[size_t(b)] > 0) groups[{seg.rows[size_t(b)], seg.lens[size_t(b)]}].push_back(b);
    if (groups.empty()) continue;
    Tensor out = Tensor::zeros({B, t, H, D}, q.dtype());
    Tensor lse = Tensor::full({B, H, t}, -INFINITY, q.dtype());
    const KVCache::LayerKV& src = (*seg.layers)[size_t(l)];
    for (auto& [key, rows] : groups) {
      auto [row, len] = key;
      std::vector<Tensor> qs;
      for (int64_t b : rows) qs.push_back(q.narrow(0, b, 1));
      Tensor qg = concat(qs, 1);  // [1, n t, H, D]: every query sees the whole prefix
      AttentionResult r = attention(qg, src.k.narrow(0, row, 1).narrow(1, 0, len),
                                    src.v.narrow(0, row, 1).narrow(1, 0, len));
      for (size_t j = 0; j < rows.size(); ++j) {
        out.narrow(0, rows[j], 1).copy_(r.out.narrow(1, int64_t(j) * t, t));
        lse.narrow(0, rows[j], 1).copy_(r.lse.narrow(2, int64_t(j) * t, t));
      }
    }
    res = merge_attention(res, {out, lse});
  }
  return res.out;
}

Tensor TransformerLM::forward_cached(const Tensor& ids, KVCache& cache, const std::vector<int64_t>& counts) const {
  if (tp_.active() || !stage_.embedding || !stage_.head || stage_.first_layer != 0 || stage_.end_layer != cfg_.n_layers)
    throw std::logic_error("forward_cached: cached decoding runs on one process; load the whole model without "
                           "tensor or pipeline parallelism");
  NoGradGuard ng;
  const int64_t B = ids.size(0), t = ids.size(1);
  if (B != cache.batch()) throw std::invalid_argument("forward_cached: ids batch differs from the cache's");
  std::vector<int64_t> n = counts.empty() ? std::vector<int64_t>(size_t(B), t) : counts;
  std::vector<int64_t> pos(static_cast<size_t>(B * t));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < t; ++i) pos[size_t(b * t + i)] = cache.length(b) + std::min(i, std::max<int64_t>(n[size_t(b)] - 1, 0));
  Tensor positions = Tensor::from_vector(pos, {B, t});
  Tensor x = embed(ids, positions);
  for (int l = 0; l < cfg_.n_layers; ++l)
    x = block(x, l, positions, [&](const Tensor& q, const Tensor& k, const Tensor& v) {
      return attention_cached(q, k, v, l, cache);
    });
  cache.advance(n);
  return head(x);
}

}  // namespace loom::models
