// test_cuda_nn.cpp: the CUDA kernels of a transformer's own ops (attention forward and backward
// with every mask kind, embedding and its backward, RoPE) against their CPU twins, on the same
// inputs, checking that the device did not fall back to the host. Skips without a device.
#include <gtest/gtest.h>

#ifdef LOOM_WITH_CUDA

#include <string>
#include <vector>

#include "tests/runtime/cuda_test_util.h"

namespace loom::runtime {
namespace {

using namespace cuda_testing;

struct AttnCase {
  int64_t B, Tq, Tk, H, Hkv, D;
  bool causal;
  int64_t q_offset, k_offset;
  bool dense_mask, segments;
  std::string name() const {
    return "B" + std::to_string(B) + " Tq" + std::to_string(Tq) + " Tk" + std::to_string(Tk) + " H" +
           std::to_string(H) + "/" + std::to_string(Hkv) + " D" + std::to_string(D) + (causal ? " causal" : "") +
           (q_offset || k_offset ? " offsets" : "") + (dense_mask ? " mask" : "") + (segments ? " segments" : "");
  }
};

// Cases cover: several key tiles and a ragged last tile, GQA, D not a multiple of 32 and the
// largest D, ring-shard offsets, a dense mask with a fully masked query row, batched segments.
// f32 cases with D in {16, 32, 64, 128} and no mask or segments run the tiled kernels
// (attention_tiled.cu, 64 x 64 tiles): those below also cover several query and key tiles with
// ragged ends, Tk != Tq, every tiled head width, a 4:1 head group, and causal offsets under
// which the first 20 queries see no key; the last is GPT-2's T = 1024 at D = 64.
const AttnCase kAttnCases[] = {
    {2, 70, 70, 4, 2, 32, true, 0, 0, false, false},      {1, 33, 65, 2, 2, 80, false, 0, 0, false, false},
    {2, 40, 40, 4, 1, 64, true, 40, 0, false, false},     {2, 37, 29, 2, 1, 16, false, 0, 0, true, false},
    {3, 50, 50, 2, 2, 24, true, 0, 0, false, true},       {1, 20, 36, 2, 2, 256, true, 16, 0, false, false},
    {2, 130, 130, 8, 2, 64, true, 0, 0, false, false},    {1, 70, 200, 2, 2, 128, false, 0, 0, false, false},
    {2, 100, 100, 2, 1, 16, true, 0, 20, false, false},   {1, 50, 150, 4, 4, 32, true, 70, 0, false, false},
    {1, 129, 65, 2, 2, 128, true, 64, 0, false, false},   {1, 1024, 1024, 2, 2, 64, true, 0, 0, false, false},
};

// Inputs of one case: q, k, v, mask?, q_segments?, k_segments?, visibility? (CPU tensors).
std::vector<Tensor> attention_inputs(const AttnCase& c, DType dt) {
  std::vector<Tensor> in = {randn({c.B, c.Tq, c.H, c.D}, 1, dt), randn({c.B, c.Tk, c.Hkv, c.D}, 2, dt),
                            randn({c.B, c.Tk, c.Hkv, c.D}, 3, dt), Tensor(), Tensor(), Tensor(), Tensor()};
  if (c.dense_mask) {
    std::vector<double> m(size_t(c.B * c.Tq * c.Tk));
    for (size_t i = 0; i < m.size(); ++i) m[i] = double((i * 7 + i / 5) % 3 != 0);
    for (int64_t j = 0; j < c.Tk; ++j) m[size_t(1 * c.Tk + j)] = 0;  // query 1 of batch 0 sees nothing
    in[3] = values(m, {c.B, c.Tq, c.Tk}, DType::u8);
  }
  if (c.segments) {
    const int64_t S = 3;
    std::vector<double> qs(size_t(c.B * c.Tq)), ks(size_t(c.B * c.Tk)), vis(size_t(c.B * S * S));
    for (size_t i = 0; i < qs.size(); ++i) qs[i] = double((i / 7) % S);
    for (size_t i = 0; i < ks.size(); ++i) ks[i] = double((i / 5) % S);
    for (size_t i = 0; i < vis.size(); ++i) vis[i] = double(i % 4 == 0 || (i % S) == (i / S) % S);
    in[4] = values(qs, {c.B, c.Tq}, DType::i32);
    in[5] = values(ks, {c.B, c.Tk}, DType::i32);
    in[6] = values(vis, {c.B, S, S}, DType::u8);
  }
  return in;
}

OpAttrs attention_attrs(const AttnCase& c) {
  OpAttrs at;
  at.causal = c.causal;
  at.q_offset = c.q_offset;
  at.k_offset = c.k_offset;
  at.scale = 1.0 / std::sqrt(double(c.D));
  return at;
}

TEST(CudaAttention, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    // f32: sums over up to 70 keys of D-term dot products in another order than the CPU's tiles.
    const double rtol = dt == DType::f32 ? 2e-4 : 1e-11, atol = dt == DType::f32 ? 2e-5 : 1e-12;
    for (const AttnCase& c : kAttnCases) {
      const std::string what = c.name() + " " + dtype_name(dt);
      std::vector<Tensor> in = attention_inputs(c, dt);
      OpAttrs at = attention_attrs(c);
      Both f = run_both(Op::attention, in, {{Dims{c.B, c.Tq, c.H, c.D}, dt}, {Dims{c.B, c.H, c.Tq}, dt}}, at);
      expect_close(f.cuda[0], f.cpu[0], rtol, atol, "attention out " + what);
      expect_close(f.cuda[1], f.cpu[1], rtol, atol, "attention lse " + what);
      // Backward with gradients for both outputs (lse's gradient comes from ring-attention merges).
      Tensor gout = randn({c.B, c.Tq, c.H, c.D}, 4, dt), glse = randn({c.B, c.H, c.Tq}, 5, dt, 0.5);
      std::vector<Tensor> bin = {in[0], in[1], in[2], f.cpu[0], f.cpu[1], gout, glse, in[3], in[4], in[5], in[6]};
      std::vector<Tensor> bin_gpu = to_gpu(bin);
      bin_gpu[3] = f.cuda[0];
      bin_gpu[4] = f.cuda[1];
      Both b = run_both(Op::attention_backward, bin, bin_gpu,
                        {{Dims{c.B, c.Tq, c.H, c.D}, dt}, {Dims{c.B, c.Tk, c.Hkv, c.D}, dt},
                         {Dims{c.B, c.Tk, c.Hkv, c.D}, dt}},
                        at);
      expect_close(b.cuda[0], b.cpu[0], rtol, atol, "attention gq " + what);
      expect_close(b.cuda[1], b.cpu[1], rtol, atol, "attention gk " + what);
      expect_close(b.cuda[2], b.cpu[2], rtol, atol, "attention gv " + what);
    }
  }
}

// Through ops.h and autograd: attention(q, k, v) on the device gives the CPU's loss gradients,
// including the glse-free path (only out is used).
TEST(CudaAttention, AutogradThroughOpsMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 45, H = 4, Hkv = 2, D = 40;
  auto run = [&](Device dev, std::vector<Tensor>& grads) {
    std::vector<Tensor> p = {randn({B, T, H, D}, 11), randn({B, T, Hkv, D}, 12), randn({B, T, Hkv, D}, 13)};
    for (Tensor& t : p) {
      t = t.to(dev);
      t.set_requires_grad(true);
    }
    AttentionMask m;
    m.causal = true;
    Tensor w = randn({B, T, H, D}, 14).to(dev);
    Tensor loss = sum(mul(attention(p[0], p[1], p[2], m).out, w));
    loss.backward();
    for (Tensor& t : p) grads.push_back(t.grad().to(Device::cpu()));
    return loss.to(Device::cpu());
  };
  std::vector<Tensor> gc, gg;
  const int64_t before = host_fallback_count(Op::attention) + host_fallback_count(Op::attention_backward);
  Tensor lc = run(Device::cpu(), gc), lg = run(kGpu, gg);
  EXPECT_EQ(host_fallback_count(Op::attention) + host_fallback_count(Op::attention_backward), before);
  expect_close(lg, lc, 1e-5, 1e-5, "attention loss");
  for (size_t i = 0; i < gc.size(); ++i) expect_close(gg[i], gc[i], 2e-4, 2e-5, "attention grad " + std::to_string(i));
}

TEST(CudaAttention, BadSegmentIdThrowsTheCpuMessage) {
  SKIP_WITHOUT_CUDA();
  AttnCase c{1, 8, 8, 2, 2, 16, false, 0, 0, false, true};
  std::vector<Tensor> in = attention_inputs(c, DType::f32);
  in[4] = values(std::vector<double>(8, 7.0), {1, 8}, DType::i32);  // 7 is outside [0, 3)
  Tensor out = Tensor::empty({1, 8, 2, 16}, DType::f32, kGpu), lse = Tensor::empty({1, 2, 8}, DType::f32, kGpu);
  try {
    std::vector<Tensor> outs = {out, lse};
    dispatch(Op::attention, to_gpu(in), outs, attention_attrs(c));
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("q_segments holds segment id 7 outside [0, 3)"), std::string::npos)
        << e.what();
  }
}

