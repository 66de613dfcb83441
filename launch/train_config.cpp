// train_config.cpp: every `loom train` key, with its default, range and help, in one table.
#include "launch/train_config.h"

#include <cstdio>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include "data/shards.h"
#include "launch/import_hf.h"
#include "launch/quickstart_yaml.h"

namespace loom::launch {

const char* quickstart_yaml() { return kQuickstartYaml; }

const ConfigSchema& train_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    s.add_string("run.dir", "runs/default", "run directory: checkpoints/, metrics.jsonl, config.yaml");
    s.add_int("run.seed", 1234, "seed of initialisation, data order and dropout", 0);
    s.add_int("run.threads", 0, "CPU threads (0: OMP_NUM_THREADS or all cores)", 0, 1024);
    s.add_enum("run.dtype", "f32", {"f32", "f64"}, "parameter and compute dtype");
    s.add_enum("run.matmul_precision", "f32", {"f32", "bf16"},
               "CPU f32 products: f32, or bf16 operands with f32 sums on AMX (mixed precision; master weights, "
               "optimizer and every other op stay f32)");

    s.add_enum("model.preset", "llama", {"llama", "gpt2"},
               "defaults for norm/activation/positions/bias/tie_embeddings (llama: rmsnorm, swiglu, rope; "
               "gpt2: layernorm, gelu, learned, biases, tied)");
    s.add_int("model.vocab_size", 0, "vocabulary size (0: the tokenizer's)", 0);
    s.add_int("model.d_model", 128, "hidden size C", 1);
    s.add_int("model.n_layers", 4, "transformer blocks", 1, 4096);
    s.add_int("model.n_heads", 4, "attention heads H", 1);
    s.add_int("model.n_kv_heads", 0, "key/value heads for grouped-query attention (0: n_heads)", 0);
    s.add_int("model.ffn_hidden", 0, "MLP hidden size F (0: llama 8C/3 rounded to 32, gpt2 4C)", 0);
    s.add_enum("model.norm", "rmsnorm", {"rmsnorm", "layernorm"}, "normalisation (default from preset)");
    s.add_enum("model.activation", "swiglu", {"swiglu", "gelu"}, "MLP activation (default from preset)");
    s.add_enum("model.positions", "rope", {"rope", "learned"}, "position encoding (default from preset)");
    s.add_float("model.rope_theta", 10000.0, "RoPE base", 1.0);
    s.add_float("model.norm_eps", 1e-5, "normalisation epsilon", 0.0, 1.0);
    s.add_bool("model.tie_embeddings", false, "share embed_tokens and lm_head (default from preset)");
    s.add_bool("model.bias", false, "biases on projections (default from preset)");
    s.add_bool("model.qkv_bias", false, "biases on the q/k/v projections only (Qwen2 style)");
    s.add_int("model.max_seq_len", 0, "longest sequence (0: data.seq_len)", 0);
    s.add_float("model.dropout", 0.0, "dropout probability", 0.0, 0.99);
    s.add_float("model.init_std", 0.02, "std of the normal initialisation", 0.0);

    s.add_enum("data.source", "arithmetic", {"arithmetic", "shards"}, "built-in arithmetic corpus or prepared shards");
    s.add_int("data.seq_len", 64, "tokens per training row T", 1);
    s.add_string("data.path", "", "shards: directory written by `loom data prepare`");
    s.add_int("data.arithmetic.min_digits", 1, "fewest digits per operand", 1, 18);
    s.add_int("data.arithmetic.max_digits", 3, "most digits per operand", 1, 18);
    s.add_string("data.arithmetic.ops", "+", "operators drawn from this set of + - *");
    s.add_bool("data.arithmetic.mask_prompt", false, "no loss on the problem part, only on answers");

