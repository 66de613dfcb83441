// cpu/attention_rows.cpp: scaled-dot-product attention by blocks of query rows, for the common
// training case: causal or full visibility, no mask and no segments. cpu/attention.cpp's tiled
// kernel (FlashAttention-2 tiles of 64 x 64 with an online softmax) keeps every other case;
// both compute
//
//   s_ij = scale * q_i . k_j  for visible (i, j),  lse_i = log sum_j exp(s_ij),
//   out_i = sum_j exp(s_ij - lse_i) v_j.
//
// Why rows: a query block of BQ rows against all of its visible keys at once is a
// [BQ, D] x [D, kend] product whose score block [BQ, kend] lives in a per-thread buffer
// (BQ * Tk floats), never a [T, T] tensor; with the whole visible row present the softmax needs
// no online rescaling. Causal visibility is "j <= i + q_offset - k_offset", so a block needs
// keys [0, kend) with kend set by its last row; entries past a row's own limit are zeroed.
//
// The products are register-tiled (cpu/small_gemm.h): at T = 64..256, D = 32..64 a BLAS call
// re-packed both operands every time and the whole op ran at 4-6 GFLOP/s. K^T (and V^T for
// backward) is packed once per (b, kv head) into zero-padded rows of 16-column multiples.
//
// Backward, per (b, kv head): for each query head of the group and each query block,
//   P = exp(S - lse),  dP = gout V^T,  dS = P * (dP - D_i),  D_i = rowsum(gout_i * out_i) - glse_i,
//   dV += P^T gout,  dK += scale dS^T Q,  dQ = scale dS K       (Dao 2023, Alg. 2, untiled).
// Five products; one work item owns its rows of gk and gv, and the blocks run in a fixed order,
// so the result does not depend on the thread count. Up to T = 256 a head's P and dS stay
// whole ([Tq, Tk] buffers, per thread), and dV = P^T gout, dK = scale dS^T Q run once per
// 6-key register tile over all the query rows that see it, straight into gk / gv: per block
// they were K = 24 sums whose C tiles went in and out of a scratch [Tk, D] for every block,
// copied out at the end (backward 7% shorter at B8 T256 H8 D32). Longer heads keep the
// per-block sums.
//
// Kept probabilities: when the forward is given a third output slot (autograd will run the
// backward) and the score blocks are small next to the tensors the op holds anyway (see
// keeps_probs), the forward writes its score blocks into a tensor it allocates there instead of
// a scratch buffer, and keeps exp(S - m_i) with 1 / l_i. The backward then reads P = that times
// 1 / l_i instead of recomputing S = Q K^T and its exponentials: at D = 32-64, T = 64-256 the
// backward takes 0.78-0.87 of its time, the forward 1.00-1.09 (bench/README.md). Short sequences only: FlashAttention recomputes because P is
// O(T^2); the rule below keeps it only where it costs at most about the op's own q, k, v, out.
// Layout (private to this file): for each (b, h), the query blocks' [rows, ncols] score blocks
// one after another (ncols = the block's key count rounded up to 16), then B * H * Tq values 1 / l.
//
// Layout: q [B, Tq, H, D], k/v [B, Tk, Hkv, D] contiguous (head rows strided by H * D or
// Hkv * D: the products read them in place), out like q, lse [B, H, Tq].
#include "runtime/cpu/attention_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/cpu/common.h"
#include "runtime/cpu/line_vector.h"
#include "runtime/cpu/small_gemm.h"
#include "runtime/cpu/vecmath.h"

namespace loom::runtime::cpu {
namespace {

// Query rows per block (BQ): 4 whole row tiles of small_gemm. At 32 the fifth tile had 2 rows;
// 24 measured 3-5% faster forward and backward at the bench_train shapes (1 thread).
constexpr int64_t kBlockQ = 4 * small_gemm_detail::kMaxRows;
constexpr int64_t kMaxKeys = 16384;      // longer key ranges use the tiled kernel (buffer size)
constexpr int64_t kPad = 16;             // score rows are computed in whole 16-column tiles
// The backward keeps a head's whole P and dS (two [Tq, round_up(Tk, 16)] buffers per thread)
// up to this many floats each (T = 256: 256 KB, with the rest in L2), else one query block's.
constexpr int64_t kWholeHeadFloats = int64_t(1) << 16;

int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// Which keys row i of the queries sees: [0, limit(i)).
struct RowLimits {
  bool causal;
  int64_t shift, Tk;  // shift = q_offset - k_offset
  int64_t limit(int64_t i) const {
    if (!causal) return Tk;
    return std::clamp<int64_t>(i + shift + 1, 0, Tk);
  }
};

// Software prefetch of `rows` rows of D elements, `stride` elements apart.
template <class T> void prefetch_rows(const T* p, int64_t rows, int64_t stride, int64_t D) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; d += int64_t(64 / sizeof(T))) __builtin_prefetch(p + r * stride + d);
}

