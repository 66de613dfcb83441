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
#include "models/pipeline_partition.h"
#include "optim/distributed_optimizer.h"
#include "parallel/pipeline.h"
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

// Seconds for forward + backward of one block, of the embeddings and of the head + loss, on one
// micro-batch-sized input (median of 3 after a warm-up).
std::vector<double> measure_stage_costs(const models::ModelConfig& mc, int64_t rows, int64_t seq, DType dt) {
  auto time_of = [&](const models::PipelineStage& st) {
    models::TransformerLM m(mc, 1, dt, {}, st);
    Tensor ids = Tensor::zeros({rows, seq}, DType::i64);
    Tensor x = Tensor::randn({rows, seq, mc.d_model}, 1, dt);
    x.set_requires_grad(true);
    std::vector<double> ts;
    for (int r = 0; r < 4; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      Tensor in = st.embedding ? ids : x;
      (st.head ? m.stage_loss_sum(in, ids) : sum(m.forward_stage(in))).backward();
      if (r) ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ts.begin(), ts.end());
    return ts[1];
  };
  const int L = int(mc.n_layers);
  return {time_of({0, 1, false, false}), time_of({0, 0, true, false}), time_of({L, L, false, true})};
}

// The random state of micro-batch `micro` of step `step` on pipeline stage `stage` of data-parallel
// rank `dp_rank`: a pure function of them, so a resumed run draws exactly what the uninterrupted
// one drew, and a re-materialised forward replays its dropout.
runtime::GeneratorState micro_rng(uint64_t seed, int64_t step, int64_t micro, int stage, int dp_rank) {
  uint64_t s = seed;
  if (dp_rank || stage || micro)
    s = mix64(seed ^ mix64(uint64_t(dp_rank) + 1) ^ mix64((uint64_t(stage) + 1) << 20) ^ mix64((uint64_t(micro) + 1) << 40));
  return {s, uint64_t(step) << 40};
}

