// cpu/attention.cpp: fused scaled-dot-product attention, forward and backward, tiled as in
// FlashAttention-2 (Dao 2023, Algorithms 1 and 2): the Tq x Tk score matrix is never built; each
// (query tile, key tile) pair is scored, masked and folded into an online softmax.
//
//   s_ij = scale * q_i . k_j   where (i, j) is visible, -inf elsewhere
//   lse_i = log sum_j exp(s_ij),   out_i = sum_j exp(s_ij - lse_i) v_j
//
// Visibility is the AND of: causal (k_offset + j <= q_offset + i), an optional u8 mask
// [B, Tq, Tk], and optional segments (visibility[b][qseg[b,i]][kseg[b,j]]). Whole key tiles
// with no visible pair are skipped before any dot product: causal tiles above the diagonal,
// and, when there are at most 64 segments, tiles whose key-segment set does not meet the set
// of segments visible from the query tile. A query that sees no key gets out = 0, lse = -inf.
//
// Backward (with P_ij = exp(s_ij - lse_i), D_i = rowsum(gout_i * out_i) - glse_i):
//   dV = P^T gout,  dP = gout V^T,  dS = P * (dP - D_i),  dQ = scale dS K,  dK = scale dS^T Q.
// It runs in two passes so every output element has exactly one writer and the result does
// not depend on the thread count: pass A over (b, kv head, key tile) writes gk and gv, pass B
// over (b, head, query tile) writes gq. That recomputes S and dP once more than a single pass
// with atomics would (7 tile products instead of 5), the price of determinism and of using all
// threads even when B * Hkv is small.
//
// Layout: q [B, Tq, H, D], k/v [B, Tk, Hkv, D] contiguous, out like q, lse [B, H, Tq];
// query head h reads kv head h / (H / Hkv) (grouped-query attention).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/cpu/attention_rows.h"
#include "runtime/cpu/common.h"
#include "runtime/cpu/line_vector.h"
#include "runtime/cpu/vecmath.h"

namespace loom::runtime::cpu {
namespace {

constexpr int64_t kTileQ = 64;  // queries per tile (BQ)
constexpr int64_t kTileK = 64;  // keys per tile (BK)
constexpr int64_t kMaxBitSegments = 64;

enum class TileKind { skip, full, partial };

// Empty tensors (Tq or Tk = 0) have no layout to check.
void require_dense(const Tensor& t, Op op, const char* which) {
  if (t.defined() && t.numel() > 0) require_contiguous(t, op, which);
}

// Everything that decides whether query i may see key j, plus per-tile summaries for skipping.
struct Visibility {
  int64_t B = 0, Tq = 0, Tk = 0, nqt = 0, nkt = 0;
  bool causal = false;
  int64_t q_offset = 0, k_offset = 0;
  const uint8_t* mask = nullptr;  // [B, Tq, Tk]
  const int32_t* qseg = nullptr;  // [B, Tq]
  const int32_t* kseg = nullptr;  // [B, Tk]
  const uint8_t* vis = nullptr;   // [B, S, S] or [S, S]
  int64_t S = 0;
  bool vis_batched = false;
  bool bits = false;                 // segment sets fit in 64-bit words
  std::vector<uint64_t> vis_bits;    // [Bv, S]: bit t of word s = vis[s][t]
  std::vector<uint64_t> ktile_segs;  // [B, nkt]: segments present in the key tile
  std::vector<uint64_t> qtile_reach; // [B, nqt]: segments some query of the tile may see
  std::vector<uint64_t> qtile_all;   // [B, nqt]: segments every query of the tile may see

  int64_t vb(int64_t b) const { return vis_batched ? b : 0; }
  bool seg_visible(int64_t b, int32_t qs, int32_t ks) const {
    if (bits) return (vis_bits[vb(b) * S + qs] >> ks) & 1u;
    return vis[(vb(b) * S + qs) * S + ks] != 0;
  }

  // Whether segments mask some pair of the tile (false when every query sees every key segment).
  bool segments_cut(int64_t b, int64_t qt, int64_t kt) const {
    if (!qseg) return false;
    if (!bits) return true;
    uint64_t present = ktile_segs[b * nkt + kt];
    return (qtile_all[b * nqt + qt] & present) != present;
  }

