// test_attention.cpp: the fused attention op (ops_attention.cpp, cpu/attention.cpp) against a
// naive f64 reference written here from plain loops: softmax(Q K^T scale + mask) V and its
// log-sum-exp, with causal offsets, grouped-query heads, u8 masks, segment visibility and fully
// masked rows; gradients against the reference's analytic backward and central finite
// differences; merge_attention against attention over the union of keys.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <tuple>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "runtime/autograd.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"

namespace loom::runtime {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- the naive reference -------------------------------------------------------------------

// One attention problem: sizes and every masking rule, as plain vectors.
struct Spec {
  int64_t B = 1, Tq = 1, Tk = 1, H = 1, Hkv = 1, D = 8;
  bool causal = false;
  int64_t q_offset = 0, k_offset = 0;
  std::vector<uint8_t> mask;        // [B, Tq, Tk] or empty
  std::vector<int32_t> qseg, kseg;  // [B, Tq], [B, Tk] or empty
  std::vector<uint8_t> vis;         // [S, S] or [B, S, S]
  int64_t S = 0;
  bool vis_batched = false;

  double scale() const { return 1.0 / std::sqrt(double(D)); }
  int64_t qi(int64_t b, int64_t i, int64_t h, int64_t d) const { return ((b * Tq + i) * H + h) * D + d; }
  int64_t ki(int64_t b, int64_t j, int64_t h, int64_t d) const { return ((b * Tk + j) * Hkv + h) * D + d; }
  int64_t li(int64_t b, int64_t h, int64_t i) const { return (b * H + h) * Tq + i; }
  bool allowed(int64_t b, int64_t i, int64_t j) const {
    if (causal && k_offset + j > q_offset + i) return false;
    if (!mask.empty() && !mask[(b * Tq + i) * Tk + j]) return false;
    if (!qseg.empty()) {
      int64_t vb = vis_batched ? b : 0;
      if (!vis[(vb * S + qseg[b * Tq + i]) * S + kseg[b * Tk + j]]) return false;
    }
    return true;
  }
  AttentionMask attention_mask() const {
    AttentionMask m;
    m.causal = causal;
    m.q_offset = q_offset;
    m.k_offset = k_offset;
    if (!mask.empty()) m.mask = Tensor::from_vector(mask, {B, Tq, Tk});
    if (!qseg.empty()) {
      m.q_segments = Tensor::from_vector(qseg, {B, Tq});
      m.k_segments = Tensor::from_vector(kseg, {B, Tk});
      m.visibility = vis_batched ? Tensor::from_vector(vis, {B, S, S}) : Tensor::from_vector(vis, {S, S});
    }
    return m;
  }
};

struct Values {
  std::vector<double> q, k, v;
};

struct Forward {
  std::vector<double> out, lse;
};

Forward naive_forward(const Spec& s, const Values& x) {
  Forward f{std::vector<double>(size_t(s.B * s.Tq * s.H * s.D), 0.0), std::vector<double>(size_t(s.B * s.H * s.Tq))};
  int64_t group = s.H / s.Hkv;
  std::vector<double> sc(size_t(s.Tk));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.Tq; ++i) {
        double mx = -kInf;
        for (int64_t j = 0; j < s.Tk; ++j) {
          sc[j] = -kInf;
          if (!s.allowed(b, i, j)) continue;
          double dot = 0;
          for (int64_t d = 0; d < s.D; ++d) dot += x.q[s.qi(b, i, h, d)] * x.k[s.ki(b, j, h / group, d)];
          sc[j] = dot * s.scale();
          mx = std::max(mx, sc[j]);
        }
        if (mx == -kInf) {
          f.lse[s.li(b, h, i)] = -kInf;
          continue;
        }
        double z = 0;
        for (int64_t j = 0; j < s.Tk; ++j) z += std::exp(sc[j] - mx);
        double lse = mx + std::log(z);
        f.lse[s.li(b, h, i)] = lse;
        for (int64_t j = 0; j < s.Tk; ++j) {
          double p = std::exp(sc[j] - lse);
          for (int64_t d = 0; d < s.D; ++d) f.out[s.qi(b, i, h, d)] += p * x.v[s.ki(b, j, h / group, d)];
        }
      }
  return f;
}

