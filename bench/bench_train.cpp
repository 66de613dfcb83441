// bench_train.cpp: end-to-end training-step speed of one TransformerLM on the CPU (or a GPU with
// --device cuda). Times each full step (forward, mean cross-entropy, backward, AdamW step, zero
// grads) on random token batches and prints the median step time beside tokens/s, achieved
// GFLOP/s, the device's GEMM peak (the CPU's at the same thread count, or the GPU's f32 cuBLAS
// rate) and the resulting MFU, and the peak resident memory. bench/compare_torch.py runs it
// alternately with the same model in PyTorch (torch_model.py, which takes --device too).
//
//   bench_train --preset llama|gpt2 --vocab V --d D --layers L --heads H [--kv-heads K]
//               --seq T --batch B --steps N --warmup W --threads n [--seed S] [--device D]
//               [--matmul-precision f32|bf16] [--save-init FILE] [--json]
//
// --save-init FILE writes the initial parameters and the four batches for torch_model.py
// --load-init (bench/compare_trajectory.py: both frameworks from the same start). --json prints
// one line with the timings and every step's loss.
//
// --matmul-precision bf16 computes the f32 products in bf16 on AMX (f32 sums and master
// weights; cpu/gemm.h); the GEMM peak is then the bf16 path's square-512 rate.
//
// FLOPs per token are ModelConfig::train_flops_per_token(T): 6 N (N = non-embedding weights
// plus the LM head, PaLM appendix B) + 6 L T C (causal QK^T and PV, forward and backward).
// The same number is used for PyTorch: both run the same model, so FLOP/s compare like for like.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/transformer.h"
#include "optim/optimizer.h"
#include "runtime/cpu/gemm.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"
#include "runtime/safetensors.h"

using namespace loom;
using runtime::Tensor;

namespace {

struct Args {
  std::string preset = "llama";
  std::string matmul_precision = "f32";
  int64_t vocab = 4096, d = 128, layers = 4, heads = 4, kv_heads = 0, seq = 128, batch = 16;
  int steps = 10, warmup = 3, threads = 1;
  uint64_t seed = 1234;
  bool json = false;
  std::string save_init;  // write the initial parameters and the batches here (safetensors)
  runtime::Device device = runtime::Device::cpu();
};

[[noreturn]] void usage(const char* why, int code = 2) {
  std::fprintf(code ? stderr : stdout,
               "bench_train: %s\nusage: bench_train --preset llama|gpt2 --vocab V --d D --layers L --heads H "
               "[--kv-heads K] --seq T --batch B --steps N --warmup W --threads n [--seed S] [--device cpu|cuda[:N]] "
               "[--matmul-precision f32|bf16] [--save-init FILE] [--json]\n"
               "  --save-init FILE  also write the initial parameters (Hugging Face names) and the four batches\n"
               "                    (data.x0..3, data.y0..3) to FILE, for torch_model.py --load-init\n",
               why);
  std::exit(code);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--json") {
      a.json = true;
      continue;
    }
    if (k == "--help" || k == "-h") usage("one TransformerLM training step, timed", 0);
    if (i + 1 >= argc) usage(("missing value after " + k).c_str());
    const char* v = argv[++i];
    if (k == "--preset") a.preset = v;
    else if (k == "--vocab") a.vocab = std::atoll(v);
    else if (k == "--d") a.d = std::atoll(v);
    else if (k == "--layers") a.layers = std::atoll(v);
    else if (k == "--heads") a.heads = std::atoll(v);
    else if (k == "--kv-heads") a.kv_heads = std::atoll(v);
    else if (k == "--seq") a.seq = std::atoll(v);
    else if (k == "--batch") a.batch = std::atoll(v);
    else if (k == "--steps") a.steps = std::atoi(v);
    else if (k == "--warmup") a.warmup = std::atoi(v);
    else if (k == "--threads") a.threads = std::atoi(v);
    else if (k == "--seed") a.seed = std::strtoull(v, nullptr, 10);
    else if (k == "--device") a.device = runtime::Device::parse(v);
    else if (k == "--matmul-precision") a.matmul_precision = v;
    else if (k == "--save-init") a.save_init = v;
    else usage(("unknown option " + k).c_str());
  }
  if (a.preset != "llama" && a.preset != "gpt2") usage("--preset must be llama or gpt2");
  if (a.steps < 1 || a.warmup < 0 || a.threads < 1) usage("--steps >= 1, --warmup >= 0, --threads >= 1");
  if (a.kv_heads == 0) a.kv_heads = a.heads;
  if (a.preset == "gpt2" && a.kv_heads != a.heads) usage("the gpt2 preset has no grouped-query attention");
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Waits for the device's queued work: reading one element back waits for everything before it
// (every Loom kernel runs on the device's one stream).
void wait_for(runtime::Device, const models::TransformerLM& model) {
  model.parameters().back().tensor.detach().view({-1}).narrow(0, 0, 1).item();
}