  TileKind classify(int64_t b, int64_t qt, int64_t kt) const {
    int64_t i0 = qt * kTileQ, i1 = std::min(Tq, i0 + kTileQ);
    int64_t j0 = kt * kTileK, j1 = std::min(Tk, j0 + kTileK);
    bool partial = mask != nullptr;
    if (causal) {
      if (k_offset + j0 > q_offset + i1 - 1) return TileKind::skip;  // above the diagonal
      if (k_offset + j1 - 1 > q_offset + i0) partial = true;         // crosses it
    }
    if (bits && (qtile_reach[b * nqt + qt] & ktile_segs[b * nkt + kt]) == 0) return TileKind::skip;
    partial = partial || segments_cut(b, qt, kt);
    return partial ? TileKind::partial : TileKind::full;
  }

  // allowed[r * kTileK + c] for the pair (i0 + r, j0 + c); returns whether any is allowed.
  bool tile_mask(int64_t b, int64_t qt, int64_t kt, uint8_t* allowed) const {
    int64_t i0 = qt * kTileQ, rows = std::min(Tq, i0 + kTileQ) - i0;
    int64_t j0 = kt * kTileK, cols = std::min(Tk, j0 + kTileK) - j0;
    bool any = false, seg_cut = segments_cut(b, qt, kt);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t i = i0 + r;
      uint8_t* ar = allowed + r * kTileK;
      // Causal: c <= q_offset + i - k_offset - j0.
      int64_t cmax = causal ? std::min(cols - 1, q_offset + i - k_offset - j0) : cols - 1;
      for (int64_t c = 0; c < cols; ++c) ar[c] = c <= cmax;
      if (mask) {
        const uint8_t* mr = mask + (b * Tq + i) * Tk + j0;
        for (int64_t c = 0; c < cols; ++c) ar[c] &= mr[c] != 0;
      }
      if (seg_cut) {
        int32_t qs = qseg[b * Tq + i];
        const int32_t* ks = kseg + b * Tk + j0;
        for (int64_t c = 0; c < cols; ++c) ar[c] &= seg_visible(b, qs, ks[c]);
      }
      for (int64_t c = 0; c < cols; ++c) any |= ar[c] != 0;
    }
    return any;
  }
};

Visibility make_visibility(const KernelArgs& a, Op op, size_t first, int64_t B, int64_t Tq, int64_t Tk) {
  Visibility v;
  v.B = B, v.Tq = Tq, v.Tk = Tk;
  v.nqt = (Tq + kTileQ - 1) / kTileQ;
  v.nkt = (Tk + kTileK - 1) / kTileK;
  v.causal = a.attrs.causal;
  v.q_offset = a.attrs.q_offset;
  v.k_offset = a.attrs.k_offset;
  auto get = [&](size_t i) { return a.in.size() > first + i ? a.in[first + i] : Tensor(); };
  Tensor mask = get(0), qseg = get(1), kseg = get(2), vis = get(3);
  const char* name = op_name(op);
  if (mask.defined()) {
    require_dense(mask, op, "mask");
    v.mask = mask.data<uint8_t>();
  }
  if (qseg.defined() != kseg.defined() || qseg.defined() != vis.defined())
    throw std::logic_error(std::string(name) + ": q_segments, k_segments and visibility go together");
  if (!qseg.defined()) return v;
  require_dense(qseg, op, "q_segments");
  require_dense(kseg, op, "k_segments");
  require_dense(vis, op, "visibility");
  v.qseg = qseg.data<int32_t>();
  v.kseg = kseg.data<int32_t>();
  v.vis = vis.data<uint8_t>();
  v.S = vis.size(-1);
  v.vis_batched = vis.dim() == 3 && vis.size(0) == B && B > 1;
  int64_t S = v.S;
  auto check_ids = [&](const int32_t* ids, int64_t n, const char* which) {
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= S)
        throw std::invalid_argument(std::string(name) + ": " + which + " holds segment id " +
                                    std::to_string(ids[i]) + " outside [0, " + std::to_string(S) + ")");
  };
  check_ids(v.qseg, B * Tq, "q_segments");
  check_ids(v.kseg, B * Tk, "k_segments");
  v.bits = S <= kMaxBitSegments;
  if (!v.bits) return v;
  int64_t Bv = v.vis_batched ? B : 1;
  v.vis_bits.assign(size_t(Bv * S), 0);
  for (int64_t b = 0; b < Bv; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t t = 0; t < S; ++t)
        if (v.vis[(b * S + s) * S + t]) v.vis_bits[b * S + s] |= uint64_t(1) << t;
  v.ktile_segs.assign(size_t(B * v.nkt), 0);
  v.qtile_reach.assign(size_t(B * v.nqt), 0);
  v.qtile_all.assign(size_t(B * v.nqt), ~uint64_t(0));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < Tk; ++j) v.ktile_segs[b * v.nkt + j / kTileK] |= uint64_t(1) << v.kseg[b * Tk + j];
    for (int64_t i = 0; i < Tq; ++i) {
      uint64_t reach = v.vis_bits[v.vb(b) * S + v.qseg[b * Tq + i]];
      v.qtile_reach[b * v.nqt + i / kTileQ] |= reach;
      v.qtile_all[b * v.nqt + i / kTileQ] &= reach;
    }
  }
  return v;
}

