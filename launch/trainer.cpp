// trainer.cpp: the training loop.
#include "launch/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "launch/checkpoint.h"
#include "launch/import_hf.h"
#include "launch/progress.h"
#include "launch/train_config.h"
#include "models/transformer.h"
#include "runtime/cpu/gemm.h"

namespace loom::launch {

using namespace runtime;
namespace fs = std::filesystem;

namespace {

bool decay_excluded(const std::string& name, const std::vector<std::string>& kinds) {
  for (const std::string& k : kinds) {
    if (k == "norm" && (name.find("norm") != std::string::npos)) return true;
    if (k == "bias" && name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) return true;
    if (k == "embedding" && name.find("embed_") != std::string::npos) return true;
  }
  return false;
}

// Drops metrics records past `step` (written by a run that died after its last checkpoint).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= step) kept << line << "\n";
    } catch (const std::exception&) {
      // A torn last line from a killed run: drop it.
    }
  }
  in.close();
  std::ofstream(path, std::ios::trunc) << kept.str();
}

// Test hook: LOOM_TEST_KILL_AT_STEP=n makes the process SIGKILL itself after step n.
void maybe_kill_at(int64_t step) {
  static const char* env = std::getenv("LOOM_TEST_KILL_AT_STEP");
  if (env && std::atoll(env) == step) std::raise(SIGKILL);
}

class Trainer {
 public:
  Trainer(const Config& cfg, const TrainOptions& opt)
      : cfg_(cfg),
        opt_(opt),
        run_dir_(cfg.get_string("run.dir")),
        ckpt_dir_(run_dir_ + "/checkpoints"),
        data_(build_data(cfg)),
        dtype_(dtype_from_name(cfg.get_string("run.dtype"))),
        model_(build_model_config(cfg, data_.tokenizer.vocab_size()), uint64_t(cfg.get_int("run.seed")), dtype_),
        schedule_(build_schedule(cfg)) {
    batch_ = cfg.get_int("train.batch_size");
    accum_ = cfg.get_int("train.grad_accum");
    seq_ = cfg.get_int("data.seq_len");
    steps_ = cfg.get_int("train.steps");
    if (batch_ % accum_)
      throw cfg.error("train.grad_accum", "train.batch_size " + std::to_string(batch_) +
                                              " is not divisible by train.grad_accum " + std::to_string(accum_));
    model_.set_recompute(cfg.get_bool("train.recompute"));
    std::vector<std::string> no_decay = cfg.get_string_list("optim.no_decay");
    for (const std::string& k : no_decay)
      if (k != "norm" && k != "bias" && k != "embedding")
        throw cfg.error("optim.no_decay", "unknown kind '" + k + "' (expected norm, bias or embedding)");
    std::vector<optim::ParamRef> refs;
    for (auto& p : model_.parameters()) refs.push_back({p.name, p.tensor, !decay_excluded(p.name, no_decay)});
    optimizer_ = build_optimizer(cfg, refs);
    // init_from: start from existing weights (a resumed run takes them from its checkpoint).
    if (!opt.resume || list_checkpoints(ckpt_dir_).empty()) apply_init_from(cfg, model_);
  }