// sum_d x[d] y[d] with f64 products and sums (the softmax-backward row term D_i).
template <class T> double dot_f64(const T* x, const T* y, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    f64x4 lo{}, hi{};
    int64_t d = 0;
    for (; d + 8 <= n; d += 8) {
      f64x4 a0, a1, b0, b1;
      widen_f64(load8(x + d), a0, a1);
      widen_f64(load8(y + d), b0, b1);
      lo += a0 * b0;
      hi += a1 * b1;
    }
    double t = hsum_f64(lo, hi);
    for (; d < n; ++d) t += double(x[d]) * double(y[d]);
    return t;
  } else {
    double t = 0;
    for (int64_t d = 0; d < n; ++d) t += x[d] * y[d];
    return t;
  }
}

// The backward's input holding the forward's kept probabilities (after the four masks).
constexpr size_t kKeptProbsInput = 11;

bool eligible(const KernelArgs& a, size_t first_mask, int64_t Tk) {
  for (size_t i = first_mask; i < std::min(a.in.size(), first_mask + 4); ++i)
    if (a.in[i].defined()) return false;
  return Tk <= kMaxKeys;
}

// K^T (or V^T) of one (b, kv head), packed [D][ld] with ld a multiple of 16 and zero columns
// past Tk, so score rows are computed in whole vectors. Filled lazily: columns [0, upto).
template <class T> struct PackedKeysT {
  LineVector<T> data;
  int64_t ld = 0, upto = 0, owner = -1;
  void reset(int64_t D, int64_t Tk, int64_t owner_id) {
    ld = round_up(std::max<int64_t>(Tk, 1), kPad);
    data.assign(size_t(D * ld), T(0));  // keeps the capacity: no allocation after the first
    upto = 0;
    owner = owner_id;
  }
  // Makes columns [0, n) available from rows src + j * stride (j < n).
  void extend(const T* src, int64_t stride, int64_t D, int64_t n) {
    if (n <= upto) return;
    int64_t j = upto;
    if constexpr (std::is_same_v<T, float>) {  // whole 8 x 8 blocks in registers
      if (j % 8 == 0)
        for (; j + 8 <= n; j += 8)
          for (int64_t d = 0; d + 8 <= D; d += 8) transpose8x8(src + j * stride + d, stride, data.data() + d * ld + j, ld);
      const int64_t d8 = D / 8 * 8;
      for (int64_t d = d8; d < D; ++d)  // rows past the last whole block of 8 (D % 8 != 0)
        for (int64_t jj = upto; jj < j; ++jj) data[size_t(d * ld + jj)] = src[jj * stride + d];
    }
    // d outer: the writes are contiguous and the source rows stay in L1 between passes.
    for (int64_t d = 0; d < D; ++d) {
      T* dst = data.data() + d * ld;
      for (int64_t jj = j; jj < n; ++jj) dst[jj] = src[jj * stride + d];
    }
    upto = n;
  }
};

// Where each query block's scores sit in the kept-probabilities tensor: block qb of (b, h)
// starts at bh * per_bh + offset[qb], rows of ncols(qb) values.
struct ProbsLayout {
  std::vector<int64_t> offset;  // [nqb + 1]
  int64_t per_bh = 0, ld = 0;
  ProbsLayout(const RowLimits& lim, int64_t Tq, int64_t Tk) : ld(round_up(std::max<int64_t>(Tk, 1), kPad)) {
    const int64_t nqb = (Tq + kBlockQ - 1) / kBlockQ;
    offset.assign(size_t(nqb + 1), 0);
    for (int64_t qb = 0; qb < nqb; ++qb) {
      const int64_t i0 = qb * kBlockQ, rows = std::min(Tq, i0 + kBlockQ) - i0;
      offset[size_t(qb + 1)] = offset[size_t(qb)] + rows * ncols(lim.limit(i0 + rows - 1));
    }
    per_bh = offset[size_t(nqb)];
  }
  int64_t ncols(int64_t kend) const { return kend == 0 ? 0 : std::min(round_up(kend, kPad), ld); }
};

