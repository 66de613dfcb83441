// cuda/attention.cu: fused scaled-dot-product attention and its backward, the twins of
// cpu/attention.cpp (same masks, same outputs, same conventions):
//
//   s_ij = scale * q_i . k_j   where (i, j) is visible, -inf elsewhere
//   lse_i = log sum_j exp(s_ij),   out_i = sum_j exp(s_ij - lse_i) v_j
//
// Visibility is the AND of causal (k_offset + j <= q_offset + i), an optional u8 mask
// [B, Tq, Tk] and optional segments (visibility[b][qseg[b,i]][kseg[b,j]]). A query that sees no
// key gets out = 0 and lse = -inf. Grouped-query heads: query head h reads kv head h / (H / Hkv).
//
// Forward: one warp per query row, a block of kWarps consecutive rows of one (b, h). Keys come
// in tiles of 32 staged in shared memory for the whole block; each lane scores one key of the
// tile (a full dot product against the row's q, held in shared memory), the warp folds the 32
// scores into an online softmax, and the lanes own D / 32 columns of the output accumulator.
// The T x T score matrix is never built.
//
// Backward (P_ij = exp(s_ij - lse_i), D_i = rowsum(gout_i * out_i) - glse_i):
//   dV = P^T gout,  dP = gout V^T,  dS = P * (dP - D_i),  dQ = scale dS K,  dK = scale dS^T Q.
// Two kernels give every output element one writer (deterministic, no atomics), as on the CPU:
// one over query rows writes gq, one over key rows (of a kv head, summing its query heads) writes
// gk and gv; each recomputes the scores it needs.
//
// Contiguous f32/f64 with D <= 256; anything else runs on the host. f32 calls without a dense
// mask or segments, with D in {16, 32, 64, 128}, take the tiled kernels of attention_tiled.cu.
#include <string>
#include <type_traits>
#include <utility>

#include "runtime/cuda/attention_tiled.h"
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

constexpr int kWarps = 4;   // rows (query or key) per block, one warp each
constexpr int kTile = 32;   // keys (forward, dQ) or queries (dK/dV) per shared-memory tile
constexpr int kMaxPer = 8;  // accumulator columns per lane: D <= 32 * kMaxPer
constexpr int64_t kMaxD = 32 * kMaxPer;

struct Mask {
  const uint8_t* mask = nullptr;  // [B, Tq, Tk]
  const int32_t* qseg = nullptr;  // [B, Tq]
  const int32_t* kseg = nullptr;  // [B, Tk]
  const uint8_t* vis = nullptr;   // [S, S] or [B, S, S]
  int64_t S = 0;
  bool vis_batched = false, causal = false;
  int64_t q_off = 0, k_off = 0, Tq = 0, Tk = 0;

  __device__ bool visible(int64_t b, int64_t i, int64_t j) const {
    if (causal && k_off + j > q_off + i) return false;
    if (mask && !mask[(b * Tq + i) * Tk + j]) return false;
    if (vis) {
      const uint8_t* vb = vis_batched ? vis + b * S * S : vis;
      if (!vb[int64_t(qseg[b * Tq + i]) * S + kseg[b * Tk + j]]) return false;
    }
    return true;
  }
  // Keys [0, key_end(i)) can be visible to query i (causality bounds them).
  __device__ int64_t key_end(int64_t i) const {
    if (!causal) return Tk;
    int64_t e = q_off + i - k_off + 1;
    return e < 0 ? 0 : (e > Tk ? Tk : e);
  }
  // Queries [query_begin(j), Tq) can see key j.
  __device__ int64_t query_begin(int64_t j) const {
    if (!causal) return 0;
    int64_t s = k_off + j - q_off;
    return s < 0 ? 0 : (s > Tq ? Tq : s);
  }
};

template <class T> __device__ inline T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}
template <class T> __device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Row r of a [B, T, heads, D] tensor at (b, t, head).
__device__ inline int64_t row_offset(int64_t b, int64_t t, int64_t head, int64_t T, int64_t heads, int64_t D) {
  return ((b * T + t) * heads + head) * D;
}