// Analytic gradient of <out, gout> + <lse, glse> (rows with lse = -inf contribute nothing).
Values naive_backward(const Spec& s, const Values& x, const std::vector<double>& gout, const std::vector<double>& glse) {
  Forward f = naive_forward(s, x);
  Values g{std::vector<double>(x.q.size(), 0.0), std::vector<double>(x.k.size(), 0.0),
           std::vector<double>(x.v.size(), 0.0)};
  int64_t group = s.H / s.Hkv;
  std::vector<double> p(size_t(s.Tk)), dp(size_t(s.Tk));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.Tq; ++i) {
        double lse = f.lse[s.li(b, h, i)];
        if (lse == -kInf) continue;
        int64_t hk = h / group;
        double Di = -glse[s.li(b, h, i)];
        for (int64_t j = 0; j < s.Tk; ++j) {
          p[j] = dp[j] = 0;
          if (!s.allowed(b, i, j)) continue;
          double dot = 0, dv = 0;
          for (int64_t d = 0; d < s.D; ++d) {
            dot += x.q[s.qi(b, i, h, d)] * x.k[s.ki(b, j, hk, d)];
            dv += gout[s.qi(b, i, h, d)] * x.v[s.ki(b, j, hk, d)];
          }
          p[j] = std::exp(dot * s.scale() - lse);
          dp[j] = dv;
          Di += p[j] * dv;
        }
        for (int64_t j = 0; j < s.Tk; ++j) {
          if (p[j] == 0) continue;
          double ds = p[j] * (dp[j] - Di) * s.scale();
          for (int64_t d = 0; d < s.D; ++d) {
            g.q[s.qi(b, i, h, d)] += ds * x.k[s.ki(b, j, hk, d)];
            g.k[s.ki(b, j, hk, d)] += ds * x.q[s.qi(b, i, h, d)];
            g.v[s.ki(b, j, hk, d)] += p[j] * gout[s.qi(b, i, h, d)];
          }
        }
      }
  return g;
}

// ---- helpers -------------------------------------------------------------------------------

std::vector<double> random_values(int64_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = u(gen);
  return v;
}

Values random_inputs(const Spec& s, uint32_t seed) {
  // Scale 2 makes softmax rows far from uniform, so masking errors show.
  return {random_values(s.B * s.Tq * s.H * s.D, seed, -2, 2), random_values(s.B * s.Tk * s.Hkv * s.D, seed + 1, -2, 2),
          random_values(s.B * s.Tk * s.Hkv * s.D, seed + 2)};
}

template <class T> Tensor make_tensor(const std::vector<double>& v, const Dims& shape) {
  std::vector<T> t(v.begin(), v.end());
  return Tensor::from_vector(t, shape);
}

std::vector<double> values_of(const Tensor& t) {
  EXPECT_TRUE(t.numel() == 0 || t.is_contiguous());
  if (t.dtype() == DType::f32) {
    const float* p = t.data<float>();
    return std::vector<double>(p, p + t.numel());
  }
  const double* p = t.data<double>();
  return std::vector<double>(p, p + t.numel());
}

struct Fused {
  Tensor q, k, v;
  AttentionResult r;
};

template <class T = double> Fused run_fused(const Spec& s, const Values& x, bool requires_grad = false) {
  Fused f;
  f.q = make_tensor<T>(x.q, {s.B, s.Tq, s.H, s.D});
  f.k = make_tensor<T>(x.k, {s.B, s.Tk, s.Hkv, s.D});
  f.v = make_tensor<T>(x.v, {s.B, s.Tk, s.Hkv, s.D});
  if (requires_grad) {
    f.q.set_requires_grad(true);
    f.k.set_requires_grad(true);
    f.v.set_requires_grad(true);
  }
  f.r = attention(f.q, f.k, f.v, s.attention_mask());
  return f;
}

// max |a - b| / max(1, max |b|); -inf must match -inf exactly; any NaN fails.
::testing::AssertionResult close(const std::vector<double>& a, const std::vector<double>& b, double tol,
                                 const char* what) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  double err = 0, ref = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return ::testing::AssertionFailure() << what << ": NaN at " << i;
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return ::testing::AssertionFailure() << what << ": " << a[i] << " vs " << b[i] << " at " << i;
      continue;
    }
    err = std::max(err, std::abs(a[i] - b[i]));
    ref = std::max(ref, std::abs(b[i]));
  }
  if (err / ref > tol)
    return ::testing::AssertionFailure() << what << ": max error " << err << " (relative " << err / ref << ") > " << tol;
  return ::testing::AssertionSuccess();
}

void expect_matches_naive(const Spec& s, uint32_t seed, double tol = 1e-12) {
  Values x = random_inputs(s, seed);
  Forward ref = naive_forward(s, x);
  Fused f = run_fused(s, x);
  ASSERT_EQ(f.r.out.shape(), (Dims{s.B, s.Tq, s.H, s.D}));
  ASSERT_EQ(f.r.lse.shape(), (Dims{s.B, s.H, s.Tq}));
  EXPECT_TRUE(close(values_of(f.r.out), ref.out, tol, "out"));
  EXPECT_TRUE(close(values_of(f.r.lse), ref.lse, tol, "lse"));
}

// Gradients of <out, W> + <lse, U> through autograd against the naive analytic ones.
void expect_grads_match_naive(const Spec& s, uint32_t seed, double tol = 1e-12) {
  Values x = random_inputs(s, seed);
  std::vector<double> W = random_values(s.B * s.Tq * s.H * s.D, seed + 10);
  std::vector<double> U = random_values(s.B * s.H * s.Tq, seed + 11);
  Values ref = naive_backward(s, x, W, U);
  Fused f = run_fused(s, x, true);
  run_backward({f.r.out, f.r.lse}, {make_tensor<double>(W, f.r.out.shape()), make_tensor<double>(U, f.r.lse.shape())});
  EXPECT_TRUE(close(values_of(f.q.grad()), ref.q, tol, "gq"));
  EXPECT_TRUE(close(values_of(f.k.grad()), ref.k, tol, "gk"));
  EXPECT_TRUE(close(values_of(f.v.grad()), ref.v, tol, "gv"));
}

