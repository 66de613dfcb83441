// cuda/attention_tiled.cu: attention's fast path (attention_tiled.h), FlashAttention-2's tiling
// on CUDA cores in f32.
//
// A block of 256 threads works on 16R x 64 tiles of the score matrix (R = 4 or 8). Thread
// (ty, tx), with ty, tx in [0, 16), owns rows R ty..R ty+R-1 and columns 4tx..4tx+3 of a tile,
// so a score tile is 4R values in its registers. Operands of a score product are staged in
// shared memory transposed ([D][rows + 4]), which makes each step of the D-long product
// R / 4 + 1 16-byte loads for 4R multiply-adds. The 16 threads of a row sit in one half-warp,
// so row maxima and sums are four shuffles. Probabilities go back to shared memory (transposed
// again) for the products with V / gout / Q / K, whose rows are staged as they are.
//
// Forward: one block per 128 query rows (R = 8) of a (b, h), looping over tiles of 64 keys with
// an online softmax (running max m and sum l per row, accumulator rescaled when m grows).
// Backward: as in attention.cu, one kernel over query tiles writes gq (S, dP, dQ += dS K) and
// one over key tiles of a kv head, looping over its query heads and their query tiles, writes
// gk and gv (S^T, dP^T, dV += P^T gout, dK += dS^T Q): every output element has one writer.
#include <type_traits>

#include "runtime/cuda/attention_tiled.h"
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

constexpr int kRows = 64;               // rows (queries or keys) of a tile
constexpr int kBlockThreads = 256;      // 16 x 16: each thread an R x 4 piece of a score tile
constexpr int kLd = kRows + 4;          // row stride of transposed tiles: 16-byte rows, staggered banks

// The columns a thread tx owns in a [64, D] accumulator: `groups` runs of `vec` consecutive
// columns (vec 4 reads them as one float4), D / 16 in all.
template <int D> struct OutCols {
  static constexpr int per = D / 16;
  static constexpr int vec = per < 4 ? per : 4;
  static constexpr int groups = per / vec;
  __device__ static int col(int tx, int g) { return g * 16 * vec + tx * vec; }
};

// N consecutive floats (N = 1, 2 or 4, aligned to 4 N bytes) as one load or store: device.cuh's packs.
template <int N> __device__ inline void load_vec(const float* p, float* dst) {
  const Pack<float, N> v = load_pack<N>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) dst[i] = v.v[i];
}
template <int N> __device__ inline void store_vec(float* p, const float* src) {
  Pack<float, N> v;
#pragma unroll
  for (int i = 0; i < N; ++i) v.v[i] = src[i];
  store_pack<N>(p, v);
}

// Offset of row (b, t, head) of a [B, T, heads, D] tensor.
__device__ inline int64_t row_at(int64_t b, int64_t t, int64_t head, int64_t T, int64_t heads, int64_t D) {
  return ((b * T + t) * heads + head) * D;
}

// Row stride of tiles staged as rows ([rows][D + 4]) and of tiles of `Rows` rows staged
// transposed ([D][Rows + 4]): 16-byte aligned rows on staggered banks.
template <int D> constexpr int kRowLd = D + 4;
template <int Rows> constexpr int kTLd = Rows + 4;