    s.add_int("train.steps", 1000, "optimizer steps", 1);
    s.add_int("train.batch_size", 32, "rows of T tokens per optimizer step (global batch)", 1);
    s.add_int("train.grad_accum", 1, "micro-batches per step (batch_size must divide by it)", 1);
    s.add_int("train.log_every", 10, "steps between progress lines and metrics records", 1);
    s.add_int("train.eval_every", 100, "steps between validation losses (0: only at the end)", 0);
    s.add_int("train.eval_batches", 4, "validation batches per evaluation", 1);
    s.add_bool("train.recompute", false, "activation checkpointing: recompute each block in backward");

    s.add_enum("optim.name", "adamw", {"adamw", "sgd"}, "optimizer");
    s.add_float("optim.lr", 3e-4, "peak learning rate", 0.0);
    s.add_float("optim.beta1", 0.9, "AdamW beta1", 0.0, 1.0);
    s.add_float("optim.beta2", 0.95, "AdamW beta2", 0.0, 1.0);
    s.add_float("optim.eps", 1e-8, "AdamW epsilon", 0.0);
    s.add_float("optim.weight_decay", 0.1, "decoupled weight decay", 0.0);
    s.add_float("optim.momentum", 0.9, "SGD momentum", 0.0, 1.0);
    s.add_string_list("optim.no_decay", {"norm", "bias", "embedding"},
                      "parameter kinds without weight decay (norm, bias, embedding)");
    s.add_float("optim.grad_clip", 1.0, "clip the global gradient norm to this (0: off)", 0.0);
    s.add_enum("optim.schedule", "cosine", {"constant", "cosine", "wsd"}, "learning-rate schedule");
    s.add_int("optim.warmup_steps", 0, "linear warmup steps", 0);
    s.add_float("optim.min_lr_ratio", 0.1, "final learning rate as a fraction of lr", 0.0, 1.0);
    s.add_float("optim.decay_fraction", 0.2, "wsd: fraction of steps spent decaying", 0.0, 1.0);
    s.add_enum("optim.nan_policy", "stop", {"stop", "skip"},
               "non-finite loss or gradient: stop with a checkpoint, or skip the step");

    s.add_int("parallel.dp", 0, "data-parallel degree (0: world size / (tp x pp x sp))", 0);
    s.add_int("parallel.tp", 1, "tensor-parallel degree (Megatron; divides n_heads and n_kv_heads)", 1);
    s.add_int("parallel.pp", 1, "pipeline-parallel degree", 1);
    s.add_int("parallel.sp", 1, "context-parallel degree (sequence split inside attention)", 1);
    s.add_bool("parallel.sequence_parallel", false,
               "Megatron sequence parallelism: norms, dropout and residuals on 1/tp of the tokens");
    s.add_enum("parallel.pipeline_schedule", "1f1b", {"gpipe", "1f1b"},
               "pipeline schedule over train.grad_accum micro-batches (gpipe: fill-drain; 1f1b: PipeDream-Flush)");
    s.add_enum("parallel.pipeline_recompute", "never", {"never", "always", "except_last"},
               "pipeline re-materialisation: keep only each micro-batch's stage input and recompute in backward");
    s.add_enum("parallel.pipeline_balance", "params", {"params", "measured"},
               "split blocks into stages by parameter count or by measured block/embedding/head times");
    s.add_int_list("parallel.pipeline_layers", {}, "explicit blocks per stage (overrides pipeline_balance)", 1);
    s.add_int("parallel.zero_stage", 0, "ZeRO: 0 replicated, 1 sharded optimizer state, 2 also sharded gradients", 0, 2);
    s.add_float("parallel.bucket_mb", 25.0, "gradient all-reduce bucket size in MiB", 0.0);
    s.add_bool("parallel.overlap", true, "start each gradient bucket's reduction during backward");
    s.add_float("parallel.timeout_s", 0.0, "collective timeout in seconds (0: $LOOM_COMM_TIMEOUT or 600)", 0.0);

