// test_train_parity.cpp: DESIGN.md invariant 1 for data and tensor parallelism. For every
// dp x tp layout the world allows, ZeRO stages 0/1/2, with and without sequence parallelism,
// a few AdamW steps of a small Llama (vocabulary and MLP hidden size not divisible by the
// degrees, GQA, uneven data-parallel batch blocks) give the same loss, the same gradient on
// every element each rank owns, the same global gradient norm and the same parameters as one
// process running plain AdamW (computed on every rank, independently of DistributedOptimizer):
// f64 to 1e-10 relative, f32 to 1e-5. A GPT-2-style model (biases, LayerNorm, learned positions,
// tied embeddings) runs the same check on the layouts with tp > 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "models/transformer.h"
#include "optim/distributed_optimizer.h"
#include "parallel/mesh.h"
#include "parallel_test_util.h"
#include "parity_util.h"

namespace loom::parallel::testing {
namespace {

using models::ModelConfig;
using models::TransformerLM;

struct Layout {
  int dp, tp, zero;
  bool sp;
  std::string str() const {
    return "dp " + std::to_string(dp) + " tp " + std::to_string(tp) + " zero " + std::to_string(zero) +
           (sp ? " sp" : "");
  }
};

std::vector<Layout> layouts(int world) {
  std::vector<Layout> out;
  for (int tp = 1; tp <= world; ++tp) {
    if (world % tp || 4 % tp) continue;  // whole heads: the configs have 4 key/value heads
    for (int zero = 0; zero <= 2; ++zero)
      for (bool sp : {false, true})
        if (!sp || tp > 1) out.push_back({world / tp, tp, zero, sp});
  }
  return out;
}

ModelConfig llama_config() {
  ModelConfig c = ModelConfig::llama(37, 32, 2, 4, 4);  // V = 37: uneven over 2 and 4 ranks
  c.n_kv_heads = 4;
  c.n_heads = 8;    // head_dim 4, GQA 2:1
  c.ffn_hidden = 90;  // 45 | 23,23,22,22
  c.max_seq_len = 8;
  return c;
}

ModelConfig gpt2_config() {
  ModelConfig c = ModelConfig::gpt2(37, 32, 2, 4);
  c.ffn_hidden = 90;
  c.max_seq_len = 8;
  return c;
}

constexpr int64_t kBatch = 6, kSeq = 8, kSteps = 3;
constexpr uint64_t kSeed = 11;

std::pair<Tensor, Tensor> batch(int64_t step, int64_t vocab) { return token_batch(step, vocab, kBatch, kSeq, 5); }

optim::AdamWOptions adamw() {
  optim::AdamWOptions o;
  o.weight_decay = 0.1;
  return o;
}
constexpr double kClip = 0.5;  // clipping active: the norms are larger
// f32 takes smaller steps: AdamW's first update is about lr * sign(g), so elements whose
// gradient is rounding noise move by up to lr in either direction.
double lr_for(DType dt) { return dt == DType::f64 ? 1e-2 : 1e-4; }

// One process, plain AdamW: the reference.
Trace reference(const ModelConfig& cfg, DType dt) {
  TransformerLM m(cfg, kSeed, dt);
  ReferenceRun run;
  run.steps = kSteps;
  run.lr = lr_for(dt);
  run.adamw = adamw();
  run.clip = kClip;
  return reference_trace(m, run, [&](int64_t s) { return batch(s, cfg.vocab_size); });
}

void check_layout(const ModelConfig& cfg, DType dt, const Layout& lay, const Trace& ref) {
  const double tol = dt == DType::f64 ? 1e-10 : 1e-5;
  // Parameters after the AdamW steps, in f32: the update m / sqrt(v) divides a gradient's
  // rounding by its own size, so elements with small gradients carry the layouts' different
  // reduction orders (row-parallel partial sums, kernels at other shapes) up to a few times
  // 1e-5 of the largest parameter. Loss, every gradient and the norm keep 1e-5; f64 checks
  // the same steps at 1e-10.
  const double param_tol = dt == DType::f64 ? tol : 3e-5;
  Mesh mesh(world(), ParallelDims{.dp = lay.dp, .tp = lay.tp});
  TensorParallel tp{mesh.comm("tp"), lay.sp};
  TransformerLM m(cfg, kSeed, dt, tp);
  std::vector<optim::ShardedParam> params;
  for (auto& p : m.parameters()) params.push_back({p.name, p.tensor, !p.no_decay, p.shard});
  DataParallelOptions dpo;
  dpo.zero_stage = lay.zero;
  dpo.bucket_bytes = 2048;  // several buckets, parameters straddling slice boundaries
  optim::DistributedOptimizer opt(
      params, [](std::vector<optim::ParamRef> r) { return std::make_unique<optim::AdamW>(std::move(r), adamw()); },
      dpo, {mesh.comm("dp"), tp.comm, nullptr, lay.sp});
  const std::string where = lay.str() + " " + runtime::dtype_name(dt) + " rank " + std::to_string(world()->rank());
  const Range rows = split_range(kBatch, lay.dp, mesh.coord("dp"));
  for (int64_t s = 0; s < kSteps; ++s) {
    opt.zero_grad();
    auto [ids, tg] = batch(s, cfg.vocab_size);
    const double valid = count_valid(tg);
    opt.set_sync(true);
    Tensor mine = ids.narrow(0, rows.begin, rows.size()), mine_t = tg.narrow(0, rows.begin, rows.size());
    Tensor loss = runtime::mul_scalar(m.loss_sum(m.forward(mine.contiguous()), mine_t.contiguous()), 1.0 / valid);
    loss.backward();
    opt.finish_backward();
    Tensor total = Tensor::scalar(loss.item(), DType::f64);
    mesh.comm("dp")->all_reduce(total);
    EXPECT_NEAR(total.item(), ref.losses[size_t(s)], tol * std::abs(ref.losses[size_t(s)])) << where << " step " << s;
    for (const GradSync::Slice& sl : opt.sync().owned()) {
      const optim::ShardedParam& p = opt.params()[sl.param];
      Tensor want = take_local(ref.grads[size_t(s)].at(p.name), p.shard, sl.begin, sl.end);
      ASSERT_TRUE(sl.grad.defined()) << where << " " << p.name;
      EXPECT_LE(rel_diff(sl.grad, want), tol) << where << " step " << s << " gradient of " << p.name << " ["
                                              << sl.begin << ", " << sl.end << ")";
    }
    const double norm = opt.clip_grad_norm(kClip);
    EXPECT_NEAR(norm, ref.norms[size_t(s)], tol * ref.norms[size_t(s)]) << where << " step " << s;
    opt.step(lr_for(dt));
  }
  for (auto& p : m.parameters()) {
    Tensor want = take_local(ref.params.at(p.name), p.shard, 0, p.tensor.numel());
    EXPECT_LE(rel_diff(p.tensor.detach().reshape({-1}), want), param_tol) << where << " parameter " << p.name;
  }
}

TEST(Parity, LlamaEveryLayoutF64) {
  const Trace ref = reference(llama_config(), DType::f64);
  for (const Layout& lay : layouts(world()->size())) check_layout(llama_config(), DType::f64, lay, ref);
}

TEST(Parity, LlamaEveryLayoutF32) {
  const Trace ref = reference(llama_config(), DType::f32);
  for (const Layout& lay : layouts(world()->size()))
    if (lay.zero != 1) check_layout(llama_config(), DType::f32, lay, ref);
}

TEST(Parity, Gpt2TensorParallelF64) {
  if (world()->size() == 1) GTEST_SKIP() << "needs tp > 1";
  const Trace ref = reference(gpt2_config(), DType::f64);
  for (const Layout& lay : layouts(world()->size()))
    if (lay.tp > 1 && lay.zero != 1) check_layout(gpt2_config(), DType::f64, lay, ref);
}

TEST(Parity, GradSyncStartsBucketsDuringBackwardAndSums) {
  // With overlap on, every bucket starts during backward (the last when the last gradient
  // arrives); with it off, none does. The sums are the group's either way.
  if (world()->size() == 1) GTEST_SKIP() << "no data-parallel group";
  ModelConfig cfg = llama_config();
  TransformerLM m(cfg, kSeed, DType::f64);
  std::vector<Tensor> leaves;
  for (auto& p : m.parameters()) leaves.push_back(p.tensor);
  auto [ids, tg] = batch(0, cfg.vocab_size);
  {
    DataParallelOptions o;
    o.bucket_bytes = 4096;
    o.overlap = false;
    GradSync late(leaves, world(), o);
    late.set_sync(true);
    m.loss_sum(m.forward(ids), tg).backward();
    late.finish();
    EXPECT_EQ(late.buckets_started_in_backward(), 0);
    for (Tensor& t : leaves) t.zero_grad();
  }
  DataParallelOptions o;
  o.bucket_bytes = 4096;
  GradSync sync(leaves, world(), o);
  EXPECT_GT(sync.num_buckets(), 2);
  sync.set_sync(true);
  m.loss_sum(m.forward(ids), tg).backward();
  sync.finish();
  EXPECT_EQ(sync.buckets_started_in_backward(), sync.num_buckets());
  // Every rank computed the same gradient, so the sum is world size x the local one.
  TransformerLM solo(cfg, kSeed, DType::f64);
  solo.loss_sum(solo.forward(ids), tg).backward();
  for (size_t i = 0; i < leaves.size(); ++i)
    EXPECT_LE(rel_diff(leaves[i].grad(), runtime::mul_scalar(solo.parameters()[i].tensor.grad(), world()->size())),
              1e-12)
        << solo.parameters()[i].name;
}

}  // namespace
}  // namespace loom::parallel::testing
