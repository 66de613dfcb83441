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
#include "launch/progress.h"
#include "launch/train_config.h"
#include "models/transformer.h"
#include "optim/distributed_optimizer.h"
#include "parallel/distributed.h"
#include "runtime/cpu/gemm.h"

namespace loom::launch {

using namespace runtime;
using parallel::CommPtr;
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

// Test hook: LOOM_TEST_KILL_AT_STEP=n makes the process SIGKILL itself after step n (only world
// rank LOOM_TEST_KILL_RANK when that is set).
void maybe_kill_at(int64_t step) {
  static const char* env = std::getenv("LOOM_TEST_KILL_AT_STEP");
  static const char* rank = std::getenv("LOOM_TEST_KILL_RANK");
  if (!env || std::atoll(env) != step) return;
  if (rank && std::atoi(rank) != parallel::init_distributed().rank()) return;
  std::raise(SIGKILL);
}

// The random state of step `step` on data-parallel rank `dp_rank`: a pure function of them, so a
// resumed run (in any layout) draws exactly what the uninterrupted one drew.
runtime::GeneratorState step_rng(uint64_t seed, int64_t step, int dp_rank) {
  return {dp_rank == 0 ? seed : mix64(seed ^ mix64(uint64_t(dp_rank))), uint64_t(step) << 40};
}

class Trainer {
 public:
  Trainer(const Config& cfg, const TrainOptions& opt)
      : cfg_(cfg),
        opt_(opt),
        run_dir_(cfg.get_string("run.dir")),
        ckpt_dir_(run_dir_ + "/checkpoints"),
        world_(parallel::init_distributed().world()),
        dims_(build_parallel_dims(cfg, world_->size())),
        mesh_(world_, dims_),
        dp_(mesh_.comm("dp")),
        tp_{mesh_.comm("tp"), cfg.get_bool("parallel.sequence_parallel")},
        data_(build_data(cfg)),
        dtype_(dtype_from_name(cfg.get_string("run.dtype"))),
        model_(build_model(cfg, data_.tokenizer.vocab_size(), dtype_, tp_)),
        schedule_(build_schedule(cfg)),
        lead_(world_->rank() == 0) {
    batch_ = cfg.get_int("train.batch_size");
    accum_ = cfg.get_int("train.grad_accum");
    seq_ = cfg.get_int("data.seq_len");
    steps_ = cfg.get_int("train.steps");
    if (batch_ % accum_)
      throw cfg.error("train.grad_accum", "train.batch_size " + std::to_string(batch_) +
                                              " is not divisible by train.grad_accum " + std::to_string(accum_));
    if (batch_ < dims_.dp)
      throw cfg.error("train.batch_size", "is " + std::to_string(batch_) + ", fewer rows than the " +
                                              std::to_string(dims_.dp) + " data-parallel ranks");
    if (tp_.sp() && seq_ % tp_.size())
      throw cfg.error("parallel.sequence_parallel", "data.seq_len " + std::to_string(seq_) +
                                                        " does not divide by the tensor-parallel degree " +
                                                        std::to_string(tp_.size()));
    if (double t = cfg.get_float("parallel.timeout_s"); t > 0)
      for (const CommPtr& c : {world_, dp_, tp_.comm}) c->set_timeout(t);
    model_.set_recompute(cfg.get_bool("train.recompute"));
    std::vector<std::string> no_decay = cfg.get_string_list("optim.no_decay");
    for (const std::string& k : no_decay)
      if (k != "norm" && k != "bias" && k != "embedding")
        throw cfg.error("optim.no_decay", "unknown kind '" + k + "' (expected norm, bias or embedding)");
    std::vector<optim::ShardedParam> params;
    for (auto& p : model_.parameters()) params.push_back({p.name, p.tensor, !decay_excluded(p.name, no_decay), p.shard});
    parallel::DataParallelOptions dpo;
    dpo.zero_stage = int(cfg.get_int("parallel.zero_stage"));
    dpo.bucket_bytes = int64_t(cfg.get_float("parallel.bucket_mb") * double(1 << 20));
    dpo.overlap = cfg.get_bool("parallel.overlap");
    optimizer_ = std::make_unique<optim::DistributedOptimizer>(
        std::move(params), [&](std::vector<optim::ParamRef> refs) { return build_optimizer(cfg, std::move(refs)); },
        dpo, dp_, tp_.comm, tp_.sequence_parallel);
  }

