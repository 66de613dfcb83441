// cpu/gemm_bf16.cpp: f32 GEMM with bf16 products on Intel AMX, f32 sums in the tiles.
//
// Why: an AMX core multiplies 16 x 32 bf16 by 32 x 16 bf16 into 16 x 16 f32 per TDPBF16PS,
// measured at about 2.4 TFLOP/s per core on registers alone, on a Xeon whose f32 GEMM
// (AVX-512, OpenBLAS or MKL) peaks at 145-170 GFLOP/s (bench/README.md). Operands stay f32 in
// memory (the master weights, activations and gradients): each is rounded to bf16 once, while
// being packed into tiles.
//
// Loops: for each K slice (<= 1024 deep, equal slices, padded to 32), pack op(A)'s rows for
// that slice into 32-row blocks of A tiles ([k/32][2 tiles][16 rows][32 bf16]; transposed A by
// streaming its stored rows in pairs, then transposing 16 x 16 units in cache), then for each
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

#include "runtime/cpu/avx512.h"
#include "runtime/cpu/line_vector.h"
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

using avx512::load16;
using avx512::transpose16x16;
using bf16 = uint16_t;
constexpr int64_t kTileRows = 16;                     // rows of every tile
constexpr int64_t kTileK = 32;                        // bf16 values in a tile row (64 bytes)
constexpr int64_t kATile = kTileRows * kTileK;        // 512 bf16 per tile
constexpr int64_t kBlockRows = 2 * kTileRows;         // a block of A: two tiles of rows
constexpr int64_t kPanelCols = 16;                    // a panel of B: one tile of columns
constexpr int64_t kChunkCols = 512;                   // columns of B packed at a time: <= 1 MB
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

// lo's and hi's floats as 32 bf16 (round to nearest even), lo's in the low half.
inline __m512i to_bf16(__m512 lo, __m512 hi) { return __m512i(_mm512_cvtne2ps_pbh(hi, lo)); }

// Rows k and k + 1 of 16 columns as 16 pairs (x_j, y_j): the 32-bit units of AMX's B layout.
inline __m512i to_bf16_pairs(__m512 x, __m512 y) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, to_bf16(x, y));
}

// Where the packers put each 16 x 16 unit of 32-bit pairs (a tile: 16 rows x 32 bf16) of
// 16-row (A) or 16-column (B) group g and 32-deep step s.
struct UnitLayout {
  int64_t group_pair_stride, odd_group_offset, step_stride;
  bf16* base;
  bf16* at(int64_t g, int64_t s) const {
    return base + (g / 2) * group_pair_stride + (g % 2) * odd_group_offset + s * step_stride;
  }
};
// A: 32-row blocks [block][ksteps][2 tiles][16 rows][32 bf16]: a block's step is contiguous.
UnitLayout a_layout(bf16* base, int64_t ksteps) { return {ksteps * kBlockStep, kATile, kBlockStep, base}; }
// B: 16-column panels [panel][ksteps][16 pairs of k][16 columns][2 bf16]: a panel's steps are.
UnitLayout b_layout(bf16* base, int64_t ksteps) { return {2 * ksteps * kATile, ksteps * kATile, kATile, base}; }

// Source rows that run along k (A row-major, B transposed): group g's unit at step s gets, as
// its row i, stored row 16 g + i's values k0 + 32 s .. + 32 (times scale), zero past `rows`
// and kc; transposed as 16 x 16 pairs when `transpose` (B). Unit by unit, so each is written
// whole (in-step this was 5-10% faster than reading each row front to back and scattering it
// over the steps' units).
void pack_rows_along_k(const float* X, int64_t ld, int64_t rows, int64_t groups, int64_t k0, int64_t kc,
                       int64_t ksteps, float scale, bool transpose, const UnitLayout& out) {
  const __m512 f = _mm512_set1_ps(scale);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t s = 0; s < ksteps; ++s) {
      const int64_t left = kc - s * kTileK;
      __m512i r[16];
      for (int64_t i = 0; i < kTileRows; ++i) {
        r[i] = _mm512_setzero_si512();
        if (g * kTileRows + i < rows) {
          const float* src = X + (g * kTileRows + i) * ld + k0 + s * kTileK;
          r[i] = to_bf16(_mm512_mul_ps(f, load16(src, left)), _mm512_mul_ps(f, load16(src + 16, left - 16)));
        }
      }
      if (transpose) transpose16x16(r);
      bf16* unit = out.at(g, s);
      for (int64_t i = 0; i < kTileRows; ++i) _mm512_storeu_si512(unit + i * kTileK, r[i]);
    }
}

