// bench_cuda.cpp: the CUDA backend's kernels on one GPU. For each op prints the time per call,
// the bytes it must move (or FLOPs for matmul) as a rate, and that rate beside the device's
// measured peaks: a device-to-device copy's bandwidth and the best f32 GEMM rate seen.
// `bench/compare_torch_cuda.py` runs this with --json and times the same ops in PyTorch.
// Run: build/bench/bench_cuda [--json FILE] [--device N] [--only TEXT]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"

using namespace loom::runtime;

namespace {

void sync() {
  if (cudaDeviceSynchronize() != cudaSuccess) {
    std::fprintf(stderr, "bench_cuda: cudaDeviceSynchronize failed\n");
    std::exit(1);
  }
}

// Seconds per call: `reps` calls enqueued back to back, one sync at the end, best of 5 rounds
// after a warm-up round. Launch overhead is included, as it is for a framework's eager ops.
// `host` gets the enqueue time per call of the best round (the host side's share: when it is
// close to the total, the op is launch-bound, not GPU-bound).
double seconds_per_call(int reps, const std::function<void()>& fn, double* host = nullptr) {
  for (int i = 0; i < 3; ++i) fn();
  sync();
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) fn();
    auto t1 = std::chrono::steady_clock::now();
    sync();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    if (t < best) {
      best = t;
      if (host) *host = std::chrono::duration<double>(t1 - t0).count() / reps;
    }
  }
  return best;
}

struct Row {
  std::string name;
  double seconds, host_seconds, amount;  // amount: bytes moved, or FLOPs when gflops
  bool gflops;
};

}  // namespace