// Keep P when its blocks hold at most 1.25 times the elements of q, k, v and out together: with
// causal masking that is T up to about 9 D (D = 32: T <= 288; D = 64: T <= 576), where the
// recomputation at K = D is least efficient and P is a few MB per layer.
bool keeps_probs(const ProbsLayout& layout, int64_t B, int64_t H, int64_t Hkv, int64_t Tq, int64_t Tk, int64_t D) {
  if (attention_env() == AttentionEnv::recompute) return false;
  const double held = double(B) * D * (2.0 * Tq * H + 2.0 * Tk * Hkv);
  return double(B) * H * layout.per_bh <= 1.25 * held;
}

// ---- forward -------------------------------------------------------------------------------
template <class T> void forward(const KernelArgs& a) {
  const Tensor &q = a.in[0], &k = a.in[1], &v = a.in[2];
  Tensor &out = a.out[0], &lse = a.out[1];
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t Tk = k.size(1), Hkv = k.size(2), group = H / Hkv;
  const RowLimits lim{a.attrs.causal, a.attrs.q_offset - a.attrs.k_offset, Tk};
  const T* pq = q.data<T>();
  const T* pk = k.data<T>();
  const T* pv = v.data<T>();
  T* po = out.data<T>();
  T* pl = lse.data<T>();
  const T scale = T(a.attrs.scale);
  const int64_t nqb = (Tq + kBlockQ - 1) / kBlockQ, qs = H * D, ks = Hkv * D;
  const ProbsLayout layout(lim, Tq, Tk);
  T* kept = nullptr;  // the kept probabilities, or nullptr: scores go to a per-thread buffer
  T* kept_inv_l = nullptr;
  if (a.out.size() > 2 && keeps_probs(layout, B, H, Hkv, Tq, Tk, D)) {
    a.out[2] = Tensor::empty({B * H * (layout.per_bh + Tq)}, q.dtype(), q.device());
    kept = a.out[2].data<T>();
    kept_inv_l = kept + B * H * layout.per_bh;
  }

  // Items run query blocks of one (b, h) in order, so a thread's packed K^T grows with kend.
  parallel_for(B * H * nqb, 1, [&](int64_t begin, int64_t end) {
    PackedKeysT<T> kt;
    int64_t v_asked = 0;  // rows of kt.owner's V already prefetched
    LineVector<T> scratch(kept ? 0 : size_t(kBlockQ * layout.ld));
    std::vector<double> l(kBlockQ);
    std::vector<T> m(kBlockQ);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t qb = item % nqb, h = (item / nqb) % H, b = item / (nqb * H), hk = h / group;
      const int64_t i0 = qb * kBlockQ, rows = std::min(Tq, i0 + kBlockQ) - i0;
      const int64_t kend = lim.limit(i0 + rows - 1);  // the block's last row sees the most keys
      const T* qrow = pq + ((b * Tq + i0) * H + h) * D;
      const T* krow = pk + (b * Tk * Hkv + hk) * D;
      const T* vrow = pv + (b * Tk * Hkv + hk) * D;
      T* orow = po + ((b * Tq + i0) * H + h) * D;
      T* lrow = pl + (b * H + h) * Tq + i0;
      if (kend == 0) {  // no row of the block sees a key
        for (int64_t r = 0; r < rows; ++r) {
          std::fill(orow + r * qs, orow + r * qs + D, T(0));
          lrow[r] = -std::numeric_limits<T>::infinity();
          if (kept) kept_inv_l[(b * H + h) * Tq + i0 + r] = T(0);
        }
        continue;
      }
      if (kt.owner != b * Hkv + hk) {
        kt.reset(D, Tk, b * Hkv + hk);
        v_asked = 0;
      }
      prefetch_rows(vrow + v_asked * ks, kend - v_asked, ks, D);  // rows new to P V after the scores
      v_asked = kend;
      if (qb + 1 < nqb) {                 // the next block's queries and new keys
        const int64_t next = std::min(Tq, i0 + 2 * kBlockQ) - i0 - kBlockQ;
        prefetch_rows(qrow + kBlockQ * qs, next, qs, D);
        const int64_t kn = lim.limit(i0 + kBlockQ + next - 1);
        if (kn > kend) prefetch_rows(krow + kend * ks, kn - kend, ks, D);
      }
      kt.extend(krow, ks, D, kend);
      const int64_t ncols = layout.ncols(kend);
      T* S = kept ? kept + (b * H + h) * layout.per_bh + layout.offset[size_t(qb)] : scratch.data();
      const int64_t ld = kept ? ncols : layout.ld;  // row stride of S
      small_gemm(rows, ncols, D, scale, qrow, qs, int64_t(1), kt.data.data(), kt.ld, T(0), S, ld);  // S = s Q K^T
      for (int64_t r = 0; r < rows; ++r) {
        T* s = S + r * ld;
        const int64_t n = lim.limit(i0 + r);
        std::fill(s + n, s + kend, T(0));
        if (n == 0) {
          m[r] = -std::numeric_limits<T>::infinity();
          l[r] = 0;
          continue;
        }
        m[r] = row_max(s, n);
        l[r] = exp_sub_sum(s, s, n, m[r]);
      }
      small_gemm(rows, D, kend, T(1), S, ld, int64_t(1), vrow, ks, T(0), orow, qs);  // out = P V
      T* inv_l = kept ? kept_inv_l + (b * H + h) * Tq + i0 : nullptr;
      for (int64_t r = 0; r < rows; ++r) {
        T* o = orow + r * qs;
        if (l[r] == 0) {  // the row sees no key
          std::fill(o, o + D, T(0));
          lrow[r] = -std::numeric_limits<T>::infinity();
          if (inv_l) inv_l[r] = T(0);
          continue;
        }
        const T inv = T(1.0 / l[r]);
        if (inv_l) inv_l[r] = inv;
        for (int64_t d = 0; d < D; ++d) o[d] *= inv;
        lrow[r] = T(double(m[r]) + std::log(l[r]));
      }
    }
  });
}

