// cpu/gemm_avx512.cpp: f32 GEMM on AVX-512, GotoBLAS/BLIS style.
//
// Why: on an AVX-512 Xeon, OpenBLAS ran the training step's products at 113-142 GFLOP/s with
// cold operands, against an FMA peak of 200-213 (bench/README.md). This code ran them at
// 126-153 GFLOP/s, 1.08-1.18x faster, all but GPT-2 124M's LM-head forward (0.97x).
//
// Loops, for each column chunk of op(B) (packed, <= 1 MB: it stays in L2) and each K slice
// (<= kAvx512SliceK, equal slices): pack the chunk's slice of op(B) into 32-column panels
// ([panel][k][32]); then for each 112-row block of op(A): pack it into 14-row micro-panels
// ([panel][k][14]: row-major A through 16 x 16 transposes in registers); run each micro-panel
// (14 KB at K 256: it stays in L1) against every panel of the chunk (streamed from L2, a few
// lines ahead by prefetch). The micro-kernel holds a 14 x 32 tile of C in 28 registers:
// per k, two loads of B and 14 broadcasts of A feed 28 FMAs. Rows past M are zero in the
// packed A and columns past N zero in the packed B; stores are masked to what overlaps C.
// Row-major A (activations, output gradients) skips the packing when its rows spread over L1's
// sets (rows_in_place): the micro-kernel then broadcasts from 14 rows of A itself, prefetching
// them as it goes, so their first reads from memory overlap the FMAs instead of stalling a
// packing pass (+9-11% on the [2048, 256] x [256, 256] and K = 704 products with cold
// operands; llama-small step -1.6%). Where the rows would collide in L1 (lda a multiple of
// 1024), each 14-row micro-panel is first copied to rows a little further apart: still no
// transposes.
// alpha scales each slice's sums as they are added to C; a beta other than 0 or 1 scales C
// before the first slice; at beta 0 the first slice overwrites C without reading it (with the
// bias row added, when there is one: linear's bias costs no pass over C).
#include "runtime/cpu/gemm_avx512.h"

#include <stdexcept>

#ifdef LOOM_WITH_AVX512_GEMM
#include <algorithm>
#include <vector>

#include "runtime/cpu/avx512.h"
#include "runtime/cpu/line_vector.h"
#endif

namespace loom::runtime::cpu {

#ifndef LOOM_WITH_AVX512_GEMM

bool avx512_gemm_available() { return false; }
int64_t avx512_row_stride_in_place(int64_t, int64_t cols) { return cols; }
void gemm_avx512(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                 float*, int64_t, const float*, double*) {
  throw std::logic_error("gemm_avx512: this build's compiler has no AVX-512 intrinsics");
}

#else

namespace {

using avx512::first_lanes;
using avx512::load16;
using avx512::transpose16x16;

constexpr int64_t kMR = 14;                      // rows of the register tile
constexpr int64_t kNR = 32;                      // columns of the register tile (two vectors)
constexpr int64_t kBlockRows = 8 * kMR;          // rows of op(A) packed at a time (L2)
constexpr int64_t kPackedBBytes = int64_t(1) << 20;  // a packed chunk of op(B) (L2)
constexpr __mmask16 kMicroRows = (1u << kMR) - 1;
// Prefetch distances, in floats: A 16 k-steps ahead, B 8 (measured: without them the step's
// products took about 4% longer in the cold-operand harness).
constexpr int64_t kPrefetchA = 16 * kMR, kPrefetchB = 8 * kNR;

// op(B)'s columns [n0, n0 + nc) and k in [k0, k0 + kc) as 32-column panels [panel][k][32], zero
// past nc. op(B)(k, n) is B[k * ldb + n], or B[n * ldb + k] when transposed: then 16 x 16
// blocks are transposed in registers on the way.
void pack_b(bool trans, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* out) {
  const int64_t panels = (nc + kNR - 1) / kNR;
  if (!trans) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* row = B + (k0 + k) * ldb + n0;
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t left = nc - p * kNR;
        float* o = out + (p * kc + k) * kNR;
        _mm512_storeu_ps(o, load16(row + p * kNR, left));
        _mm512_storeu_ps(o + 16, load16(row + p * kNR + 16, left - 16));
      }
    }
    return;
  }
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t j0 = p * kNR + half * 16;
      for (int64_t kb = 0; kb < kc; kb += 16) {
        __m512i r[16] = {};  // (initialised: gcc 12 warns otherwise)
        for (int64_t i = 0; i < 16; ++i)
          r[i] = _mm512_castps_si512(j0 + i < nc ? load16(B + (n0 + j0 + i) * ldb + k0 + kb, kc - kb)
                                                 : _mm512_setzero_ps());
        transpose16x16(r);
        const int64_t kn = std::min<int64_t>(16, kc - kb);
        for (int64_t i = 0; i < kn; ++i) _mm512_storeu_si512(out + (p * kc + kb + i) * kNR + half * 16, r[i]);
      }
    }
}