  int run() {
    if (lead_) fs::create_directories(run_dir_);
    int64_t start = 0;
    if (opt_.resume) start = resume();
    else if (!list_checkpoints(ckpt_dir_).empty())
      throw std::runtime_error("run directory '" + run_dir_ + "' already has checkpoints; pass --resume to continue it "
                               "or choose another run.dir");
    if (lead_) {
      std::ofstream(run_dir_ + "/config.yaml") << cfg_.to_yaml();
      data_.tokenizer.save(run_dir_ + "/tokenizer.json");
    }
    std::unique_ptr<MetricsLog> metrics;
    if (lead_) metrics = std::make_unique<MetricsLog>(run_dir_ + "/metrics.jsonl", start > 0);
    auto log_metrics = [&](const nlohmann::json& j) {
      if (metrics) metrics->write(j);
    };
    // Every rank measures its own GEMM peak; the job's peak is their sum.
    const double peak = cpu::measured_gemm_peak_flops() * double(world_->size());
    const double flops_per_token = model_.config().train_flops_per_token(seq_);
    message("loom train: " + std::to_string(model_.config().num_parameters()) + " parameters, " +
            std::to_string(steps_) + " steps of " + std::to_string(batch_ * seq_) + " tokens, " +
            std::to_string(world_->size()) + (world_->size() == 1 ? " process" : " ranks (" + mesh_.str() + ")") +
            " x " + std::to_string(omp_get_max_threads()) + " threads, run dir " + run_dir_ +
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
          message("warning: " + what + "; step skipped (optim.nan_policy: skip)");
          log_metrics({{"step", done}, {"skipped", true}, {"loss", std::isfinite(loss) ? loss : -1.0}});
          ++skipped_;
          continue;
        }
        std::string path = save(step);  // the state before this step: still good
        message("error: " + what + "; stopped (optim.nan_policy: stop). Last good state saved to " + path);
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
      if (lead_) progress_.update(st, log);
      if (log) {
        nlohmann::json j = {{"step", done}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                            {"tokens_per_s", st.tokens_per_s}, {"mfu", st.mfu}, {"elapsed_s", elapsed}};
        if (world_->size() > 1) j["comm_wait_s"] = comm_wait_s_;
        log_metrics(j);
        t_window = std::chrono::steady_clock::now();
        tokens_window = 0;
      }
      if ((eval_every > 0 && done % eval_every == 0) || done == steps_) {
        double vl = evaluate();
        message("step " + std::to_string(done) + " | val_loss " + std::to_string(vl));
        log_metrics({{"step", done}, {"val_loss", vl}});
      }
      if ((ckpt_every > 0 && done % ckpt_every == 0) || done == steps_) save(done);
      maybe_kill_at(done);
    }
    if (lead_) progress_.finish();
    if (skipped_) message(std::to_string(skipped_) + " steps were skipped for non-finite values");
    return 0;
  }

 private:
  static models::TransformerLM build_model(const Config& cfg, int64_t vocab, DType dt, const parallel::TensorParallel& tp) {
    models::ModelConfig mc = build_model_config(cfg, vocab);
    try {
      return models::TransformerLM(mc, uint64_t(cfg.get_int("run.seed")), dt, tp);
    } catch (const std::invalid_argument& e) {
      throw cfg.error("parallel.tp", e.what());
    }
  }

  void message(const std::string& text) {
    if (lead_) progress_.message(text);
  }

  // One optimizer step over the global batch. Data-parallel rank d takes its block of the batch's
  // rows (uneven blocks allowed) in accum_ micro-batches. The loss is the sum over every target
  // token of the global batch divided by their global count, so accumulation and data
  // parallelism (gradients summed over ranks) give exactly the single-process gradient.
  bool train_step(int64_t step, double lr, double& loss_out, double& gnorm_out) {
    model_.set_training(true);
    default_generator().set_state(step_rng(uint64_t(cfg_.get_int("run.seed")), step, mesh_.coord("dp")));
    optimizer_->zero_grad();
    const parallel::Range rows = parallel::split_range(batch_, dims_.dp, mesh_.coord("dp"));
    std::vector<data::Batch> parts;
    double valid = 0;
    for (int64_t m = 0; m < accum_; ++m) {
      const parallel::Range r = parallel::split_range(rows.size(), int(accum_), int(m));
      if (r.size() == 0) {
        parts.emplace_back();
        continue;
      }
      parts.push_back(data_.source->batch(uint64_t(step), rows.begin + r.begin, rows.begin + r.end, seq_));
      NoGradGuard ng;
      Tensor ign = Tensor::full({}, double(data::kIgnoreIndex), DType::i64);
      valid += double(parts.back().targets.numel()) - sum(eq(parts.back().targets, ign).to(DType::i64)).item();
    }
    valid = all_sum(valid, *dp_);
    double total = 0;
    for (int64_t m = 0; m < accum_; ++m) {
      optimizer_->set_sync(m == accum_ - 1);
      const data::Batch& b = parts[size_t(m)];
      if (!b.inputs.defined()) continue;
      Tensor l = mul_scalar(model_.loss_sum(model_.forward(b.inputs), b.targets), 1.0 / std::max(valid, 1.0));
      total += l.item();
      l.backward();
    }
    comm_wait_s_ += optimizer_->finish_backward();
    loss_out = all_sum(total, *dp_);
    if (!std::isfinite(loss_out)) return false;
    double clip = cfg_.get_float("optim.grad_clip");
    gnorm_out = clip > 0 ? optimizer_->clip_grad_norm(clip) : optimizer_->grad_norm();
    if (!std::isfinite(gnorm_out)) return false;
    optimizer_->step(lr);
    return true;
  }

