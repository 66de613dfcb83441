// cuda/attention_tiled.cu: attention's fast path (attention_tiled.h), FlashAttention-2's tiling
// on CUDA cores in f32.
//
// A block of 256 threads works on 64 x 64 tiles of the score matrix. Thread (ty, tx), with
// ty, tx in [0, 16), owns rows 4ty..4ty+3 and columns 4tx..4tx+3 of a tile, so a score tile is
// 16 values in its registers. Operands of a score product are staged in shared memory
// transposed ([D][64 + 4]), which makes each step of the D-long product two 16-byte loads for
// 16 multiply-adds. The 16 threads of a row sit in one half-warp, so row maxima and sums are
// four shuffles. Probabilities go back to shared memory (transposed again) for the products
// with V / gout / Q / K, whose rows are staged as they are.
//
// Forward: one block per 64 query rows of a (b, h), looping over key tiles with an online
// softmax (running max m and sum l per row, accumulator rescaled when m grows).
// Backward: as in attention.cu, one kernel over query tiles writes gq (S, dP, dQ += dS K) and
// one over key tiles of a kv head, looping over its query heads and their query tiles, writes
// gk and gv (S^T, dP^T, dV += P^T gout, dK += dS^T Q): every output element has one writer.
#include <type_traits>

#include "runtime/cuda/attention_tiled.h"
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

constexpr int kRows = 64;               // rows (queries or keys) of a tile
constexpr int kBlockThreads = 256;      // 16 x 16: each thread a 4 x 4 piece of a score tile
constexpr int kLd = kRows + 4;          // row stride of transposed tiles: 16-byte rows, staggered banks

// The columns a thread tx owns in a [64, D] accumulator: `groups` runs of `vec` consecutive
// columns (vec 4 reads them as one float4), D / 16 in all.
template <int D> struct OutCols {
  static constexpr int per = D / 16;
  static constexpr int vec = per < 4 ? per : 4;
  static constexpr int groups = per / vec;
  __device__ static int col(int tx, int g) { return g * 16 * vec + tx * vec; }
};

template <int N> __device__ inline void load_vec(const float* p, float* dst) {
  if constexpr (N == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    dst[0] = v.x, dst[1] = v.y, dst[2] = v.z, dst[3] = v.w;
  } else if constexpr (N == 2) {
    const float2 v = *reinterpret_cast<const float2*>(p);
    dst[0] = v.x, dst[1] = v.y;
  } else {
    dst[0] = *p;
  }
}
template <int N> __device__ inline void store_vec(float* p, const float* src) {
  if constexpr (N == 4) *reinterpret_cast<float4*>(p) = make_float4(src[0], src[1], src[2], src[3]);
  else if constexpr (N == 2) *reinterpret_cast<float2*>(p) = make_float2(src[0], src[1]);
  else *p = src[0];
}

// Offset of row (b, t, head) of a [B, T, heads, D] tensor.
__device__ inline int64_t row_at(int64_t b, int64_t t, int64_t head, int64_t T, int64_t heads, int64_t D) {
  return ((b * T + t) * heads + head) * D;
}

// Row stride of tiles staged as rows ([64][D + 4]): 16-byte rows on staggered banks.
template <int D> constexpr int kRowLd = D + 4;

