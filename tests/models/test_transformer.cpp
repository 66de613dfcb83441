// test_transformer.cpp: the LM's parameters, determinism, gradients and cached decoding.
#include <gtest/gtest.h>

#include "models/transformer.h"
#include "runtime/rng.h"
#include "tests/runtime/gradcheck.h"

using namespace loom::runtime;
using loom::models::KVCache;
using loom::models::ModelConfig;
using loom::models::TransformerLM;

namespace {
ModelConfig tiny_llama() {
  ModelConfig c = ModelConfig::llama(37, 32, 2, 4, 2);
  c.ffn_hidden = 48;
  c.max_seq_len = 64;
  return c;
}
ModelConfig tiny_gpt2() {
  ModelConfig c = ModelConfig::gpt2(37, 32, 2, 4);
  c.max_seq_len = 64;
  return c;
}
Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  std::vector<int64_t> v(size_t(B * T));
  for (size_t i = 0; i < v.size(); ++i) v[i] = int64_t(mix64(seed + i) % uint64_t(V));
  return Tensor::from_vector(v, {B, T});
}
double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}
}  // namespace

TEST(Transformer, HuggingFaceNamesAndCounts) {
  TransformerLM m(tiny_llama(), 1);
  EXPECT_TRUE(m.has_param("model.embed_tokens.weight"));
  EXPECT_TRUE(m.has_param("model.layers.1.self_attn.k_proj.weight"));
  EXPECT_EQ(m.param("model.layers.1.self_attn.k_proj.weight").shape(), (Dims{16, 32}));  // 2 kv heads x 8
  EXPECT_TRUE(m.has_param("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_TRUE(m.has_param("model.norm.weight"));
  EXPECT_TRUE(m.has_param("lm_head.weight"));
  int64_t n = 0;
  for (auto& p : m.parameters()) n += p.tensor.numel();
  EXPECT_EQ(n, m.config().num_parameters());
  TransformerLM g(tiny_gpt2(), 1);
  EXPECT_FALSE(g.has_param("lm_head.weight"));  // tied
  EXPECT_TRUE(g.has_param("model.embed_positions.weight"));
  EXPECT_TRUE(g.has_param("model.layers.0.self_attn.q_proj.bias"));
  int64_t ng = 0;
  for (auto& p : g.parameters()) ng += p.tensor.numel();
  EXPECT_EQ(ng, g.config().num_parameters());
  // GPT-2 124M is expressible and counts the way the paper table does (with tied head).
  ModelConfig big = ModelConfig::gpt2(50257, 768, 12, 12);
  EXPECT_NEAR(double(big.num_parameters()), 124.44e6, 0.1e6);
}

TEST(Transformer, InitIsAPureFunctionOfSeedNameShape) {
  TransformerLM a(tiny_llama(), 7), b(tiny_llama(), 7), c(tiny_llama(), 8);
  for (size_t i = 0; i < a.parameters().size(); ++i)
    EXPECT_EQ(a.parameters()[i].tensor.to_vector<float>(), b.parameters()[i].tensor.to_vector<float>());
  EXPECT_NE(a.param("model.layers.0.self_attn.q_proj.weight").to_vector<float>(),
            c.param("model.layers.0.self_attn.q_proj.weight").to_vector<float>());
  // A deeper model shares the same first-layer values: the value depends on the name only.
  ModelConfig deeper = tiny_llama();
  deeper.n_layers = 3;
  TransformerLM d(deeper, 7);
  EXPECT_EQ(a.param("model.layers.1.mlp.up_proj.weight").to_vector<float>(),
            d.param("model.layers.1.mlp.up_proj.weight").to_vector<float>());
  EXPECT_NE(a.param("model.layers.0.mlp.up_proj.weight").to_vector<float>(),
            a.param("model.layers.1.mlp.up_proj.weight").to_vector<float>());
}

// init_normal writes dtype(std * n) in one kernel; the values are those of the f64 draw scaled and
// cast (how it was first written), so checkpoints and recorded losses stay valid.
TEST(Transformer, InitNormalEqualsScaledF64DrawCast) {
  using loom::models::init_normal;
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Tensor direct = init_normal(42, "model.layers.0.mlp.up_proj.weight", {33, 17}, 0.02, dt);
    Tensor ref = mul_scalar(Tensor::randn({33, 17}, mix64(42) ^ hash_string("model.layers.0.mlp.up_proj.weight"),
                                          DType::f64), 0.02).to(dt);
    ASSERT_EQ(direct.dtype(), dt);
    EXPECT_EQ(direct.to(DType::f64).to_vector<double>(), ref.to(DType::f64).to_vector<double>());
  }
}

TEST(Transformer, ForwardShapesAndInvalidConfig) {
  TransformerLM m(tiny_llama(), 1);
  Tensor logits = m.forward(random_ids(2, 5, 37, 3));
  EXPECT_EQ(logits.shape(), (Dims{2, 5, 37}));
  ModelConfig bad = tiny_llama();
  bad.n_kv_heads = 3;
  EXPECT_THROW(TransformerLM(bad, 1), std::invalid_argument);
}

TEST(Transformer, WholeModelGradientsMatchFiniteDifferences) {
  for (ModelConfig cfg : {tiny_llama(), tiny_gpt2()}) {
    cfg.d_model = 8;
    cfg.n_heads = 2;
    cfg.n_kv_heads = cfg.activation == "swiglu" ? 1 : 2;
    cfg.ffn_hidden = 12;
    cfg.vocab_size = 11;
    cfg.n_layers = 2;
    TransformerLM m(cfg, 3, DType::f64);
    Tensor ids = random_ids(2, 5, 11, 4);
    Tensor targets = random_ids(2, 5, 11, 5);
    // Check a few parameters at a time (each needs 2 forwards per element).
    for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
                             "model.norm.weight", "model.embed_tokens.weight"}) {
      Tensor& p = m.param(name);
      loom::testing::expect_gradients_match(
          name,
          [&](std::vector<Tensor>& in) {
            Tensor saved = p;
            p = in[0];
            Tensor loss = cross_entropy(m.forward(ids).view({-1, 11}), targets.view({-1}));
            p = saved;
            return loss;
          },
          {p.detach().clone()}, 1e-6);
    }
  }
}