// As pack_a for transposed A, also adding each row's kc values to sums[r] (f64; per slice from
// zero in order of k, then added: see gemm_avx512.h's a_row_sums). P micro-panels (a whole
// block: P = 8, fixed, so the 16 partial sums stay in registers; converting and adding them
// through memory made a 1024-row weight gradient 8% slower); lanes 14 and 15 of each panel's
// load carry the next panel's rows and are not used.
template <int P>
void pack_a_trans_summing(const float* A, int64_t lda, int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* out,
                          double* sums) {
  __m512d lo[P], hi[P];
  for (int q = 0; q < P; ++q) lo[q] = hi[q] = _mm512_setzero_pd();
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = A + (k0 + k) * lda + m0;
#pragma GCC unroll 8
    for (int q = 0; q < P; ++q) {
      const __m512 v = load16(src + q * kMR, rows - q * kMR);
      _mm512_mask_storeu_ps(out + (q * kc + k) * kMR, kMicroRows, v);
      lo[q] = _mm512_add_pd(lo[q], _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
      hi[q] = _mm512_add_pd(hi[q], _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    }
  }
  alignas(64) double partial[P * 16];
  for (int q = 0; q < P; ++q) {
    _mm512_store_pd(partial + q * 16, lo[q]);
    _mm512_store_pd(partial + q * 16 + 8, hi[q]);
  }
  for (int64_t r = 0; r < rows; ++r) sums[r] += partial[r / kMR * 16 + r % kMR];
}

// op(A)'s rows [m0, m0 + rows) and k in [k0, k0 + kc) as 14-row micro-panels [panel][k][14],
// zero past `rows`. op(A)(m, k) is A[m * lda + k] (then 16 x 16 blocks are transposed in
// registers), or A[k * lda + m] when transposed (then each k is a contiguous run of rows).
// sums (transposed A only): see pack_a_trans_summing.
void pack_a(bool trans, const float* A, int64_t lda, int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* out,
            double* sums = nullptr) {
  const int64_t panels = (rows + kMR - 1) / kMR;
  if (trans && sums) {
    static_assert(kBlockRows == 8 * kMR);
    if (panels == 8) return pack_a_trans_summing<8>(A, lda, m0, rows, k0, kc, out, sums);
    for (int64_t q = 0; q < panels; ++q)  // a last, partial block: one micro-panel at a time
      pack_a_trans_summing<1>(A, lda, m0 + q * kMR, std::min(kMR, rows - q * kMR), k0, kc, out + q * kc * kMR,
                              sums + q * kMR);
    return;
  }
  if (trans) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = A + (k0 + k) * lda + m0;
      for (int64_t q = 0; q < panels; ++q)
        _mm512_mask_storeu_ps(out + (q * kc + k) * kMR, kMicroRows, load16(src + q * kMR, rows - q * kMR));
    }
    return;
  }
  for (int64_t q = 0; q < panels; ++q) {
    const int64_t r0 = q * kMR, rn = std::min(kMR, rows - r0);
    float* o = out + q * kc * kMR;
    for (int64_t kb = 0; kb < kc; kb += 16) {
      __m512i r[16] = {};  // (initialised: gcc 12 warns otherwise)
      for (int64_t i = 0; i < 16; ++i)
        r[i] = _mm512_castps_si512(i < rn ? load16(A + (m0 + r0 + i) * lda + k0 + kb, kc - kb) : _mm512_setzero_ps());
      transpose16x16(r);
      const int64_t kn = std::min<int64_t>(16, kc - kb);
      for (int64_t i = 0; i < kn; ++i) _mm512_mask_storeu_ps(o + (kb + i) * kMR, kMicroRows, _mm512_castsi512_ps(r[i]));
    }
  }
}