// Source rows that are single k values (A transposed, B row-major): group g's unit at step s
// gets, as its row q, the pairs (k, k + 1) = k0 + 32 s + 2 q of columns 16 g .. + 16 (times
// scale), zero past `cols` and kc. Row pairs are read front to back across all groups.
void pack_rows_along_mn(const float* X, int64_t ld, int64_t cols, int64_t groups, int64_t k0, int64_t kc,
                        int64_t ksteps, float scale, const UnitLayout& out) {
  const __m512 f = _mm512_set1_ps(scale);
  for (int64_t kk = 0; kk < ksteps * kTileK; kk += 2) {
    const float* x = X + (k0 + kk) * ld;
    const bool has_x = kk < kc, has_y = kk + 1 < kc;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * kTileRows;
      const __m512 vx = has_x ? _mm512_mul_ps(f, load16(x + c0, cols - c0)) : _mm512_setzero_ps();
      const __m512 vy = has_y ? _mm512_mul_ps(f, load16(x + ld + c0, cols - c0)) : _mm512_setzero_ps();
      _mm512_storeu_si512(out.at(g, kk / kTileK) + (kk % kTileK / 2) * kTileK, to_bf16_pairs(vx, vy));
    }
  }
}

// Every unit of `groups` x ksteps transposed in place (as 16 x 16 32-bit pairs).
void transpose_units(int64_t groups, int64_t ksteps, const UnitLayout& out) {
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t s = 0; s < ksteps; ++s) {
      bf16* unit = out.at(g, s);
      __m512i r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(unit + i * kTileK);
      transpose16x16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(unit + i * kTileK, r[i]);
    }
}

// alpha op(A)'s rows [0, M) (zero up to whole 32-row blocks) and k in [k0, k0 + kc) as A
// tiles. op(A)(m, k) is A[m * lda + k], or A[k * lda + m] when transposed: then each unit
// holds the pairs over 16 m and is transposed into tile rows.
void pack_a(bool trans, const float* A, int64_t lda, int64_t M, int64_t k0, int64_t kc, int64_t ksteps, float alpha,
            bf16* out) {
  const UnitLayout layout = a_layout(out, ksteps);
  const int64_t groups = 2 * ((M + kBlockRows - 1) / kBlockRows);
  if (!trans) return pack_rows_along_k(A, lda, M, groups, k0, kc, ksteps, alpha, false, layout);
  pack_rows_along_mn(A, lda, M, groups, k0, kc, ksteps, alpha, layout);
  transpose_units(groups, ksteps, layout);
}