  int run() {
    fs::create_directories(run_dir_);
    int64_t start = 0;
    if (opt_.resume) start = resume();
    else if (!list_checkpoints(ckpt_dir_).empty())
      throw std::runtime_error("run directory '" + run_dir_ + "' already has checkpoints; pass --resume to continue it "
                               "or choose another run.dir");
    else manual_seed(uint64_t(cfg_.get_int("run.seed")));
    {
      std::ofstream(run_dir_ + "/config.yaml") << cfg_.to_yaml();
      data_.tokenizer.save(run_dir_ + "/tokenizer.json");
    }
    MetricsLog metrics(run_dir_ + "/metrics.jsonl", start > 0);
    const double peak = cpu::measured_gemm_peak_flops();
    const double flops_per_token = model_.config().train_flops_per_token(seq_);
    progress_.message("loom train: " + std::to_string(model_.config().num_parameters()) + " parameters, " +
                      std::to_string(steps_) + " steps of " + std::to_string(batch_ * seq_) + " tokens, " +
                      std::to_string(omp_get_max_threads()) + " threads, run dir " + run_dir_ +
                      (start ? ", resumed at step " + std::to_string(start) : ""));
    const int64_t log_every = cfg_.get_int("train.log_every"), eval_every = cfg_.get_int("train.eval_every");
    const int64_t ckpt_every = cfg_.get_int("checkpoint.every");
    auto t_start = std::chrono::steady_clock::now();
    auto t_window = t_start;
    int64_t tokens_window = 0;
    for (int64_t step = start; step < steps_; ++step) {
      double lr = optim::learning_rate(schedule_, step);
      double loss = 0, gnorm = 0;
      bool finite = train_step(step, lr, loss, gnorm);
      tokens_window += batch_ * seq_;
      const int64_t done = step + 1;
      if (!finite) {
        std::string what = "step " + std::to_string(done) + ": non-finite " + (std::isfinite(loss) ? "gradient norm" : "loss");
        if (cfg_.get_string("optim.nan_policy") == "skip") {
          progress_.message("warning: " + what + "; step skipped (optim.nan_policy: skip)");
          metrics.write({{"step", done}, {"skipped", true}, {"loss", std::isfinite(loss) ? loss : -1.0}});
          ++skipped_;
          continue;
        }
        std::string path = save(step);  // the state before this step: still good
        progress_.message("error: " + what + "; stopped (optim.nan_policy: stop). Last good state saved to " + path);
        return 3;
      }
      double now_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_window).count();
      bool log = done % log_every == 0 || done == steps_;
      StepStats st;
      st.step = done;
      st.total_steps = steps_;
      st.loss = loss;
      st.lr = lr;
      st.grad_norm = gnorm;
      st.tokens_per_s = now_s > 0 ? double(tokens_window) / now_s : 0;
      st.mfu = st.tokens_per_s * flops_per_token / peak;
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      st.eta_s = elapsed / double(done - start) * double(steps_ - done);
      progress_.update(st, log);
      if (log) {
        metrics.write({{"step", done}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                       {"tokens_per_s", st.tokens_per_s}, {"mfu", st.mfu}, {"elapsed_s", elapsed}});
        t_window = std::chrono::steady_clock::now();
        tokens_window = 0;
      }
      if ((eval_every > 0 && done % eval_every == 0) || done == steps_) {
        double vl = evaluate();
        progress_.message("step " + std::to_string(done) + " | val_loss " + std::to_string(vl));
        metrics.write({{"step", done}, {"val_loss", vl}});
      }
      if ((ckpt_every > 0 && done % ckpt_every == 0) || done == steps_) save(done);
      maybe_kill_at(done);
    }
    progress_.finish();
    if (skipped_) progress_.message(std::to_string(skipped_) + " steps were skipped for non-finite values");
    return 0;
  }

 private:
  // One optimizer step over the global batch in accum_ micro-batches. The loss is the mean over
  // every target token of the global batch, so accumulation (and later data parallelism) gives
  // exactly the single-batch gradient.
  bool train_step(int64_t step, double lr, double& loss_out, double& gnorm_out) {
    model_.set_training(true);
    optimizer_->zero_grad();
    const int64_t micro = batch_ / accum_;
    std::vector<data::Batch> parts;
    int64_t valid = 0;
    for (int64_t m = 0; m < accum_; ++m) {
      parts.push_back(data_.source->batch(uint64_t(step), m * micro, (m + 1) * micro, seq_));
      NoGradGuard ng;
      Tensor ign = Tensor::full({}, double(data::kIgnoreIndex), DType::i64);
      valid += parts.back().targets.numel() - int64_t(sum(eq(parts.back().targets, ign).to(DType::i64)).item());
    }
    double total = 0;
    CrossEntropyOptions ce;
    ce.reduction = Reduction::sum;
    for (const data::Batch& b : parts) {
      Tensor logits = model_.forward(b.inputs);
      Tensor l = mul_scalar(cross_entropy(logits.view({-1, logits.size(-1)}), b.targets.view({-1}), ce),
                            1.0 / double(std::max<int64_t>(valid, 1)));
      total += l.item();
      if (!std::isfinite(total)) break;
      l.backward();
    }
    loss_out = total;
    if (!std::isfinite(total)) return false;
    double clip = cfg_.get_float("optim.grad_clip");
    gnorm_out = clip > 0 ? optim::clip_grad_norm(optimizer_->params(), clip) : optim::grad_norm(optimizer_->params());
    if (!std::isfinite(gnorm_out)) return false;
    optimizer_->step(lr);
    return true;
  }

  double evaluate() {
    NoGradGuard ng;
    model_.set_training(false);
    const int64_t n = cfg_.get_int("train.eval_batches");
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      data::Batch b = data_.source->val_batch(i, 0, batch_, seq_);
      Tensor logits = model_.forward(b.inputs);
      total += cross_entropy(logits.view({-1, logits.size(-1)}), b.targets.view({-1})).item();
    }
    model_.set_training(true);
    return total / double(n);
  }

  std::string save(int64_t step) {
    CheckpointState s;
    s.step = step;
    for (auto& p : model_.parameters()) s.tensors.push_back({"model/" + p.name, p.tensor.detach()});
    for (auto& [name, t] : optimizer_->state()) s.tensors.push_back({"optim/" + name, t});
    GeneratorState g = default_generator().state();
    s.ints["rng/seed"] = int64_t(g.seed);
    s.ints["rng/offset"] = int64_t(g.offset);
    s.ints["optim/steps_taken"] = optimizer_->steps_taken();
    s.ints["data/step"] = step;  // batches are a pure function of (seed, step)
    s.strings["config"] = cfg_.to_yaml();
    s.strings["tokenizer.json"] = data_.tokenizer.to_json();
    return save_checkpoint(ckpt_dir_, s, int(cfg_.get_int("checkpoint.keep")));
  }

  int64_t resume() {
    std::optional<std::string> path = latest_checkpoint(ckpt_dir_, opt_.fallback);
    if (!path) {
      progress_.message("no checkpoint in " + ckpt_dir_ + "; starting from step 0");
      manual_seed(uint64_t(cfg_.get_int("run.seed")));
      return 0;
    }
    CheckpointState s = load_checkpoint(*path);
    NoGradGuard ng;
    for (auto& p : model_.parameters()) {
      Tensor t = s.find("model/" + p.name);
      if (!t.defined()) throw CheckpointError("checkpoint '" + *path + "': no tensor for parameter '" + p.name + "'");
      if (t.shape() != p.tensor.shape())
        throw CheckpointError("checkpoint '" + *path + "': parameter '" + p.name + "' has shape " + t.shape().str() +
                              ", the config gives " + p.tensor.shape().str());
      p.tensor.detach().copy_(t);
    }
    std::vector<std::pair<std::string, Tensor>> st;
    for (auto& [name, t] : s.tensors)
      if (name.rfind("optim/", 0) == 0) st.push_back({name.substr(6), t});
    optimizer_->load_state(st);
    optimizer_->set_steps_taken(s.ints.at("optim/steps_taken"));
    default_generator().set_state({uint64_t(s.ints.at("rng/seed")), uint64_t(s.ints.at("rng/offset"))});
    truncate_metrics(run_dir_ + "/metrics.jsonl", s.step);
    progress_.message("resumed from " + *path);
    return s.step;
  }

  const Config& cfg_;
  TrainOptions opt_;
  std::string run_dir_, ckpt_dir_;
  DataSetup data_;
  DType dtype_;
  models::TransformerLM model_;
  optim::ScheduleOptions schedule_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  Progress progress_;
  int64_t batch_ = 0, accum_ = 1, seq_ = 0, steps_ = 0, skipped_ = 0;
};

}  // namespace

int train(const Config& cfg, const TrainOptions& opt) {
  if (int64_t threads = cfg.get_int("run.threads")) omp_set_num_threads(int(threads));
  const Config resolved = resolve_model_keys(cfg);  // model.* explicit (preset, init_from)
  Trainer t(resolved, opt);
  return t.run();
}

}  // namespace loom::launch