// The GPU's f32 GEMM rate: the best of a few 4096^3 products (cuBLAS, full FP32).
double device_gemm_peak_flops(runtime::Device dev) {
  const int64_t n = 4096;
  runtime::NoGradGuard no_grad;
  Tensor x = Tensor::randn({n, n}, 1).to(dev), y = Tensor::randn({n, n}, 2).to(dev);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    Tensor z = runtime::matmul(x, y);
    z.view({-1}).narrow(0, 0, 1).item();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * double(n) * n * n / s);
  }
  return best;
}

const char* env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v ? v : dflt;
}

// The whole program: parse, build, train, report (main turns its exceptions into a message).
int run(int argc, char** argv) {
  Args a = parse(argc, argv);
  omp_set_num_threads(a.threads);
  try {
    runtime::cpu::set_matmul_precision(runtime::cpu::matmul_precision_from_name(a.matmul_precision));
  } catch (const std::exception& e) {
    usage(e.what());
  }
  models::ModelConfig cfg = a.preset == "llama" ? models::ModelConfig::llama(a.vocab, a.d, a.layers, a.heads, a.kv_heads)
                                                : models::ModelConfig::gpt2(a.vocab, a.d, a.layers, a.heads);
  cfg.max_seq_len = a.seq;  // learned positions cover exactly T (PyTorch's model does the same)
  const int64_t B = a.batch, T = a.seq, V = a.vocab;

  // The GEMM peak first, before the model's memory is touched: the MFU denominator.
  const bool on_cpu = a.device.is_cpu();
  double gemm_peak = on_cpu ? runtime::cpu::measured_gemm_peak_flops(0.3) : device_gemm_peak_flops(a.device);

  models::TransformerLM model(cfg, a.seed);
  model.to(a.device);
  // One parameter group, every tensor decayed (as torch.optim.AdamW(model.parameters())).
  std::vector<optim::ParamRef> refs;
  for (auto& p : model.parameters()) refs.push_back({p.name, p.tensor, true});
  optim::AdamWOptions ao;
  ao.beta1 = 0.9, ao.beta2 = 0.95, ao.eps = 1e-8, ao.weight_decay = 0.1;
  optim::AdamW opt(refs, ao);
  const double lr = 1e-4;

  // Four fixed random batches [B, T+1] cycled through: inputs are [:, :T], targets [:, 1:].
  std::mt19937_64 rng(a.seed);
  std::uniform_int_distribution<int64_t> tok(0, V - 1);
  std::vector<Tensor> inputs, targets;
  for (int i = 0; i < 4; ++i) {
    std::vector<int64_t> x(size_t(B * T)), y(size_t(B * T));
    for (int64_t b = 0; b < B; ++b) {
      int64_t prev = tok(rng);
      for (int64_t t = 0; t < T; ++t) {
        int64_t next = tok(rng);
        x[size_t(b * T + t)] = prev;
        y[size_t(b * T + t)] = next;
        prev = next;
      }
    }
    inputs.push_back(Tensor::from_vector(x, {B, T}).to(a.device));
    targets.push_back(Tensor::from_vector(y, {B * T}).to(a.device));
  }
  if (!a.save_init.empty()) {  // the same start for PyTorch (bench/compare_trajectory.py)
    std::vector<std::pair<std::string, Tensor>> out;
    for (auto& p : model.parameters()) out.push_back({p.name, p.tensor.to(runtime::Device::cpu())});
    for (size_t i = 0; i < inputs.size(); ++i) {
      out.push_back({"data.x" + std::to_string(i), inputs[i].to(runtime::Device::cpu())});
      out.push_back({"data.y" + std::to_string(i), targets[i].to(runtime::Device::cpu())});
    }
    runtime::write_safetensors(a.save_init, out);
  }

  std::vector<double> step_s, losses;
  for (int s = 0; s < a.warmup + a.steps; ++s) {
    if (s == a.warmup) runtime::reset_op_profile();  // LOOM_PROFILE covers the timed steps only
    auto t0 = std::chrono::steady_clock::now();
    // The trainer's loss: the LM head fused with the cross-entropy, mean over the B*T targets.
    Tensor loss = runtime::mul_scalar(model.stage_loss_sum(inputs[size_t(s % 4)], targets[size_t(s % 4)]), 1.0 / double(B * T));
    double l = loss.item();
    loss.backward();
    opt.step(lr);
    opt.zero_grad();
    if (!on_cpu) wait_for(a.device, model);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!std::isfinite(l)) throw std::runtime_error("loss is not finite at step " + std::to_string(s));
    losses.push_back(l);
    if (s >= a.warmup) step_s.push_back(dt);
  }

  double med = median(step_s), mean = 0;
  for (double t : step_s) mean += t / double(step_s.size());
  const double tokens = double(B * T), fpt = cfg.train_flops_per_token(T);
  const double achieved = fpt * tokens / med;
  if (a.json) {
    std::printf("{\"framework\": \"loom\", \"preset\": \"%s\", \"vocab\": %lld, \"d\": %lld, \"layers\": %lld, "
                "\"heads\": %lld, \"kv_heads\": %lld, \"ffn_hidden\": %lld, \"seq\": %lld, \"batch\": %lld, "
                "\"threads\": %d, \"omp_wait_policy\": \"%s\", \"device\": \"%s\", \"params\": %lld, \"warmup\": %d, "
                "\"steps\": %d, \"step_s\": [",
                a.preset.c_str(), (long long)V, (long long)a.d, (long long)a.layers, (long long)a.heads,
                (long long)cfg.n_kv_heads, (long long)cfg.ffn_hidden, (long long)T, (long long)B, a.threads,
                env_or("OMP_WAIT_POLICY", ""), a.device.str().c_str(), (long long)cfg.num_parameters(), a.warmup,
                a.steps);
    for (size_t i = 0; i < step_s.size(); ++i) std::printf("%s%.6f", i ? ", " : "", step_s[i]);
    std::printf("], \"median_step_s\": %.6f, \"mean_step_s\": %.6f, \"tokens_per_s\": %.1f, "
                "\"flops_per_token\": %.1f, \"achieved_gflops\": %.3f, \"gemm_peak_gflops\": %.3f, \"mfu\": %.5f, "
                "\"peak_rss_mb\": %.1f, \"gemm_library\": \"%s\", \"matmul_precision\": \"%s\", \"first_loss\": %.6f, "
                "\"last_loss\": %.6f, \"losses\": [",
                med, mean, tokens / med, fpt, achieved / 1e9, gemm_peak / 1e9, achieved / gemm_peak, peak_rss_mb(),
                on_cpu ? runtime::cpu::gemm_library() : "cublas", a.matmul_precision.c_str(), losses.front(),
                losses.back());
    for (size_t i = 0; i < losses.size(); ++i) std::printf("%s%.6f", i ? ", " : "", losses[i]);
    std::printf("]}\n");
  } else {
    std::printf("loom %s V%lld d%lld L%lld H%lld T%lld B%lld on %s, %d thread(s), %lld params, GEMM %s\n",
                a.preset.c_str(), (long long)V, (long long)a.d, (long long)a.layers, (long long)a.heads, (long long)T,
                (long long)B, a.device.str().c_str(), a.threads, (long long)cfg.num_parameters(),
                on_cpu ? runtime::cpu::gemm_library() : "cublas");
    std::printf("median step %.1f ms (mean %.1f), %.0f tok/s, %.2f GFLOP/s of %.2f GEMM peak = MFU %.1f%%, "
                "peak RSS %.0f MB, loss %.4f -> %.4f\n",
                med * 1e3, mean * 1e3, tokens / med, achieved / 1e9, gemm_peak / 1e9, 100 * achieved / gemm_peak,
                peak_rss_mb(), losses.front(), losses.back());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // a device that is not there, a file that cannot be written
    std::fprintf(stderr, "bench_train: %s\n", e.what());
    return 1;
  }
}
