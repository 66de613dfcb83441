// cpu/gemm_rows.cpp: C = alpha A B + beta C for a row-major A and K <= 768, the shape of most
// of a transformer's products (activations [B*T, K] times a weight).
//
// Why not the BLAS here: OpenBLAS packs A into panels and zeroes C (beta = 0) before every
// call, two extra passes over operands that are each used only K times; with K = 128..704
// they were 12% of its GEMM time in the training step (perf: sgemm_oncopy/otcopy/beta). Here
// only B is packed (K x N: a weight, small next to A), A is read in place by the micro-kernel
// (broadcasts from 6 rows), and the first K slice writes C without reading it.
//
// Loops (BLIS order without the A packing): for each 512-column block of B and each
// 256-deep slice of K, pack B's slice into 16-column panels [kc][16] (L2-resident), then for
// each 6-row sliver of A run the 6 x 16 register tile of cpu/small_gemm.h over every panel.
// The next sliver's A rows and C rows are prefetched during the current one: in the training
// step the activations come from L3 or DRAM, and the hardware prefetcher does not see six
// streams 1 KB apart in time (in-step this was the difference between no gain and 2-4%).
//
// Every C element is alpha times its dot product over k in order within each slice, slices
// added in order: the result depends on (K, the element), never on M or the thread count.
#include "runtime/cpu/gemm_rows.h"

#include <algorithm>
#include <vector>

#include "runtime/cpu/line_vector.h"
#include "runtime/cpu/small_gemm.h"
#include "runtime/cpu/vecmath.h"

namespace loom::runtime::cpu {
namespace {

constexpr int64_t kMR = small_gemm_detail::kMaxRows;  // 6 rows per register tile
constexpr int64_t kNR = 16;                           // 2 vectors of 8 columns per tile
constexpr int64_t kKC = 256;                          // K slice: a [kc][16] panel is 16 KB (L1)
constexpr int64_t kNC = 512;                          // columns per block: packed B 512 KB (L2)

// B's rows [k0, k0 + kc) and columns [n0, n0 + nc) into panels of 16 columns, each [kc][16]
// with zero columns past nc. B(k, n) = b[k * ldb + n], or b[n * ldb + k] when transposed.
void pack_b(bool trans_b, const float* b, int64_t ldb, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* out) {
  for (int64_t p = 0; p * kNR < nc; ++p) {
    float* panel = out + p * kc * kNR;
    const int64_t c0 = n0 + p * kNR, w = std::min(kNR, nc - p * kNR);
    if (!trans_b) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = b + (k0 + k) * ldb + c0;
        float* dst = panel + k * kNR;
        if (w == kNR) {
          store8(dst, load8(src));
          store8(dst + 8, load8(src + 8));
        } else {
          store8(dst, load8(src, std::min<int64_t>(w, 8)));
          store8(dst + 8, w > 8 ? load8(src + 8, w - 8) : f32x8{});
        }
      }
      continue;
    }
    // Transposed: 16 rows of b (columns of B) become the panel's 16 columns, 8 x 8 at a time.
    int64_t k = 0;
    if (w == kNR)
      for (; k + 8 <= kc; k += 8)
        for (int64_t half = 0; half < 2; ++half)
          transpose8x8(b + (c0 + 8 * half) * ldb + k0 + k, ldb, panel + k * kNR + 8 * half, kNR);
    for (; k < kc; ++k)
      for (int64_t j = 0; j < kNR; ++j) panel[k * kNR + j] = j < w ? b[(c0 + j) * ldb + k0 + k] : 0.0f;
  }
}

// One sliver (mr <= 6 rows) times one panel: small_gemm's tile for the row count, through a
// buffer when the panel is a column tail (w < 16).
void sliver_times_panel(int64_t mr, int64_t kc, float alpha, const float* a, int64_t lda, const float* panel,
                        float beta, float* c, int64_t ldc, int64_t w) {
  using small_gemm_detail::column_block;
  if (w == kNR) {
    column_block<float, 2>(mr, kc, alpha, a, lda, 1, panel, kNR, beta, c, ldc);
    return;
  }
  float t[kMR * kNR];
  column_block<float, 2>(mr, kc, alpha, a, lda, 1, panel, kNR, 0.0f, t, kNR);
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t j = 0; j < w; ++j) c[r * ldc + j] = beta == 0.0f ? t[r * kNR + j] : t[r * kNR + j] + beta * c[r * ldc + j];
}

}  // namespace

void gemm_rows(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  thread_local LineVector<float> packed;  // grows to its largest use, then no allocation
  packed.resize(size_t(kKC * (kNC + kNR)));
  // K in equal slices (704 = 3 x 235, not 256 + 256 + 192): the same work per pass over C.
  const int64_t slices = (K + kKC - 1) / kKC, kstep = (K + slices - 1) / slices;
  for (int64_t n0 = 0; n0 < N; n0 += kNC) {
    const int64_t nc = std::min(kNC, N - n0), panels = (nc + kNR - 1) / kNR;
    for (int64_t k0 = 0; k0 < K; k0 += kstep) {
      const int64_t kc = std::min(kstep, K - k0);
      pack_b(trans_b, B, ldb, k0, kc, n0, nc, packed.data());
      const float beta_k = k0 == 0 ? beta : 1.0f;  // later slices add to the first
      // Prefetch the next sliver's rows of A (kc floats each) and of C, spread over the panels.
      const int64_t a_lines = (kc + 15) / 16, per_panel = (kMR * a_lines + panels - 1) / panels;
      for (int64_t i = 0; i < M; i += kMR) {
        const int64_t mr = std::min(kMR, M - i), next = std::min(kMR, M - i - mr);
        int64_t issued = 0;
        for (int64_t p = 0; p < panels; ++p) {
          for (int64_t q = 0; q < per_panel && issued < next * a_lines; ++q, ++issued)
            __builtin_prefetch(A + (i + kMR + issued / a_lines) * lda + k0 + (issued % a_lines) * 16);
          for (int64_t r = 0; r < next; ++r) __builtin_prefetch(C + (i + kMR + r) * ldc + n0 + p * kNR, 1);
          sliver_times_panel(mr, kc, alpha, A + i * lda + k0, lda, packed.data() + p * kc * kNR, beta_k,
                             C + i * ldc + n0 + p * kNR, ldc, std::min(kNR, nc - p * kNR));
        }
      }
    }
  }
}

}  // namespace loom::runtime::cpu