// ---- tile building blocks (shared by forward and backward so both score identically) ------

// Kt[d * kTileK + c] = x[j0 + c][d] for c < cols; zero in the padding columns.
template <class T>
void load_transposed(const T* x, int64_t row_stride, int64_t cols, int64_t D, T* Kt) {
  for (int64_t d = 0; d < D; ++d) {
    T* kd = Kt + d * kTileK;
    for (int64_t c = 0; c < cols; ++c) kd[c] = x[c * row_stride + d];
    for (int64_t c = cols; c < kTileK; ++c) kd[c] = T(0);
  }
}

// X[r * D + d] = x[r][d] for r < rows.
template <class T>
void load_rows(const T* x, int64_t row_stride, int64_t rows, int64_t D, T* X) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; ++d) X[r * D + d] = x[r * row_stride + d];
}

// C[m][n] += sum_k A[m][k] B[k][n] for m < M, n < N, k < K (leading dimensions lda, ldb, ldc).
// Every tile product of this file is one call. Blocks of R rows x W columns (two 32-byte
// vectors) accumulate in registers with k innermost: each lane sums its own k sequence, so the
// result is the plain loop's and does not depend on the vector width. GCC/Clang vector
// extensions keep the compiler from vectorising along k instead.
template <class T> struct Simd {
  typedef T type __attribute__((vector_size(32)));
};
template <class T> using Vec = typename Simd<T>::type;
template <class T> inline Vec<T> load_vec(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T> inline void store_vec(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof v); }

template <class T, int64_t R>
void gemm_block(int64_t r0, int64_t n0, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                int64_t ldc) {
  constexpr int64_t L = 32 / sizeof(T);
  Vec<T> acc[R][2];
  for (int64_t i = 0; i < R; ++i) {
    acc[i][0] = load_vec(C + (r0 + i) * ldc + n0);
    acc[i][1] = load_vec(C + (r0 + i) * ldc + n0 + L);
  }
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> b0 = load_vec(B + k * ldb + n0), b1 = load_vec(B + k * ldb + n0 + L);
    for (int64_t i = 0; i < R; ++i) {
      Vec<T> a = Vec<T>{} + A[(r0 + i) * lda + k];
      acc[i][0] += a * b0;
      acc[i][1] += a * b1;
    }
  }
  for (int64_t i = 0; i < R; ++i) {
    store_vec(C + (r0 + i) * ldc + n0, acc[i][0]);
    store_vec(C + (r0 + i) * ldc + n0 + L, acc[i][1]);
  }
}

template <class T>
void gemm_acc(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int64_t W = 64 / sizeof(T), R = 4;
  const int64_t n_full = N / W * W;
  int64_t m = 0;
  for (; m + R <= M; m += R)
    for (int64_t n0 = 0; n0 < n_full; n0 += W) gemm_block<T, R>(m, n0, K, A, lda, B, ldb, C, ldc);
  for (; m < M; ++m)
    for (int64_t n0 = 0; n0 < n_full; n0 += W) gemm_block<T, 1>(m, n0, K, A, lda, B, ldb, C, ldc);
  if (n_full == N) return;
  for (int64_t r = 0; r < M; ++r) {  // the last N % W columns (head dims that are not a multiple of W)
    T* c = C + r * ldc;
    for (int64_t k = 0; k < K; ++k) {
      T a = A[r * lda + k];
      const T* b = B + k * ldb;
      for (int64_t n = n_full; n < N; ++n) c[n] += a * b[n];
    }
  }
}