// C's tile rows [0, min(rows, MR)) (columns where m0 / m1 are set) = alpha * acc, plus C when
// add, else plus the bias row when given.
template <int MR>
inline __attribute__((always_inline)) void store_tile(const __m512 (&acc)[MR][2], float* c, int64_t ldc,
                                                      int64_t rows, __mmask16 m0, __mmask16 m1, float alpha, bool add,
                                                      const float* bias) {
  const __m512 f = _mm512_set1_ps(alpha);
  const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) {
    if (i >= rows) break;
    float* ci = c + i * ldc;
    __m512 v0 = _mm512_mul_ps(f, acc[i][0]), v1 = _mm512_mul_ps(f, acc[i][1]);
    if (add) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
    } else if (bias) {
      v0 = _mm512_add_ps(v0, bias0);
      v1 = _mm512_add_ps(v1, bias1);
    }
    _mm512_mask_storeu_ps(ci, m0, v0);
    _mm512_mask_storeu_ps(ci + 16, m1, v1);
  }
}

// C's tile (rows [0, rows) of MR, columns where m0 / m1 are set) = alpha * a b, plus C when
// add, else plus the bias row when given (its 32 columns); a: a micro-panel [kc][14] (rows past
// MR unread), b: a panel [kc][32]. MR = 14 for whole micro-panels; a last one of fewer rows
// takes the smallest of 2, 4, 6, 8 that holds them instead of summing zero rows (M = 256 has
// 18 whole micro-panels and 4 rows: the 14-row tile wasted 4% of such a product). (Not
// inlined: inlined into the loops below, its 28 accumulators lost registers to theirs.)
template <int MR>
__attribute__((noinline)) void micro_kernel_mr(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                                               int64_t rows, __mmask16 m0, __mmask16 m1, float alpha, bool add,
                                               const float* bias) {
  __m512 acc[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) {
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    // C's lines are on their way while the sums run (its stores missed the cache otherwise).
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
  for (int64_t k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(a + k * kMR + kPrefetchA), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + k * kNR + kPrefetchB), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + k * kNR + kPrefetchB + 16), _MM_HINT_T0);
    const __m512 b0 = _mm512_loadu_ps(b + k * kNR), b1 = _mm512_loadu_ps(b + k * kNR + 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[k * kMR + i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile<MR>(acc, c, ldc, rows, m0, m1, alpha, add, bias);
}

void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t rows, __mmask16 m0,
                  __mmask16 m1, float alpha, bool add, const float* bias) {
  if (rows > 8) return micro_kernel_mr<kMR>(kc, a, b, c, ldc, rows, m0, m1, alpha, add, bias);
  if (rows > 6) return micro_kernel_mr<8>(kc, a, b, c, ldc, rows, m0, m1, alpha, add, bias);
  if (rows > 4) return micro_kernel_mr<6>(kc, a, b, c, ldc, rows, m0, m1, alpha, add, bias);
  if (rows > 2) return micro_kernel_mr<4>(kc, a, b, c, ldc, rows, m0, m1, alpha, add, bias);
  micro_kernel_mr<2>(kc, a, b, c, ldc, rows, m0, m1, alpha, add, bias);
}