int main(int argc, char** argv) {
  const char* json_path = nullptr;
  std::string only;  // time only the rows whose name holds this text
  int device = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) {
      json_path = argv[++i];
    } else if (!std::strcmp(argv[i], "--device") && i + 1 < argc) {
      device = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::printf("usage: bench_cuda [--json FILE] [--device N] [--only TEXT]\n"
                  "  --only TEXT  time only the rows whose name contains TEXT (the peaks too only if they match)\n");
      return std::strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  if (cuda::device_count() <= device) {
    std::fprintf(stderr, "bench_cuda: no CUDA device %d (%s)\n", device, cuda::unavailable_reason().c_str());
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, device);
  const Device dev = Device::cuda(device);
  NoGradGuard no_grad;
  std::vector<Row> rows;
  auto on = [&](const Tensor& t) { return to_device(t, dev); };
  auto time_row = [&](const std::string& name, int reps, double amount, bool gflops, const std::function<void()>& fn) {
    if (name.find(only) == std::string::npos) return;
    Row r{name, 0, 0, amount, gflops};
    r.seconds = seconds_per_call(reps, fn, &r.host_seconds);
    rows.push_back(r);
  };

  // Peaks: a large device-to-device copy (bytes read + written) and square f32 GEMMs.
  {
    const int64_t n = int64_t(1) << 26;  // 256 MiB
    Tensor big = on(Tensor::randn({n}, 1));
    time_row("copy 256 MiB", 20, 2.0 * 4 * double(n), false, [&] { clone(big); });
  }
  for (int n : {2048, 4096, 8192}) {
    Tensor a = on(Tensor::randn({n, n}, 2)), b = on(Tensor::randn({n, n}, 3));
    time_row("matmul " + std::to_string(n) + "^3", n >= 8192 ? 3 : 10, 2.0 * n * double(n) * n, true,
             [&] { matmul(a, b); });
  }
  // A transformer layer's shapes: [B*T, C] activations, a [C, 4C] weight, a 32k vocabulary.
  const int64_t R = 8192, C = 2048, V = 32000, RV = 2048;
  Tensor x = on(Tensor::randn({R, C}, 4)), y = on(Tensor::randn({R, C}, 5));
  Tensor w = on(Tensor::randn({C}, 6)), bias = on(Tensor::randn({C}, 7));
  Tensor wmlp = on(Tensor::randn({4 * C, C}, 8));
  const double act = 4.0 * R * C;  // bytes of one [R, C] f32 tensor
  time_row("linear [8192,2048]x[8192,2048]^T", 5, 2.0 * R * C * 4 * C, true, [&] { linear(x, wmlp); });
  time_row("add [8192,2048]", 50, 3 * act, false, [&] { add(x, y); });
  time_row("add bias [8192,2048]+[2048]", 50, 2 * act, false, [&] { add(x, bias); });
  time_row("mul_scalar [8192,2048]", 50, 2 * act, false, [&] { mul_scalar(x, 0.5); });
  time_row("gelu_tanh [8192,2048]", 50, 2 * act, false, [&] { gelu(x, true); });
  time_row("silu [8192,2048]", 50, 2 * act, false, [&] { silu(x); });
  time_row("softmax [8192,2048]", 50, 2 * act, false, [&] { softmax(x, -1); });
  time_row("rms_norm [8192,2048]", 50, 2 * act, false, [&] { rms_norm(x, w, 1e-6); });
  time_row("layer_norm [8192,2048]", 50, 2 * act, false, [&] { layer_norm(x, w, bias, 1e-5); });
  time_row("swiglu [8192,2048]", 50, 3 * act, false, [&] { swiglu(x, y); });
  time_row("sum dim 0 [8192,2048]", 50, act, false, [&] { sum(x, {0}); });
  time_row("sum dim 1 [8192,2048]", 50, act, false, [&] { sum(x, {1}); });
  {
    // A small model's activation ([B*T, C] of llama-small on the CPU benchmark): launch-bound.
    Tensor xs = on(Tensor::randn({2048, 256}, 12)), ys = on(Tensor::randn({2048, 256}, 13));
    time_row("add [2048,256] (launch-bound)", 200, 3.0 * 4 * 2048 * 256, false, [&] { add(xs, ys); });
  }
  {
    Tensor logits = on(Tensor::randn({RV, V}, 9));
    std::vector<int64_t> t(static_cast<size_t>(RV));
    for (int64_t i = 0; i < RV; ++i) t[size_t(i)] = (i * 7919) % V;
    Tensor target = on(Tensor::from_vector(t));
    // Includes the target check's 8-byte read-back (one device sync per call).
    time_row("cross_entropy [2048,32000]", 20, 4.0 * RV * V, false, [&] { cross_entropy(logits, target); });
  }
  // Attention rows: the forward alone, and forward + backward through autograd. FLOPs: 4 B H Tq Tk D
  // for QK^T and PV, halved by causality; the backward counted as 2.5x the forward (as
  // bench_kernels does).
  auto time_attention = [&](const std::string& what, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& go, const AttentionMask& mask, int reps_fwd, int reps_bwd) {
    const double flops = 4.0 * q.size(0) * q.size(2) * double(q.size(1)) * k.size(1) * q.size(3) / 2;
    time_row("attention fwd " + what, reps_fwd, flops, true, [&] { attention(q, k, v, mask); });
    std::vector<Tensor> p = {q.clone(), k.clone(), v.clone()};
    for (Tensor& t : p) t.set_requires_grad(true);
    GradModeGuard grad(true);
    time_row("attention fwd+bwd " + what, reps_bwd, 3.5 * flops, true, [&] {
      attention(p[0], p[1], p[2], mask).out.backward(go);
      for (Tensor& t : p) t.zero_grad();
    });
  };
  {
    // Causal attention at GPT-2 124M's shape with T = 1024.
    const int64_t B = 8, T = 1024, H = 12, D = 64;
    Tensor q = on(Tensor::randn({B, T, H, D}, 16)), k = on(Tensor::randn({B, T, H, D}, 17));
    Tensor v = on(Tensor::randn({B, T, H, D}, 18)), go = on(Tensor::randn({B, T, H, D}, 19));
    AttentionMask mask;
    mask.causal = true;
    time_attention("B8 T1024 H12 D64 causal", q, k, v, go, mask, 10, 5);
    // The same calls through the general kernels (attention.cu), which a dense mask selects: here
    // all ones, so the work is the same and the rows compare the two paths (Loom only).
    AttentionMask dense = mask;
    dense.mask = on(Tensor::ones({B, T, T}, DType::u8));
    time_attention("(general kernels)", q, k, v, go, dense, 3, 2);
  }
  {
    // A Llama-style head group: 16 query heads over 4 kv heads of width 128.
    const int64_t B = 4, T = 1024, H = 16, Hkv = 4, D = 128;
    Tensor q = on(Tensor::randn({B, T, H, D}, 20)), k = on(Tensor::randn({B, T, Hkv, D}, 21));
    Tensor v = on(Tensor::randn({B, T, Hkv, D}, 22)), go = on(Tensor::randn({B, T, H, D}, 23));
    AttentionMask mask;
    mask.causal = true;
    time_attention("B4 T1024 H16/4 D128 causal", q, k, v, go, mask, 10, 5);
  }
  {
    // One AdamW step over 64M parameters: reads grad, param, exp_avg, exp_avg_sq; writes three.
    const int64_t n = int64_t(1) << 26;
    Tensor p = on(Tensor::randn({n}, 14)), g = on(Tensor::randn({n}, 15));
    Tensor m = on(Tensor::zeros({n})), v = on(Tensor::zeros({n}));
    OpAttrs at;
    at.alpha = 1e-4, at.beta = 0.9, at.p = 0.95, at.eps = 1e-8, at.scale = 0.1, at.k = 1;
    time_row("adamw step 64M params", 10, 7.0 * 4 * double(n), false, [&] {
      dispatch(Op::adamw_step, {g}, {p, m, v}, at);
      ++at.k;
    });
  }
  {
    // Forward + backward of RMSNorm through autograd (the gradients of x and the weight).
    Tensor xr = x.clone(), wr = w.clone(), g = on(Tensor::randn({R, C}, 11));
    xr.set_requires_grad(true);
    wr.set_requires_grad(true);
    GradModeGuard grad(true);
    time_row("rms_norm fwd+bwd [8192,2048]", 20, 5 * act, false, [&] {
      Tensor out = rms_norm(xr, wr, 1e-6);
      out.backward(g);
      xr.zero_grad();
      wr.zero_grad();
    });
  }

  // The peaks (NaN when --only left their rows out).
  double copy_bw = std::nan(""), gemm_peak = std::nan("");
  for (const Row& r : rows) {
    const double rate = r.amount / r.seconds / 1e9;
    if (r.name == "copy 256 MiB") copy_bw = rate;
    if (r.gflops && r.name.rfind("matmul", 0) == 0) gemm_peak = std::isnan(gemm_peak) ? rate : std::max(gemm_peak, rate);
  }
  std::printf("Loom CUDA kernels on %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
  for (const Row& r : rows) {
    double rate = r.amount / r.seconds / 1e9;
    std::printf("%-36s %9.3f ms (host %7.3f ms) %10.1f %s (%5.1f%% of %s)\n", r.name.c_str(), r.seconds * 1e3,
                r.host_seconds * 1e3, rate, r.gflops ? "GFLOP/s" : "GB/s   ",
                100 * rate / (r.gflops ? gemm_peak : copy_bw), r.gflops ? "GEMM peak" : "copy");
  }
  if (json_path) {
    FILE* f = std::fopen(json_path, "w");
    if (!f) {
      std::fprintf(stderr, "bench_cuda: cannot write %s\n", json_path);
      return 1;
    }
    std::fprintf(f, "{\"device\": \"%s\", \"rows\": [\n", prop.name);
    for (size_t i = 0; i < rows.size(); ++i)
      std::fprintf(f,
                   "  {\"name\": \"%s\", \"seconds\": %.9g, \"host_seconds\": %.9g, \"amount\": %.9g, "
                   "\"gflops\": %s}%s\n",
                   rows[i].name.c_str(), rows[i].seconds, rows[i].host_seconds, rows[i].amount,
                   rows[i].gflops ? "true" : "false", i + 1 < rows.size() ? "," : "");
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
}