// S[r][c] = alpha * sum_d A[r][d] Bt[d][c] over full kTileK rows.
template <class T>
void tile_product(const T* A, const T* Bt, int64_t rows, int64_t D, T alpha, T* S) {
  std::fill(S, S + rows * kTileK, T(0));
  gemm_acc(rows, kTileK, D, A, D, Bt, kTileK, S, kTileK);
  for (int64_t i = 0; i < rows * kTileK; ++i) S[i] *= alpha;
}

// Xt[c * kTileQ + r] = X[r * kTileK + c]: a [rows, cols] tile transposed.
template <class T>
void transpose_tile(const T* X, int64_t rows, int64_t cols, T* Xt) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) Xt[c * kTileQ + r] = X[r * kTileK + c];
}

// Sets the scores of masked pairs (and of padding columns) to -inf.
template <class T>
void apply_mask(T* S, const uint8_t* allowed, TileKind kind, int64_t rows, int64_t cols) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    T* s = S + r * kTileK;
    if (kind == TileKind::partial) {
      const uint8_t* ar = allowed + r * kTileK;
      for (int64_t c = 0; c < cols; ++c) s[c] = ar[c] ? s[c] : kNegInf;
    }
    for (int64_t c = cols; c < kTileK; ++c) s[c] = kNegInf;
  }
}

// The tile's gradient scores: P = exp(S - lse) (0 where masked or the row sees nothing) and
// dS = P * (gout V^T - Dv), in place of S and dS.
template <class T>
void tile_grad_scores(const T* Qs, const T* dOs, const T* Kt, const T* Vt, const T* lse, const T* Dv,
                      const uint8_t* allowed, TileKind kind, int64_t rows, int64_t cols, int64_t D, T scale,
                      T* P, T* dS) {
  tile_product(Qs, Kt, rows, D, scale, P);
  apply_mask(P, allowed, kind, rows, cols);
  tile_product(dOs, Vt, rows, D, T(1), dS);
  for (int64_t r = 0; r < rows; ++r) {
    T* p = P + r * kTileK;
    T* ds = dS + r * kTileK;
    T L = lse[r], Di = Dv[r];
    if (std::isinf(L)) {  // -inf: the row saw no key
      for (int64_t c = 0; c < cols; ++c) p[c] = ds[c] = T(0);
      continue;
    }
    for (int64_t c = 0; c < cols; ++c) {
      p[c] = vexp(p[c] - L);
      ds[c] = p[c] * (ds[c] - Di);
    }
  }
}

