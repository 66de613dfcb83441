// cpu/gemm_bf16.cpp: f32 GEMM with bf16 products on Intel AMX, f32 sums in the tiles.
//
// Why: an AMX core multiplies 16 x 32 bf16 by 32 x 16 bf16 into 16 x 16 f32 per TDPBF16PS,
// measured here at about 2.4 TFLOP/s per core on registers alone, where the f32 AVX-512 GEMM
// peaks near 85 GFLOP/s (bench/README.md). Operands stay f32 in memory (the master weights,
// activations and gradients): each is rounded to bf16 once, while being packed into tiles.
//
// Loops: for each K slice (<= 512 deep, equal slices, padded to 32), pack op(A)'s rows for
// that slice into 32-row blocks of A tiles ([32 k][2 tiles][16 rows][32 bf16]), then for each
// 512-column chunk of op(B) pack it into 16-column panels of B tiles in AMX's pair layout
// ([k/32][16 k-pairs][16 columns][2 bf16]), and run every 32-row block against every pair of
// panels: 2 A tiles x 2 B tiles into 4 C tiles (all 8 tile registers), which start from zero
// (first slice, beta = 0) or from C, and are stored back to C after the slice. Blocks that
// overhang M or N go through a 32 x 32 scratch; the zero padding of A and B makes their
// extra sums zero. alpha is applied to A while it is rounded; a beta other than 0 or 1
// scales C before the first slice.
#include "runtime/cpu/gemm_bf16.h"

#include <stdexcept>

#ifdef LOOM_WITH_AMX
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>
#endif

namespace loom::runtime::cpu {

#ifndef LOOM_WITH_AMX

bool amx_bf16_available() { return false; }
void gemm_bf16(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
               float*, int64_t) {
  throw std::logic_error("gemm_bf16: this build's compiler has no AMX intrinsics (see amx_bf16_available)");
}

#else

namespace {

using bf16 = uint16_t;
constexpr int64_t kTileRows = 16;                     // rows of every tile
constexpr int64_t kTileK = 32;                        // bf16 values in a tile row (64 bytes)
constexpr int64_t kATile = kTileRows * kTileK;        // 512 bf16 per tile
constexpr int64_t kBlockRows = 2 * kTileRows;         // a block of A: two tiles of rows
constexpr int64_t kPanelCols = 16;                    // a panel of B: one tile of columns
constexpr int64_t kChunkCols = 512;                   // columns of B packed at a time: 512 KB
constexpr int64_t kBlockStep = 2 * kATile;            // bf16 per 32-deep step of an A block

bool request_amx_state() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx_tile = d & (1u << 24), amx_bf16 = d & (1u << 22);
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  const bool avx512_bf16 = a & (1u << 5);
  if (!amx_tile || !amx_bf16 || !avx512_bf16 || !__builtin_cpu_supports("avx512bw")) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // <asm/prctl.h>
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// Sixteen floats from p, the first n of them (n <= 0: none); never reads past them.
inline __m512 load16(const float* p, int64_t n) {
  if (n >= 16) return _mm512_loadu_ps(p);
  if (n <= 0) return _mm512_setzero_ps();
  return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p);
}

// lo's and hi's floats as 32 bf16 (round to nearest even), lo's in the low half.
inline __m512i to_bf16(__m512 lo, __m512 hi) { return __m512i(_mm512_cvtne2ps_pbh(hi, lo)); }

// Rows k and k + 1 of 16 columns as 16 pairs (x_j, y_j): the 32-bit units of AMX's B layout.
inline __m512i to_bf16_pairs(__m512 x, __m512 y) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, to_bf16(x, y));
}

