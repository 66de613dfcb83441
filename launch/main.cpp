// main.cpp: the `loom` command line: train, generate, eval, score, export, data prepare,
// tokenizer train.
// Every subcommand has --help; errors print one clear message and exit non-zero.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "data/arithmetic.h"
#include "data/io.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/export.h"
#include "launch/import_hf.h"
#include "launch/train_config.h"
#include "launch/trainer.h"
#include "models/generate.h"
#include "parallel/distributed.h"

using namespace loom;
namespace fs = std::filesystem;

namespace {

struct LoadedModel {
  launch::Config cfg;
  data::BpeTokenizer tokenizer;
  std::unique_ptr<models::TransformerLM> model;
  std::string path;
};

// --ckpt accepts a checkpoint file, a checkpoints/ directory or a run directory.
LoadedModel load_model(const std::string& where) {
  std::string path = launch::resolve_checkpoint(where);
  launch::CheckpointState s = launch::load_checkpoint(path);
  LoadedModel m{launch::load_config_text(s.strings.at("config"), path + ":config", launch::train_schema()),
                data::BpeTokenizer::from_json(s.strings.at("tokenizer.json"), path + ":tokenizer.json"), nullptr, path};
  runtime::DType dt = runtime::dtype_from_name(m.cfg.get_string("run.dtype"));
  m.model = std::make_unique<models::TransformerLM>(launch::build_model_config(m.cfg, m.tokenizer.vocab_size()),
                                                    uint64_t(m.cfg.get_int("run.seed")), dt);
  runtime::NoGradGuard ng;
  for (auto& p : m.model->parameters()) {
    runtime::Tensor t = s.find("model/" + p.name);
    if (!t.defined()) throw launch::CheckpointError("checkpoint '" + path + "': missing parameter '" + p.name + "'");
    p.tensor.detach().copy_(t);
  }
  m.model->set_training(false);
  return m;
}

// This process's rank and world size for messages (a malformed launcher variable counts as a
// single process here; the trainer reports it).
parallel::LaunchEnv launch_env() {
  try {
    return parallel::detect_launch_env();
  } catch (const std::exception&) {
    return {};
  }
}

// A Hugging Face checkpoint directory, imported (for `loom score --hf`).
LoadedModel load_hf_model(const std::string& dir) {
  launch::HfCheckpoint c = launch::load_hf_checkpoint(dir);
  if (c.tokenizer_json.empty()) throw std::runtime_error(dir + ": no tokenizer.json");
  LoadedModel m{launch::load_config_text("", "<defaults>", launch::train_schema()),
                data::BpeTokenizer::from_json(c.tokenizer_json, dir + "/tokenizer.json"), nullptr, dir};
  m.model = std::make_unique<models::TransformerLM>(c.config, 0);
  launch::assign_parameters(*m.model, c.tensors, dir);
  m.model->set_training(false);
  return m;
}

// Comma-separated token ids ("1,2,3").
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t at = 0;
  while (at < text.size()) {
    size_t comma = text.find(',', at);
    std::string item = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0) throw std::invalid_argument(item);
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      throw std::runtime_error("--ids: '" + item + "' is not a token id");
    }
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return ids;
}

std::vector<int32_t> stop_tokens_for(const LoadedModel& m) {
  std::vector<int32_t> stop;
  if (m.tokenizer.eos_id() >= 0) stop.push_back(m.tokenizer.eos_id());
  if (m.cfg.get_string("data.source") == "arithmetic") {
    std::vector<int32_t> nl = m.tokenizer.encode("\n");
    if (nl.size() == 1) stop.push_back(nl[0]);  // an answer ends at its newline
  }
  return stop;
}

}  // namespace

// OpenMP threads that spin while waiting steal the core a busy neighbour (or the other half of
// this job) needs: on 2 cores with another process running, measured 739 tok/s spinning vs
// 3521 passive, and equal speed on an idle machine. libgomp reads the policy when it loads,
// so the default is applied by re-executing once with it set; an explicit setting wins.
void default_to_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