// Documents of the given lengths packed one after another: ids 0, 0, ..., 1, 1, ...
std::vector<int32_t> packed_ids(const std::vector<int64_t>& lengths) {
  std::vector<int32_t> ids;
  for (size_t s = 0; s < lengths.size(); ++s) ids.insert(ids.end(), size_t(lengths[s]), int32_t(s));
  return ids;
}

std::vector<uint8_t> identity(int64_t S) {
  std::vector<uint8_t> v(size_t(S * S), 0);
  for (int64_t s = 0; s < S; ++s) v[s * S + s] = 1;
  return v;
}

// Parallel paths: segment 0 is a shared prefix, paths 1..3 see 0 and themselves, segment 4
// (the summary) sees everything.
std::vector<uint8_t> parallel_paths_visibility() {
  const int64_t S = 5;
  std::vector<uint8_t> v(S * S, 0);
  for (int64_t s = 0; s < S; ++s) v[s * S + 0] = 1;
  for (int64_t s = 1; s <= 3; ++s) v[s * S + s] = 1;
  for (int64_t t = 0; t < S; ++t) v[4 * S + t] = 1;
  return v;
}

// ---- forward against the reference ---------------------------------------------------------

// (H, Hkv): multi-head, grouped-query, multi-query.
const std::vector<std::pair<int64_t, int64_t>> kHeadConfigs = {{2, 2}, {4, 2}, {4, 1}};

TEST(Attention, ForwardMatchesNaiveAcrossLengthsHeadsAndCausal) {
  uint32_t seed = 1;
  for (int64_t T : {1, 7, 63, 64, 65, 130})
    for (auto [H, Hkv] : kHeadConfigs)
      for (bool causal : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "T=" << T << " H=" << H << " Hkv=" << Hkv << " causal=" << causal);
        Spec s;
        s.B = 2, s.Tq = s.Tk = T, s.H = H, s.Hkv = Hkv, s.D = 8, s.causal = causal;
        expect_matches_naive(s, seed++);
      }
}

TEST(Attention, ForwardWithOffsetsAndUnequalLengths) {
  // The last 37 queries of a 100-token sequence (decoding a suffix against the whole cache).
  Spec a;
  a.B = 1, a.Tq = 37, a.Tk = 100, a.H = 4, a.Hkv = 2, a.D = 16, a.causal = true, a.q_offset = 63;
  expect_matches_naive(a, 11);
  // A ring-attention shard whose keys start after some queries: queries 0..9 see nothing.
  Spec b;
  b.B = 2, b.Tq = 70, b.Tk = 65, b.H = 2, b.Hkv = 1, b.D = 5, b.causal = true, b.q_offset = 10, b.k_offset = 20;
  expect_matches_naive(b, 12);
  Fused f = run_fused(b, random_inputs(b, 12));
  std::vector<double> lse = values_of(f.r.lse), out = values_of(f.r.out);
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(lse[b.li(0, 0, i)], -kInf);
    for (int64_t d = 0; d < b.D; ++d) EXPECT_EQ(out[b.qi(0, i, 0, d)], 0.0);
  }
  // Non-causal with Tq != Tk.
  Spec c;
  c.B = 1, c.Tq = 3, c.Tk = 129, c.H = 3, c.Hkv = 3, c.D = 7;
  expect_matches_naive(c, 13);
}

TEST(Attention, ForwardWithRandomMaskAndFullyMaskedRows) {
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    Spec s;
    s.B = 2, s.Tq = 97, s.Tk = 130, s.H = 4, s.Hkv = 2, s.D = 8, s.causal = causal, s.q_offset = 33;
    std::mt19937 gen(7);
    s.mask.resize(size_t(s.B * s.Tq * s.Tk));
    for (auto& m : s.mask) m = gen() % 2;
    for (int64_t i : {0, 5, 64, 96})  // whole rows masked out
      std::fill_n(s.mask.begin() + (1 * s.Tq + i) * s.Tk, s.Tk, uint8_t(0));
    // A whole 64-key tile masked for batch 0.
    for (int64_t i = 0; i < s.Tq; ++i) std::fill_n(s.mask.begin() + i * s.Tk + 64, 64, uint8_t(0));
    expect_matches_naive(s, 21);
    expect_grads_match_naive(s, 22);
    Fused f = run_fused(s, random_inputs(s, 21));
    std::vector<double> lse = values_of(f.r.lse);
    for (int64_t i : {0, 5, 64, 96}) EXPECT_EQ(lse[s.li(1, 3, i)], -kInf);
  }
}