    s.add_enum("init_from.format", "none", {"none", "hf"},
               "start from existing weights: hf = a Hugging Face checkpoint directory (the model.* architecture "
               "then comes from its config.json)");
    s.add_string("init_from.path", "", "directory with config.json, model.safetensors (or shards) and tokenizer.json");
    s.add_bool("init_from.tokenizer", true,
               "use init_from.path's tokenizer.json (false: the data's tokenizer, which must fit the vocabulary)");

    s.add_int("checkpoint.every", 0, "steps between checkpoints (0: only at the end)", 0);
    s.add_int("checkpoint.keep", 3, "checkpoints kept (0: all)", 0);
    return s;
  }();
  return schema;
}

parallel::ParallelDims build_parallel_dims(const Config& cfg, int world_size) {
  parallel::ParallelDims p;
  p.tp = int(cfg.get_int("parallel.tp"));
  p.pp = int(cfg.get_int("parallel.pp"));
  p.sp = int(cfg.get_int("parallel.sp"));
  const int64_t rest = int64_t(p.tp) * p.pp * p.sp;
  p.dp = int(cfg.get_int("parallel.dp"));
  if (p.dp == 0) {
    if (world_size % rest)
      throw cfg.error("parallel.tp", "world size " + std::to_string(world_size) + " does not divide by tp " +
                                         std::to_string(p.tp) + " x pp " + std::to_string(p.pp) + " x sp " +
                                         std::to_string(p.sp));
    p.dp = int(world_size / rest);
  }
  if (int64_t(p.dp) * rest != world_size)
    throw cfg.error("parallel.dp", "dp " + std::to_string(p.dp) + " x tp " + std::to_string(p.tp) + " x pp " +
                                       std::to_string(p.pp) + " x sp " + std::to_string(p.sp) + " = " +
                                       std::to_string(int64_t(p.dp) * rest) + " but the job has " +
                                       std::to_string(world_size) + " ranks");
  if (p.sp > 1) throw cfg.error("parallel.sp", "context parallelism is not available yet; use sp: 1");
  return p;
}

namespace {

// The tokenizer init_from brings along, or nullopt when the data's own is used.
std::optional<data::BpeTokenizer> init_from_tokenizer(const Config& cfg) {
  if (cfg.get_string("init_from.format") != "hf" || !cfg.get_bool("init_from.tokenizer")) return std::nullopt;
  std::string path = cfg.get_string("init_from.path") + "/tokenizer.json";
  if (!std::filesystem::exists(path))
    throw cfg.error("init_from.path", "has no tokenizer.json (" + path + "); set init_from.tokenizer: false to use the data's");
  return data::BpeTokenizer::load(path);
}

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string s = buf;
  if (s.find_first_of(".en") == std::string::npos) s += ".0";  // keep it a YAML float
  return s;
}

}  // namespace