// A thread's share of a 64-row tile of a [B, T, heads, D] tensor, loaded into registers and then
// stored to shared memory transposed ([D][kLd]), as rows ([64][D + 4]), or both. The thread holds
// row 16 (warp % 4) + lane % 16, quads (4 floats) 2 (warp / 4) + lane / 16 + 4k for k < D / 16:
// each load step of a warp reads 32 contiguous bytes (a whole sector) of 16 rows, and each
// shared-memory store step of a warp hits 32 different banks (transposed) or each 16-byte bank
// group 4 times (rows), neither with conflicts. All loads are issued before any store.
template <int D> struct TileShare {
  static constexpr int kQuads = D / 16;
  float4 v[kQuads];
  int r, q0;
  __device__ TileShare()
      : r(16 * (threadIdx.x / 32 % 4) + threadIdx.x % 16), q0(2 * (threadIdx.x / 128) + threadIdx.x % 32 / 16) {}
  __device__ int col(int k) const { return 4 * (q0 + 4 * k); }
  // Rows [t0, t0 + 64) of `head` of x, zeros past T.
  __device__ void load(const float* __restrict__ x, int64_t b, int64_t t0, int64_t T, int64_t head, int64_t heads) {
    const int64_t t = t0 + r;
    if (t < T) {
      const float* row = x + row_at(b, t, head, T, heads, D);
#pragma unroll
      for (int k = 0; k < kQuads; ++k) v[k] = *reinterpret_cast<const float4*>(row + col(k));
    } else {
#pragma unroll
      for (int k = 0; k < kQuads; ++k) v[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  __device__ void store_transposed(float* dst) const {  // dst[d * kLd + r]
#pragma unroll
    for (int k = 0; k < kQuads; ++k) {
      const int c = col(k);
      dst[(c + 0) * kLd + r] = v[k].x;
      dst[(c + 1) * kLd + r] = v[k].y;
      dst[(c + 2) * kLd + r] = v[k].z;
      dst[(c + 3) * kLd + r] = v[k].w;
    }
  }
  __device__ void store_rows(float* dst) const {  // dst[r * kRowLd + d]
#pragma unroll
    for (int k = 0; k < kQuads; ++k) *reinterpret_cast<float4*>(dst + r * kRowLd<D> + col(k)) = v[k];
  }
};

// acc[i][j] += sum_d A[d][4ty + i] * B[d][4tx + j]: this thread's piece of A^T B, both operands
// staged transposed with `Depth` rows.
template <int Depth>
__device__ inline void product_tt(const float* A, const float* B, int ty, int tx, float (&acc)[4][4]) {
#pragma unroll 8
  for (int d = 0; d < Depth; ++d) {
    const float4 a = *reinterpret_cast<const float4*>(A + d * kLd + 4 * ty);
    const float4 b = *reinterpret_cast<const float4*>(B + d * kLd + 4 * tx);
    const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}

// acc[i][n] += sum_c P[c][4ty + i] * R[c][column n of tx]: a [64, 64] tile staged transposed
// times a [64, D] tile staged as rows ([64][D + 4]), into this thread's rows of a [64, D]
// accumulator.
template <int D>
__device__ inline void product_tn(const float* P, const float* R, int ty, int tx, float (&acc)[4][D / 16]) {
  using C = OutCols<D>;
#pragma unroll 4
  for (int c = 0; c < kRows; ++c) {
    const float4 p = *reinterpret_cast<const float4*>(P + c * kLd + 4 * ty);
    const float pv[4] = {p.x, p.y, p.z, p.w};
    float r[D / 16];
#pragma unroll
    for (int g = 0; g < C::groups; ++g) load_vec<C::vec>(R + c * kRowLd<D> + C::col(tx, g), r + g * C::vec);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int n = 0; n < D / 16; ++n) acc[i][n] = fmaf(pv[i], r[n], acc[i][n]);
  }
}

// Stores this thread's piece p[i][j] (tile row 4ty + i, column 4tx + j) transposed:
// dst[(4tx + j) * kLd + 4ty + i].
__device__ inline void store_piece_transposed(float* dst, const float (&p)[4][4], int ty, int tx) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
    *reinterpret_cast<float4*>(dst + (4 * tx + j) * kLd + 4 * ty) = make_float4(p[0][j], p[1][j], p[2][j], p[3][j]);
}

// Writes rows [4ty, 4ty + 4) of a [64, D] accumulator, times `factor[i]`, to rows t0 + 4ty + i
// (those below T) of `head` of x.
template <int D>
__device__ inline void write_rows(float* __restrict__ x, const float (&acc)[4][D / 16], const float (&factor)[4],
                                  int64_t b, int64_t t0, int64_t T, int64_t head, int64_t heads, int ty, int tx) {
  using C = OutCols<D>;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = t0 + 4 * ty + i;
    if (t >= T) continue;
    float* row = x + row_at(b, t, head, T, heads, D);
#pragma unroll
    for (int g = 0; g < C::groups; ++g) {
      float vals[C::vec];
#pragma unroll
      for (int n = 0; n < C::vec; ++n) vals[n] = acc[i][g * C::vec + n] * factor[i];
      store_vec<C::vec>(row + C::col(tx, g), vals);
    }
  }
}

// Max and sum over the 16 threads of a tile row (one half-warp).
__device__ inline float row_max16(float v) {
  for (int o = 8; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}
__device__ inline float row_sum16(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ inline bool visible(const TiledAttention& a, int64_t i, int64_t j) {
  return j < a.Tk && (!a.causal || a.k_offset + j <= a.q_offset + i);
}
// Keys [0, key_end(i)) can be visible to query i; queries [query_begin(j), Tq) can see key j.
__device__ inline int64_t key_end(const TiledAttention& a, int64_t i) {
  if (!a.causal) return a.Tk;
  const int64_t e = a.q_offset + i - a.k_offset + 1;
  return e < 0 ? 0 : (e > a.Tk ? a.Tk : e);
}
__device__ inline int64_t query_begin(const TiledAttention& a, int64_t j) {
  if (!a.causal) return 0;
  const int64_t s = a.k_offset + j - a.q_offset;
  return s < 0 ? 0 : (s > a.Tq ? a.Tq : s);
}
// Keys the block's query tile [i0, i0 + 64) can see: [0, tile_key_end).
__device__ inline int64_t tile_key_end(const TiledAttention& a, int64_t i0) {
  return key_end(a, (i0 + kRows < a.Tq ? i0 + kRows : a.Tq) - 1);
}

// The first row of this block's query tile, the last tiles first: under causality they see the
// most keys, and starting the longest blocks first shortens the grid's tail.
__device__ inline int64_t last_tiles_first() { return int64_t(gridDim.x - 1 - blockIdx.x) * kRows; }

// ---- forward -------------------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kBlockThreads)
    forward_kernel(TiledAttention a, float* __restrict__ out, float* __restrict__ lse) {
  extern __shared__ float4 smem_f4[];
  float* Qt = reinterpret_cast<float*>(smem_f4);  // [D][kLd]
  float* Kt = Qt + D * kLd;                        // [D][kLd]
  float* Vs = Kt + D * kLd;                        // [64][D + 4]
  float* Pt = Vs + kRows * kRowLd<D>;              // [64][kLd]: probabilities, transposed
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (a.H / a.Hkv), i0 = last_tiles_first();
  {
    TileShare<D> qs;
    qs.load(a.q, b, i0, a.Tq, h, a.H);
    qs.store_transposed(Qt);
  }
  float m[4], l[4], o[4][D / 16];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY, l[i] = 0.f;
#pragma unroll
    for (int n = 0; n < D / 16; ++n) o[i][n] = 0.f;
  }
  const int64_t kend = tile_key_end(a, i0);
  for (int64_t j0 = 0; j0 < kend; j0 += kRows) {
    __syncthreads();  // the previous tile's readers of Kt, Vs and Pt are done
    TileShare<D> ks, vs;
    ks.load(a.k, b, j0, a.Tk, hk, a.Hkv);
    vs.load(a.v, b, j0, a.Tk, hk, a.Hkv);
    ks.store_transposed(Kt);
    vs.store_rows(Vs);
    __syncthreads();
    float s[4][4] = {};
    product_tt<D>(Qt, Kt, ty, tx, s);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t qi = i0 + 4 * ty + i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s[i][j] = visible(a, qi, j0 + 4 * tx + j) ? s[i][j] * a.scale : -INFINITY;
        mx = s[i][j] > mx ? s[i][j] : mx;
      }
      mx = row_max16(mx);
      const float new_m = m[i] > mx ? m[i] : mx;
      const bool none = new_m == -INFINITY;  // the row has seen no key yet: nothing to rescale
      const float corr = none ? 1.f : expf(m[i] - new_m);
      float rs = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s[i][j] = none ? 0.f : expf(s[i][j] - new_m);  // exp(-inf) = 0 for hidden keys
        rs += s[i][j];
      }
      l[i] = l[i] * corr + row_sum16(rs);
      m[i] = new_m;
#pragma unroll
      for (int n = 0; n < D / 16; ++n) o[i][n] *= corr;
    }
    store_piece_transposed(Pt, s, ty, tx);
    __syncthreads();
    product_tn<D>(Pt, Vs, ty, tx, o);
  }
  float inv[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) inv[i] = l[i] > 0.f ? 1.f / l[i] : 0.f;  // a row that saw no key: out = 0
  write_rows<D>(out, o, inv, b, i0, a.Tq, h, a.H, ty, tx);
  if (tx == 0)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t qi = i0 + 4 * ty + i;
      if (qi < a.Tq) lse[(b * a.H + h) * a.Tq + qi] = l[i] > 0.f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