TEST(Attention, PackedDocumentsSkipTilesAndMatchNaive) {
  // Two rows with different document boundaries; several 64-key tiles lie wholly in documents
  // a query tile cannot see, so they are skipped.
  Spec s;
  s.B = 2, s.Tq = s.Tk = 200, s.H = 4, s.Hkv = 2, s.D = 8, s.causal = true, s.S = 4;
  std::vector<int32_t> row0 = packed_ids({70, 70, 60}), row1 = packed_ids({1, 128, 64, 7});
  s.qseg = row0;
  s.qseg.insert(s.qseg.end(), row1.begin(), row1.end());
  s.kseg = s.qseg;
  s.vis = identity(s.S);
  expect_matches_naive(s, 31);
  expect_grads_match_naive(s, 32);
  // The same through segment_identity_visibility, and without causal.
  Tensor vis = segment_identity_visibility(s.S);
  EXPECT_EQ(vis.shape(), (Dims{s.S, s.S}));
  std::vector<uint8_t> got(vis.data<uint8_t>(), vis.data<uint8_t>() + vis.numel());
  EXPECT_EQ(got, identity(s.S));
  s.causal = false;
  expect_matches_naive(s, 33);
}

TEST(Attention, ParallelPathsVisibility) {
  // prefix (seg 0) | path 1 | path 2 | path 3 | summary (seg 4), causal within the sequence.
  Spec s;
  s.B = 2, s.Tq = s.Tk = 150, s.H = 2, s.Hkv = 1, s.D = 8, s.causal = true, s.S = 5;
  std::vector<int32_t> row0 = packed_ids({70, 20, 20, 20, 20}), row1 = packed_ids({10, 64, 30, 30, 16});
  s.qseg = row0;
  s.qseg.insert(s.qseg.end(), row1.begin(), row1.end());
  s.kseg = s.qseg;
  s.vis = parallel_paths_visibility();
  expect_matches_naive(s, 41);
  expect_grads_match_naive(s, 42);
  // Per-batch visibility [B, S, S]: row 1 uses packed documents instead.
  s.vis_batched = true;
  std::vector<uint8_t> id = identity(s.S);
  s.vis.insert(s.vis.end(), id.begin(), id.end());
  expect_matches_naive(s, 43);
  expect_grads_match_naive(s, 44);
}

TEST(Attention, ManySegmentsUseTheGeneralPath) {
  // S > 64 segments cannot use the 64-bit tile sets; visibility is looked up per pair.
  Spec s;
  s.B = 1, s.Tq = s.Tk = 140, s.H = 2, s.Hkv = 2, s.D = 4, s.S = 70;
  s.qseg = packed_ids(std::vector<int64_t>(70, 2));
  s.kseg = s.qseg;
  s.vis = identity(s.S);
  for (int64_t t = 0; t < s.S; ++t) s.vis[69 * s.S + t] = 1;  // the last segment sees all
  expect_matches_naive(s, 51);
  expect_grads_match_naive(s, 52);
}

TEST(Attention, FullyMaskedRowsGiveZeroOutputAndFiniteGradients) {
  Spec s;
  s.B = 1, s.Tq = 9, s.Tk = 9, s.H = 2, s.Hkv = 1, s.D = 4, s.causal = true, s.q_offset = 0, s.k_offset = 4;
  Values x = random_inputs(s, 61);
  Fused f = run_fused(s, x, true);
  std::vector<double> lse = values_of(f.r.lse), out = values_of(f.r.out);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lse[s.li(0, 1, i)], -kInf);
    for (int64_t d = 0; d < s.D; ++d) EXPECT_EQ(out[s.qi(0, i, 1, d)], 0.0);
  }
  run_backward({f.r.out, f.r.lse}, {Tensor::ones(f.r.out.shape(), DType::f64), Tensor::ones(f.r.lse.shape(), DType::f64)});
  std::vector<double> gq = values_of(f.q.grad());
  for (double g : gq) EXPECT_TRUE(std::isfinite(g));
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t d = 0; d < s.D; ++d) EXPECT_EQ(gq[s.qi(0, i, 0, d)], 0.0);
  // Everything masked: out 0, lse -inf, gradients 0.
  s.mask.assign(size_t(s.B * s.Tq * s.Tk), 0);
  expect_matches_naive(s, 62);
  expect_grads_match_naive(s, 63);
}

// ---- backward ------------------------------------------------------------------------------

TEST(Attention, BackwardMatchesNaiveGradients) {
  uint32_t seed = 100;
  for (int64_t T : {1, 7, 65, 130})
    for (auto [H, Hkv] : kHeadConfigs)
      for (bool causal : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "T=" << T << " H=" << H << " Hkv=" << Hkv << " causal=" << causal);
        Spec s;
        s.B = 1, s.Tq = s.Tk = T, s.H = H, s.Hkv = Hkv, s.D = 8, s.causal = causal;
        expect_grads_match_naive(s, seed++);
      }
  Spec s;
  s.B = 2, s.Tq = 70, s.Tk = 65, s.H = 4, s.Hkv = 2, s.D = 6, s.causal = true, s.q_offset = 10, s.k_offset = 20;
  expect_grads_match_naive(s, 200);
  // Past T = 256 the row-block backward sums dK and dV block by block instead of over a head's
  // whole P and dS (cpu/attention_rows.cpp): both ways, with GQA and offsets.
  for (bool causal : {false, true}) {
    Spec longer;
    longer.B = 1, longer.Tq = 300, longer.Tk = 290, longer.H = 2, longer.Hkv = 1, longer.D = 8, longer.causal = causal;
    longer.q_offset = 5, longer.k_offset = 0;
    expect_grads_match_naive(longer, 300 + causal);
  }
}

