// bench_kernels.cpp: where the time goes in the CPU runtime. Prints GFLOP/s of matmul at
// 256..2048 and GB/s (or GFLOP/s) of softmax, RMSNorm and attention forward/backward, each
// beside this machine's measured peaks: the best GEMM rate seen and a STREAM-style triad
// bandwidth; then the products of a llama-small training step (B*T = 2048 tokens) at matmul
// precision f32 and bf16 (AMX), side by side; and on AVX-512 CPUs the step's products (and
// GPT-2 124M's widest) with cold operands, Loom's AVX-512 GEMM against the GEMM library (CBLAS).
// Run: build/bench/bench_kernels [--quick]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemm_avx512.h"
#include "runtime/cpu/gemm_bf16.h"
#include "runtime/ops.h"

#ifdef LOOM_USE_CBLAS
#include <cblas.h>
#endif

using namespace loom::runtime;

namespace {

// Best wall time over `reps` runs after one warm-up (best-of filters scheduler noise).
double best_seconds(int reps, const std::function<void()>& fn) {
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// STREAM triad a = b + s * c over arrays far larger than the caches: bytes moved / second.
double triad_gbps() {
  const int64_t n = int64_t(1) << 25;  // 3 x 128 MiB
  std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n), 1.0f), c(static_cast<size_t>(n), 2.0f);
  double t = best_seconds(3, [&] {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[size_t(i)] = b[size_t(i)] + 3.0f * c[size_t(i)];
  });
  return 3.0 * 4.0 * double(n) / t / 1e9;
}

// llama-small's step products (d 256, MLP 704, vocab 8192, 2048 tokens): (trans_a, trans_b, M,
// N, K) as the step calls them.
struct Product {
  const char* what;
  bool ta, tb;
  int64_t M, N, K;
};
const Product kStepProducts[] = {
    {"qkv fwd (x W^T)", false, true, 2048, 768, 256},       {"mlp up fwd", false, true, 2048, 704, 256},
    {"mlp down fwd", false, true, 2048, 256, 704},          {"lm head fwd", false, true, 2048, 8192, 256},
    {"lm head dX (dY W)", false, false, 2048, 256, 8192},   {"lm head dW (dY^T X)", true, false, 8192, 256, 2048},
    {"qkv dW (dY^T X)", true, false, 768, 256, 2048},       {"mlp down dX", false, false, 2048, 704, 256}};

// The step's products through cpu::gemm() at both precisions.
void training_products_f32_vs_bf16(double f32_peak) {
  std::printf("%-22s %6s %6s %6s  %10s %10s %7s\n", "product", "M", "N", "K", "f32 GF/s", "bf16 GF/s", "ratio");
  for (const Product& p : kStepProducts) {
    std::vector<float> a(size_t(p.M * p.K), 0.5f), b(size_t(p.K * p.N), 0.25f), c(size_t(p.M * p.N));
    double rate[2];
    for (cpu::MatmulPrecision precision : {cpu::MatmulPrecision::f32, cpu::MatmulPrecision::bf16}) {
      cpu::set_matmul_precision(precision);
      const int64_t lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
      const double t = best_seconds(5, [&] {
        cpu::gemm(p.ta, p.tb, p.M, p.N, p.K, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), p.N);
      });
      rate[precision == cpu::MatmulPrecision::bf16] = 2.0 * double(p.M) * double(p.N) * double(p.K) / t / 1e9;
    }
    cpu::set_matmul_precision(cpu::MatmulPrecision::f32);
    std::printf("%-22s %6lld %6lld %6lld  %10.1f %10.1f %6.2fx\n", p.what, (long long)p.M, (long long)p.N,
                (long long)p.K, rate[0], rate[1], rate[1] / rate[0]);
  }
  cpu::set_matmul_precision(cpu::MatmulPrecision::bf16);
  const double square = cpu::measured_gemm_peak_flops(0.3) / 1e9;
  cpu::set_matmul_precision(cpu::MatmulPrecision::f32);
  std::printf("bf16 square-512 rate %.1f GFLOP/s (%.1fx the f32 GEMM peak %.1f)\n", square, square / f32_peak, f32_peak);
}