// op(B)'s columns [n0, n0 + nc) and k in [k0, k0 + kc) as B tiles (pairs of k), zero past nc
// and kc. op(B)(k, n) is B[k * ldb + n], or B[n * ldb + k] when transposed: then a unit's 16
// columns' pairs are transposed into the pair layout on the way.
void pack_b(bool trans, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t ksteps, int64_t n0, int64_t nc,
            bf16* out) {
  const UnitLayout layout = b_layout(out, ksteps);
  const int64_t groups = (nc + kPanelCols - 1) / kPanelCols;
  if (!trans) return pack_rows_along_mn(B + n0, ldb, nc, groups, k0, kc, ksteps, 1.0f, layout);
  pack_rows_along_k(B + n0 * ldb, ldb, nc, groups, k0, kc, ksteps, 1.0f, true, layout);
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

// A 32-row block times NT panels (NT = 1 or 2) over ksteps 32-deep steps: out = in + the
// products, or = them when zero_in (row strides ld_in, ld_out floats; out may be in).
template <int NT>
void block_times_panels(const bf16* a, const bf16* b, int64_t panel_stride, int64_t ksteps, const float* in,
                        int64_t ld_in, float* out, int64_t ld_out, bool zero_in) {
  const int64_t ib = ld_in * int64_t(sizeof(float)), ob = ld_out * int64_t(sizeof(float));
  if (zero_in) {
    _tile_zero(0);
    _tile_zero(2);
    if constexpr (NT == 2) {
      _tile_zero(1);
      _tile_zero(3);
    }
  } else {
    _tile_loadd(0, in, ib);
    _tile_loadd(2, in + kTileRows * ld_in, ib);
    if constexpr (NT == 2) {
      _tile_loadd(1, in + kPanelCols, ib);
      _tile_loadd(3, in + kTileRows * ld_in + kPanelCols, ib);
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
  _tile_stored(0, out, ob);
  _tile_stored(2, out + kTileRows * ld_out, ob);
  if constexpr (NT == 2) {
    _tile_stored(1, out + kPanelCols, ob);
    _tile_stored(3, out + kTileRows * ld_out + kPanelCols, ob);
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
  thread_local LineVector<bf16> a_storage, b_storage;
  a_storage.resize(size_t(blocks * ksteps_max * kBlockStep));
  b_storage.resize(size_t((kChunkCols / kPanelCols) * ksteps_max * kATile));
  bf16* const a_packed = a_storage.data();
  bf16* const b_packed = b_storage.data();
  alignas(64) float scratch[kBlockRows * 2 * kPanelCols];
  configure_tiles();
  for (int64_t k0 = 0; k0 < K; k0 += kstep) {
    const int64_t kc = std::min(kstep, K - k0), ksteps = (kc + kTileK - 1) / kTileK;
    pack_a(trans_a, A, lda, M, k0, kc, ksteps, alpha, a_packed);
    for (int64_t n0 = 0; n0 < N; n0 += kChunkCols) {
      const int64_t nc = std::min(kChunkCols, N - n0), panels = (nc + kPanelCols - 1) / kPanelCols;
      pack_b(trans_b, B, ldb, k0, kc, ksteps, n0, nc, b_packed);
      const int64_t panel_stride = ksteps * kATile;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t m0 = blk * kBlockRows, rows = std::min(kBlockRows, M - m0);
        const bf16* a = a_packed + blk * ksteps * kBlockStep;
        for (int64_t p = 0; p < panels; p += 2) {
          const int nt = panels - p >= 2 ? 2 : 1;
          const int64_t cols = std::min(nt * kPanelCols, nc - p * kPanelCols);
          float* c = C + m0 * ldc + n0 + p * kPanelCols;
          const bf16* b = b_packed + p * panel_stride;
          const bool full = rows == kBlockRows && cols == nt * kPanelCols;
          const bool zero_in = k0 == 0 && beta == 0.0f;
          if (full) {
            if (nt == 2) block_times_panels<2>(a, b, panel_stride, ksteps, c, ldc, c, ldc, zero_in);
            else block_times_panels<1>(a, b, panel_stride, ksteps, c, ldc, c, ldc, zero_in);
            continue;
          }
          // A block that overhangs C: through the scratch, zeros around what overlaps C.
          const int64_t ld = 2 * kPanelCols;
          std::memset(scratch, 0, sizeof scratch);
          for (int64_t i = 0; i < rows; ++i) std::memcpy(scratch + i * ld, c + i * ldc, size_t(cols) * sizeof(float));
          if (nt == 2) block_times_panels<2>(a, b, panel_stride, ksteps, scratch, ld, scratch, ld, zero_in);
          else block_times_panels<1>(a, b, panel_stride, ksteps, scratch, ld, scratch, ld, zero_in);
          for (int64_t i = 0; i < rows; ++i) std::memcpy(c + i * ldc, scratch + i * ld, size_t(cols) * sizeof(float));
        }
      }
    }
  }
  _tile_release();
}

#endif  // LOOM_WITH_AMX

}  // namespace loom::runtime::cpu