// A thread's share of a tile of `Rows` rows (64 or 128) of a [B, T, heads, D] tensor, loaded
// into registers and then stored to shared memory transposed ([D][Rows + 4]), as rows
// ([Rows][D + 4]), or both. The thread holds rows 16 (warp % 4) + lane % 16 + 64p, quads
// (4 floats) 2 (warp / 4) + lane / 16 + 4k for k < D / 16: each load step of a warp reads 32
// contiguous bytes (a whole sector) of 16 rows, and each shared-memory store step of a warp hits
// 32 different banks (transposed) or each 16-byte bank group 4 times (rows), neither with
// conflicts. All loads are issued before any store.
template <int D, int Rows = kRows> struct TileShare {
  static constexpr int kQuads = D / 16, kPasses = Rows / 64;
  float4 v[kPasses][kQuads];
  int r, q0;
  __device__ TileShare()
      : r(16 * (threadIdx.x / 32 % 4) + threadIdx.x % 16), q0(2 * (threadIdx.x / 128) + threadIdx.x % 32 / 16) {}
  __device__ int col(int k) const { return 4 * (q0 + 4 * k); }
  // Rows [t0, t0 + Rows) of `head` of x, zeros past T.
  __device__ void load(const float* __restrict__ x, int64_t b, int64_t t0, int64_t T, int64_t head, int64_t heads) {
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int64_t t = t0 + r + 64 * p;
      if (t < T) {
        const float* row = x + row_at(b, t, head, T, heads, D);
#pragma unroll
        for (int k = 0; k < kQuads; ++k) v[p][k] = *reinterpret_cast<const float4*>(row + col(k));
      } else {
#pragma unroll
        for (int k = 0; k < kQuads; ++k) v[p][k] = make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  }
  __device__ void store_transposed(float* dst) const {  // dst[d * kTLd<Rows> + row]
    constexpr int ld = kTLd<Rows>;
#pragma unroll
    for (int p = 0; p < kPasses; ++p)
#pragma unroll
      for (int k = 0; k < kQuads; ++k) {
        const int c = col(k), row = r + 64 * p;
        dst[(c + 0) * ld + row] = v[p][k].x;
        dst[(c + 1) * ld + row] = v[p][k].y;
        dst[(c + 2) * ld + row] = v[p][k].z;
        dst[(c + 3) * ld + row] = v[p][k].w;
      }
  }
  __device__ void store_rows(float* dst) const {  // dst[row * kRowLd<D> + d]
#pragma unroll
    for (int p = 0; p < kPasses; ++p)
#pragma unroll
      for (int k = 0; k < kQuads; ++k) *reinterpret_cast<float4*>(dst + (r + 64 * p) * kRowLd<D> + col(k)) = v[p][k];
  }
};

// acc[i][j] += sum_d A[d][R ty + i] * B[d][4tx + j]: this thread's R x 4 piece of A^T B, both
// operands staged transposed with `Depth` rows, A of 16 R columns (stride LdA), B of 64.
template <int Depth, int R, int LdA>
__device__ inline void product_tt(const float* A, const float* B, int ty, int tx, float (&acc)[R][4]) {
#pragma unroll 8
  for (int d = 0; d < Depth; ++d) {
    float av[R];
#pragma unroll
    for (int g = 0; g < R / 4; ++g) load_vec<4>(A + d * LdA + R * ty + 4 * g, av + 4 * g);
    float bv[4];
    load_vec<4>(B + d * kLd + 4 * tx, bv);
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}

// acc[i][n] += sum_c P[c][R ty + i] * M[c][column n of tx]: a [64, 16 R] tile staged transposed
// (stride LdP) times a [64, D] tile staged as rows ([64][D + 4]), into this thread's R rows of a
// [16 R, D] accumulator.
template <int D, int R, int LdP>
__device__ inline void product_tn(const float* P, const float* M, int ty, int tx, float (&acc)[R][D / 16]) {
  using C = OutCols<D>;
#pragma unroll 4
  for (int c = 0; c < kRows; ++c) {
    float pv[R];
#pragma unroll
    for (int g = 0; g < R / 4; ++g) load_vec<4>(P + c * LdP + R * ty + 4 * g, pv + 4 * g);
    float mv[D / 16];
#pragma unroll
    for (int g = 0; g < C::groups; ++g) load_vec<C::vec>(M + c * kRowLd<D> + C::col(tx, g), mv + g * C::vec);
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int n = 0; n < D / 16; ++n) acc[i][n] = fmaf(pv[i], mv[n], acc[i][n]);
  }
}

// Stores this thread's piece p[i][j] (tile row R ty + i, column 4tx + j) transposed:
// dst[(4tx + j) * Ld + R ty + i].
template <int R, int Ld>
__device__ inline void store_piece_transposed(float* dst, const float (&p)[R][4], int ty, int tx) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int g = 0; g < R / 4; ++g)
      *reinterpret_cast<float4*>(dst + (4 * tx + j) * Ld + R * ty + 4 * g) =
          make_float4(p[4 * g][j], p[4 * g + 1][j], p[4 * g + 2][j], p[4 * g + 3][j]);
}