// Central differences of L = <out, W> + <lse, U> (skipping lse = -inf rows) in f64.
void expect_grads_match_finite_differences(const Spec& s, uint32_t seed) {
  Values x = random_inputs(s, seed);
  std::vector<double> W = random_values(s.B * s.Tq * s.H * s.D, seed + 10);
  std::vector<double> U = random_values(s.B * s.H * s.Tq, seed + 11);
  auto loss = [&](const Values& y) {
    NoGradGuard no_grad;
    Fused f = run_fused(s, y);
    std::vector<double> out = values_of(f.r.out), lse = values_of(f.r.lse);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * W[i];
    for (size_t i = 0; i < lse.size(); ++i)
      if (std::isfinite(lse[i])) l += lse[i] * U[i];
    return l;
  };
  Fused f = run_fused(s, x, true);
  run_backward({f.r.out, f.r.lse}, {make_tensor<double>(W, f.r.out.shape()), make_tensor<double>(U, f.r.lse.shape())});
  const double eps = 1e-6;
  auto numeric = [&](std::vector<double> Values::*field) {
    std::vector<double> g((x.*field).size());
    for (size_t i = 0; i < g.size(); ++i) {
      Values y = x;
      (y.*field)[i] = (x.*field)[i] + eps;
      double lp = loss(y);
      (y.*field)[i] = (x.*field)[i] - eps;
      g[i] = (lp - loss(y)) / (2 * eps);
    }
    return g;
  };
  EXPECT_TRUE(close(values_of(f.q.grad()), numeric(&Values::q), 1e-7, "gq vs finite differences"));
  EXPECT_TRUE(close(values_of(f.k.grad()), numeric(&Values::k), 1e-7, "gk vs finite differences"));
  EXPECT_TRUE(close(values_of(f.v.grad()), numeric(&Values::v), 1e-7, "gv vs finite differences"));
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  Spec plain;
  plain.B = 2, plain.Tq = 5, plain.Tk = 7, plain.H = 4, plain.Hkv = 2, plain.D = 3;
  expect_grads_match_finite_differences(plain, 300);
  Spec causal = plain;
  causal.Hkv = 1, causal.causal = true, causal.q_offset = 2, causal.k_offset = 3;  // query 0 sees nothing
  expect_grads_match_finite_differences(causal, 301);
  Spec masked = plain;
  masked.mask = std::vector<uint8_t>(size_t(masked.B * masked.Tq * masked.Tk));
  std::mt19937 gen(5);
  for (auto& m : masked.mask) m = gen() % 3 != 0;
  masked.S = 5, masked.vis = parallel_paths_visibility();
  masked.qseg = {0, 1, 2, 3, 4, 0, 0, 1, 3, 4};
  masked.kseg = {0, 0, 1, 2, 3, 4, 4, 0, 1, 1, 2, 3, 3, 4};
  expect_grads_match_finite_differences(masked, 302);
}

TEST(Attention, F32MatchesF64) {
  Spec s;
  s.B = 2, s.Tq = 130, s.Tk = 130, s.H = 4, s.Hkv = 2, s.D = 16, s.causal = true;
  s.qseg = packed_ids({30, 100}), s.S = 5, s.vis = parallel_paths_visibility();
  s.qseg.insert(s.qseg.end(), s.qseg.begin(), s.qseg.end());
  for (int64_t i = 0; i < s.Tq; ++i) s.qseg[s.Tq + i] = i < 20 ? 0 : i < 60 ? 1 : i < 100 ? 2 : 4;
  s.kseg = s.qseg;
  Values x = random_inputs(s, 401);
  std::vector<double> W = random_values(s.B * s.Tq * s.H * s.D, 402);
  std::vector<double> U = random_values(s.B * s.H * s.Tq, 403);
  Fused f64 = run_fused<double>(s, x, true), f32 = run_fused<float>(s, x, true);
  EXPECT_TRUE(close(values_of(f32.r.out), values_of(f64.r.out), 1e-5, "out f32 vs f64"));
  EXPECT_TRUE(close(values_of(f32.r.lse), values_of(f64.r.lse), 1e-5, "lse f32 vs f64"));
  run_backward({f64.r.out, f64.r.lse}, {make_tensor<double>(W, f64.r.out.shape()), make_tensor<double>(U, f64.r.lse.shape())});
  run_backward({f32.r.out, f32.r.lse}, {make_tensor<float>(W, f32.r.out.shape()), make_tensor<float>(U, f32.r.lse.shape())});
  EXPECT_TRUE(close(values_of(f32.q.grad()), values_of(f64.q.grad()), 1e-5, "gq f32 vs f64"));
  EXPECT_TRUE(close(values_of(f32.k.grad()), values_of(f64.k.grad()), 1e-5, "gk f32 vs f64"));
  EXPECT_TRUE(close(values_of(f32.v.grad()), values_of(f64.v.grad()), 1e-5, "gv f32 vs f64"));
}