int main(int argc, char** argv) {
  default_to_passive_omp_wait(argv);
  CLI::App app{"Loom: distributed training for transformer language models"};
  app.set_version_flag("--version", std::string("loom ") + LOOM_VERSION);
  app.require_subcommand(1);

  // ---- train --------------------------------------------------------------------------------
  auto* train = app.add_subcommand("train", "Train a model from a YAML config (the quickstart when none is given)");
  std::string config_path;
  std::vector<std::string> overrides;
  launch::TrainOptions topt;
  bool list_keys = false;
  train->add_option("config", config_path, "YAML config file (default: the built-in configs/quickstart.yaml)");
  train->add_option("--set", overrides, "override a config key: --set optim.lr=1e-3 (repeatable)");
  train->add_flag("--resume", topt.resume, "continue from the newest good checkpoint in run.dir");
  train->add_flag("--fallback", topt.fallback, "with --resume: skip a corrupt newest checkpoint for an older good one");
  train->add_flag("--list-keys", list_keys, "print every config key with its type, default and help, and exit");

  // ---- generate ------------------------------------------------------------------------------
  auto* gen = app.add_subcommand("generate", "Sample continuations of a prompt from a checkpoint");
  std::string ckpt, prompt;
  models::SamplingOptions sopt;
  int64_t samples = 1;
  gen->add_option("--ckpt", ckpt, "checkpoint file, checkpoints/ dir or run dir")->required();
  gen->add_option("--prompt", prompt, "prompt text")->required();
  gen->add_option("--temperature", sopt.temperature, "sampling temperature (0: greedy)")->default_val(0.8);
  gen->add_option("--top-k", sopt.top_k, "keep the k most likely tokens (0: all)")->default_val(0);
  gen->add_option("--top-p", sopt.top_p, "nucleus sampling mass")->default_val(1.0);
  gen->add_option("--max-new-tokens", sopt.max_new_tokens, "tokens to generate")->default_val(32);
  gen->add_option("--seed", sopt.seed, "sampling seed")->default_val(0);
  gen->add_option("--num-samples", samples, "continuations of the prompt")->default_val(1);

  // ---- eval (arithmetic accuracy) -----------------------------------------------------------
  auto* eval = app.add_subcommand("eval", "Greedy accuracy on held-out arithmetic problems (arithmetic runs)");
  std::string eval_ckpt;
  int64_t problems = 200;
  eval->add_option("--ckpt", eval_ckpt, "checkpoint file, checkpoints/ dir or run dir")->required();
  eval->add_option("--problems", problems, "held-out problems to solve")->default_val(200);

  // ---- score (log-probabilities, for comparing with other engines) ------------------------------
  auto* score = app.add_subcommand("score", "Print next-token log-probabilities and a greedy continuation as JSON");
  std::string score_ckpt, score_hf, score_prompt, score_ids;
  int64_t score_greedy = 8;
  score->add_option("--ckpt", score_ckpt, "checkpoint file, checkpoints/ dir or run dir");
  score->add_option("--hf", score_hf, "a Hugging Face checkpoint directory instead (imported)");
  score->add_option("--prompt", score_prompt, "text to score (tokenized with the model's tokenizer)");
  score->add_option("--ids", score_ids, "token ids to score instead, comma-separated");
  score->add_option("--greedy", score_greedy, "greedy continuation length")->default_val(8);

  // ---- export ---------------------------------------------------------------------------------
  auto* exp = app.add_subcommand("export", "Export a checkpoint for inference engines: Hugging Face (transformers, "
                                           "vLLM, SGLang) or GGUF (llama.cpp, Ollama)");
  std::string exp_ckpt, exp_dtype = "f32";
  launch::ExportOptions eopt;
  exp->add_option("--ckpt", exp_ckpt, "checkpoint file, checkpoints/ dir or run dir (newest good checkpoint)")->required();
  exp->add_option("--format", eopt.format, "hf: config.json + model.safetensors + tokenizer; gguf: one llama.cpp file")
      ->required()->check(CLI::IsMember({"hf", "gguf"}));
  exp->add_option("--out", eopt.out, "output directory (hf) or file (gguf); replaced atomically")->required();
  exp->add_option("--dtype", exp_dtype, "weight dtype (gguf keeps 1-D tensors f32)")
      ->default_val("f32")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  exp->add_option("--max-shard-bytes", eopt.max_shard_bytes, "hf: split model.safetensors into shards above this size")
      ->default_val(5'000'000'000ull)->check(CLI::PositiveNumber);

  // ---- data prepare ------------------------------------------------------------------------------
  auto* data_cmd = app.add_subcommand("data", "Dataset tools");
  data_cmd->require_subcommand(1);
  auto* prep = data_cmd->add_subcommand("prepare", "Tokenize text/JSONL files into memory-mapped token shards");
  data::PrepareOptions popt;
  prep->add_option("inputs", popt.inputs, "text or .jsonl files, or directories")->required();
  prep->add_option("--out", popt.output_dir, "output directory")->required();
  prep->add_option("--tokenizer", popt.tokenizer_path, "tokenizer.json to use (default: train one or byte-level)");
  prep->add_option("--vocab-size", popt.vocab_size, "train a BPE tokenizer of this size on the inputs");
  prep->add_flag("--lines", popt.lines, "text files: each non-empty line is a document");
  prep->add_option("--text-field", popt.text_field, "JSONL field holding the text")->default_val("text");
  prep->add_option("--val-fraction", popt.val_fraction, "share of documents for validation")->default_val(0.01);
  prep->add_option("--seed", popt.seed, "seed of the train/validation split")->default_val(0);

  // ---- tokenizer train ----------------------------------------------------------------------------
  auto* tok = app.add_subcommand("tokenizer", "Tokenizer tools");
  tok->require_subcommand(1);
  auto* tok_train = tok->add_subcommand("train", "Train a byte-level BPE tokenizer (Hugging Face tokenizer.json)");
  std::vector<std::string> tok_inputs;
  int tok_vocab = 0;
  std::string tok_out;
  std::vector<std::string> specials{"<|bos|>", "<|eos|>", "<|pad|>"};
  tok_train->add_option("inputs", tok_inputs, "text files")->required()->check(CLI::ExistingFile);
  tok_train->add_option("--vocab-size", tok_vocab, "vocabulary size including specials")->required();
  tok_train->add_option("--out", tok_out, "output tokenizer.json")->required();
  tok_train->add_option("--special", specials, "special tokens")->default_val(specials);

  CLI11_PARSE(app, argc, argv);

  try {
    if (*train) {
      if (list_keys) {
        std::cout << launch::train_schema().help_text();
        return 0;
      }
      launch::Config cfg = config_path.empty()
                               ? launch::load_config_text(launch::quickstart_yaml(), "<quickstart>", launch::train_schema(), overrides)
                               : launch::load_config(config_path, launch::train_schema(), overrides);
      topt.config_source = config_path.empty() ? "<quickstart>" : config_path;
      return launch::train(cfg, topt);
    }
    if (*gen) {
      LoadedModel m = load_model(ckpt);
      std::vector<int32_t> ids = m.tokenizer.encode(prompt);
      sopt.stop_tokens = stop_tokens_for(m);
      for (const models::Generation& g : models::generate(*m.model, {ids}, sopt, samples))
        std::cout << prompt << m.tokenizer.decode(g.tokens) << (g.tokens.empty() || m.tokenizer.decode({g.tokens.back()}) != "\n" ? "\n" : "");
      return 0;
    }
    if (*eval) {
      LoadedModel m = load_model(eval_ckpt);
      if (m.cfg.get_string("data.source") != "arithmetic")
        throw std::runtime_error("eval: '" + m.path + "' was not trained on the arithmetic corpus");
      data::ArithmeticConfig a;
      a.min_digits = int(m.cfg.get_int("data.arithmetic.min_digits"));
      a.max_digits = int(m.cfg.get_int("data.arithmetic.max_digits"));
      a.ops = m.cfg.get_string("data.arithmetic.ops");
      std::vector<data::ArithmeticProblem> ps;
      std::vector<std::vector<int32_t>> prompts;
      // A seed no training stream uses: held-out problems.
      uint64_t seed = runtime::mix64(uint64_t(m.cfg.get_int("run.seed")) ^ 0xe7a1u);
      for (int64_t i = 0; i < problems; ++i) {
        ps.push_back(data::sample_problem(a, seed, uint64_t(i)));
        prompts.push_back(m.tokenizer.encode(ps.back().prompt));
      }
      models::SamplingOptions greedy;
      greedy.temperature = 0;
      greedy.max_new_tokens = a.max_digits * (a.ops.find('*') != std::string::npos ? 2 : 1) + 3;
      greedy.stop_tokens = stop_tokens_for(m);
      int64_t correct = 0;
      auto gens = models::generate(*m.model, prompts, greedy, 1);
      for (size_t i = 0; i < gens.size(); ++i) {
        std::string out = m.tokenizer.decode(gens[i].tokens);
        bool ok = data::check_answer(ps[i], out);
        correct += ok;
        if (i < 5) std::cout << ps[i].prompt << out.substr(0, out.find('\n')) << (ok ? "  ok" : "  wrong") << "\n";
      }
      std::printf("accuracy: %lld/%lld = %.1f%% (greedy, held-out %d-%d digit problems)\n", (long long)correct,
                  (long long)problems, 100.0 * double(correct) / double(problems), a.min_digits, a.max_digits);
      return 0;
    }
    if (*score) {
      if (score_ckpt.empty() == score_hf.empty()) throw std::runtime_error("score: give exactly one of --ckpt and --hf");
      if (score_prompt.empty() == score_ids.empty()) throw std::runtime_error("score: give exactly one of --prompt and --ids");
      LoadedModel m = score_hf.empty() ? load_model(score_ckpt) : load_hf_model(score_hf);
      std::vector<int32_t> ids = score_ids.empty() ? m.tokenizer.encode(score_prompt) : parse_ids(score_ids);
      if (ids.empty()) throw std::runtime_error("score: nothing to score");
      std::vector<int64_t> ids64(ids.begin(), ids.end());
      runtime::NoGradGuard ng;
      runtime::Tensor logits = m.model->forward(runtime::Tensor::from_vector(ids64, {1, int64_t(ids.size())}));
      std::vector<double> lp = runtime::log_softmax(logits.to(runtime::DType::f64), -1).to_double_vector();
      const size_t V = size_t(logits.size(-1));
      nlohmann::json out;
      out["ids"] = ids;
      out["logprobs"] = nlohmann::json::array();
      for (size_t t = 0; t < ids.size(); ++t)
        out["logprobs"].push_back(std::vector<double>(lp.begin() + long(t * V), lp.begin() + long((t + 1) * V)));
      models::SamplingOptions greedy;
      greedy.temperature = 0;
      greedy.max_new_tokens = score_greedy;
      out["greedy"] = score_greedy > 0 ? models::generate(*m.model, {ids}, greedy, 1)[0].tokens : std::vector<int32_t>{};
      std::cout << out.dump() << "\n";
      return 0;
    }
    if (*exp) {
      eopt.dtype = runtime::dtype_from_name(exp_dtype);
      std::cout << launch::export_model(launch::load_export_source(exp_ckpt), eopt) << "\n";
      return 0;
    }
    if (*prep) {
      data::PrepareResult r = data::prepare_shards(popt);
      std::printf("prepared %s: train %lld documents / %lld tokens in %zu shards, val %lld / %lld, vocab %d (%d-byte tokens)\n",
                  popt.output_dir.c_str(), (long long)r.train.documents, (long long)r.train.tokens, r.train.shards.size(),
                  (long long)r.val.documents, (long long)r.val.tokens, r.vocab_size, r.token_bytes);
      return 0;
    }
    if (*tok_train) {
      std::vector<std::string> texts;
      for (const std::string& f : tok_inputs) texts.push_back(data::read_file(f));
      data::BpeTokenizer t = data::BpeTokenizer::train(texts, tok_vocab, specials);
      t.save(tok_out);
      std::printf("wrote %s: %d tokens (%d merges)\n", tok_out.c_str(), t.vocab_size(), t.num_merges());
      return 0;
    }
  } catch (const launch::ConfigError& e) {
    // Every rank reads the same config and fails the same way: one message is enough.
    if (launch_env().rank == 0) std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    const parallel::LaunchEnv env = launch_env();
    if (env.world_size > 1) std::fprintf(stderr, "loom: error on rank %d: %s\n", env.rank, e.what());
    else std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