// ---- backward: gq --------------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kBlockThreads)
    dq_kernel(TiledAttention a, const float* __restrict__ lse, const float* __restrict__ gout,
              const float* __restrict__ Dv, float* __restrict__ gq) {
  extern __shared__ float4 smem_f4[];
  float* Qt = reinterpret_cast<float*>(smem_f4);  // [D][kLd]
  float* Gt = Qt + D * kLd;                        // [D][kLd]: gout rows, transposed
  float* Kt = Gt + D * kLd;                        // [D][kLd]
  float* Vt = Kt + D * kLd;                        // [D][kLd]
  float* Ks = Vt + D * kLd;                        // [64][D + 4]
  float* St = Ks + kRows * kRowLd<D>;              // [64][kLd]: dS, transposed
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (a.H / a.Hkv), i0 = last_tiles_first();
  {
    TileShare<D> qs, gs;
    qs.load(a.q, b, i0, a.Tq, h, a.H);
    gs.load(gout, b, i0, a.Tq, h, a.H);
    qs.store_transposed(Qt);
    gs.store_transposed(Gt);
  }
  float L[4], Di[4], acc[4][D / 16];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t qi = i0 + 4 * ty + i;
    L[i] = qi < a.Tq ? lse[(b * a.H + h) * a.Tq + qi] : -INFINITY;
    Di[i] = qi < a.Tq ? Dv[(b * a.H + h) * a.Tq + qi] : 0.f;
#pragma unroll
    for (int n = 0; n < D / 16; ++n) acc[i][n] = 0.f;
  }
  const int64_t kend = tile_key_end(a, i0);
  for (int64_t j0 = 0; j0 < kend; j0 += kRows) {
    __syncthreads();
    TileShare<D> ks, vs;
    ks.load(a.k, b, j0, a.Tk, hk, a.Hkv);
    vs.load(a.v, b, j0, a.Tk, hk, a.Hkv);
    ks.store_transposed(Kt);
    ks.store_rows(Ks);
    vs.store_transposed(Vt);
    __syncthreads();
    float s[4][4] = {}, dp[4][4] = {};
    product_tt<D>(Qt, Kt, ty, tx, s);
    product_tt<D>(Gt, Vt, ty, tx, dp);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t qi = i0 + 4 * ty + i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // dS = P (dP - D_i); a row that saw no key has zero gradient
        const bool live = L[i] != -INFINITY && visible(a, qi, j0 + 4 * tx + j);
        s[i][j] = live ? expf(s[i][j] * a.scale - L[i]) * (dp[i][j] - Di[i]) : 0.f;
      }
    }
    store_piece_transposed(St, s, ty, tx);
    __syncthreads();
    product_tn<D>(St, Ks, ty, tx, acc);
  }
  const float scale[4] = {a.scale, a.scale, a.scale, a.scale};
  write_rows<D>(gq, acc, scale, b, i0, a.Tq, h, a.H, ty, tx);
}