TEST(Attention, HalfPrecisionRunsThroughF32) {
  // bf16 storage, f32 arithmetic (dispatch widens); the error is bf16 rounding of the inputs
  // and of the result.
  Spec s;
  s.B = 1, s.Tq = s.Tk = 70, s.H = 2, s.Hkv = 1, s.D = 16, s.causal = true;
  Values x = random_inputs(s, 451);
  Fused f64 = run_fused<double>(s, x);
  Tensor q = make_tensor<float>(x.q, {s.B, s.Tq, s.H, s.D}).to(DType::bf16);
  Tensor k = make_tensor<float>(x.k, {s.B, s.Tk, s.Hkv, s.D}).to(DType::bf16);
  Tensor v = make_tensor<float>(x.v, {s.B, s.Tk, s.Hkv, s.D}).to(DType::bf16);
  AttentionResult r = attention(q, k, v, s.attention_mask());
  ASSERT_EQ(r.out.dtype(), DType::bf16);
  EXPECT_TRUE(close(values_of(r.out.to(DType::f32)), values_of(f64.r.out), 3e-2, "out bf16 vs f64"));
  EXPECT_TRUE(close(values_of(r.lse.to(DType::f32)), values_of(f64.r.lse), 3e-2, "lse bf16 vs f64"));
}

TEST(Attention, NoKeysGivesEmptyAttention) {
  Spec s;
  s.B = 2, s.Tq = 5, s.Tk = 0, s.H = 2, s.Hkv = 2, s.D = 4;
  expect_matches_naive(s, 461);
  expect_grads_match_naive(s, 462);
}