Config resolve_model_keys(const Config& cfg) {
  auto b = [](bool v) { return std::string(v ? "true" : "false"); };
  if (cfg.get_string("init_from.format") != "hf") {
    // The preset's defaults become explicit values: a reloaded config has every key set, so
    // build_model_config could no longer tell a gpt2 default from a chosen value.
    if (cfg.get_string("model.preset") != "gpt2") return cfg;
    const std::vector<std::pair<std::string, std::string>> preset = {
        {"model.norm", "layernorm"}, {"model.activation", "gelu"}, {"model.positions", "learned"},
        {"model.tie_embeddings", "true"}, {"model.bias", "true"}};
    std::vector<std::string> overrides;
    for (const auto& [key, value] : preset)
      if (!cfg.was_set(key)) overrides.push_back(key + "=" + value);
    return overrides.empty() ? cfg : load_config_text(cfg.to_yaml(), cfg.source_name(), cfg.schema(), overrides);
  }
  const std::string dir = cfg.get_string("init_from.path");
  if (dir.empty()) throw cfg.error("init_from.path", "init_from.format is hf but init_from.path is empty");
  models::ModelConfig m;
  try {
    m = read_hf_config(dir);
  } catch (const std::runtime_error& e) {
    throw cfg.error("init_from.path", e.what());
  }
  const std::vector<std::pair<std::string, std::string>> keys = {
      {"model.preset", m.norm == "layernorm" ? "gpt2" : "llama"}, {"model.vocab_size", std::to_string(m.vocab_size)},
      {"model.d_model", std::to_string(m.d_model)}, {"model.n_layers", std::to_string(m.n_layers)},
      {"model.n_heads", std::to_string(m.n_heads)}, {"model.n_kv_heads", std::to_string(m.n_kv_heads)},
      {"model.ffn_hidden", std::to_string(m.ffn_hidden)}, {"model.norm", m.norm}, {"model.activation", m.activation},
      {"model.positions", m.positions}, {"model.rope_theta", format_double(m.rope_theta)},
      {"model.norm_eps", format_double(m.norm_eps)}, {"model.tie_embeddings", b(m.tie_embeddings)},
      {"model.bias", b(m.bias)}, {"model.qkv_bias", b(m.qkv_bias)}, {"model.max_seq_len", std::to_string(m.max_seq_len)}};
  std::vector<std::string> overrides;
  for (const auto& [key, value] : keys) {
    // A RoPE model's context length is only a bound: the config may choose a shorter one.
    if (key == "model.max_seq_len" && m.positions == "rope" && cfg.was_set(key)) continue;
    Config probe = load_config_text("", "<probe>", cfg.schema(), {key + "=" + value});
    if (cfg.was_set(key) && cfg.get(key) != probe.get(key))
      throw cfg.error(key, "conflicts with init_from.path: " + dir + "/config.json gives " + value +
                               " (leave model.* architecture keys unset when init_from is used)");
    overrides.push_back(key + "=" + value);
  }
  return load_config_text(cfg.to_yaml(), cfg.source_name(), cfg.schema(), overrides);
}

DataSetup build_data(const Config& cfg) {
  DataSetup d;
  std::optional<data::BpeTokenizer> init_tok = init_from_tokenizer(cfg);
  uint64_t seed = uint64_t(cfg.get_int("run.seed"));
  if (cfg.get_string("data.source") == "arithmetic") {
    data::ArithmeticConfig a;
    a.min_digits = int(cfg.get_int("data.arithmetic.min_digits"));
    a.max_digits = int(cfg.get_int("data.arithmetic.max_digits"));
    a.ops = cfg.get_string("data.arithmetic.ops");
    try {
      a.validate();
    } catch (const std::invalid_argument& e) {
      throw ConfigError(cfg.source_name() + ": data.arithmetic: " + e.what());
    }
    d.tokenizer = init_tok ? *init_tok : data::arithmetic_tokenizer();
    data::ArithmeticSourceOptions opt;
    opt.mask_prompt = cfg.get_bool("data.arithmetic.mask_prompt");
    d.source = std::make_unique<data::ArithmeticBatchSource>(a, d.tokenizer, seed, opt);
    return d;
  }
  std::string dir = cfg.get_string("data.path");
  if (dir.empty()) throw cfg.error("data.path", "data.source is shards but data.path is empty");
  d.tokenizer = data::BpeTokenizer::load(dir + "/tokenizer.json");
  if (init_tok && init_tok->to_json() != d.tokenizer.to_json())
    throw cfg.error("init_from.tokenizer", "the shards in " + dir + " were tokenized with another tokenizer than " +
                                               cfg.get_string("init_from.path") +
                                               "/tokenizer.json; prepare them with --tokenizer that file, or set "
                                               "init_from.tokenizer: false");
  d.source = std::make_unique<data::ShardBatchSource>(data::prepared_shards(dir, "train"), seed,
                                                      data::prepared_shards(dir, "val"));
  return d;
}