// As micro_kernel, with 14 whole rows of row-major A read in place (row i at a + i * lda)
// instead of a packed micro-panel: its k-th column is 14 broadcasts from 14 rows, addressed
// from two row pointers and three stride registers (lda, 3 lda, 5 lda; 14 pointers of their
// own would spill). The rows stay in L1 across the chunk's panels like a packed micro-panel;
// the first panel's pass meets them cold, so one row's line 64 floats ahead is prefetched per
// k-step, round-robin (a row crosses a line every 16 k-steps).
__attribute__((noinline)) void micro_kernel_rows(int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                                                 int64_t ldc, __mmask16 m0, __mmask16 m1, float alpha, bool add,
                                                 const float* bias) {
  __m512 acc[kMR][2];
#pragma GCC unroll 14
  for (int i = 0; i < kMR; ++i) {
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
  const char* a0 = reinterpret_cast<const char*>(a);  // rows 0..6
  const char* a7 = a0 + 7 * lda * 4;                  // rows 7..13
  int64_t s1 = lda * 4, s3 = 3 * s1, s5 = 5 * s1;    // bytes
  const int64_t row_offset[kMR] = {0,      s1,     2 * s1,  s3,      4 * s1,  s5,      2 * s3,
                                   7 * s1, 8 * s1, 9 * s1, 10 * s1, 11 * s1, 12 * s1, 13 * s1};
  int64_t next_row = 0;
  for (int64_t k = 0; k < kc; ++k) {
    asm("" : "+r"(s1), "+r"(s3), "+r"(s5));  // opaque each step: indexed addressing, no per-row induction
    _mm_prefetch(a0 + row_offset[next_row] + 64 * 4, _MM_HINT_T0);
    next_row = next_row == kMR - 1 ? 0 : next_row + 1;
    _mm_prefetch(reinterpret_cast<const char*>(b + k * kNR + kPrefetchB), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + k * kNR + kPrefetchB + 16), _MM_HINT_T0);
    const __m512 b0 = _mm512_loadu_ps(b + k * kNR), b1 = _mm512_loadu_ps(b + k * kNR + 16);
    auto row = [&](int i, const char* at) {
      const __m512 ai = _mm512_set1_ps(*reinterpret_cast<const float*>(at));
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    };
    row(0, a0), row(1, a0 + s1), row(2, a0 + 2 * s1), row(3, a0 + s3), row(4, a0 + 4 * s1), row(5, a0 + s5);
    row(6, a0 + 2 * s3), row(7, a7), row(8, a7 + s1), row(9, a7 + 2 * s1), row(10, a7 + s3), row(11, a7 + 4 * s1);
    row(12, a7 + s5), row(13, a7 + 2 * s3);
    a0 += 4;
    a7 += 4;
  }
  store_tile<kMR>(acc, c, ldc, kMR, m0, m1, alpha, add, bias);
}

// 14 rows of kc floats, lda apart, to dst with rows ld apart.
void copy_rows(const float* src, int64_t lda, int64_t kc, float* dst, int64_t ld) {
  for (int64_t r = 0; r < kMR; ++r)
    for (int64_t k = 0; k < kc; k += 16) _mm512_storeu_ps(dst + r * ld + k, load16(src + r * lda + k, kc - k));
}

// The depth of K's equal slices.
int64_t slice_depth(int64_t K) {
  const int64_t slices = (K + kAvx512SliceK - 1) / kAvx512SliceK;
  return (K + slices - 1) / slices;
}

// Fewer rows of A than this are packed as before: in GPT-2 124M's step (256 rows of K = 768,
// likely still in L2 from the op that wrote them) reading them in place made each product
// 1-2% slower, while at 1024-2048 rows (from memory) it was faster.
constexpr int64_t kMinRowsInPlace = 512;