TEST(Attention, BackwardIsIndependentOfThreadCount) {
  Spec s;
  s.B = 1, s.Tq = s.Tk = 150, s.H = 4, s.Hkv = 1, s.D = 8, s.causal = true;
  Values x = random_inputs(s, 501);
  auto grads = [&](int threads) {
    int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    Fused f = run_fused<float>(s, x, true);
    run_backward({f.r.out, f.r.lse}, {Tensor::ones(f.r.out.shape()), Tensor::ones(f.r.lse.shape())});
    omp_set_num_threads(before);
    std::vector<double> all = values_of(f.r.out);
    for (const Tensor& g : {f.q.grad(), f.k.grad(), f.v.grad()}) {
      std::vector<double> v = values_of(g);
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  std::vector<double> one = grads(1), three = grads(3);
  ASSERT_EQ(one.size(), three.size());
  EXPECT_EQ(std::memcmp(one.data(), three.data(), one.size() * sizeof(double)), 0);
}

// Calls without a mask or segments run the GEMM row-block kernel (cpu/attention_rows.cpp); an
// all-true mask, which changes nothing, sends the same problem to the tiled kernel. The two must
// agree, forward and backward, at training-like shapes (several query blocks, GQA, offsets).
TEST(Attention, RowBlockKernelMatchesTiledKernel) {
  for (auto [T, D, causal] : {std::tuple<int64_t, int64_t, bool>{200, 32, true}, {96, 64, false}, {33, 5, true},
                                  {70, 12, true}}) {  // D = 12: one 8 x 8 transpose block and 4 scalar rows
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D << " causal=" << causal);
    Spec rows;
    rows.B = 2, rows.Tq = T, rows.Tk = T + 3, rows.H = 4, rows.Hkv = 2, rows.D = D, rows.causal = causal;
    rows.q_offset = 3;
    Spec tiled = rows;
    tiled.mask.assign(size_t(rows.B * rows.Tq * rows.Tk), 1);
    Values x = random_inputs(rows, 601);
    std::vector<double> W = random_values(rows.B * rows.Tq * rows.H * rows.D, 602);
    std::vector<double> U = random_values(rows.B * rows.H * rows.Tq, 603);
    auto run = [&](const Spec& s) {
      Fused f = run_fused<float>(s, x, true);
      run_backward({f.r.out, f.r.lse}, {make_tensor<float>(W, f.r.out.shape()), make_tensor<float>(U, f.r.lse.shape())});
      return std::vector<std::vector<double>>{values_of(f.r.out), values_of(f.r.lse), values_of(f.q.grad()),
                                              values_of(f.k.grad()), values_of(f.v.grad())};
    };
    auto a = run(rows), b = run(tiled);
    const char* names[] = {"out", "lse", "gq", "gk", "gv"};
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(close(a[i], b[i], 1e-5, names[i]));
  }
}

// ---- probabilities kept by the forward (cpu/attention_rows.cpp) ------------------------------

// The kernels as autograd calls them: a forward with the third output slot (where the CPU row
// kernel may keep P), then the backward given what was kept (or nothing: P is recomputed).
struct KernelRun {
  Tensor kept;
  std::vector<double> gq, gk, gv;
};
template <class T> KernelRun run_kernels(const Spec& s, const Values& x, bool keep, uint32_t seed) {
  Tensor q = make_tensor<T>(x.q, {s.B, s.Tq, s.H, s.D}), k = make_tensor<T>(x.k, {s.B, s.Tk, s.Hkv, s.D}),
         v = make_tensor<T>(x.v, {s.B, s.Tk, s.Hkv, s.D});
  Tensor out = Tensor::empty(q.shape(), q.dtype()), lse = Tensor::empty({s.B, s.H, s.Tq}, q.dtype());
  OpAttrs attrs;
  attrs.causal = s.causal, attrs.q_offset = s.q_offset, attrs.k_offset = s.k_offset, attrs.scale = s.scale();
  std::vector<Tensor> in{q, k, v, Tensor(), Tensor(), Tensor(), Tensor()}, outs{out, lse, Tensor()};
  dispatch(Op::attention, in, outs, attrs);
  KernelRun r;
  r.kept = outs[2];
  Tensor gout = make_tensor<T>(random_values(s.B * s.Tq * s.H * s.D, seed), q.shape());
  Tensor glse = make_tensor<T>(random_values(s.B * s.H * s.Tq, seed + 1), lse.shape());
  Tensor gq = Tensor::empty(q.shape(), q.dtype()), gk = Tensor::empty(k.shape(), q.dtype()),
         gv = Tensor::empty(v.shape(), q.dtype());
  std::vector<Tensor> bin{q, k, v, out, lse, gout, glse, Tensor(), Tensor(), Tensor(), Tensor(), keep ? r.kept : Tensor()};
  std::vector<Tensor> bout{gq, gk, gv};
  dispatch(Op::attention_backward, bin, bout, attrs);
  r.gq = values_of(gq), r.gk = values_of(gk), r.gv = values_of(gv);
  return r;
}

// The backward reading the forward's kept P equals the one recomputing it, to rounding (f64:
// 1e-12, f32: 2e-6), at shapes with several query blocks, GQA, offsets, unequal lengths and
// queries that see no key (k_offset past q_offset); and it does not depend on the thread count.
TEST(Attention, KeptProbabilitiesGiveTheRecomputedGradients) {
  struct Case { int64_t Tq, Tk, D, q_offset, k_offset; };
  for (const Case& c : {Case{100, 100, 32, 0, 0}, Case{77, 90, 32, 13, 0}, Case{64, 64, 20, 0, 5}}) {
    SCOPED_TRACE(::testing::Message() << "Tq=" << c.Tq << " Tk=" << c.Tk << " D=" << c.D);
    Spec s;
    s.B = 2, s.Tq = c.Tq, s.Tk = c.Tk, s.H = 4, s.Hkv = 2, s.D = c.D, s.causal = true;
    s.q_offset = c.q_offset, s.k_offset = c.k_offset;
    Values x = random_inputs(s, 701);
    KernelRun kept = run_kernels<double>(s, x, true, 702), recomputed = run_kernels<double>(s, x, false, 702);
    ASSERT_TRUE(kept.kept.defined()) << "a short causal sequence keeps its probabilities";
    EXPECT_TRUE(close(kept.gq, recomputed.gq, 1e-12, "gq f64"));
    EXPECT_TRUE(close(kept.gk, recomputed.gk, 1e-12, "gk f64"));
    EXPECT_TRUE(close(kept.gv, recomputed.gv, 1e-12, "gv f64"));
    KernelRun kf = run_kernels<float>(s, x, true, 702), rf = run_kernels<float>(s, x, false, 702);
    EXPECT_TRUE(close(kf.gq, rf.gq, 2e-6, "gq f32"));
    EXPECT_TRUE(close(kf.gk, rf.gk, 2e-6, "gk f32"));
    EXPECT_TRUE(close(kf.gv, rf.gv, 2e-6, "gv f32"));
    int before = omp_get_max_threads();
    omp_set_num_threads(3);
    KernelRun k3 = run_kernels<float>(s, x, true, 702);
    omp_set_num_threads(before);
    for (auto [a, b] : {std::pair{&kf.gq, &k3.gq}, {&kf.gk, &k3.gk}, {&kf.gv, &k3.gv}})
      EXPECT_EQ(std::memcmp(a->data(), b->data(), a->size() * sizeof(double)), 0);
  }
}

// P is kept only where it is small next to q, k, v and out: causal T up to about 9 D.
TEST(Attention, KeepsProbabilitiesOnlyForShortSequences) {
  auto keeps = [](int64_t T, int64_t D, bool causal) {
    Spec s;
    s.B = 1, s.Tq = s.Tk = T, s.H = 2, s.Hkv = 2, s.D = D, s.causal = causal;
    Values x = random_inputs(s, 703);
    return run_kernels<float>(s, x, true, 704).kept.defined();
  };
  EXPECT_TRUE(keeps(256, 32, true));    // bench_train's llama-small: 1.12 x q, k, v, out
  EXPECT_TRUE(keeps(512, 64, true));
  EXPECT_FALSE(keeps(1024, 32, true));  // 4 x: recompute, as FlashAttention does
  EXPECT_FALSE(keeps(256, 32, false));  // no causal half: 2 x
}

// ---- merge_attention -----------------------------------------------------------------------

// Attention over keys [0, Tk/2) and [Tk/2, Tk) merged equals attention over all keys,
// forward and gradients (through narrow, the two kernels and the merge's elementwise ops).
void expect_merge_matches_full(Spec s, uint32_t seed) {
  Values x = random_inputs(s, seed);
  std::vector<double> W = random_values(s.B * s.Tq * s.H * s.D, seed + 10);
  std::vector<double> U = random_values(s.B * s.H * s.Tq, seed + 11);
  Fused full = run_fused(s, x, true);
  Tensor Wt = make_tensor<double>(W, full.r.out.shape()), Ut = make_tensor<double>(U, full.r.lse.shape());
  run_backward({full.r.out, full.r.lse}, {Wt, Ut});

  Fused split = run_fused(s, x, true);  // fresh leaves with the same values
  int64_t half = s.Tk / 2;
  AttentionMask ma = s.attention_mask(), mb = ma;
  ma.k_offset = s.k_offset;
  mb.k_offset = s.k_offset + half;
  if (!s.mask.empty()) {  // the u8 mask's key columns split like the keys
    std::vector<uint8_t> lo, hi;
    for (int64_t r = 0; r < s.B * s.Tq; ++r) {
      lo.insert(lo.end(), s.mask.begin() + r * s.Tk, s.mask.begin() + r * s.Tk + half);
      hi.insert(hi.end(), s.mask.begin() + r * s.Tk + half, s.mask.begin() + (r + 1) * s.Tk);
    }
    ma.mask = Tensor::from_vector(lo, {s.B, s.Tq, half});
    mb.mask = Tensor::from_vector(hi, {s.B, s.Tq, s.Tk - half});
  }
  AttentionResult a = attention(split.q, narrow(split.k, 1, 0, half), narrow(split.v, 1, 0, half), ma);
  AttentionResult b = attention(split.q, narrow(split.k, 1, half, s.Tk - half), narrow(split.v, 1, half, s.Tk - half), mb);
  AttentionResult m = merge_attention(a, b);
  EXPECT_TRUE(close(values_of(contiguous(m.out)), values_of(full.r.out), 1e-12, "merged out"));
  EXPECT_TRUE(close(values_of(contiguous(m.lse)), values_of(full.r.lse), 1e-12, "merged lse"));
  run_backward({m.out, m.lse}, {Wt, Ut});
  EXPECT_TRUE(close(values_of(split.q.grad()), values_of(full.q.grad()), 1e-12, "merged gq"));
  EXPECT_TRUE(close(values_of(split.k.grad()), values_of(full.k.grad()), 1e-12, "merged gk"));
  EXPECT_TRUE(close(values_of(split.v.grad()), values_of(full.v.grad()), 1e-12, "merged gv"));
}

TEST(Attention, MergeEqualsAttentionOverAllKeys) {
  Spec s;
  s.B = 2, s.Tq = 33, s.Tk = 80, s.H = 4, s.Hkv = 2, s.D = 8;
  expect_merge_matches_full(s, 601);
  // Causal: the second key half (k_offset = 40) is invisible to the first 40 queries, whose
  // lse there is -inf.
  s.Tq = 80, s.causal = true;
  expect_merge_matches_full(s, 602);
  // Rows masked in both halves stay out 0, lse -inf with finite gradients.
  s.causal = false;
  s.mask.assign(size_t(s.B * s.Tq * s.Tk), 1);
  std::fill_n(s.mask.begin() + 3 * s.Tk, s.Tk, uint8_t(0));
  expect_merge_matches_full(s, 603);
}

// ---- errors --------------------------------------------------------------------------------

TEST(Attention, RejectsBadShapesWithClearMessages) {
  Tensor q = Tensor::zeros({1, 4, 3, 8}), k = Tensor::zeros({1, 5, 2, 8}), v = Tensor::zeros({1, 5, 2, 8});
  auto message = [](auto fn) {
    try {
      fn();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  EXPECT_NE(message([&] { attention(q, k, v); }).find("multiple of Hkv"), std::string::npos);
  Tensor k2 = Tensor::zeros({1, 5, 1, 4});
  EXPECT_NE(message([&] { attention(q, k2, k2); }).find("disagree on B or D"), std::string::npos);
  Tensor k1 = Tensor::zeros({1, 5, 1, 8});
  AttentionMask m;
  m.mask = Tensor::zeros({1, 4, 4}, DType::u8);
  EXPECT_NE(message([&] { attention(q, k1, k1, m); }).find("mask must be [B, Tq, Tk]"), std::string::npos);
  AttentionMask sm;
  sm.q_segments = Tensor::zeros({1, 4}, DType::i32);
  sm.k_segments = Tensor::full({1, 5}, 2, DType::i32);
  sm.visibility = segment_identity_visibility(2);
  EXPECT_NE(message([&] { attention(q, k1, k1, sm); }).find("outside [0, 2)"), std::string::npos);
  sm.visibility = Tensor();
  EXPECT_NE(message([&] { attention(q, k1, k1, sm); }).find("given together"), std::string::npos);
}

}  // namespace
}  // namespace loom::runtime