models::ModelConfig build_model_config(const Config& cfg, int64_t tokenizer_vocab) {
  const bool gpt2 = cfg.get_string("model.preset") == "gpt2";
  auto pick = [&](const std::string& key, const std::string& gpt2_value) {
    return cfg.was_set(key) || !gpt2 ? cfg.get_string(key) : gpt2_value;
  };
  auto pick_bool = [&](const std::string& key, bool gpt2_value) {
    return cfg.was_set(key) || !gpt2 ? cfg.get_bool(key) : gpt2_value;
  };
  models::ModelConfig m;
  m.vocab_size = cfg.get_int("model.vocab_size") ? cfg.get_int("model.vocab_size") : tokenizer_vocab;
  if (m.vocab_size < tokenizer_vocab)
    throw cfg.error("model.vocab_size", "is " + std::to_string(m.vocab_size) + " but the tokenizer has " +
                                            std::to_string(tokenizer_vocab) + " tokens");
  m.d_model = cfg.get_int("model.d_model");
  m.n_layers = cfg.get_int("model.n_layers");
  m.n_heads = cfg.get_int("model.n_heads");
  m.n_kv_heads = cfg.get_int("model.n_kv_heads") ? cfg.get_int("model.n_kv_heads") : m.n_heads;
  m.norm = pick("model.norm", "layernorm");
  m.activation = pick("model.activation", "gelu");
  m.positions = pick("model.positions", "learned");
  m.tie_embeddings = pick_bool("model.tie_embeddings", true);
  m.bias = pick_bool("model.bias", true);
  m.qkv_bias = cfg.get_bool("model.qkv_bias");
  m.ffn_hidden = cfg.get_int("model.ffn_hidden");
  if (m.ffn_hidden == 0) m.ffn_hidden = m.activation == "swiglu" ? (8 * m.d_model / 3 + 31) / 32 * 32 : 4 * m.d_model;
  m.rope_theta = cfg.get_float("model.rope_theta");
  m.norm_eps = cfg.get_float("model.norm_eps");
  m.max_seq_len = cfg.get_int("model.max_seq_len") ? cfg.get_int("model.max_seq_len") : cfg.get_int("data.seq_len");
  if (m.max_seq_len < cfg.get_int("data.seq_len"))
    throw cfg.error("model.max_seq_len", "is shorter than data.seq_len (" + std::to_string(cfg.get_int("data.seq_len")) + ")");
  m.dropout = cfg.get_float("model.dropout");
  m.init_std = cfg.get_float("model.init_std");
  try {
    m.validate();
  } catch (const std::invalid_argument& e) {
    throw ConfigError(cfg.source_name() + ": " + e.what());
  }
  return m;
}

optim::ScheduleOptions build_schedule(const Config& cfg) {
  optim::ScheduleOptions s;
  s.kind = cfg.get_string("optim.schedule");
  s.lr = cfg.get_float("optim.lr");
  s.warmup_steps = cfg.get_int("optim.warmup_steps");
  s.total_steps = cfg.get_int("train.steps");
  s.min_lr_ratio = cfg.get_float("optim.min_lr_ratio");
  s.decay_fraction = cfg.get_float("optim.decay_fraction");
  return s;
}

std::unique_ptr<optim::Optimizer> build_optimizer(const Config& cfg, std::vector<optim::ParamRef> params) {
  if (cfg.get_string("optim.name") == "sgd") {
    optim::SGDOptions o;
    o.momentum = cfg.get_float("optim.momentum");
    o.weight_decay = cfg.get_float("optim.weight_decay");
    return std::make_unique<optim::SGD>(std::move(params), o);
  }
  optim::AdamWOptions o;
  o.beta1 = cfg.get_float("optim.beta1");
  o.beta2 = cfg.get_float("optim.beta2");
  o.eps = cfg.get_float("optim.eps");
  o.weight_decay = cfg.get_float("optim.weight_decay");
  return std::make_unique<optim::AdamW>(std::move(params), o);
}

}  // namespace loom::launch