TEST(CudaEmbedding, ForwardAndBackwardMatchCpuExactly) {
  SKIP_WITHOUT_CUDA();
  const int64_t V = 37, C = 52, N = 300;
  std::vector<double> ids(N);
  for (int64_t i = 0; i < N; ++i) ids[size_t(i)] = double((i * i + 3 * i) % 29);  // repeats; rows 29-36 unused
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor w = randn({V, C}, 21, dt), g = randn({N, C}, 22, dt), id = values(ids, {N}, DType::i64);
    Both f = run_both(Op::embedding, {w, id}, {{Dims{N, C}, dt}});
    expect_equal(f.cuda[0], f.cpu[0], std::string("embedding ") + dtype_name(dt));
    // The same summation order per row as the CPU: bit-identical.
    Both b = run_both(Op::embedding_backward, {id, g}, {{Dims{V, C}, dt}});
    expect_equal(b.cuda[0], b.cpu[0], std::string("embedding_backward ") + dtype_name(dt));
  }
  Tensor w = gpu(randn({V, C}, 23)), out = Tensor::empty({2, C}, DType::f32, kGpu);
  try {
    dispatch(Op::embedding, {w, gpu(values({3, 37}, {2}, DType::i64))}, {out});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("token id 37 at position 1 is outside the vocabulary [0, 37)"),
              std::string::npos)
        << e.what();
  }
}

TEST(CudaRope, ForwardAndInverseMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t D : {64, 33}) {
      const int64_t B = 2, T = 9, H = 3;
      std::vector<double> pos(size_t(B * T));
      for (size_t i = 0; i < pos.size(); ++i) pos[i] = double((i * 37) % 200);  // jumps and repeats
      Tensor x = randn({B, T, H, D}, 31, dt), p = values(pos, {B, T}, DType::i64);
      for (bool inverse : {false, true}) {
        OpAttrs at;
        at.alpha = 10000.0;
        at.inverse = inverse;
        Both r = run_both(Op::rope, {x, p}, {{Dims{B, T, H, D}, dt}}, at);
        // cos/sin of the same double angle; f32 differs only by the device's pow/sincos ulps.
        double rtol = dt == DType::f32 ? 1e-6 : 1e-13, atol = dt == DType::f32 ? 1e-6 : 1e-13;
        expect_close(r.cuda[0], r.cpu[0], rtol, atol,
                     std::string("rope D") + std::to_string(D) + (inverse ? " inverse " : " ") + dtype_name(dt));
      }
    }
  }
}

}  // namespace
}  // namespace loom::runtime

#endif  // LOOM_WITH_CUDA