// dV = P^T gout and dK = scale dS^T Q of one head (rows j of gk / gv, ks apart; added to them
// when accumulate: the later heads of a kv group), from the head's whole [Tq, ld] P and dS. Key
// tile [j0, j0 + 6) is one register tile whose sum runs over the query rows that see any of its
// keys, in order: a K of up to Tq instead of a block's 24, and no C traffic between blocks.
// Rows that see only part of the tile have zeros in P and dS past their keys.
template <class T>
void key_side_products(const RowLimits& lim, int64_t Tq, int64_t Tk, int64_t D, T scale, const T* P, const T* dS,
                       int64_t ld, const T* q, const T* gout, int64_t qs, T* gk, T* gv, int64_t ks, bool accumulate) {
  constexpr int64_t kTile = small_gemm_detail::kMaxRows;
  int64_t first = 0;  // the first query row that sees key j0 (limits grow with the row)
  for (int64_t j0 = 0; j0 < Tk; j0 += kTile) {
    const int64_t keys = std::min(kTile, Tk - j0);
    while (first < Tq && lim.limit(first) <= j0) ++first;
    const int64_t n = Tq - first;  // visible rows
    T* gkj = gk + j0 * ks;
    T* gvj = gv + j0 * ks;
    if (n == 0) {  // no query sees these keys
      if (!accumulate)
        for (int64_t j = 0; j < keys; ++j) {
          std::fill(gkj + j * ks, gkj + j * ks + D, T(0));
          std::fill(gvj + j * ks, gvj + j * ks + D, T(0));
        }
      continue;
    }
    const T beta = accumulate ? T(1) : T(0);
    // A = P^T: element (j, i) at i * ld + j.
    small_gemm(keys, D, n, T(1), P + first * ld + j0, int64_t(1), ld, gout + first * qs, qs, beta, gvj, ks);
    small_gemm(keys, D, n, scale, dS + first * ld + j0, int64_t(1), ld, q + first * qs, qs, beta, gkj, ks);
  }
}