// r[i][j] <- r[j][i] for a 16 x 16 matrix of 32-bit units held in 16 registers.
inline void transpose16x16(__m512i r[16]) {
  __m512i a[16] = {}, b[16] = {};  // (initialised: gcc 12 warns otherwise)
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // b[4g + c], 128-bit lane L: rows 4g..4g+3 of column 4L + c.
  for (int g = 0; g < 16; g += 4) {
    b[g] = _mm512_unpacklo_epi64(a[g], a[g + 2]);
    b[g + 1] = _mm512_unpackhi_epi64(a[g], a[g + 2]);
    b[g + 2] = _mm512_unpacklo_epi64(a[g + 1], a[g + 3]);
    b[g + 3] = _mm512_unpackhi_epi64(a[g + 1], a[g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i c0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44), c1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
    const __m512i c2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44),
                  c3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(c0, c2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(c1, c3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
  }
}

// One 32-row block of alpha op(A), rows [m0, m0 + 32) (zero past M) and k in [k0, k0 + kc)
// (zero up to ksteps * 32), as [ksteps][2 tiles][16 rows][32 bf16]. op(A)(m, k) is
// A[m * lda + k], or A[k * lda + m] when transposed.
void pack_a_block(bool trans, const float* A, int64_t lda, int64_t M, int64_t m0, int64_t k0, int64_t kc,
                  int64_t ksteps, float alpha, bf16* out) {
  const __m512 scale = _mm512_set1_ps(alpha);
  for (int64_t t = 0; t < 2; ++t) {
    const int64_t r0 = m0 + t * kTileRows, rows = std::clamp<int64_t>(M - r0, 0, kTileRows);
    for (int64_t s = 0; s < ksteps; ++s) {
      bf16* tile = out + s * kBlockStep + t * kATile;
      const int64_t kk = s * kTileK, left = kc - kk;  // valid k in this step: [0, left)
      if (!trans) {
        for (int64_t i = 0; i < kTileRows; ++i) {
          __m512i v = _mm512_setzero_si512();
          if (i < rows) {
            const float* src = A + (r0 + i) * lda + k0 + kk;
            v = to_bf16(_mm512_mul_ps(scale, load16(src, left)), _mm512_mul_ps(scale, load16(src + 16, left - 16)));
          }
          _mm512_storeu_si512(tile + i * kTileK, v);
        }
        continue;
      }
      // Transposed: pairs of A's stored rows k, k + 1 give 16 pairs over m; transposing the
      // 16 x 16 pairs gives the tile's rows.
      __m512i r[16];
      for (int64_t p = 0; p < 16; ++p) {
        const int64_t k = 2 * p;
        const __m512 x = k < left ? load16(A + (k0 + kk + k) * lda + r0, rows) : _mm512_setzero_ps();
        const __m512 y = k + 1 < left ? load16(A + (k0 + kk + k + 1) * lda + r0, rows) : _mm512_setzero_ps();
        r[p] = to_bf16_pairs(_mm512_mul_ps(scale, x), _mm512_mul_ps(scale, y));
      }
      transpose16x16(r);
      for (int64_t i = 0; i < kTileRows; ++i) _mm512_storeu_si512(tile + i * kTileK, r[i]);
    }
  }
}

// Columns [n0, n0 + nc) of op(B) and k in [k0, k0 + kc) as panels [panel][ksteps][16 pairs
// of k][16 columns][2 bf16], zero past nc and kc. op(B)(k, n) is B[k * ldb + n], or
// B[n * ldb + k] when transposed.
void pack_b_chunk(bool trans, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t ksteps, int64_t n0,
                  int64_t nc, bf16* out) {
  for (int64_t p = 0; p * kPanelCols < nc; ++p) {
    const int64_t c0 = n0 + p * kPanelCols, cols = std::min(kPanelCols, nc - p * kPanelCols);
    for (int64_t s = 0; s < ksteps; ++s) {
      bf16* tile = out + (p * ksteps + s) * kATile;
      const int64_t kk = s * kTileK, left = kc - kk;
      if (!trans) {
        for (int64_t q = 0; q < 16; ++q) {
          const int64_t k = 2 * q;
          const __m512 x = k < left ? load16(B + (k0 + kk + k) * ldb + c0, cols) : _mm512_setzero_ps();
          const __m512 y = k + 1 < left ? load16(B + (k0 + kk + k + 1) * ldb + c0, cols) : _mm512_setzero_ps();
          _mm512_storeu_si512(tile + q * kTileK, to_bf16_pairs(x, y));
        }
        continue;
      }
      // Transposed: each stored row is one column's 32 k values = its 16 pairs; transposing
      // the 16 x 16 pairs puts them in the pair layout.
      __m512i r[16];
      for (int64_t j = 0; j < 16; ++j) {
        r[j] = _mm512_setzero_si512();
        if (j < cols) {
          const float* src = B + (c0 + j) * ldb + k0 + kk;
          r[j] = to_bf16(load16(src, left), load16(src + 16, left - 16));
        }
      }
      transpose16x16(r);
      for (int64_t q = 0; q < 16; ++q) _mm512_storeu_si512(tile + q * kTileK, r[q]);
    }
  }
}

// Tile registers: 0-3 C (rows 0-15 / 16-31 x columns 0-15 / 16-31), 4-5 A, 6-7 B.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.bytes_per_row[t] = 64;
    cfg.rows[t] = kTileRows;
  }
  _tile_loadconfig(&cfg);
}