// Stages rows [t0, t0 + kTile) of (b, head) of x (zeros past T) as [kTile][ld] in shared memory.
template <class T>
__device__ inline void stage_tile(const T* x, T* dst, int64_t ld, int64_t b, int64_t t0, int64_t head, int64_t T_,
                                  int64_t heads, int64_t D) {
  for (int64_t e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    int64_t r = e / D, d = e % D, t = t0 + r;
    dst[r * ld + d] = t < T_ ? x[row_offset(b, t, head, T_, heads, D) + d] : T(0);
  }
}

// ---- forward -------------------------------------------------------------------------------------
template <class T>
__global__ void attention_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                 T* __restrict__ out, T* __restrict__ lse, Mask m, int64_t H, int64_t Hkv, int64_t D,
                                 T scale) {
  extern __shared__ unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem);  // [kTile][D + 1]: lane j reads row j (padded: no bank conflicts)
  T* Vs = Ks + kTile * (D + 1);        // [kTile][D]: lanes read consecutive columns
  T* Qs = Vs + kTile * D;              // [kWarps][D]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (H / Hkv), Tq = m.Tq, Tk = m.Tk;
  const int64_t i0 = int64_t(blockIdx.x) * kWarps, i = i0 + warp;
  const bool active = i < Tq;
  T* qs = Qs + warp * D;
  if (active)
    for (int64_t d = lane; d < D; d += 32) qs[d] = q[row_offset(b, i, h, Tq, H, D) + d];
  T run_max = -INFINITY, run_sum = 0, acc[kMaxPer];
#pragma unroll
  for (int t = 0; t < kMaxPer; ++t) acc[t] = 0;
  const int64_t kend = m.key_end((i0 + kWarps < Tq ? i0 + kWarps : Tq) - 1);
  for (int64_t j0 = 0; j0 < kend; j0 += kTile) {
    __syncthreads();  // the previous tile's readers are done
    stage_tile(k, Ks, D + 1, b, j0, hk, Tk, Hkv, D);
    stage_tile(v, Vs, D, b, j0, hk, Tk, Hkv, D);
    __syncthreads();
    if (!active) continue;
    const int64_t j = j0 + lane;
    const bool vis = j < Tk && m.visible(b, i, j);
    T s = -INFINITY;
    if (vis) {
      T dot = 0;
      const T* kr = Ks + lane * (D + 1);
      for (int64_t d = 0; d < D; ++d) dot += qs[d] * kr[d];
      s = dot * scale;
    }
    const T tile_max = warp_max(s);
    if (tile_max == T(-INFINITY)) continue;  // the same for every lane
    const T new_max = run_max > tile_max ? run_max : tile_max;
    const T corr = d_exp(run_max - new_max);  // 0 while run_max is -inf
    const T p = vis ? d_exp(s - new_max) : T(0);
    run_sum = run_sum * corr + warp_sum(p);
    run_max = new_max;
#pragma unroll
    for (int t = 0; t < kMaxPer; ++t) acc[t] *= corr;
    for (int jj = 0; jj < kTile; ++jj) {
      const T pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == T(0)) continue;  // uniform: every lane holds the same pj
      const T* vr = Vs + jj * D;
#pragma unroll
      for (int t = 0; t < kMaxPer; ++t) {
        const int64_t d = lane + 32 * t;
        if (d < D) acc[t] += pj * vr[d];
      }
    }
  }
  if (!active) return;
  const T inv = run_sum > T(0) ? T(1) / run_sum : T(0);
  T* o = out + row_offset(b, i, h, Tq, H, D);
#pragma unroll
  for (int t = 0; t < kMaxPer; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < D) o[d] = acc[t] * inv;
  }
  if (lane == 0) lse[(b * H + h) * Tq + i] = run_sum > T(0) ? run_max + d_log(run_sum) : T(-INFINITY);
}

// ---- backward ------------------------------------------------------------------------------------
// Dv[b, h, i] = rowsum(gout_i * out_i) (in double) - glse_i: one warp per row.
template <class T>
__global__ void attention_rowdot_kernel(const T* __restrict__ out, const T* __restrict__ gout,
                                        const T* __restrict__ glse, T* __restrict__ Dv, int64_t B, int64_t Tq,
                                        int64_t H, int64_t D) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = B * Tq * H;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += int64_t(gridDim.x) * blockDim.x / 32) {  // row = (b * Tq + i) * H + h
    double s = 0;
    for (int64_t d = lane; d < D; d += 32) s += double(gout[row * D + d]) * double(out[row * D + d]);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) {
      const int64_t h = row % H, i = (row / H) % Tq, b = row / (H * Tq), li = (b * H + h) * Tq + i;
      Dv[li] = T(s - (glse ? double(glse[li]) : 0.0));
    }
  }
}