#ifdef LOOM_USE_CBLAS
// Each product (one thread) with cold operands, as in the training step: four operand sets in
// turn, and 64 MB read between timings to push them out of L2. Best of 3, both codes alternated.
void avx512_vs_library_cold() {
  std::vector<Product> products(std::begin(kStepProducts), std::end(kStepProducts));
  products.push_back({"124M lm head fwd", false, true, 256, 50257, 768});
  products.push_back({"124M lm head dX", false, false, 256, 768, 50257});
  products.push_back({"124M mlp up dW", true, false, 3072, 768, 256});
  std::printf("\n%-22s %6s %6s %6s  %10s %10s %7s   (1 thread, cold operands)\n", "product", "M", "N", "K",
              "CBLAS", "avx512", "ratio");
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<float> flush(size_t(16) << 20, 1.0f);
  double sum[2] = {0, 0};
  for (const Product& p : products) {
    const int ring = 4;
    std::vector<std::vector<float>> a(ring), b(ring), c(ring);
    for (int i = 0; i < ring; ++i) {
      a[size_t(i)].assign(size_t(p.M * p.K), 0.5f + 0.01f * float(i));
      b[size_t(i)].assign(size_t(p.K * p.N), 0.25f);
      c[size_t(i)].assign(size_t(p.M * p.N), 0.0f);
    }
    const int64_t lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
    double best[2] = {1e30, 1e30};
    volatile float sink = 0;
    for (int rep = 0; rep < 3; ++rep)
      for (int code = 0; code < 2; ++code) {
        float s = 0;
        for (size_t i = 0; i < flush.size(); i += 16) s += flush[i];
        sink = sink + s;
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < ring; ++i) {
          const float* A = a[size_t(i)].data();
          const float* B = b[size_t(i)].data();
          float* C = c[size_t(i)].data();
          if (code == 0)
            cblas_sgemm(CblasRowMajor, p.ta ? CblasTrans : CblasNoTrans, p.tb ? CblasTrans : CblasNoTrans, int(p.M),
                        int(p.N), int(p.K), 1.0f, A, int(lda), B, int(ldb), 0.0f, C, int(p.N));
          else
            cpu::gemm_avx512(p.ta, p.tb, p.M, p.N, p.K, 1.0f, A, lda, B, ldb, 0.0f, C, p.N);
        }
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / ring;
        best[code] = std::min(best[code], t);
      }
    const double flops = 2.0 * double(p.M) * double(p.N) * double(p.K);
    sum[0] += best[0];
    sum[1] += best[1];
    std::printf("%-22s %6lld %6lld %6lld  %10.1f %10.1f %6.2fx\n", p.what, (long long)p.M, (long long)p.N,
                (long long)p.K, flops / best[0] / 1e9, flops / best[1] / 1e9, best[0] / best[1]);
  }
  std::printf("all products: CBLAS %.1f ms, avx512 %.1f ms (%.2fx)\n", sum[0] * 1e3, sum[1] * 1e3, sum[0] / sum[1]);
  omp_set_num_threads(saved);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  NoGradGuard no_grad;
  std::printf("Loom kernel benchmark (GEMM library: %s)\n", cpu::gemm_library());
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    std::printf("\n== %d thread%s ==\n", threads, threads > 1 ? "s" : "");
    double peak_bw = triad_gbps();
    std::printf("%-34s %10.1f GB/s   (memory peak)\n", "stream triad", peak_bw);
    double gemm_peak = 0;
    std::vector<std::pair<int, double>> gemm_rates;
    for (int n : {256, 512, 1024, 2048}) {
      if (quick && n > 1024) break;
      Tensor a = Tensor::randn({n, n}, 1), b = Tensor::randn({n, n}, 2);
      double t = best_seconds(n >= 2048 ? 2 : 5, [&] { matmul(a, b); });
      double gf = 2.0 * n * double(n) * n / t / 1e9;
      gemm_peak = std::max(gemm_peak, gf);
      gemm_rates.push_back({n, gf});
    }
    for (auto [n, gf] : gemm_rates)
      std::printf("matmul %4dx%4dx%-4d f32        %10.1f GFLOP/s (%5.1f%% of GEMM peak)\n", n, n, n, gf,
                  100 * gf / gemm_peak);
    // Row-wise kernels on a [B*T, C] activation the size of a small model's.
    const int64_t R = 4096, C = 1024;
    Tensor x = Tensor::randn({R, C}, 3), w = Tensor::ones({C});
    double bytes = 2.0 * R * C * 4;  // read x, write y
    double ts = best_seconds(10, [&] { softmax(x, -1); });
    std::printf("%-34s %10.1f GB/s   (%5.1f%% of triad)\n", "softmax [4096, 1024] fwd", bytes / ts / 1e9,
                100 * bytes / ts / 1e9 / peak_bw);
    double tr = best_seconds(10, [&] { rms_norm(x, w, 1e-6); });
    std::printf("%-34s %10.1f GB/s   (%5.1f%% of triad)\n", "rms_norm [4096, 1024] fwd", bytes / tr / 1e9,
                100 * bytes / tr / 1e9 / peak_bw);
    {
      Tensor xr = x.clone(), wr = w.clone();
      xr.set_requires_grad(true);
      wr.set_requires_grad(true);
      GradModeGuard g(true);
      Tensor y = rms_norm(xr, wr, 1e-6);
      Tensor gy = Tensor::randn({R, C}, 4);
      double tb = best_seconds(5, [&] {
        Tensor yy = rms_norm(xr, wr, 1e-6);
        yy.backward(gy);
      });
      double bbytes = 3.0 * R * C * 4;  // read x, gy; write gx (plus the forward)
      std::printf("%-34s %10.1f GB/s   (%5.1f%% of triad, incl. fwd)\n", "rms_norm [4096, 1024] fwd+bwd",
                  (bytes + bbytes) / tb / 1e9, 100 * (bytes + bbytes) / tb / 1e9 / peak_bw);
    }
    // Causal attention at a long shape and at bench_train's shapes (llama tiny and small, GPT-2
    // 124M): 4 B H T^2 D flops for QK^T and PV, halved by causality; backward is 2.5x forward.
    struct AttnShape { int64_t B, T, H, D; };
    std::vector<AttnShape> shapes = {{4, quick ? 256 : 512, 8, 64}, {16, 128, 4, 32}, {8, 256, 8, 32}, {4, 64, 12, 64}};
    for (const AttnShape& s : shapes) {
      const int64_t B = s.B, T = s.T, H = s.H, D = s.D;
      Tensor q = Tensor::randn({B, T, H, D}, 5), k = Tensor::randn({B, T, H, D}, 6), v = Tensor::randn({B, T, H, D}, 7);
      AttentionMask m;
      m.causal = true;
      double flops = 4.0 * B * H * double(T) * T * D / 2;
      double ta = best_seconds(5, [&] { attention(q, k, v, m); });
      std::printf("attention B%lld T%lld H%lld D%lld causal fwd  %10.1f GFLOP/s (%5.1f%% of GEMM peak)\n",
                  (long long)B, (long long)T, (long long)H, (long long)D, flops / ta / 1e9,
                  100 * flops / ta / 1e9 / gemm_peak);
      GradModeGuard g(true);
      Tensor qg = q.clone(), kg = k.clone(), vg = v.clone();
      for (Tensor* t : {&qg, &kg, &vg}) t->set_requires_grad(true);
      Tensor go = Tensor::randn({B, T, H, D}, 8);
      double tb = best_seconds(3, [&] { attention(qg, kg, vg, m).out.backward(go); });
      double bflops = flops * 3.5;  // forward 1x + backward 2.5x (recompute P, dV, dP, dQ, dK)
      std::printf("attention B%lld T%lld H%lld D%lld causal f+b  %10.1f GFLOP/s (%5.1f%% of GEMM peak)\n",
                  (long long)B, (long long)T, (long long)H, (long long)D, bflops / tb / 1e9,
                  100 * bflops / tb / 1e9 / gemm_peak);
    }
    std::printf("%-34s %10.1f GFLOP/s (measured GEMM peak)\n", "GEMM peak", gemm_peak);
    if (cpu::amx_bf16_available()) training_products_f32_vs_bf16(gemm_peak);
  }
#ifdef LOOM_USE_CBLAS
  if (cpu::avx512_gemm_available()) avx512_vs_library_cold();
#endif
  return 0;
}
