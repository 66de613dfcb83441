// test_golden.cpp: Loom ops against golden PyTorch results (tools/make_golden.py, files in
// tests/data/golden). A Llama decoder block is rebuilt from Loom ops with the saved weights and
// position ids; its output, loss, a few activations and the gradient of the input and of every
// weight must match, as must cross-entropy's loss and logits gradient (ignore_index, label
// smoothing 0 and 0.1), and every case of the op table (op_cases.h). Each tensor prints OK /
// NOT OK with its max difference (llm.c style); the error is max|a - b| / max|b| per tensor:
// below 1e-5 in f32, 1e-10 in f64.
#include <gtest/gtest.h>

#include "tests/golden_compare.h"
#include "tests/runtime/op_cases.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/autograd.h"
#include "runtime/ops.h"
#include "runtime/safetensors.h"

namespace loom::runtime {
namespace {

SafetensorsFile load_golden(const std::string& name) {
  return read_safetensors(std::string(LOOM_TEST_DATA_DIR) + "/golden/" + name);
}

int64_t meta_int(const SafetensorsFile& f, const std::string& key) { return std::stoll(f.metadata.at(key)); }
double meta_double(const SafetensorsFile& f, const std::string& key) { return std::stod(f.metadata.at(key)); }

using loom::testing::Comparer;

const char* kWeights[] = {"input_layernorm.weight",  "self_attn.q_proj.weight",         "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight", "self_attn.o_proj.weight",         "post_attention_layernorm.weight",
                          "mlp.gate_proj.weight",    "mlp.up_proj.weight",              "mlp.down_proj.weight"};

// The Hugging Face LlamaDecoderLayer from Loom ops, forward and backward, against the golden file.
void check_llama_block(const std::string& file, DType dt, double tol) {
  SafetensorsFile g = load_golden(file);
  const int64_t B = meta_int(g, "B"), T = meta_int(g, "T"), C = meta_int(g, "C");
  const int64_t H = meta_int(g, "H"), Hkv = meta_int(g, "Hkv"), D = meta_int(g, "D");
  const double eps = meta_double(g, "rms_norm_eps"), theta = meta_double(g, "rope_theta");
  std::printf("%s (torch %s): B=%lld T=%lld C=%lld H=%lld Hkv=%lld D=%lld\n", file.c_str(),
              g.metadata.at("torch_version").c_str(), (long long)B, (long long)T, (long long)C, (long long)H,
              (long long)Hkv, (long long)D);

  auto leaf = [&](const std::string& name) {
    Tensor t = g.at(name).clone();
    EXPECT_EQ(t.dtype(), dt) << name;
    t.set_requires_grad(true);
    return t;
  };
  Tensor x = leaf("x");                       // [B, T, C]
  Tensor pos = g.at("position_ids");          // [B, T] i64
  Tensor R = g.at("R");                       // [B, T, C]
  Tensor w_in = leaf("input_layernorm.weight");             // [C]
  Tensor wq = leaf("self_attn.q_proj.weight");              // [H*D, C]
  Tensor wk = leaf("self_attn.k_proj.weight");              // [Hkv*D, C]
  Tensor wv = leaf("self_attn.v_proj.weight");              // [Hkv*D, C]
  Tensor wo = leaf("self_attn.o_proj.weight");              // [C, H*D]
  Tensor w_post = leaf("post_attention_layernorm.weight");  // [C]
  Tensor wg = leaf("mlp.gate_proj.weight");                 // [F, C]
  Tensor wu = leaf("mlp.up_proj.weight");                   // [F, C]
  Tensor wd = leaf("mlp.down_proj.weight");                 // [C, F]
  ASSERT_EQ(pos.dtype(), DType::i64);

  // Attention half: h = x + o_proj(attn(rope(q), rope(k), v)), causal by token index.
  Tensor xn = rms_norm(x, w_in, eps);
  Tensor q = rope(linear(xn, wq).view({B, T, H, D}), pos, theta);    // [B, T, H, D]
  Tensor k = rope(linear(xn, wk).view({B, T, Hkv, D}), pos, theta);  // [B, T, Hkv, D]
  Tensor v = linear(xn, wv).view({B, T, Hkv, D});                    // [B, T, Hkv, D]
  AttentionMask mask;
  mask.causal = true;
  Tensor attn = attention(q, k, v, mask).out;  // [B, T, H, D]
  Tensor h = x + linear(attn.reshape({B, T, H * D}), wo);
  // MLP half: out = h + down(silu(gate(hn)) * up(hn)).
  Tensor hn = rms_norm(h, w_post, eps);
  Tensor out = h + linear(silu(linear(hn, wg)) * linear(hn, wu), wd);  // [B, T, C]
  Tensor loss = sum(out * R);
  loss.backward();

  Comparer cmp(tol);
  cmp.check("act.q_rope", q, g.at("act.q_rope"));
  cmp.check("act.k_rope", k, g.at("act.k_rope"));
  cmp.check("act.attn", attn, g.at("act.attn"));
  cmp.check("act.h", h, g.at("act.h"));
  cmp.check("out", out, g.at("out"));
  cmp.check("loss", loss, g.at("loss"));
  cmp.check("grad.x", x.grad(), g.at("grad.x"));
  const Tensor* params[] = {&w_in, &wq, &wk, &wv, &wo, &w_post, &wg, &wu, &wd};
  for (size_t i = 0; i < std::size(kWeights); ++i)
    cmp.check(std::string("grad.") + kWeights[i], params[i]->grad(), g.at(std::string("grad.") + kWeights[i]));
  cmp.verdict(file);
}

void check_cross_entropy(const std::string& file, DType dt, double tol) {
  SafetensorsFile g = load_golden(file);
  const Tensor& logits = g.at("logits");  // [N, V]
  const Tensor& target = g.at("target");  // [N] i64, some ignore_index
  ASSERT_EQ(logits.dtype(), dt);
  std::printf("%s (torch %s): logits %s\n", file.c_str(), g.metadata.at("torch_version").c_str(),
              logits.shape().str().c_str());
  Comparer cmp(tol);
  for (const char* s : {"0.0", "0.1"}) {
    Tensor lg = logits.clone();
    lg.set_requires_grad(true);
    CrossEntropyOptions opt;
    opt.ignore_index = meta_int(g, "ignore_index");
    opt.label_smoothing = std::stod(s);
    opt.reduction = Reduction::mean;
    Tensor loss = cross_entropy(lg, target, opt);
    loss.backward();
    cmp.check(std::string("loss.ls") + s, loss, g.at(std::string("loss.ls") + s));
    cmp.check(std::string("grad.logits.ls") + s, lg.grad(), g.at(std::string("grad.logits.ls") + s));
  }
  cmp.verdict(file);
}

// Every case of op_cases.h (the finite-difference test's op table) against PyTorch: the file
// holds each case's inputs, R, output, and the gradient of sum(out * R) for each input. The f32
// file runs the vectorised kernels (the f64 path is scalar). dropout draws its mask from Loom's
// own Philox stream, which PyTorch does not have: its own tests check it.
void check_ops(const std::string& file, DType dt, double tol) {
  SafetensorsFile g = load_golden(file);
  std::printf("%s (torch %s)\n", file.c_str(), g.metadata.at("torch_version").c_str());
  std::set<std::string> in_file;
  {
    std::stringstream list(g.metadata.at("cases"));
    for (std::string name; std::getline(list, name, ',');) in_file.insert(name);
  }
  Comparer cmp(tol);
  size_t checked = 0;
  for (const loom::testing::OpCase& c : loom::testing::op_cases()) {
    if (c.name == "dropout") {
      std::printf("SKIP   %-52s Loom's Philox mask has no PyTorch counterpart\n", c.name.c_str());
      continue;
    }
    ASSERT_TRUE(in_file.count(c.name)) << c.name << " has no golden values: rerun tools/make_golden.py";
    std::vector<Tensor> inputs;
    for (int i = 0; g.contains(c.name + ".in" + std::to_string(i)); ++i) {
      Tensor t = g.at(c.name + ".in" + std::to_string(i)).clone();
      EXPECT_EQ(t.dtype(), dt) << c.name;
      t.set_requires_grad(true);
      inputs.push_back(t);
    }
    Tensor out = c.f(inputs);
    sum(mul(out, g.at(c.name + ".R"))).backward();
    cmp.check(c.name + ".out", out, g.at(c.name + ".out"));
    for (size_t i = 0; i < inputs.size(); ++i)
      cmp.check(c.name + ".grad" + std::to_string(i), inputs[i].grad(), g.at(c.name + ".grad" + std::to_string(i)));
    ++checked;
  }
  EXPECT_EQ(checked, in_file.size()) << file << " holds cases the op table no longer has";
  cmp.verdict(file);
}

TEST(Golden, LlamaBlockF32) { check_llama_block("llama_block_f32.safetensors", DType::f32, 1e-5); }
TEST(Golden, LlamaBlockF64) { check_llama_block("llama_block_f64.safetensors", DType::f64, 1e-10); }
TEST(Golden, CrossEntropyF32) { check_cross_entropy("cross_entropy_f32.safetensors", DType::f32, 1e-5); }
TEST(Golden, CrossEntropyF64) { check_cross_entropy("cross_entropy_f64.safetensors", DType::f64, 1e-10); }
TEST(Golden, OpsF32) { check_ops("ops_f32.safetensors", DType::f32, 1e-5); }
TEST(Golden, OpsF64) { check_ops("ops_f64.safetensors", DType::f64, 1e-10); }

}  // namespace
}  // namespace loom::runtime