// Writes this thread's R rows of a [16 R, D] accumulator, times `factor[i]`, to rows
// t0 + R ty + i (those below T) of `head` of x.
template <int D, int R>
__device__ inline void write_rows(float* __restrict__ x, const float (&acc)[R][D / 16], const float (&factor)[R],
                                  int64_t b, int64_t t0, int64_t T, int64_t head, int64_t heads, int ty, int tx) {
  using C = OutCols<D>;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int64_t t = t0 + R * ty + i;
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
// Keys a query tile [i0, i0 + rows) can see: [0, tile_key_end).
__device__ inline int64_t tile_key_end(const TiledAttention& a, int64_t i0, int rows) {
  return key_end(a, (i0 + rows < a.Tq ? i0 + rows : a.Tq) - 1);
}

// The first row of this block's query tile of `rows` rows, the last tiles first: under causality
// they see the most keys, and starting the longest blocks first shortens the grid's tail.
__device__ inline int64_t last_tiles_first(int rows) { return int64_t(gridDim.x - 1 - blockIdx.x) * rows; }

// Query tiles of the forward and dq kernels have 16 R rows, R per thread. R = 8 halves the
// shared-memory loads per multiply-add of R = 4, for twice the shared memory and registers: on an
// H200 it made the forward 3% (D 64) and 9% (D 128) faster. dq with R = 8 (then one block per SM
// at D 64) was no faster than with R = 4.
constexpr int kForwardR = 8, kDqR = 4;

// ---- forward -------------------------------------------------------------------------------------
template <int D, int R>
__global__ void __launch_bounds__(kBlockThreads)
    forward_kernel(TiledAttention a, float* __restrict__ out, float* __restrict__ lse) {
  constexpr int kQRows = 16 * R, kQLd = kTLd<kQRows>;
  extern __shared__ float4 smem_f4[];
  float* Qt = reinterpret_cast<float*>(smem_f4);  // [D][kQLd]
  float* Kt = Qt + D * kQLd;                       // [D][kLd]
  float* Vs = Kt + D * kLd;                        // [64][D + 4]
  float* Pt = Vs + kRows * kRowLd<D>;              // [64][kQLd]: probabilities, transposed
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (a.H / a.Hkv), i0 = last_tiles_first(kQRows);
  {
    TileShare<D, kQRows> qs;
    qs.load(a.q, b, i0, a.Tq, h, a.H);
    qs.store_transposed(Qt);
  }
  float m[R], l[R], o[R][D / 16];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    m[i] = -INFINITY, l[i] = 0.f;
#pragma unroll
    for (int n = 0; n < D / 16; ++n) o[i][n] = 0.f;
  }
  const int64_t kend = tile_key_end(a, i0, kQRows);
  for (int64_t j0 = 0; j0 < kend; j0 += kRows) {
    __syncthreads();  // the previous tile's readers of Kt, Vs and Pt are done
    TileShare<D> ks, vs;
    ks.load(a.k, b, j0, a.Tk, hk, a.Hkv);
    vs.load(a.v, b, j0, a.Tk, hk, a.Hkv);
    ks.store_transposed(Kt);
    vs.store_rows(Vs);
    __syncthreads();
    float s[R][4] = {};
    product_tt<D, R, kQLd>(Qt, Kt, ty, tx, s);
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t qi = i0 + R * ty + i;
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
    store_piece_transposed<R, kQLd>(Pt, s, ty, tx);
    __syncthreads();
    product_tn<D, R, kQLd>(Pt, Vs, ty, tx, o);
  }
  float inv[R];
#pragma unroll
  for (int i = 0; i < R; ++i) inv[i] = l[i] > 0.f ? 1.f / l[i] : 0.f;  // a row that saw no key: out = 0
  write_rows<D, R>(out, o, inv, b, i0, a.Tq, h, a.H, ty, tx);
  if (tx == 0)
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t qi = i0 + R * ty + i;
      if (qi < a.Tq) lse[(b * a.H + h) * a.Tq + qi] = l[i] > 0.f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

// ---- backward: gq --------------------------------------------------------------------------------
template <int D, int R>
__global__ void __launch_bounds__(kBlockThreads)
    dq_kernel(TiledAttention a, const float* __restrict__ lse, const float* __restrict__ gout,
              const float* __restrict__ Dv, float* __restrict__ gq) {
  constexpr int kQRows = 16 * R, kQLd = kTLd<kQRows>;
  extern __shared__ float4 smem_f4[];
  float* Qt = reinterpret_cast<float*>(smem_f4);  // [D][kQLd]
  float* Gt = Qt + D * kQLd;                       // [D][kQLd]: gout rows, transposed
  float* Kt = Gt + D * kQLd;                       // [D][kLd]
  float* Vt = Kt + D * kLd;                        // [D][kLd]
  float* Ks = Vt + D * kLd;                        // [64][D + 4]
  float* St = Ks + kRows * kRowLd<D>;              // [64][kQLd]: dS, transposed
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (a.H / a.Hkv), i0 = last_tiles_first(kQRows);
  {
    TileShare<D, kQRows> qs, gs;
    qs.load(a.q, b, i0, a.Tq, h, a.H);
    gs.load(gout, b, i0, a.Tq, h, a.H);
    qs.store_transposed(Qt);
    gs.store_transposed(Gt);
  }
  float L[R], Di[R], acc[R][D / 16];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int64_t qi = i0 + R * ty + i;
    L[i] = qi < a.Tq ? lse[(b * a.H + h) * a.Tq + qi] : -INFINITY;
    Di[i] = qi < a.Tq ? Dv[(b * a.H + h) * a.Tq + qi] : 0.f;
#pragma unroll
    for (int n = 0; n < D / 16; ++n) acc[i][n] = 0.f;
  }
  const int64_t kend = tile_key_end(a, i0, kQRows);
  for (int64_t j0 = 0; j0 < kend; j0 += kRows) {
    __syncthreads();
    TileShare<D> ks, vs;
    ks.load(a.k, b, j0, a.Tk, hk, a.Hkv);
    vs.load(a.v, b, j0, a.Tk, hk, a.Hkv);
    ks.store_transposed(Kt);
    ks.store_rows(Ks);
    vs.store_transposed(Vt);
    __syncthreads();
    float s[R][4] = {}, dp[R][4] = {};
    product_tt<D, R, kQLd>(Qt, Kt, ty, tx, s);
    product_tt<D, R, kQLd>(Gt, Vt, ty, tx, dp);
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t qi = i0 + R * ty + i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // dS = P (dP - D_i); a row that saw no key has zero gradient
        const bool live = L[i] != -INFINITY && visible(a, qi, j0 + 4 * tx + j);
        s[i][j] = live ? expf(s[i][j] * a.scale - L[i]) * (dp[i][j] - Di[i]) : 0.f;
      }
    }
    store_piece_transposed<R, kQLd>(St, s, ty, tx);
    __syncthreads();
    product_tn<D, R, kQLd>(St, Ks, ty, tx, acc);
  }
  float scale[R];