// gq: one warp per query row (as the forward), key tiles of K and V staged in shared memory.
template <class T>
__global__ void attention_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                    const T* __restrict__ lse, const T* __restrict__ gout, const T* __restrict__ Dv,
                                    T* __restrict__ gq, Mask m, int64_t H, int64_t Hkv, int64_t D, T scale) {
  extern __shared__ unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem);  // [kTile][D + 1]
  T* Vs = Ks + kTile * (D + 1);        // [kTile][D + 1]
  T* Qs = Vs + kTile * (D + 1);        // [kWarps][D]
  T* Gs = Qs + kWarps * D;             // [kWarps][D] (gout rows)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (H / Hkv), Tq = m.Tq, Tk = m.Tk;
  const int64_t i0 = int64_t(blockIdx.x) * kWarps, i = i0 + warp;
  const bool active = i < Tq;
  T* qs = Qs + warp * D;
  T* gs = Gs + warp * D;
  T L = T(-INFINITY), Di = 0;
  if (active) {
    for (int64_t d = lane; d < D; d += 32) {
      qs[d] = q[row_offset(b, i, h, Tq, H, D) + d];
      gs[d] = gout[row_offset(b, i, h, Tq, H, D) + d];
    }
    L = lse[(b * H + h) * Tq + i];
    Di = Dv[(b * H + h) * Tq + i];
  }
  T acc[kMaxPer];
#pragma unroll
  for (int t = 0; t < kMaxPer; ++t) acc[t] = 0;
  const int64_t kend = m.key_end((i0 + kWarps < Tq ? i0 + kWarps : Tq) - 1);
  for (int64_t j0 = 0; j0 < kend; j0 += kTile) {
    __syncthreads();
    stage_tile(k, Ks, D + 1, b, j0, hk, Tk, Hkv, D);
    stage_tile(v, Vs, D + 1, b, j0, hk, Tk, Hkv, D);
    __syncthreads();
    if (!active || L == T(-INFINITY)) continue;  // a row that saw no key has zero gradient
    const int64_t j = j0 + lane;
    T ds = 0;
    if (j < Tk && m.visible(b, i, j)) {
      T dot = 0, dp = 0;
      const T* kr = Ks + lane * (D + 1);
      const T* vr = Vs + lane * (D + 1);
      for (int64_t d = 0; d < D; ++d) {
        dot += qs[d] * kr[d];
        dp += gs[d] * vr[d];
      }
      const T p = d_exp(dot * scale - L);
      ds = p * (dp - Di);
    }
    for (int jj = 0; jj < kTile; ++jj) {
      const T dsj = __shfl_sync(0xffffffffu, ds, jj);
      if (dsj == T(0)) continue;
      const T* kr = Ks + jj * (D + 1);
#pragma unroll
      for (int t = 0; t < kMaxPer; ++t) {
        const int64_t d = lane + 32 * t;
        if (d < D) acc[t] += dsj * kr[d];
      }
    }
  }
  if (!active) return;
  T* o = gq + row_offset(b, i, h, Tq, H, D);
#pragma unroll
  for (int t = 0; t < kMaxPer; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < D) o[d] = scale * acc[t];
  }
}