// A 32-row block times NT panels (NT = 1 or 2) over ksteps 32-deep steps: C (row stride ldc
// floats) += the products, or = them when zero_c.
template <int NT>
void block_times_panels(const bf16* a, const bf16* b, int64_t panel_stride, int64_t ksteps, float* c, int64_t ldc,
                        bool zero_c) {
  const int64_t cb = ldc * int64_t(sizeof(float));
  float* c_lo = c + kTileRows * ldc;
  if (zero_c) {
    _tile_zero(0);
    _tile_zero(2);
    if constexpr (NT == 2) {
      _tile_zero(1);
      _tile_zero(3);
    }
  } else {
    _tile_loadd(0, c, cb);
    _tile_loadd(2, c_lo, cb);
    if constexpr (NT == 2) {
      _tile_loadd(1, c + kPanelCols, cb);
      _tile_loadd(3, c_lo + kPanelCols, cb);
    }
  }
  for (int64_t s = 0; s < ksteps; ++s) {
    _tile_loadd(4, a + s * kBlockStep, 64);
    _tile_loadd(5, a + s * kBlockStep + kATile, 64);
    _tile_loadd(6, b + s * kATile, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    if constexpr (NT == 2) {
      _tile_loadd(7, b + panel_stride + s * kATile, 64);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, cb);
  _tile_stored(2, c_lo, cb);
  if constexpr (NT == 2) {
    _tile_stored(1, c + kPanelCols, cb);
    _tile_stored(3, c_lo + kPanelCols, cb);
  }
}

}  // namespace

bool amx_bf16_available() {
  static const bool available = request_amx_state();
  return available;
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (!amx_bf16_available()) throw std::logic_error("gemm_bf16: this CPU or kernel offers no AMX-BF16");
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || (beta != 0.0f && beta != 1.0f)) {  // C = beta C first; the first slice
                                                    // starts from zero (beta 0) or from C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
  }
  if (K <= 0) return;
  // K in equal slices, each a whole number of 32-deep steps (the last one zero-padded).
  const int64_t slices = (K + kBf16SliceK - 1) / kBf16SliceK;
  const int64_t kstep = (K + slices - 1) / slices;
  const int64_t ksteps_max = (kstep + kTileK - 1) / kTileK;
  const int64_t blocks = (M + kBlockRows - 1) / kBlockRows;
  thread_local std::vector<bf16> a_packed, b_packed;
  a_packed.resize(size_t(blocks * ksteps_max * kBlockStep));
  b_packed.resize(size_t((kChunkCols / kPanelCols) * ksteps_max * kATile));
  alignas(64) float scratch[kBlockRows * 2 * kPanelCols];
  configure_tiles();
  for (int64_t k0 = 0; k0 < K; k0 += kstep) {
    const int64_t kc = std::min(kstep, K - k0), ksteps = (kc + kTileK - 1) / kTileK;
    for (int64_t blk = 0; blk < blocks; ++blk)
      pack_a_block(trans_a, A, lda, M, blk * kBlockRows, k0, kc, ksteps, alpha,
                   a_packed.data() + blk * ksteps * kBlockStep);
    for (int64_t n0 = 0; n0 < N; n0 += kChunkCols) {
      const int64_t nc = std::min(kChunkCols, N - n0), panels = (nc + kPanelCols - 1) / kPanelCols;
      pack_b_chunk(trans_b, B, ldb, k0, kc, ksteps, n0, nc, b_packed.data());
      const int64_t panel_stride = ksteps * kATile;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t m0 = blk * kBlockRows, rows = std::min(kBlockRows, M - m0);
        const bf16* a = a_packed.data() + blk * ksteps * kBlockStep;
        for (int64_t p = 0; p < panels; p += 2) {
          const int nt = panels - p >= 2 ? 2 : 1;
          const int64_t cols = std::min(nt * kPanelCols, nc - p * kPanelCols);
          float* c = C + m0 * ldc + n0 + p * kPanelCols;
          const bf16* b = b_packed.data() + p * panel_stride;
          const bool full = rows == kBlockRows && cols == nt * kPanelCols;
          // The block's C, or a copy of what overlaps C (zeros around it) when it overhangs.
          float* target = c;
          int64_t ld = ldc;
          if (!full) {
            target = scratch;
            ld = 2 * kPanelCols;
            std::memset(scratch, 0, sizeof scratch);
            for (int64_t i = 0; i < rows; ++i) std::memcpy(scratch + i * ld, c + i * ldc, size_t(cols) * sizeof(float));
          }
          const bool zero_c = k0 == 0 && beta == 0.0f;
          if (nt == 2) block_times_panels<2>(a, b, panel_stride, ksteps, target, ld, zero_c);
          else block_times_panels<1>(a, b, panel_stride, ksteps, target, ld, zero_c);
          if (!full)
            for (int64_t i = 0; i < rows; ++i) std::memcpy(c + i * ldc, scratch + i * ld, size_t(cols) * sizeof(float));
        }
      }
    }
  }
  _tile_release();
}

#endif  // LOOM_WITH_AMX

}  // namespace loom::runtime::cpu