// This rank's pipeline stage of the model: blocks split by parallel.pipeline_layers, else by
// parameter counts, else by times measured on world rank 0 (so every rank gets the same split).
models::PipelineStage pipeline_stage(const Config& cfg, const models::ModelConfig& mc, int pp, int stage,
                                     parallel::Comm& world, DType dt) {
  if (pp == 1) return {};
  std::vector<models::PipelineStage> stages;
  try {
    std::vector<int64_t> explicit_layers = cfg.get_int_list("parallel.pipeline_layers");
    if (!explicit_layers.empty()) {
      if (int64_t(explicit_layers.size()) != pp)
        throw std::invalid_argument("lists " + std::to_string(explicit_layers.size()) + " stages for pp " +
                                    std::to_string(pp));
      stages = models::stages_from_counts(explicit_layers, mc.n_layers);
    } else {
      models::StageCosts costs = models::parameter_costs(mc);
      if (cfg.get_string("parallel.pipeline_balance") == "measured") {
        std::vector<double> t = {0, 0, 0};
        if (world.rank() == 0) t = measure_stage_costs(mc, cfg.get_int("train.batch_size"), cfg.get_int("data.seq_len"), dt);
        Tensor tt = Tensor::from_vector(t);
        world.broadcast(tt, 0);
        t = tt.to_vector<double>();
        costs.layer.assign(costs.layer.size(), t[0]);
        costs.first_extra = t[1];
        costs.last_extra = t[2];
      }
      stages = models::balanced_stages(costs, pp);
    }
  } catch (const std::invalid_argument& e) {
    throw cfg.error(cfg.get_int_list("parallel.pipeline_layers").empty() ? "parallel.pp" : "parallel.pipeline_layers",
                    e.what());
  }
  return stages[size_t(stage)];
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
        model_(build_model(cfg, data_.tokenizer.vocab_size(), dtype_, tp_, mesh_)),
        schedule_(build_schedule(cfg)),
        lead_(world_->rank() == 0) {
    batch_ = cfg.get_int("train.batch_size");
    accum_ = cfg.get_int("train.grad_accum");
    seq_ = cfg.get_int("data.seq_len");
    steps_ = cfg.get_int("train.steps");
    if (batch_ % accum_)
      throw cfg.error("train.grad_accum", "train.batch_size " + std::to_string(batch_) +
                                              " is not divisible by train.grad_accum " + std::to_string(accum_));
    if (dims_.pp > 1 && batch_ / dims_.dp < accum_)
      throw cfg.error("train.grad_accum", std::to_string(accum_) + " micro-batches need at least as many rows on "
                                          "each of the " + std::to_string(dims_.dp) + " data-parallel ranks, but "
                                          "train.batch_size " + std::to_string(batch_) + " gives some only " +
                                          std::to_string(batch_ / dims_.dp));
    if (tp_.sp() && seq_ % tp_.size())
      throw cfg.error("parallel.sequence_parallel", "data.seq_len " + std::to_string(seq_) +
                                                        " does not divide by the tensor-parallel degree " +
                                                        std::to_string(tp_.size()));
    if (double t = cfg.get_float("parallel.timeout_s"); t > 0)
      for (const CommPtr& c : {world_, dp_, tp_.comm, mesh_.comm("pp")}) c->set_timeout(t);
    model_.set_recompute(cfg.get_bool("train.recompute"));
    std::vector<std::string> no_decay = cfg.get_string_list("optim.no_decay");
    for (const std::string& k : no_decay)
      if (k != "norm" && k != "bias" && k != "embedding")
        throw cfg.error("optim.no_decay", "unknown kind '" + k + "' (expected norm, bias or embedding)");
    // Tied embeddings split over the pipeline: the first and last stages hold copies whose
    // gradients are summed over the pair; the first stage's copy is the primary.
    const int pp = dims_.pp, stage = mesh_.coord("pp");
    CommPtr tied;
    if (pp > 1 && model_.config().tie_embeddings)
      tied = mesh_.comm("pp")->split(stage == 0 || stage == pp - 1 ? 0 : -1, stage, "embedding");
    std::vector<optim::ShardedParam> params;
    for (auto& p : model_.parameters()) {
      optim::ShardedParam sp{p.name, p.tensor, !decay_excluded(p.name, no_decay), p.shard, {}, true};
      if (tied && p.name == "model.embed_tokens.weight") {
        sp.tied = tied;
        sp.primary = stage == 0;
      }
      params.push_back(sp);
    }
    pipeline_ = std::make_unique<parallel::PipelineExecutor>(
        mesh_.comm("pp"),
        pp > 1 ? parallel::pipe_schedule_from_name(cfg.get_string("parallel.pipeline_schedule"))
               : parallel::PipeSchedule::one_f_one_b,  // one stage: forward, backward, next (accumulation)
        int(accum_), parallel::recompute_from_name(cfg.get_string("parallel.pipeline_recompute")));
    parallel::DataParallelOptions dpo;
    dpo.zero_stage = int(cfg.get_int("parallel.zero_stage"));
    dpo.bucket_bytes = int64_t(cfg.get_float("parallel.bucket_mb") * double(1 << 20));
    dpo.overlap = cfg.get_bool("parallel.overlap");
    optimizer_ = std::make_unique<optim::DistributedOptimizer>(
        std::move(params), [&](std::vector<optim::ParamRef> refs) { return build_optimizer(cfg, std::move(refs)); },
        dpo, optim::ParallelGroups{dp_, tp_.comm, mesh_.comm("pp"), tp_.sequence_parallel});
    // init_from: start from existing weights (a resumed run takes them from its checkpoint).
    if (!opt.resume || list_checkpoints(ckpt_dir_).empty()) apply_init_from(cfg, model_);
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
    // The MFU denominator: one core's measured GEMM rate times the threads and the ranks. A
    // measurement at the full thread count lasts a fraction of a second, and on a shared VM a
    // core lost for that window halved it (the quickstart then reported MFU near 100%). One
    // core's rate drops too, by up to half for a second or so while a neighbour runs, so the
    // rate is the best measured so far: half a second now, 50 ms more at every evaluation.
    const double scale_to_job = double(omp_get_max_threads()) * double(world_->size());
    double peak = measure_core_gemm_peak(0.5) * scale_to_job;
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
                            {"tokens_per_s", st.tokens_per_s}, {"mfu", st.mfu}, {"gemm_peak_gflops", peak / 1e9},
                            {"elapsed_s", elapsed}};
        if (world_->size() > 1) j["comm_wait_s"] = comm_wait_s_;
        if (dims_.pp > 1) j["pipeline_blocked_fraction"] = pipe_total_s_ > 0 ? pipe_blocked_s_ / pipe_total_s_ : 0.0;
        log_metrics(j);
        t_window = std::chrono::steady_clock::now();
        tokens_window = 0;
      }
      const auto pause_start = std::chrono::steady_clock::now();
      if ((eval_every > 0 && done % eval_every == 0) || done == steps_) {
        double vl = evaluate();
        peak = std::max(peak, measure_core_gemm_peak(0.05) * scale_to_job);
        message("step " + std::to_string(done) + " | val_loss " + std::to_string(vl));
        log_metrics({{"step", done}, {"val_loss", vl}});
      }
      if ((ckpt_every > 0 && done % ckpt_every == 0) || done == steps_) save(done);
      // tokens/s and MFU measure training steps: evaluation and checkpoint time leave the window
      // (the ETA, from the whole elapsed time, keeps them).
      t_window += std::chrono::steady_clock::now() - pause_start;
      maybe_kill_at(done);
    }
    if (lead_) progress_.finish();
    if (skipped_) message(std::to_string(skipped_) + " steps were skipped for non-finite values");
    return 0;
  }

 private:
  static models::TransformerLM build_model(const Config& cfg, int64_t vocab, DType dt, const parallel::TensorParallel& tp,
                                           const parallel::Mesh& mesh) {
    models::ModelConfig mc = build_model_config(cfg, vocab);
    models::PipelineStage stage =
        pipeline_stage(cfg, mc, mesh.degree("pp"), mesh.coord("pp"), *mesh.world(), dt);
    try {
      return models::TransformerLM(mc, uint64_t(cfg.get_int("run.seed")), dt, tp, stage);
    } catch (const std::invalid_argument& e) {
      throw cfg.error("parallel.tp", e.what());
    }
  }

  // The data of micro-batch m of this data-parallel rank at `step`.
  std::vector<data::Batch> micro_batches(int64_t step, bool validation) {
    const parallel::Range rows = parallel::split_range(batch_, dims_.dp, mesh_.coord("dp"));
    std::vector<data::Batch> parts;
    for (int64_t m = 0; m < accum_; ++m) {
      const parallel::Range r = parallel::split_range(rows.size(), int(accum_), int(m));
      if (r.size() == 0) {  // more micro-batches than rows on this rank (single stage only)
        data::Batch empty;
        empty.inputs = Tensor::zeros({0, seq_}, DType::i64);
        empty.targets = Tensor::zeros({0, seq_}, DType::i64);
        parts.push_back(empty);
        continue;
      }
      parts.push_back(validation ? data_.source->val_batch(uint64_t(step), rows.begin + r.begin, rows.begin + r.end, seq_)
                                 : data_.source->batch(uint64_t(step), rows.begin + r.begin, rows.begin + r.end, seq_));
    }
    return parts;
  }

  static double count_targets(const std::vector<data::Batch>& parts) {
    NoGradGuard ng;
    Tensor ign = Tensor::full({}, double(data::kIgnoreIndex), DType::i64);
    double n = 0;
    for (const data::Batch& b : parts)
      n += double(b.targets.numel()) - sum(eq(b.targets, ign).to(DType::i64)).item();
    return n;
  }

  // The pipeline stage functions over `parts`: the loss is the token sum divided by `valid`.
  parallel::StageFns stage_fns(const std::vector<data::Batch>& parts, double valid, int64_t step) {
    parallel::StageFns f;
    const int stage = mesh_.coord("pp"), dp_rank = mesh_.coord("dp");
    const uint64_t seed = uint64_t(cfg_.get_int("run.seed"));
    const int64_t t_local = tp_.sp() ? seq_ / tp_.size() : seq_;
    f.forward = [this, &parts, valid, step, stage, dp_rank, seed](int m, const Tensor& input) {
      default_generator().set_state(micro_rng(seed, step, m, stage, dp_rank));
      if (!pipeline_->last()) return model_.forward_stage(input);
      return mul_scalar(model_.stage_loss_sum(input, parts[size_t(m)].targets), 1.0 / std::max(valid, 1.0));
    };
    f.first_input = [&parts](int m) { return parts[size_t(m)].inputs.numel() ? parts[size_t(m)].inputs : Tensor(); };
    f.activation_shape = [this, &parts, t_local](int m) {
      return runtime::Dims{parts[size_t(m)].inputs.size(0), t_local, model_.config().d_model};
    };
    f.dtype = dtype_;
    f.set_sync = [this](bool on) { optimizer_->set_sync(on); };
    return f;
  }

  void message(const std::string& text) {
    if (lead_) progress_.message(text);
  }

  // One optimizer step over the global batch. Data-parallel rank d takes its block of the batch's
  // rows (uneven blocks allowed) in accum_ micro-batches, which run through the pipeline
  // schedule (one stage: forward and backward of each in turn). The loss is the sum over every
  // target token of the global batch divided by their global count, so accumulation, data and
  // pipeline parallelism (gradients summed) give exactly the single-process gradient.
  bool train_step(int64_t step, double lr, double& loss_out, double& gnorm_out) {
    model_.set_training(true);
    optimizer_->zero_grad();
    const std::vector<data::Batch> parts = micro_batches(step, false);
    const double valid = all_sum(count_targets(parts), *dp_);
    parallel::PipelineStats st = pipeline_->run(stage_fns(parts, valid, step));
    pipe_blocked_s_ += st.blocked_s;
    pipe_total_s_ += st.total_s;
    comm_wait_s_ += optimizer_->finish_backward();
    loss_out = all_sum(all_sum(st.losses, *mesh_.comm("pp")), *dp_);
    if (!std::isfinite(loss_out)) return false;
    double clip = cfg_.get_float("optim.grad_clip");
    gnorm_out = clip > 0 ? optimizer_->clip_grad_norm(clip) : optimizer_->grad_norm();
    if (!std::isfinite(gnorm_out)) return false;
    optimizer_->step(lr);
    return true;
  }

  // One core's GEMM rate for f32 operands at the run's matmul precision over about `seconds`
  // (the threads are restored afterwards).
  static double measure_core_gemm_peak(double seconds) {
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const double rate = cpu::measured_gemm_peak_flops(seconds);
    omp_set_num_threads(threads);
    return rate;
  }

  static double all_sum(double v, parallel::Comm& c) {
    if (c.size() == 1) return v;
    Tensor t = Tensor::scalar(v, DType::f64);
    c.all_reduce(t);
    return t.item();
  }

  // Evaluation: the mean over eval_batches of each validation batch's token-mean loss; each
  // data-parallel rank takes its rows, forwards run through the pipeline stages.
  double evaluate() {
    NoGradGuard ng;
    model_.set_training(false);
    const int64_t n = cfg_.get_int("train.eval_batches");
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<data::Batch> parts = micro_batches(i, true);
      const double valid = all_sum(count_targets(parts), *dp_);
      total += all_sum(all_sum(pipeline_->run_forward(stage_fns(parts, valid, i), int(parts.size())), *mesh_.comm("pp")), *dp_);
    }
    model_.set_training(true);
    return total / double(n);
  }

  // Layout-independent: every parameter and optimizer state under its name with its full shape,
  // each element written once, by the rank that owns it (checkpoint.h).
  std::string save(int64_t step) {
    std::vector<parallel::Piece> pieces;
    if (mesh_.coord("dp") == 0)
      for (const optim::ShardedParam& p : optimizer_->params())
        if (p.primary && (!p.shard.is_whole() || tp_.rank() == 0)) {
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
  std::unique_ptr<parallel::PipelineExecutor> pipeline_;
  Progress progress_;
  bool lead_;
  int64_t batch_ = 0, accum_ = 1, seq_ = 0, steps_ = 0, skipped_ = 0;
  double comm_wait_s_ = 0, pipe_blocked_s_ = 0, pipe_total_s_ = 0;
};

}  // namespace

int train(const Config& cfg, const TrainOptions& opt) {
  if (int64_t threads = cfg.get_int("run.threads")) omp_set_num_threads(int(threads));
  try {  // before anything is computed; the MFU peak is then the bf16 path's rate
    cpu::set_matmul_precision(cpu::matmul_precision_from_name(cfg.get_string("run.matmul_precision")));
  } catch (const std::exception& e) {
    throw cfg.error("run.matmul_precision", e.what());
  }
  const Config resolved = resolve_model_keys(cfg);  // model.* explicit (preset, init_from)
  Trainer t(resolved, opt);
  return t.run();
}

}  // namespace loom::launch