// gk, gv: one warp per key row of a kv head, summing over the query heads that read it; query
// tiles of Q and gout (with their lse and D) staged in shared memory.
template <class T>
__global__ void attention_dkv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                     const T* __restrict__ lse, const T* __restrict__ gout,
                                     const T* __restrict__ Dv, T* __restrict__ gk, T* __restrict__ gv, Mask m,
                                     int64_t H, int64_t Hkv, int64_t D, T scale) {
  extern __shared__ unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);  // [kTile][D + 1]
  T* Gs = Qs + kTile * (D + 1);        // [kTile][D + 1]
  T* Ks = Gs + kTile * (D + 1);        // [kWarps][D]
  T* Vs = Ks + kWarps * D;             // [kWarps][D]
  T* Ls = Vs + kWarps * D;             // [kTile]
  T* Ds = Ls + kTile;                  // [kTile]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.z, hk = blockIdx.y, group = H / Hkv, Tq = m.Tq, Tk = m.Tk;
  const int64_t j0 = int64_t(blockIdx.x) * kWarps, j = j0 + warp;
  const bool active = j < Tk;
  T* ks = Ks + warp * D;
  T* vs = Vs + warp * D;
  if (active)
    for (int64_t d = lane; d < D; d += 32) {
      ks[d] = k[row_offset(b, j, hk, Tk, Hkv, D) + d];
      vs[d] = v[row_offset(b, j, hk, Tk, Hkv, D) + d];
    }
  T dk[kMaxPer], dv[kMaxPer];
#pragma unroll
  for (int t = 0; t < kMaxPer; ++t) dk[t] = dv[t] = 0;
  const int64_t qbegin = m.query_begin(j0) / kTile * kTile;  // the block's first key sees the most queries
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    for (int64_t i0 = qbegin; i0 < Tq; i0 += kTile) {
      __syncthreads();
      stage_tile(q, Qs, D + 1, b, i0, h, Tq, H, D);
      stage_tile(gout, Gs, D + 1, b, i0, h, Tq, H, D);
      for (int64_t r = threadIdx.x; r < kTile; r += blockDim.x) {
        const int64_t i = i0 + r;
        Ls[r] = i < Tq ? lse[(b * H + h) * Tq + i] : T(-INFINITY);
        Ds[r] = i < Tq ? Dv[(b * H + h) * Tq + i] : T(0);
      }
      __syncthreads();
      if (!active) continue;
      const int64_t i = i0 + lane;
      T p = 0, ds = 0;
      if (i < Tq && Ls[lane] != T(-INFINITY) && m.visible(b, i, j)) {
        T dot = 0, dp = 0;
        const T* qr = Qs + lane * (D + 1);
        const T* gr = Gs + lane * (D + 1);
        for (int64_t d = 0; d < D; ++d) {
          dot += qr[d] * ks[d];
          dp += gr[d] * vs[d];
        }
        p = d_exp(dot * scale - Ls[lane]);
        ds = p * (dp - Ds[lane]);
      }
      for (int ii = 0; ii < kTile; ++ii) {
        const T pi = __shfl_sync(0xffffffffu, p, ii), dsi = __shfl_sync(0xffffffffu, ds, ii);
        if (pi == T(0) && dsi == T(0)) continue;
        const T* qr = Qs + ii * (D + 1);
        const T* gr = Gs + ii * (D + 1);
#pragma unroll
        for (int t = 0; t < kMaxPer; ++t) {
          const int64_t d = lane + 32 * t;
          if (d < D) {
            dv[t] += pi * gr[d];
            dk[t] += dsi * qr[d];
          }
        }
      }
    }
  }
  if (!active) return;
  T* ok = gk + row_offset(b, j, hk, Tk, Hkv, D);
  T* ov = gv + row_offset(b, j, hk, Tk, Hkv, D);
#pragma unroll
  for (int t = 0; t < kMaxPer; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < D) {
      ok[d] = scale * dk[t];
      ov[d] = dv[t];
    }
  }
}

// ---- host side -----------------------------------------------------------------------------------
bool plain(const Tensor& t, DType dt) { return t.defined() && t.dtype() == dt && t.is_contiguous(); }
bool plain_or_absent(const Tensor& t, DType dt) { return !t.defined() || plain(t, dt); }
Tensor arg(const KernelArgs& a, size_t i) { return i < a.in.size() ? a.in[i] : Tensor(); }