// ---- backward: gk, gv ----------------------------------------------------------------------------
// One block per 64 keys of a kv head. Tile rows are keys (4ty + i), tile columns queries (4tx + j).
template <int D>
__global__ void __launch_bounds__(kBlockThreads)
    dkv_kernel(TiledAttention a, const float* __restrict__ lse, const float* __restrict__ gout,
               const float* __restrict__ Dv, float* __restrict__ gk, float* __restrict__ gv) {
  // Xq holds the query tile transposed, then (once the scores are in registers) P; Xg holds
  // gout's tile transposed, then dS. Both are sized for the larger of the two.
  constexpr int kX = (D > kRows ? D : kRows) * kLd;
  extern __shared__ float4 smem_f4[];
  float* Kt = reinterpret_cast<float*>(smem_f4);  // [D][kLd]
  float* Vt = Kt + D * kLd;                        // [D][kLd]
  float* Xq = Vt + D * kLd;                        // [D][kLd], then [64 queries][kLd keys]
  float* Xg = Xq + kX;                             // likewise
  float* Qs = Xg + kX;                             // [64][D + 4]
  float* Gs = Qs + kRows * kRowLd<D>;              // [64][D + 4]
  float* Ls = Gs + kRows * kRowLd<D>;              // [64]: the query tile's lse
  float* Ds = Ls + kRows;                          // [64]: and D_i
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t b = blockIdx.z, hk = blockIdx.y, group = a.H / a.Hkv, j0 = int64_t(blockIdx.x) * kRows;
  {
    TileShare<D> ks, vs;
    ks.load(a.k, b, j0, a.Tk, hk, a.Hkv);
    vs.load(a.v, b, j0, a.Tk, hk, a.Hkv);
    ks.store_transposed(Kt);
    vs.store_transposed(Vt);
  }
  float dk[4][D / 16], dv[4][D / 16];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int n = 0; n < D / 16; ++n) dk[i][n] = dv[i][n] = 0.f;
  const int64_t qstart = query_begin(a, j0) / kRows * kRows;  // the tile's first key sees the most queries
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    for (int64_t i0 = qstart; i0 < a.Tq; i0 += kRows) {
      __syncthreads();  // the previous tile's readers of Xq, Xg, Qs, Gs are done
      TileShare<D> qs, gs;
      qs.load(a.q, b, i0, a.Tq, h, a.H);
      gs.load(gout, b, i0, a.Tq, h, a.H);
      qs.store_transposed(Xq);
      qs.store_rows(Qs);
      gs.store_transposed(Xg);
      gs.store_rows(Gs);
      for (int r = threadIdx.x; r < kRows; r += kBlockThreads) {
        const int64_t qi = i0 + r;
        Ls[r] = qi < a.Tq ? lse[(b * a.H + h) * a.Tq + qi] : -INFINITY;
        Ds[r] = qi < a.Tq ? Dv[(b * a.H + h) * a.Tq + qi] : 0.f;
      }
      __syncthreads();
      float p[4][4] = {}, ds[4][4] = {};
      product_tt<D>(Kt, Xq, ty, tx, p);   // scores, keys by queries
      product_tt<D>(Vt, Xg, ty, tx, ds);  // dP^T
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = 4 * tx + j;
        const int64_t qi = i0 + r;
        const float Lq = Ls[r], Dq = Ds[r];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const bool live = Lq != -INFINITY && qi < a.Tq && visible(a, qi, j0 + 4 * ty + i);
          const float pij = live ? expf(p[i][j] * a.scale - Lq) : 0.f;
          ds[i][j] = pij * (ds[i][j] - Dq);
          p[i][j] = pij;
        }
      }
      __syncthreads();  // every thread is done reading Xq and Xg as operands
      store_piece_transposed(Xq, p, ty, tx);
      store_piece_transposed(Xg, ds, ty, tx);
      __syncthreads();
      product_tn<D>(Xq, Gs, ty, tx, dv);
      product_tn<D>(Xg, Qs, ty, tx, dk);
    }
  }
  const float one[4] = {1.f, 1.f, 1.f, 1.f}, scale[4] = {a.scale, a.scale, a.scale, a.scale};
  write_rows<D>(gk, dk, scale, b, j0, a.Tk, hk, a.Hkv, ty, tx);
  write_rows<D>(gv, dv, one, b, j0, a.Tk, hk, a.Hkv, ty, tx);
}