// Whether row-major A's 14-row micro-panels can be read in place for K slices of kc: their
// lines must spread over L1's 64 sets (12 ways). Rows lda floats apart start lda / 16 lines
// apart; when that is a multiple of 64 (lda = 1024, 2048, ...) all 14 rows fall in the same
// sets and evict each other, so such A is packed.
bool rows_in_place(int64_t lda, int64_t kc) {
  constexpr int64_t kSets = 64, kMostPerSet = 8;  // leaves 4 ways for B's stream and C
  int64_t count[kSets] = {};
  for (int64_t r = 0; r < kMR; ++r) {
    const int64_t first = r * lda / 16, lines = std::min(kSets, kc / 16 + 2);  // +2: unaligned ends
    for (int64_t l = 0; l < lines; ++l) ++count[(first + l) % kSets];
  }
  return *std::max_element(count, count + kSets) <= kMostPerSet;
}

}  // namespace

int64_t avx512_row_stride_in_place(int64_t rows, int64_t cols) {
  if (rows < kMinRowsInPlace || cols <= 0 || rows_in_place(cols, slice_depth(cols))) return cols;
  int64_t ld = (cols + 15) / 16 * 16;
  while (!rows_in_place(ld, slice_depth(cols))) ld += 16;
  return ld;
}

bool avx512_gemm_available() {
  static const bool available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return available;
}

void gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias,
                 double* a_row_sums) {
  if (!avx512_gemm_available()) throw std::logic_error("gemm_avx512: this CPU has no AVX-512");
  if (bias && beta != 0.0f) throw std::invalid_argument("gemm_avx512: a bias row needs beta = 0");
  if (a_row_sums && !trans_a) throw std::invalid_argument("gemm_avx512: row sums of A need A transposed");
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || (beta != 0.0f && beta != 1.0f)) {  // C = beta C (or the bias rows) first; the
                                                    // first slice then overwrites C or adds to it
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = bias ? bias[j] : beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
  }
  if (K <= 0) return;
  const int64_t kstep = slice_depth(K);
  // Equal column chunks of whole panels, each packed chunk within kPackedBBytes.
  const int64_t chunk_max = std::max(kNR, kPackedBBytes / int64_t(sizeof(float)) / kstep / kNR * kNR);
  const int64_t chunks = (N + chunk_max - 1) / chunk_max;
  const int64_t chunk_cols = ((N + chunks - 1) / chunks + kNR - 1) / kNR * kNR;
  // Row-major A of enough rows is read in place, or, where its rows collide in L1 (lda a
  // multiple of 1024), copied 14 rows at a time into rows copy_ld apart: a plain copy instead
  // of the transposing pack (GPT-2's K = 1024 products 2% faster in the step).
  const bool rows_kernel = !trans_a && M >= kMinRowsInPlace;
  const bool a_in_place = rows_kernel && rows_in_place(lda, kstep);
  const int64_t copy_ld = rows_kernel && !a_in_place ? avx512_row_stride_in_place(M, kstep) : 0;
  // With the rows kernel, when every K slice of B packed fits the chunk budget (K up to 1024 at
  // N = 256), B is packed whole once and each 14-row micro-panel runs through all the slices
  // before the next: its C tile stays in L1 between slices instead of C (2 MB at 2048 x 256)
  // going to memory and back once per slice. Same sums in the same order.
  const bool whole_b =
      rows_kernel && chunks == 1 && K > kstep && chunk_cols * K <= kPackedBBytes / int64_t(sizeof(float));
  thread_local LineVector<float> a_storage, b_storage;
  a_storage.resize(size_t(std::max(kBlockRows * kstep, kMR * copy_ld)));
  b_storage.resize(size_t(chunk_cols * (whole_b ? K : kstep)));
  float* const a_packed = a_storage.data();
  float* const b_packed = b_storage.data();
  // The row kernel on micro-panel m0 for slice [k0, k0 + kc) of the chunk at n0 (b: its packed
  // slice): A's rows in place or copied; a last partial micro-panel packed.
  auto rows_micro_panel = [&](int64_t m0, int64_t k0, int64_t kc, int64_t n0, int64_t nc, const float* b) {
    const int64_t rows = std::min(kMR, M - m0), panels = (nc + kNR - 1) / kNR;
    const bool add = k0 > 0 || beta != 0.0f;
    if (rows < kMR) pack_a(false, A, lda, m0, rows, k0, kc, a_packed);
    else if (!a_in_place) copy_rows(A + m0 * lda + k0, lda, kc, a_packed, copy_ld);
    const float* a_rows = a_in_place ? A + m0 * lda + k0 : a_packed;
    const int64_t a_ld = a_in_place ? lda : copy_ld;
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t cols = nc - p * kNR;
      float* cp = C + m0 * ldc + n0 + p * kNR;
      const float* bp = b + p * kc * kNR;
      const float* bias_p = bias && k0 == 0 ? bias + n0 + p * kNR : nullptr;
      if (rows == kMR)
        micro_kernel_rows(kc, a_rows, a_ld, bp, cp, ldc, first_lanes(cols), first_lanes(cols - 16), alpha, add, bias_p);
      else
        micro_kernel(kc, a_packed, bp, cp, ldc, rows, first_lanes(cols), first_lanes(cols - 16), alpha, add, bias_p);
    }
  };
  if (whole_b) {  // slice k0 packed at b_packed + k0 * chunk_cols
    for (int64_t k0 = 0; k0 < K; k0 += kstep)
      pack_b(trans_b, B, ldb, k0, std::min(kstep, K - k0), 0, N, b_packed + k0 * chunk_cols);
    for (int64_t m0 = 0; m0 < M; m0 += kMR)
      for (int64_t k0 = 0; k0 < K; k0 += kstep)
        rows_micro_panel(m0, k0, std::min(kstep, K - k0), 0, N, b_packed + k0 * chunk_cols);
    return;
  }
  for (int64_t n0 = 0; n0 < N; n0 += chunk_cols) {
    const int64_t nc = std::min(chunk_cols, N - n0), panels = (nc + kNR - 1) / kNR;
    for (int64_t k0 = 0; k0 < K; k0 += kstep) {
      const int64_t kc = std::min(kstep, K - k0);
      pack_b(trans_b, B, ldb, k0, kc, n0, nc, b_packed);
      if (rows_kernel) {  // 14-row micro-panels of A's rows
        for (int64_t m0 = 0; m0 < M; m0 += kMR) rows_micro_panel(m0, k0, kc, n0, nc, b_packed);
        continue;
      }
      const bool add = k0 > 0 || beta != 0.0f;
      for (int64_t m0 = 0; m0 < M; m0 += kBlockRows) {
        const int64_t block_rows = std::min(kBlockRows, M - m0), micro_panels = (block_rows + kMR - 1) / kMR;
        // (A's rows are summed on the first column chunk only: the others pack the same A.)
        pack_a(trans_a, A, lda, m0, block_rows, k0, kc, a_packed, a_row_sums && n0 == 0 ? a_row_sums + m0 : nullptr);
        for (int64_t q = 0; q < micro_panels; ++q)
          for (int64_t p = 0; p < panels; ++p) {
            const int64_t cols = nc - p * kNR;
            micro_kernel(kc, a_packed + q * kc * kMR, b_packed + p * kc * kNR,
                         C + (m0 + q * kMR) * ldc + n0 + p * kNR, ldc, std::min(kMR, block_rows - q * kMR),
                         first_lanes(cols), first_lanes(cols - 16), alpha, add,
                         bias && k0 == 0 ? bias + n0 + p * kNR : nullptr);
          }
      }
    }
  }
}

#endif  // LOOM_WITH_AVX512_GEMM

}  // namespace loom::runtime::cpu