// The masks of a.in[first..first+3] (mask, q_segments, k_segments, visibility), or false when
// one of them is not in a layout the kernels read (the host kernel then runs).
bool make_mask(const KernelArgs& a, size_t first, Op op, int64_t B, int64_t Tq, int64_t Tk, Mask& m) {
  m.causal = a.attrs.causal;
  m.q_off = a.attrs.q_offset;
  m.k_off = a.attrs.k_offset;
  m.Tq = Tq;
  m.Tk = Tk;
  Tensor mask = arg(a, first), qseg = arg(a, first + 1), kseg = arg(a, first + 2), vis = arg(a, first + 3);
  if (!plain_or_absent(mask, DType::u8) || !plain_or_absent(qseg, DType::i32) || !plain_or_absent(kseg, DType::i32) ||
      !plain_or_absent(vis, DType::u8) || qseg.defined() != kseg.defined() || qseg.defined() != vis.defined())
    return false;
  if (mask.defined()) m.mask = static_cast<const uint8_t*>(mask.raw_data());
  if (!qseg.defined()) return true;
  m.S = vis.size(-1);
  m.vis_batched = vis.dim() == 3 && vis.size(0) == B && B > 1;
  // Segment ids index the visibility table: check them as the CPU does (on host copies).
  for (auto [t, which] : {std::pair{qseg, "q_segments"}, std::pair{kseg, "k_segments"}}) {
    for (double id : t.to_double_vector())
      if (id < 0 || id >= double(m.S))
        throw std::invalid_argument(std::string(op_name(op)) + ": " + which + " holds segment id " +
                                    std::to_string(int64_t(id)) + " outside [0, " + std::to_string(m.S) + ")");
  }
  m.qseg = static_cast<const int32_t*>(qseg.raw_data());
  m.kseg = static_cast<const int32_t*>(kseg.raw_data());
  m.vis = static_cast<const uint8_t*>(vis.raw_data());
  return true;
}

// Launches one of the kernels above (kWarps warps per block) with `smem` bytes of shared memory.
template <class K, class... Args>
void launch(K kernel, dim3 grid, size_t smem, const char* what, Args... args) {
  launch_with_shared_memory(kernel, grid, kWarps * 32, smem, what, args...);
}

// The fast path's view of a call (attention_tiled.h).
TiledAttention tiled_view(const Tensor& q, const Tensor& k, const Tensor& v, const Mask& m, double scale) {
  return TiledAttention{static_cast<const float*>(q.raw_data()), static_cast<const float*>(k.raw_data()),
                        static_cast<const float*>(v.raw_data()), q.size(0), m.Tq, m.Tk, q.size(2), k.size(2),
                        q.size(3), m.causal, m.q_off, m.k_off, float(scale)};
}
// True when the tiled kernels take the call: f32, visibility by causality alone, a head width
// they are built for, 16-byte aligned tensors.
bool takes_tiled_path(DType dt, const Mask& m, int64_t D, std::initializer_list<const void*> pointers) {
  return dt == DType::f32 && !m.mask && !m.qseg && tiled_attention_applies(D, pointers);
}

// in: q, k, v, mask?, q_segments?, k_segments?, visibility?  out: out, lse
void k_attention(const KernelArgs& a) {
  const Tensor &q = a.in[0], &k = a.in[1], &v = a.in[2];
  DType dt = q.dtype();
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3), Tk = k.size(1), Hkv = k.size(2);
  Mask m;
  bool ok = visit_f32_f64(dt, [](auto) {}) && plain(q, dt) && plain(k, dt) && plain(v, dt) && plain(a.out[0], dt) &&
            plain(a.out[1], dt) && D <= kMaxD && make_mask(a, 3, Op::attention, B, Tq, Tk, m);
  if (!ok) return dispatch_on_host(Op::attention, a.in, a.out, a.attrs);
  if (B * Tq * H == 0) return;
  DeviceGuard g(device_index(q));
  if (takes_tiled_path(dt, m, D, {q.raw_data(), k.raw_data(), v.raw_data(), a.out[0].raw_data()}))
    return tiled_attention_forward(tiled_view(q, k, v, m, a.attrs.scale), static_cast<float*>(a.out[0].raw_data()),
                                   static_cast<float*>(a.out[1].raw_data()));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    size_t smem = sizeof(T) * size_t(kTile * (D + 1) + kTile * D + kWarps * D);
    dim3 grid(unsigned((Tq + kWarps - 1) / kWarps), unsigned(H), unsigned(B));
    launch(attention_kernel<T>, grid, smem, "launch of attention kernel", static_cast<const T*>(q.raw_data()),
           static_cast<const T*>(k.raw_data()), static_cast<const T*>(v.raw_data()),
           static_cast<T*>(a.out[0].raw_data()), static_cast<T*>(a.out[1].raw_data()), m, H, Hkv, D,
           T(a.attrs.scale));
  });
}