// ---- forward -------------------------------------------------------------------------------
// in: q, k, v, mask?, q_segments?, k_segments?, visibility?   out: out, lse
template <class T> void attention_forward(const KernelArgs& a) {
  const Tensor &q = a.in[0], &k = a.in[1], &v = a.in[2];
  Tensor &out = a.out[0], &lse = a.out[1];
  int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3);
  int64_t Tk = k.size(1), Hkv = k.size(2), group = H / Hkv;
  Visibility vis = make_visibility(a, Op::attention, 3, B, Tq, Tk);
  const T* pq = q.data<T>();
  const T* pk = k.data<T>();
  const T* pv = v.data<T>();
  T* po = out.data<T>();
  T* pl = lse.data<T>();
  const T scale = T(a.attrs.scale);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t nqt = vis.nqt, nkt = vis.nkt;

  parallel_for(B * H * nqt, 1, [&](int64_t begin, int64_t end) {
    LineVector<T> Qs(kTileQ * D), Kt(D * kTileK), S(kTileQ * kTileK), acc(kTileQ * D), m(kTileQ), l(kTileQ);
    std::vector<uint8_t> allowed(kTileQ * kTileK);
    for (int64_t item = begin; item < end; ++item) {
      int64_t qt = item % nqt, h = (item / nqt) % H, b = item / (nqt * H), hk = h / group;
      int64_t i0 = qt * kTileQ, rows = std::min(Tq, i0 + kTileQ) - i0;
      load_rows(pq + ((b * Tq + i0) * H + h) * D, H * D, rows, D, Qs.data());
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(m.begin(), m.end(), kNegInf);
      std::fill(l.begin(), l.end(), T(0));
      for (int64_t kt = 0; kt < nkt; ++kt) {
        TileKind kind = vis.classify(b, qt, kt);
        if (kind == TileKind::skip) continue;
        if (kind == TileKind::partial && !vis.tile_mask(b, qt, kt, allowed.data())) continue;
        int64_t j0 = kt * kTileK, cols = std::min(Tk, j0 + kTileK) - j0;
        const T* kbase = pk + ((b * Tk + j0) * Hkv + hk) * D;
        const T* vbase = pv + ((b * Tk + j0) * Hkv + hk) * D;
        load_transposed(kbase, Hkv * D, cols, D, Kt.data());
        tile_product(Qs.data(), Kt.data(), rows, D, scale, S.data());
        apply_mask(S.data(), allowed.data(), kind, rows, cols);
        // Online softmax (FlashAttention-2, Alg. 1 lines 8-10): rescale the running sum and
        // accumulator by exp(m_old - m_new) whenever the row maximum grows.
        for (int64_t r = 0; r < rows; ++r) {
          T* s = S.data() + r * kTileK;
          T mx = kNegInf;
          for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, s[c]);
          if (mx == kNegInf) {  // this row sees no key of the tile
            std::fill(s, s + cols, T(0));
            continue;
          }
          T m_new = std::max(m[r], mx);
          T alpha = vexp(m[r] - m_new);  // 0 on the first visible tile
          T sum = 0;
          for (int64_t c = 0; c < cols; ++c) {
            s[c] = vexp(s[c] - m_new);
            sum += s[c];
          }
          l[r] = l[r] * alpha + sum;
          m[r] = m_new;
          T* ar = acc.data() + r * D;
          if (alpha != T(1))
            for (int64_t d = 0; d < D; ++d) ar[d] *= alpha;
        }
        gemm_acc(rows, D, cols, S.data(), kTileK, vbase, Hkv * D, acc.data(), D);  // acc += P V
      }
      for (int64_t r = 0; r < rows; ++r) {
        T* orow = po + ((b * Tq + i0 + r) * H + h) * D;
        T* lrow = pl + (b * H + h) * Tq + i0 + r;
        if (l[r] == T(0)) {  // fully masked row
          for (int64_t d = 0; d < D; ++d) orow[d] = T(0);
          *lrow = kNegInf;
          continue;
        }
        T inv = T(1) / l[r];
        const T* ar = acc.data() + r * D;
        for (int64_t d = 0; d < D; ++d) orow[d] = ar[d] * inv;
        *lrow = m[r] + std::log(l[r]);
      }
    }
  });
}