// ---- backward ------------------------------------------------------------------------------
template <class T> void backward(const KernelArgs& a) {
  const Tensor &q = a.in[0], &k = a.in[1], &v = a.in[2], &out = a.in[3], &lse = a.in[4], &gout = a.in[5];
  const Tensor glse = a.in.size() > 6 ? a.in[6] : Tensor();
  Tensor &gq = a.out[0], &gk = a.out[1], &gv = a.out[2];
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t Tk = k.size(1), Hkv = k.size(2), group = H / Hkv;
  const RowLimits lim{a.attrs.causal, a.attrs.q_offset - a.attrs.k_offset, Tk};
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
  const int64_t nqb = (Tq + kBlockQ - 1) / kBlockQ, qs = H * D, ks = Hkv * D;
  const ProbsLayout layout(lim, Tq, Tk);
  const T* kept = nullptr;
  if (a.in.size() > kKeptProbsInput && a.in[kKeptProbsInput].defined()) {
    const Tensor& t = a.in[kKeptProbsInput];
    if (t.numel() != B * H * (layout.per_bh + Tq) || t.dtype() != q.dtype())
      throw std::logic_error("attention_backward: the kept probabilities do not come from this forward");
    kept = t.data<T>();
  }
  const T* kept_inv_l = kept ? kept + B * H * layout.per_bh : nullptr;

  // D_i for every (b, h, i) first, streaming gout and out in memory order: inside the block loop
  // each row's out would be a strided read that missed the cache.
  std::vector<T> Drow(size_t(B * H * Tq));
  parallel_for(B * Tq, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bi = begin; bi < end; ++bi) {
      const int64_t b = bi / Tq, i = bi % Tq;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t at = (b * H + h) * Tq + i;
        Drow[size_t(at)] = T(dot_f64(pgo + (bi * H + h) * D, po + (bi * H + h) * D, D) - (pgl ? double(pgl[at]) : 0.0));
      }
    }
  });

  // Whole-head P and dS (see the header) when a head's [Tq, ldp] buffers are small.
  const int64_t lds = round_up(std::max<int64_t>(Tk, 1), kPad);  // P and dS rows (padded by a
  // line, so that the key tiles' column bands spread over L1's sets, measured 2% slower)
  const bool whole_head = Tq * lds <= kWholeHeadFloats;
  parallel_for(B * Hkv, 1, [&](int64_t begin, int64_t end) {
    PackedKeysT<T> kt, vt;
    LineVector<T> P(size_t((whole_head ? Tq : kBlockQ) * lds)), dS(P.size());
    LineVector<T> dK(whole_head ? 0 : size_t(Tk * D)), dV(dK.size());
    for (int64_t item = begin; item < end; ++item) {
      const int64_t hk = item % Hkv, b = item / Hkv;
      const T* krow = pk + (b * Tk * Hkv + hk) * D;
      const T* vrow = pv + (b * Tk * Hkv + hk) * D;
      T* gkrow = pgk + (b * Tk * Hkv + hk) * D;
      T* gvrow = pgv + (b * Tk * Hkv + hk) * D;
      // Per block, dK and dV of the item sum in contiguous [Tk, D] blocks (in L2), copied out at
      // the end: zeroing and accumulating the head's rows in place, H * D apart, stalled on every row.
      std::fill(dK.begin(), dK.end(), T(0));
      std::fill(dV.begin(), dV.end(), T(0));
      prefetch_rows(vrow, Tk, ks, D);  // arrives while K is packed
      if (!kept) {  // K^T is needed only to recompute the scores
        kt.reset(D, Tk, item);
        kt.extend(krow, ks, D, Tk);
      }
      vt.reset(D, Tk, item);
      vt.extend(vrow, ks, D, Tk);
      const int64_t ld = vt.ld;  // packed K^T / V^T rows
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t qb = 0; qb < nqb; ++qb) {
          const int64_t i0 = qb * kBlockQ, rows = std::min(Tq, i0 + kBlockQ) - i0;
          const int64_t kend = lim.limit(i0 + rows - 1);
          const int64_t row0 = (b * Tq + i0) * H + h;  // row index of (b, i0, h) in [B * Tq * H]
          const T* qrow = pq + row0 * D;
          const T* gorow = pgo + row0 * D;
          T* gqrow = pgq + row0 * D;
          // The block's rows of P and dS: in the whole-head buffers, or the one block's.
          T* Pb = P.data() + (whole_head ? i0 * lds : 0);
          T* dSb = dS.data() + (whole_head ? i0 * lds : 0);
          // The rows of a head are H * D apart, too far for the hardware prefetcher: ask for
          // the next block's inputs now.
          if (i0 + kBlockQ < Tq) {
            const int64_t next = std::min(Tq, i0 + 2 * kBlockQ) - i0 - kBlockQ;
            prefetch_rows(qrow + kBlockQ * qs, next, qs, D);
            prefetch_rows(gorow + kBlockQ * qs, next, qs, D);
          }
          if (kend == 0) {
            for (int64_t r = 0; r < rows; ++r) std::fill(gqrow + r * qs, gqrow + r * qs + D, T(0));
            continue;
          }
          const int64_t ncols = layout.ncols(kend);
          const T* kept_rows = kept ? kept + (b * H + h) * layout.per_bh + layout.offset[size_t(qb)] : nullptr;
          if (!kept)
            small_gemm(rows, ncols, D, scale, qrow, qs, int64_t(1), kt.data.data(), ld, T(0), Pb, lds);  // S
          small_gemm(rows, ncols, D, T(1), gorow, qs, int64_t(1), vt.data.data(), ld, T(0), dSb, lds);  // dP
          for (int64_t r = 0; r < rows; ++r) {
            T* p = Pb + r * lds;
            T* ds = dSb + r * lds;
            const int64_t n = lim.limit(i0 + r);
            // Zeros past the row's keys: to kend for this block's products, and to the end of
            // the next whole line for the whole-head key tiles, which start at most 5 keys past
            // a row they include.
            const int64_t zero_to = whole_head ? std::min(lds, std::max(kend, round_up(n, kPad) + kPad)) : kend;
            const T L = pl[(b * H + h) * Tq + i0 + r];
            if (n == 0 || std::isinf(L)) {  // lse = -inf: the row saw no key
              std::fill(p, p + zero_to, T(0));
              std::fill(ds, ds + zero_to, T(0));
              continue;
            }
            const T Di = Drow[size_t((b * H + h) * Tq + i0 + r)];
            // P = exp(S - lse), recomputed or read as the forward's exp(S - m) times 1 / l.
            const T* src = kept_rows ? kept_rows + r * ncols : p;
            const T inv_l = kept ? kept_inv_l[(b * H + h) * Tq + i0 + r] : T(0);
            if constexpr (std::is_same_v<T, float>) {
              for_blocksw(0, n, [&](int64_t c, int64_t m) {
                const f32xw e = kept ? loadw(src + c, m) * inv_l : exp_v(loadw(src + c, m) - L);
                storew(p + c, e, m);
                storew(ds + c, e * (loadw(ds + c, m) - Di), m);
              });
            } else {
              for (int64_t c = 0; c < n; ++c) {
                p[c] = kept ? src[c] * inv_l : std::exp(src[c] - L);
                ds[c] = p[c] * (ds[c] - Di);
              }
            }
            std::fill(p + n, p + zero_to, T(0));
            std::fill(ds + n, ds + zero_to, T(0));
          }
          if (!whole_head) {  // A = P^T and dS^T: element (j, r) at r * lds + j.
            small_gemm(kend, D, rows, T(1), Pb, int64_t(1), lds, gorow, qs, T(1), dV.data(), D);    // dV += P^T gout
            small_gemm(kend, D, rows, scale, dSb, int64_t(1), lds, qrow, qs, T(1), dK.data(), D);   // dK += s dS^T Q
          }
          small_gemm(rows, D, kend, scale, dSb, lds, int64_t(1), krow, ks, T(0), gqrow, qs);   // dQ = s dS K
        }
        if (whole_head) key_side_products(lim, Tq, Tk, D, scale, P.data(), dS.data(), lds, pq + (b * Tq * H + h) * D,
                                          pgo + (b * Tq * H + h) * D, qs, gkrow, gvrow, ks, h > hk * group);
      }
      if (!whole_head)
        for (int64_t j = 0; j < Tk; ++j) {
          std::copy(dK.begin() + j * D, dK.begin() + (j + 1) * D, gkrow + j * ks);
          std::copy(dV.begin() + j * D, dV.begin() + (j + 1) * D, gvrow + j * ks);
        }
    }
  });
}

}  // namespace

AttentionEnv attention_env() {
  const char* e = std::getenv("LOOM_ATTENTION");
  if (!e) return AttentionEnv::standard;
  const std::string v(e);
  return v == "tiled" ? AttentionEnv::tiled : v == "recompute" ? AttentionEnv::recompute : AttentionEnv::standard;
}

bool attention_forward_rows(const KernelArgs& a) {
  if (!eligible(a, 3, a.in[1].size(1))) return false;
  if (a.in[0].numel() == 0) return true;
  visit_float(Op::attention, a.in[0].dtype(), [&](auto z) { forward<decltype(z)>(a); });
  return true;
}

bool attention_backward_rows(const KernelArgs& a) {
  if (!eligible(a, 7, a.in[1].size(1))) return false;
  visit_float(Op::attention_backward, a.in[0].dtype(), [&](auto z) {
    using T = decltype(z);
    if (a.in[0].numel() == 0) {  // no queries: gk = gv = 0
      for (int i = 1; i < 3; ++i) std::fill(a.out[i].data<T>(), a.out[i].data<T>() + a.out[i].numel(), T(0));
      return;
    }
    backward<T>(a);
  });
  return true;
}

}  // namespace loom::runtime::cpu