  static double all_sum(double v, parallel::Comm& c) {
    if (c.size() == 1) return v;
    Tensor t = Tensor::scalar(v, DType::f64);
    c.all_reduce(t);
    return t.item();
  }

  // Every rank evaluates the same batches (tensor-parallel ranks together); the mean of the
  // per-batch token-mean losses.
  double evaluate() {
    NoGradGuard ng;
    model_.set_training(false);
    const int64_t n = cfg_.get_int("train.eval_batches");
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      data::Batch b = data_.source->val_batch(i, 0, batch_, seq_);
      Tensor ign = Tensor::full({}, double(data::kIgnoreIndex), DType::i64);
      const double count = double(b.targets.numel()) - sum(eq(b.targets, ign).to(DType::i64)).item();
      total += model_.loss_sum(model_.forward(b.inputs), b.targets).item() / std::max(count, 1.0);
    }
    model_.set_training(true);
    return total / double(n);
  }

  // Layout-independent: every parameter and optimizer state under its name with its full shape,
  // each element written once, by the rank that owns it (checkpoint.h).
  std::string save(int64_t step) {
    std::vector<parallel::Piece> pieces;
    if (mesh_.coord("dp") == 0)
      for (auto& p : model_.parameters())
        if (!p.shard.is_whole() || tp_.rank() == 0) {
          Tensor t = p.tensor.detach().contiguous();
          pieces.push_back({"model/" + p.name, p.shard.full, p.shard.runs(), t.view({t.numel()})});
        }
    for (parallel::Piece& p : optimizer_->state_pieces()) {
      p.name = "optim/" + p.name;
      pieces.push_back(std::move(p));
    }
    CheckpointState s;
    s.step = step;
    s.ints["optim/steps_taken"] = optimizer_->steps_taken();
    s.ints["data/step"] = step;  // batches and random state are pure functions of (seed, step)
    s.strings["config"] = cfg_.to_yaml();
    s.strings["tokenizer.json"] = data_.tokenizer.to_json();
    const int keep = int(cfg_.get_int("checkpoint.keep"));
    if (world_->size() > 1) return save_sharded_checkpoint(ckpt_dir_, s, pieces, *world_, keep);
    for (parallel::Piece& p : pieces) s.tensors.push_back({p.name, p.data.view(p.full)});
    return save_checkpoint(ckpt_dir_, s, keep);
  }

  int64_t resume() {
    std::optional<std::string> path = latest_checkpoint(ckpt_dir_, opt_.fallback);
    if (!path) {
      message("no checkpoint in " + ckpt_dir_ + "; starting from step 0");
      return 0;
    }
    CheckpointState s = load_checkpoint(*path);
    NoGradGuard ng;
    for (auto& p : model_.parameters()) {
      Tensor t = s.find("model/" + p.name);
      if (!t.defined()) throw CheckpointError("checkpoint '" + *path + "': no tensor for parameter '" + p.name + "'");
      if (t.shape() != p.shard.full)
        throw CheckpointError("checkpoint '" + *path + "': parameter '" + p.name + "' has shape " + t.shape().str() +
                              ", the config gives " + p.shard.full.str());
      p.tensor.detach().view({p.tensor.numel()}).copy_(parallel::take_local(t.to(dtype_), p.shard, 0, p.tensor.numel()));
    }
    try {
      optimizer_->load_state([&](const std::string& name) { return s.find("optim/" + name); });
    } catch (const std::runtime_error& e) {
      throw CheckpointError("checkpoint '" + *path + "': " + e.what());
    }
    optimizer_->set_steps_taken(s.ints.at("optim/steps_taken"));
    if (lead_) truncate_metrics(run_dir_ + "/metrics.jsonl", s.step);
    message("resumed from " + *path);
    return s.step;
  }

  const Config& cfg_;
  TrainOptions opt_;
  std::string run_dir_, ckpt_dir_;
  CommPtr world_;
  parallel::ParallelDims dims_;
  parallel::Mesh mesh_;
  CommPtr dp_;
  parallel::TensorParallel tp_;
  DataSetup data_;
  DType dtype_;
  models::TransformerLM model_;
  optim::ScheduleOptions schedule_;
  std::unique_ptr<optim::DistributedOptimizer> optimizer_;
  Progress progress_;
  bool lead_;
  int64_t batch_ = 0, accum_ = 1, seq_ = 0, steps_ = 0, skipped_ = 0;
  double comm_wait_s_ = 0;
};

}  // namespace

int train(const Config& cfg, const TrainOptions& opt) {
  if (int64_t threads = cfg.get_int("run.threads")) omp_set_num_threads(int(threads));
  Trainer t(cfg, opt);
  return t.run();
}

}  // namespace loom::launch