// ---- backward ------------------------------------------------------------------------------
// in: q, k, v, out, lse, gout, glse?, mask?, q_segments?, k_segments?, visibility?
// out: gq, gk, gv (every element written)
template <class T> void attention_backward(const KernelArgs& a) {
  const Tensor &q = a.in[0], &k = a.in[1], &v = a.in[2], &out = a.in[3], &lse = a.in[4], &gout = a.in[5];
  const Tensor glse = a.in.size() > 6 ? a.in[6] : Tensor();
  Tensor &gq = a.out[0], &gk = a.out[1], &gv = a.out[2];
  int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3);
  int64_t Tk = k.size(1), Hkv = k.size(2), group = H / Hkv;
  Visibility vis = make_visibility(a, Op::attention_backward, 7, B, Tq, Tk);
  const T* pq = q.data<T>();
  const T* pk = k.data<T>();
  const T* pv = v.data<T>();
  const T* po = out.data<T>();
  const T* pl = lse.data<T>();
  const T* pgo = gout.data<T>();
  const T* pgl = glse.defined() ? glse.data<T>() : nullptr;
  T* pgq = gq.data<T>();
  T* pgk = gk.data<T>();
  T* pgv = gv.data<T>();
  const T scale = T(a.attrs.scale);
  const int64_t nqt = vis.nqt, nkt = vis.nkt;

  // Dv [B, H, Tq]: D_i = rowsum(gout_i * out_i) - glse_i, summed in double.
  std::vector<T> Dv(size_t(B * H * Tq));
  parallel_for(B * Tq * H, 256, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {  // row = (b * Tq + i) * H + h
      int64_t h = row % H, i = (row / H) % Tq, b = row / (H * Tq);
      const T* o = po + row * D;
      const T* g = pgo + row * D;
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += double(g[d]) * double(o[d]);
      int64_t li = (b * H + h) * Tq + i;
      Dv[li] = T(s - (pgl ? double(pgl[li]) : 0.0));
    }
  });

  // Pass A: one item per (b, kv head, key tile) owns those rows of gk and gv.
  parallel_for(B * Hkv * nkt, 1, [&](int64_t begin, int64_t end) {
    LineVector<T> Kt(D * kTileK), Vt(D * kTileK), Qs(kTileQ * D), dOs(kTileQ * D), P(kTileQ * kTileK),
        dS(kTileQ * kTileK), Pt(kTileK * kTileQ), dSt(kTileK * kTileQ), dK(kTileK * D), dV(kTileK * D);
    std::vector<uint8_t> allowed(kTileQ * kTileK);
    for (int64_t item = begin; item < end; ++item) {
      int64_t kt = item % nkt, hk = (item / nkt) % Hkv, b = item / (nkt * Hkv);
      int64_t j0 = kt * kTileK, cols = std::min(Tk, j0 + kTileK) - j0;
      const T* kbase = pk + ((b * Tk + j0) * Hkv + hk) * D;
      const T* vbase = pv + ((b * Tk + j0) * Hkv + hk) * D;
      load_transposed(kbase, Hkv * D, cols, D, Kt.data());
      load_transposed(vbase, Hkv * D, cols, D, Vt.data());
      std::fill(dK.begin(), dK.end(), T(0));
      std::fill(dV.begin(), dV.end(), T(0));
      for (int64_t qt = 0; qt < nqt; ++qt) {
        TileKind kind = vis.classify(b, qt, kt);
        if (kind == TileKind::skip) continue;
        if (kind == TileKind::partial && !vis.tile_mask(b, qt, kt, allowed.data())) continue;
        int64_t i0 = qt * kTileQ, rows = std::min(Tq, i0 + kTileQ) - i0;
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
          load_rows(pq + ((b * Tq + i0) * H + h) * D, H * D, rows, D, Qs.data());
          load_rows(pgo + ((b * Tq + i0) * H + h) * D, H * D, rows, D, dOs.data());
          const T* L = pl + (b * H + h) * Tq + i0;
          const T* Di = Dv.data() + (b * H + h) * Tq + i0;
          tile_grad_scores(Qs.data(), dOs.data(), Kt.data(), Vt.data(), L, Di, allowed.data(), kind, rows, cols,
                           D, scale, P.data(), dS.data());
          transpose_tile(P.data(), rows, cols, Pt.data());
          transpose_tile(dS.data(), rows, cols, dSt.data());
          gemm_acc(cols, D, rows, Pt.data(), kTileQ, dOs.data(), D, dV.data(), D);   // dV += P^T gout
          gemm_acc(cols, D, rows, dSt.data(), kTileQ, Qs.data(), D, dK.data(), D);  // dK += dS^T Q
        }
      }
      for (int64_t c = 0; c < cols; ++c) {
        T* gkr = pgk + ((b * Tk + j0 + c) * Hkv + hk) * D;
        T* gvr = pgv + ((b * Tk + j0 + c) * Hkv + hk) * D;
        for (int64_t d = 0; d < D; ++d) {
          gkr[d] = scale * dK[c * D + d];
          gvr[d] = dV[c * D + d];
        }
      }
    }
  });

  // Pass B: one item per (b, head, query tile) owns those rows of gq.
  parallel_for(B * H * nqt, 1, [&](int64_t begin, int64_t end) {
    LineVector<T> Kt(D * kTileK), Vt(D * kTileK), Qs(kTileQ * D), dOs(kTileQ * D), P(kTileQ * kTileK),
        dS(kTileQ * kTileK), dQ(kTileQ * D);
    std::vector<uint8_t> allowed(kTileQ * kTileK);
    for (int64_t item = begin; item < end; ++item) {
      int64_t qt = item % nqt, h = (item / nqt) % H, b = item / (nqt * H), hk = h / group;
      int64_t i0 = qt * kTileQ, rows = std::min(Tq, i0 + kTileQ) - i0;
      load_rows(pq + ((b * Tq + i0) * H + h) * D, H * D, rows, D, Qs.data());
      load_rows(pgo + ((b * Tq + i0) * H + h) * D, H * D, rows, D, dOs.data());
      const T* L = pl + (b * H + h) * Tq + i0;
      const T* Di = Dv.data() + (b * H + h) * Tq + i0;
      std::fill(dQ.begin(), dQ.end(), T(0));
      for (int64_t kt = 0; kt < nkt; ++kt) {
        TileKind kind = vis.classify(b, qt, kt);
        if (kind == TileKind::skip) continue;
        if (kind == TileKind::partial && !vis.tile_mask(b, qt, kt, allowed.data())) continue;
        int64_t j0 = kt * kTileK, cols = std::min(Tk, j0 + kTileK) - j0;
        const T* kbase = pk + ((b * Tk + j0) * Hkv + hk) * D;
        const T* vbase = pv + ((b * Tk + j0) * Hkv + hk) * D;
        load_transposed(kbase, Hkv * D, cols, D, Kt.data());
        load_transposed(vbase, Hkv * D, cols, D, Vt.data());
        tile_grad_scores(Qs.data(), dOs.data(), Kt.data(), Vt.data(), L, Di, allowed.data(), kind, rows, cols, D,
                         scale, P.data(), dS.data());
        gemm_acc(rows, D, cols, dS.data(), kTileK, kbase, Hkv * D, dQ.data(), D);  // dQ += dS K
      }
      for (int64_t r = 0; r < rows; ++r) {
        T* gqr = pgq + ((b * Tq + i0 + r) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) gqr[d] = scale * dQ[r * D + d];
      }
    }
  });
}

