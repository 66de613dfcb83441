// ops.h: the differentiable operations. Each records an autograd node when grad mode is on
// and an input requires grad; forward and backward run through the kernel table (kernels.h).
// Shapes use one alphabet: B batch, T time, C channels, H heads, Hkv key/value heads,
// D head dim, V vocab, F ffn hidden, N rows.
#pragma once
#include <optional>
#include <vector>

#include "runtime/autograd.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace loom::runtime {

// ---- views and shape (share storage where possible) -------------------------------------
Tensor view(const Tensor& x, const Dims& shape);  // one -1 allowed; needs compatible strides
Tensor reshape(const Tensor& x, const Dims& shape);  // a view when possible, else a copy
Tensor transpose(const Tensor& x, int64_t a, int64_t b);
Tensor permute(const Tensor& x, const Dims& order);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor expand(const Tensor& x, const Dims& shape);  // -1 keeps a dim
Tensor contiguous(const Tensor& x);
Tensor clone(const Tensor& x);
Tensor cast(const Tensor& x, DType dt);
Tensor to_device(const Tensor& x, Device dev);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);
// Sums a broadcast gradient back down to `shape` (the adjoint of expand).
Tensor sum_to(const Tensor& x, const Dims& shape);

// ---- elementwise (numpy broadcasting) --------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor pow_scalar(const Tensor& x, double e);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x, bool tanh_approximation = true);
Tensor silu(const Tensor& x);
// silu(gate) * up fused (the SwiGLU MLP's activation); gate and up have one shape.
Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor abs(const Tensor& x);
// Comparisons (no grad) return u8 masks.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add_scalar(a, -s); }
inline Tensor operator*(const Tensor& a, double s) { return mul_scalar(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul_scalar(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul_scalar(a, 1.0 / s); }

// ---- reductions ------------------------------------------------------------------------
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor sum(const Tensor& x);  // all elements -> scalar
// Sum of x^2 over all elements as an f64 scalar, in one pass without a copy (gradient norms);
// not differentiable.
Tensor sum_squares(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
struct MaxResult {
  Tensor values, indices;
};
MaxResult max(const Tensor& x, int64_t dim, bool keepdim = false);  // grad flows to argmax
Tensor amax(const Tensor& x);  // all elements -> scalar, no grad
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);

// ---- linear algebra --------------------------------------------------------------------
// a [..., M, K] @ b [..., K, N] with broadcast batch dims; 1-D operands as in numpy.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., K] @ weight[N, K]^T + bias[N]
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- neural-network ops -----------------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
enum class Reduction { none, mean, sum };
struct CrossEntropyOptions {
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Reduction reduction = Reduction::mean;  // mean over targets != ignore_index
};
// logits [N, V] (or [..., V]), target [N] i64 -> scalar (or per-token [N] with Reduction::none).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& opt = {});
// cross_entropy(linear(x, weight), target, opt) for x [..., C], weight [V, C], target [...]
// (an LM head and its loss), fused on the CPU: the [N, V] logits are computed once and become
// their own gradient, so the backward makes no pass over them and allocates no second [N, V].
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& target,
                            const CrossEntropyOptions& opt = {});
Tensor embedding(const Tensor& weight, const Tensor& ids);  // weight [V, C], ids [...] -> [..., C]
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
// Rotary embedding, Hugging Face rotate-half: x [B, T, H, D], positions [B, T] (may repeat/jump).
Tensor rope(const Tensor& x, const Tensor& positions, double theta = 10000.0);
// stream != 0 draws from a stream of the default generator's seed that differs per stream value
// while advancing the generator's offset like stream 0 (per-rank masks under sequence
// parallelism that re-materialisation still replays).
Tensor dropout(const Tensor& x, double p, bool training, uint64_t stream = 0);

// ---- indexing ----------------------------------------------------------------------------
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

// ---- sampling (no grad) ------------------------------------------------------------------
struct TopK {
  Tensor values, indices;
};
TopK topk(const Tensor& x, int64_t k);  // along the last dim, sorted descending
// probs [R, V] (need not be normalised) -> [R, n] i64, drawn from the global generator.
Tensor multinomial(const Tensor& probs, int64_t n, bool replacement = true);

// ---- attention -----------------------------------------------------------------------------
// Fused memory-efficient attention (tiled, online softmax; never builds the Tq x Tk matrix).
// q [B, Tq, H, D], k/v [B, Tk, Hkv, D] with H % Hkv == 0 (grouped-query heads).
struct AttentionMask {
  bool causal = false;
  int64_t q_offset = 0, k_offset = 0;  // global positions of q[0], k[0] (causal test uses them)
  Tensor mask;  // optional u8 [B, Tq, Tk]: 1 = may attend
  // Optional structured mask: query i may see key j iff visibility[b][qseg[b,i]][kseg[b,j]].
  // Whole key tiles with no visible pair are skipped (cheaply when S <= 64). Segment ids are
  // i32 in [0, S); all three are given together or not at all.
  Tensor q_segments, k_segments;  // [B, Tq], [B, Tk] i32
  Tensor visibility;              // u8 [B, S, S], or [S, S] / [1, S, S] shared by the batch
  double scale = 0.0;             // 0 = 1/sqrt(D)
};
struct AttentionResult {
  Tensor out;  // [B, Tq, H, D]
  Tensor lse;  // [B, H, Tq] log-sum-exp of the scaled scores (-inf for a fully masked row)
};
AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& m = {});
// Exact merge of two attentions of the same queries over disjoint key sets (ring attention):
// lse = logaddexp(lse_a, lse_b), out = out_a exp(lse_a - lse) + out_b exp(lse_b - lse).
// Built from differentiable ops; rows masked in both give out 0, lse -inf.
AttentionResult merge_attention(const AttentionResult& a, const AttentionResult& b);
// Visibility for packed documents: u8 [S, S] identity, each segment sees only itself
// (combine with causal = true for causal attention within each document).
Tensor segment_identity_visibility(int64_t S);

}  // namespace loom::runtime