// ---- host side -----------------------------------------------------------------------------------
// Calls fn(std::integral_constant<int, D>{}) for a head width the kernels are built for.
template <class F> void with_head_width(int64_t D, F&& fn) {
  switch (D) {
    case 16: return fn(std::integral_constant<int, 16>{});
    case 32: return fn(std::integral_constant<int, 32>{});
    case 64: return fn(std::integral_constant<int, 64>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    default: throw std::logic_error("tiled attention: no kernel for head width " + std::to_string(D));
  }
}

unsigned tiles(int64_t n) { return unsigned((n + kRows - 1) / kRows); }

}  // namespace

bool tiled_attention_applies(int64_t D, std::initializer_list<const void*> pointers) {
  if (D != 16 && D != 32 && D != 64 && D != 128) return false;
  for (const void* p : pointers)
    if (!aligned16(p)) return false;
  return true;
}

void tiled_attention_forward(const TiledAttention& a, float* out, float* lse) {
  with_head_width(a.D, [&](auto width) {
    constexpr int D = decltype(width)::value;
    const size_t smem = sizeof(float) * size_t(2 * D * kLd + kRows * kRowLd<D> + kRows * kLd);
    launch_with_shared_memory(forward_kernel<D>, dim3(tiles(a.Tq), unsigned(a.H), unsigned(a.B)), kBlockThreads,
                              smem, "launch of tiled attention kernel", a, out, lse);
  });
}

void tiled_attention_backward(const TiledAttention& a, const float* lse, const float* gout, const float* Dv,
                              float* gq, float* gk, float* gv) {
  with_head_width(a.D, [&](auto width) {
    constexpr int D = decltype(width)::value;
    const size_t smem_q = sizeof(float) * size_t(4 * D * kLd + kRows * kRowLd<D> + kRows * kLd);
    launch_with_shared_memory(dq_kernel<D>, dim3(tiles(a.Tq), unsigned(a.H), unsigned(a.B)), kBlockThreads, smem_q,
                              "launch of tiled attention dq kernel", a, lse, gout, Dv, gq);
    if (a.Tk == 0) return;  // no keys, no key gradients
    constexpr int kX = (D > kRows ? D : kRows) * kLd;
    const size_t smem_kv = sizeof(float) * size_t(2 * D * kLd + 2 * kX + 2 * kRows * kRowLd<D> + 2 * kRows);
    launch_with_shared_memory(dkv_kernel<D>, dim3(tiles(a.Tk), unsigned(a.Hkv), unsigned(a.B)), kBlockThreads,
                              smem_kv, "launch of tiled attention dk/dv kernel", a, lse, gout, Dv, gk, gv);
  });
}

}  // namespace loom::runtime::cuda