// The first n_float inputs (n_required of them present) share q's dtype, as do the outputs.
// The forward may have a third output slot, empty on entry: see attention_rows.cpp's kept
// probabilities (this file's kernel leaves it empty).
void check_operands(Op op, std::span<const Tensor> in, size_t n_required, size_t n_float, std::span<Tensor> out) {
  const bool outputs_ok = op == Op::attention ? out.size() == 2 || (out.size() == 3 && !out[2].defined()) : out.size() == 3;
  if (in.size() < n_required || !outputs_ok)
    throw std::logic_error(std::string(op_name(op)) + ": wrong number of operands");
  DType dt = in[0].dtype();
  for (size_t i = 0; i < std::min(n_float, in.size()); ++i) {
    if (!in[i].defined()) {
      if (i < n_required) throw std::logic_error(std::string(op_name(op)) + ": missing input " + std::to_string(i));
      continue;
    }
    require_dense(in[i], op, "input");
    if (in[i].dtype() != dt) throw std::logic_error(std::string(op_name(op)) + ": input dtypes differ");
  }
  for (const Tensor& t : out) {
    if (!t.defined()) continue;  // the forward's empty third slot
    require_dense(t, op, "output");
    if (t.dtype() != dt) throw std::logic_error(std::string(op_name(op)) + ": output dtype differs from q");
  }
}

bool tiled_only() { return attention_env() == AttentionEnv::tiled; }

void k_attention(const KernelArgs& a) {
  check_operands(Op::attention, a.in, 3, 3, a.out);
  if (!tiled_only() && attention_forward_rows(a)) return;
  visit_float(Op::attention, a.in[0].dtype(), [&](auto z) { attention_forward<decltype(z)>(a); });
}

void k_attention_backward(const KernelArgs& a) {
  check_operands(Op::attention_backward, a.in, 6, 7, a.out);
  if (!tiled_only() && attention_backward_rows(a)) return;
  visit_float(Op::attention_backward, a.in[0].dtype(), [&](auto z) { attention_backward<decltype(z)>(a); });
}

}  // namespace

void register_attention_kernels(KernelTable& t) {
  t.fn[size_t(Op::attention)] = k_attention;
  t.fn[size_t(Op::attention_backward)] = k_attention_backward;
}

}  // namespace loom::runtime::cpu