#pragma unroll
  for (int i = 0; i < R; ++i) scale[i] = a.scale;
  write_rows<D, R>(gq, acc, scale, b, i0, a.Tq, h, a.H, ty, tx);
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
      product_tt<D, 4, kLd>(Kt, Xq, ty, tx, p);   // scores, keys by queries
      product_tt<D, 4, kLd>(Vt, Xg, ty, tx, ds);  // dP^T
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
      store_piece_transposed<4, kLd>(Xq, p, ty, tx);
      store_piece_transposed<4, kLd>(Xg, ds, ty, tx);
      __syncthreads();
      product_tn<D, 4, kLd>(Xq, Gs, ty, tx, dv);
      product_tn<D, 4, kLd>(Xg, Qs, ty, tx, dk);
    }
  }
  const float one[4] = {1.f, 1.f, 1.f, 1.f}, scale[4] = {a.scale, a.scale, a.scale, a.scale};
  write_rows<D, 4>(gk, dk, scale, b, j0, a.Tk, hk, a.Hkv, ty, tx);
  write_rows<D, 4>(gv, dv, one, b, j0, a.Tk, hk, a.Hkv, ty, tx);
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

unsigned tiles(int64_t n, int rows = kRows) { return unsigned((n + rows - 1) / rows); }

}  // namespace

bool tiled_attention_applies(int64_t D, std::initializer_list<const void*> pointers) {
  if (D != 16 && D != 32 && D != 64 && D != 128) return false;
  for (const void* p : pointers)
    if (!aligned16(p)) return false;
  return true;
}

void tiled_attention_forward(const TiledAttention& a, float* out, float* lse) {
  with_head_width(a.D, [&](auto width) {
    constexpr int D = decltype(width)::value, R = kForwardR, kQLd = kTLd<16 * R>;
    const size_t smem = sizeof(float) * size_t(D * kQLd + D * kLd + kRows * kRowLd<D> + kRows * kQLd);
    launch_with_shared_memory(forward_kernel<D, R>, dim3(tiles(a.Tq, 16 * R), unsigned(a.H), unsigned(a.B)),
                              kBlockThreads, smem, "launch of tiled attention kernel", a, out, lse);
  });
}

void tiled_attention_backward(const TiledAttention& a, const float* lse, const float* gout, const float* Dv,
                              float* gq, float* gk, float* gv) {
  with_head_width(a.D, [&](auto width) {
    constexpr int D = decltype(width)::value, R = kDqR, kQLd = kTLd<16 * R>;
    const size_t smem_q = sizeof(float) * size_t(2 * D * kQLd + 2 * D * kLd + kRows * kRowLd<D> + kRows * kQLd);
    launch_with_shared_memory(dq_kernel<D, R>, dim3(tiles(a.Tq, 16 * R), unsigned(a.H), unsigned(a.B)),
                              kBlockThreads, smem_q, "launch of tiled attention dq kernel", a, lse, gout, Dv, gq);
    if (a.Tk == 0) return;  // no keys, no key gradients
    constexpr int kX = (D > kRows ? D : kRows) * kLd;
    const size_t smem_kv = sizeof(float) * size_t(2 * D * kLd + 2 * kX + 2 * kRows * kRowLd<D> + 2 * kRows);
    launch_with_shared_memory(dkv_kernel<D>, dim3(tiles(a.Tk), unsigned(a.Hkv), unsigned(a.B)), kBlockThreads,
                              smem_kv, "launch of tiled attention dk/dv kernel", a, lse, gout, Dv, gk, gv);
  });
}

}  // namespace loom::runtime::cuda