TEST(Transformer, RecomputeGivesIdenticalGradients) {
  ModelConfig cfg = tiny_llama();
  cfg.dropout = 0.1;
  auto grads = [&](bool recompute) {
    TransformerLM m(cfg, 5);
    m.set_recompute(recompute);
    manual_seed(11);
    Tensor loss = cross_entropy(m.forward(random_ids(2, 6, 37, 1)).view({-1, 37}), random_ids(2, 6, 37, 2).view({-1}));
    loss.backward();
    std::vector<float> all;
    for (auto& p : m.parameters()) {
      std::vector<float> g = p.tensor.grad().to_vector<float>();
      all.insert(all.end(), g.begin(), g.end());
    }
    return std::make_pair(loss.item(), all);
  };
  auto [l1, g1] = grads(false);
  auto [l2, g2] = grads(true);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1, g2);
}

TEST(Transformer, CachedDecodingEqualsFullForward) {
  for (ModelConfig cfg : {tiny_llama(), tiny_gpt2()}) {
    TransformerLM m(cfg, 2);
    m.set_training(false);
    Tensor ids = random_ids(2, 9, 37, 6);
    Tensor full = m.forward(ids);
    KVCache cache = m.new_cache(2, 16);
    Tensor a = m.forward_cached(ids.narrow(1, 0, 4), cache);  // prefill 4
    std::vector<Tensor> steps{a};
    for (int64_t i = 4; i < 9; ++i) steps.push_back(m.forward_cached(ids.narrow(1, i, 1), cache));
    Tensor inc = concat(steps, 1);
    EXPECT_LT(max_abs_diff(inc, full), 2e-5) << cfg.activation;
    EXPECT_EQ(cache.length(0), 9);
  }
}

TEST(Transformer, ForkedCacheSharesPrefixAndMatchesSeparateRuns) {
  TransformerLM m(tiny_llama(), 2);
  m.set_training(false);
  Tensor prompt = random_ids(2, 5, 37, 7);
  KVCache cache = m.new_cache(2, 8);
  m.forward_cached(prompt, cache);
  // Three continuations of row 1 and one of row 0, sharing the prompt's keys.
  KVCache kids = cache.fork({1, 1, 0, 1}, 8);
  EXPECT_EQ(kids.length(0), 5);
  EXPECT_EQ(kids.own_length(0), 0);
  Tensor cont = random_ids(4, 3, 37, 8);
  Tensor got = m.forward_cached(cont, kids);
  // Grandchild fork of the forked rows also works.
  KVCache grand = kids.fork({2, 0}, 4);
  Tensor next = random_ids(2, 1, 37, 9);
  Tensor got2 = m.forward_cached(next, grand);
  EXPECT_EQ(grand.length(1), 9);
  std::vector<int64_t> source{1, 1, 0, 1};
  for (int64_t r = 0; r < 4; ++r) {
    Tensor seq = concat({prompt.narrow(0, source[size_t(r)], 1), cont.narrow(0, r, 1)}, 1);
    Tensor ref = m.forward(seq).narrow(1, 5, 3);
    EXPECT_LT(max_abs_diff(got.narrow(0, r, 1), ref), 2e-5) << "row " << r;
  }
  // grand row 0 continues kids row 2 (prompt row 0 + cont row 2).
  Tensor seq = concat({prompt.narrow(0, 0, 1), cont.narrow(0, 2, 1), next.narrow(0, 0, 1)}, 1);
  EXPECT_LT(max_abs_diff(got2.narrow(0, 0, 1), m.forward(seq).narrow(1, 8, 1)), 2e-5);
}

TEST(Transformer, PaddedPrefillWithPerRowCounts) {
  TransformerLM m(tiny_llama(), 4);
  m.set_training(false);
  Tensor ids = random_ids(2, 6, 37, 10);
  KVCache cache = m.new_cache(2, 12);
  Tensor logits = m.forward_cached(ids, cache, {6, 3});  // row 1 has a 3-token prompt + padding
  EXPECT_EQ(cache.length(1), 3);
  Tensor next = random_ids(2, 1, 37, 11);
  Tensor step = m.forward_cached(next, cache);
  Tensor ref1 = m.forward(concat({ids.narrow(0, 1, 1).narrow(1, 0, 3), next.narrow(0, 1, 1)}, 1));
  EXPECT_LT(max_abs_diff(step.narrow(0, 1, 1), ref1.narrow(1, 3, 1)), 2e-5);
  EXPECT_LT(max_abs_diff(logits.narrow(0, 1, 1).narrow(1, 2, 1), ref1.narrow(1, 2, 1)), 2e-5);
}