// in: q, k, v, out, lse, gout, glse?, mask?, q_segments?, k_segments?, visibility?  out: gq, gk, gv
void k_attention_backward(const KernelArgs& a) {
  const Tensor &q = a.in[0], &k = a.in[1], &v = a.in[2], &out = a.in[3], &lse = a.in[4], &gout = a.in[5];
  const Tensor glse = arg(a, 6);
  DType dt = q.dtype();
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3), Tk = k.size(1), Hkv = k.size(2);
  Mask m;
  bool ok = visit_f32_f64(dt, [](auto) {}) && D <= kMaxD && plain_or_absent(glse, dt) &&
            make_mask(a, 7, Op::attention_backward, B, Tq, Tk, m);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k, &v, &out, &lse, &gout, &a.out[0], &a.out[1],
                                                              &a.out[2]})
    ok = ok && plain(*t, dt);
  if (!ok) return dispatch_on_host(Op::attention_backward, a.in, a.out, a.attrs);
  const int dev = device_index(q);
  DeviceGuard g(dev);
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    const T scale = T(a.attrs.scale);
    const T *pq = static_cast<const T*>(q.raw_data()), *pk = static_cast<const T*>(k.raw_data()),
            *pv = static_cast<const T*>(v.raw_data()), *pl = static_cast<const T*>(lse.raw_data()),
            *pg = static_cast<const T*>(gout.raw_data());
    T *pgq = static_cast<T*>(a.out[0].raw_data()), *pgk = static_cast<T*>(a.out[1].raw_data()),
      *pgv = static_cast<T*>(a.out[2].raw_data());
    if (B * Tq * H > 0) {
      Scratch dvec(dev, size_t(B * H * Tq) * sizeof(T));
      const int64_t rows = B * Tq * H;
      attention_rowdot_kernel<T><<<unsigned(std::min<int64_t>((rows + 7) / 8, int64_t(1) << 20)), 256>>>(
          static_cast<const T*>(out.raw_data()), pg, glse.defined() ? static_cast<const T*>(glse.raw_data()) : nullptr,
          dvec.as<T>(), B, Tq, H, D);
      LOOM_CUDA_LAUNCH_CHECK("attention row-dot kernel");
      if constexpr (std::is_same_v<T, float>) {
        if (takes_tiled_path(dt, m, D, {pq, pk, pv, pg, pgq, pgk, pgv}))
          return tiled_attention_backward(tiled_view(q, k, v, m, a.attrs.scale), pl, pg, dvec.as<T>(), pgq, pgk, pgv);
      }
      size_t smem_q = sizeof(T) * size_t(2 * kTile * (D + 1) + 2 * kWarps * D);
      launch(attention_dq_kernel<T>, dim3(unsigned((Tq + kWarps - 1) / kWarps), unsigned(H), unsigned(B)), smem_q,
             "launch of attention dq kernel", pq, pk, pv, pl, pg, static_cast<const T*>(dvec.as<T>()), pgq, m, H, Hkv,
             D, scale);
      if (Tk > 0) {
        size_t smem_kv = sizeof(T) * size_t(2 * kTile * (D + 1) + 2 * kWarps * D + 2 * kTile);
        launch(attention_dkv_kernel<T>, dim3(unsigned((Tk + kWarps - 1) / kWarps), unsigned(Hkv), unsigned(B)),
               smem_kv, "launch of attention dk/dv kernel", pq, pk, pv, pl, pg, static_cast<const T*>(dvec.as<T>()),
               pgk, pgv, m, H, Hkv, D, scale);
      }
    } else if (B * Tk * Hkv > 0) {  // no queries: the key gradients are zero
      LOOM_CUDA_CHECK(cudaMemsetAsync(pgk, 0, size_t(B * Tk * Hkv * D) * sizeof(T), 0));
      LOOM_CUDA_CHECK(cudaMemsetAsync(pgv, 0, size_t(B * Tk * Hkv * D) * sizeof(T), 0));
    }
  });
}

}  // namespace

void register_attention_kernels(KernelTable& t) {
  t.fn[size_t(Op::attention)] = k_attention;
  t.fn[size_t(Op::attention_backward)] = k_attention_backward;
}

}  // namespace loom::runtime::cuda
