// test_cuda_model.cpp: a TransformerLM training step on the GPU equals the same step on the CPU:
// the loss, every parameter's gradient, and the parameters after SGD steps, for the Llama
// variant (GQA, RMSNorm, RoPE, SwiGLU, untied head) and the GPT-2 one (LayerNorm, learned
// positions, biases, GELU, tied head), with no op falling back to the host. Skips without a
// device.
#include <gtest/gtest.h>

#ifdef LOOM_WITH_CUDA

#include <string>
#include <vector>

#include "models/transformer.h"
#include "optim/optimizer.h"
#include "runtime/kernels.h"
#include "runtime/rng.h"
#include "tests/runtime/cuda_test_util.h"

namespace loom::runtime {
namespace {

using namespace cuda_testing;
using models::ModelConfig;
using models::TransformerLM;

int64_t total_host_fallbacks() {
  int64_t n = 0;
  for (int i = 0; i < kNumOps; ++i) n += host_fallback_count(Op(i));
  return n;
}

Tensor token_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  std::vector<int64_t> v(size_t(B * T));
  for (size_t i = 0; i < v.size(); ++i) v[i] = int64_t(mix64(seed + i) % uint64_t(V));
  return Tensor::from_vector(v, {B, T});
}

std::vector<optim::ParamRef> refs(TransformerLM& m) {
  std::vector<optim::ParamRef> r;
  for (auto& p : m.parameters()) r.push_back({p.name, p.tensor, !p.no_decay});
  return r;
}

// Two steps of `cfg` on the CPU and on the GPU from the same initial model and batches. SGD with
// momentum is linear in the gradient, so the parameters stay as close as the gradients are
// (AdamW's first step moves every weight by about lr whatever its gradient's size, so a
// gradient that is 1e-9 on one device and -1e-9 on the other would differ by 2 lr; its
// kernel is compared with the CPU's in test_cuda.cpp).
void expect_gpu_step_matches_cpu(const ModelConfig& cfg, const std::string& what, int64_t B = 3, int64_t T = 24) {
  TransformerLM cpu(cfg, 7), gpu_model(cfg, 7);
  gpu_model.to(kGpu);
  optim::SGD opt_cpu(refs(cpu), {}), opt_gpu(refs(gpu_model), {});
  const int64_t fallbacks = total_host_fallbacks();
  for (int step = 0; step < 2; ++step) {
    Tensor ids = token_ids(B, T, cfg.vocab_size, 100 + uint64_t(step));
    Tensor targets = token_ids(B, T, cfg.vocab_size, 200 + uint64_t(step));
    Tensor lc = mul_scalar(cpu.stage_loss_sum(ids, targets), 1.0 / double(B * T));
    Tensor lg = mul_scalar(gpu_model.stage_loss_sum(gpu(ids), gpu(targets)), 1.0 / double(B * T));
    lc.backward();
    lg.backward();
    const std::string at = what + " step " + std::to_string(step);
    expect_close(lg.to(Device::cpu()), lc, 1e-5, 1e-6, at + " loss");
    for (size_t i = 0; i < cpu.parameters().size(); ++i) {
      const auto& pc = cpu.parameters()[i];
      const auto& pg = gpu_model.parameters()[i];
      ASSERT_EQ(pc.name, pg.name);
      ASSERT_TRUE(pg.tensor.device() == kGpu) << pg.name;
      expect_close(pg.tensor.grad().to(Device::cpu()), pc.tensor.grad(), 2e-3, 1e-6, at + " grad " + pc.name);
    }
    opt_cpu.step(0.1);
    opt_gpu.step(0.1);
    opt_cpu.zero_grad();
    opt_gpu.zero_grad();
  }
  EXPECT_EQ(total_host_fallbacks(), fallbacks) << what << ": an op of the step ran through the host";
  for (size_t i = 0; i < cpu.parameters().size(); ++i)
    expect_close(gpu_model.parameters()[i].tensor.to(Device::cpu()), cpu.parameters()[i].tensor, 1e-4, 1e-6,
                 what + " after two SGD steps: " + cpu.parameters()[i].name);
}

TEST(CudaModel, LlamaStepMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  ModelConfig c = ModelConfig::llama(61, 64, 2, 4, 2);
  c.ffn_hidden = 96;
  c.max_seq_len = 32;
  expect_gpu_step_matches_cpu(c, "llama");
}

TEST(CudaModel, Gpt2StepMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  ModelConfig c = ModelConfig::gpt2(61, 64, 2, 4);
  c.max_seq_len = 32;
  expect_gpu_step_matches_cpu(c, "gpt2");
}

// A long sequence: attention over 1024 positions in many query and key tiles, and the learned
// positions' gradient over all of them.
TEST(CudaModel, Gpt2LongSequenceStepMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  ModelConfig c = ModelConfig::gpt2(61, 64, 2, 1);  // one head of width 64
  c.max_seq_len = 1024;
  expect_gpu_step_matches_cpu(c, "gpt2 T 1024", 2, 1024);
}

}  // namespace
}  // namespace loom::runtime

#endif  // LOOM_WITH_CUDA
