// op_cases.h: the table of differentiable op cases behind two tests: test_gradcheck.cpp checks
// each backward against central finite differences in f64 (with the inputs made here), and
// test_golden.cpp checks each forward and backward against PyTorch (tools/make_golden.py
// computes the same cases by name, in f32 and f64, on inputs it stores in the golden file).
// A case's function holds its constants (ids, masks, positions); the Python side repeats them.
#pragma once
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/ops.h"
#include "tests/runtime/gradcheck.h"

namespace loom::testing {

using runtime::Tensor;

struct OpCase {
  std::string name;
  std::function<Tensor(std::vector<Tensor>&)> f;
  std::function<std::vector<Tensor>()> inputs;
  double tolerance = 1e-7;
  double eps = 1e-6;
};
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

inline Tensor positive(const runtime::Dims& s, uint64_t seed) { return add_scalar(abs(randn64(s, seed)), 0.5).detach(); }
inline Tensor ids(const std::vector<int64_t>& v, const runtime::Dims& s) { return Tensor::from_vector(v, s); }

inline std::vector<OpCase> op_cases() {
  using namespace runtime;
  std::vector<OpCase> c;
  auto one = [](Dims s, uint64_t seed) { return [s, seed] { return std::vector<Tensor>{randn64(s, seed)}; }; };
  auto two = [](Dims a, Dims b) { return [a, b] { return std::vector<Tensor>{randn64(a, 1), randn64(b, 2)}; }; };
  // Elementwise binary, with broadcasting.
  c.push_back({"add_broadcast", [](auto& x) { return add(x[0], x[1]); }, two({3, 4}, {4})});
  c.push_back({"sub_broadcast", [](auto& x) { return sub(x[0], x[1]); }, two({2, 1, 3}, {4, 1})});
  c.push_back({"mul_broadcast", [](auto& x) { return mul(x[0], x[1]); }, two({3, 4}, {3, 1})});
  c.push_back({"div", [](auto& x) { return div(x[0], x[1]); },
               [] { return std::vector<Tensor>{randn64({3, 4}, 1), positive({4}, 2)}; }});
  c.push_back({"maximum", [](auto& x) { return maximum(x[0], x[1]); }, two({3, 4}, {3, 4})});
  c.push_back({"minimum", [](auto& x) { return minimum(x[0], x[1]); }, two({3, 4}, {4})});
  c.push_back({"where", [](auto& x) { return where(gt(x[0], x[1]), x[0], x[1]); }, two({3, 4}, {4})});
  c.push_back({"masked_fill", [](auto& x) {
                 Tensor m = Tensor::from_vector<uint8_t>({1, 0, 0, 1}, {4});
                 return masked_fill(x[0], m, -3.0);
               },
               one({3, 4}, 3)});
  // Non-contiguous input: a transposed view.
  c.push_back({"mul_transposed", [](auto& x) { return mul(transpose(x[0], 0, 1), x[1]); }, two({4, 3}, {3, 4})});
  // Scalars and unary maps.
  c.push_back({"add_scalar", [](auto& x) { return add_scalar(x[0], 2.0); }, one({5}, 4)});
  c.push_back({"mul_scalar", [](auto& x) { return mul_scalar(x[0], -1.5); }, one({5}, 4)});
  c.push_back({"pow_scalar", [](auto& x) { return pow_scalar(x[0], 3.0); }, one({5}, 4)});
  c.push_back({"neg", [](auto& x) { return neg(x[0]); }, one({5}, 4)});
  c.push_back({"exp", [](auto& x) { return exp(x[0]); }, one({2, 3}, 5)});
  c.push_back({"log", [](auto& x) { return log(x[0]); }, [] { return std::vector<Tensor>{positive({2, 3}, 6)}; }});
  c.push_back({"sqrt", [](auto& x) { return sqrt(x[0]); }, [] { return std::vector<Tensor>{positive({2, 3}, 6)}; }});
  c.push_back({"rsqrt", [](auto& x) { return rsqrt(x[0]); }, [] { return std::vector<Tensor>{positive({2, 3}, 6)}; }});
  c.push_back({"tanh", [](auto& x) { return tanh(x[0]); }, one({2, 3}, 7)});
  c.push_back({"sigmoid", [](auto& x) { return sigmoid(x[0]); }, one({2, 3}, 7)});
  c.push_back({"relu", [](auto& x) { return relu(x[0]); }, one({2, 3}, 8)});
  c.push_back({"abs", [](auto& x) { return abs(x[0]); }, one({2, 3}, 8)});
  c.push_back({"gelu_tanh", [](auto& x) { return gelu(x[0], true); }, one({2, 3}, 9)});
  c.push_back({"gelu_erf", [](auto& x) { return gelu(x[0], false); }, one({2, 3}, 9)});
  c.push_back({"silu", [](auto& x) { return silu(x[0]); }, one({2, 3}, 9)});
  c.push_back({"swiglu", [](auto& x) { return swiglu(x[0], x[1]); }, two({3, 5}, {3, 5})});
  c.push_back({"silu_strided", [](auto& x) { return silu(transpose(x[0], 0, 1)); }, one({3, 2}, 9)});
  // Reductions.
  c.push_back({"sum_dim0", [](auto& x) { return sum(x[0], {0}); }, one({3, 4, 2}, 10)});
  c.push_back({"sum_dims_keep", [](auto& x) { return sum(x[0], {0, 2}, true); }, one({3, 4, 2}, 10)});
  c.push_back({"sum_all", [](auto& x) { return sum(x[0]); }, one({3, 4}, 10)});
  c.push_back({"mean_last", [](auto& x) { return mean(x[0], {-1}); }, one({3, 4}, 10)});
  c.push_back({"max_dim1", [](auto& x) { return max(x[0], 1).values; }, one({3, 5}, 11)});
  c.push_back({"max_dim0_keep", [](auto& x) { return max(x[0], 0, true).values; }, one({3, 5}, 11)});
  // Linear algebra.
  c.push_back({"matmul", [](auto& x) { return matmul(x[0], x[1]); }, two({3, 4}, {4, 5})});
  c.push_back({"matmul_batched_broadcast", [](auto& x) { return matmul(x[0], x[1]); }, two({2, 3, 4}, {4, 2})});
  c.push_back({"matmul_transposed", [](auto& x) { return matmul(transpose(x[0], 0, 1), transpose(x[1], 0, 1)); },
               two({4, 3}, {5, 4})});
  c.push_back({"matmul_vec", [](auto& x) { return matmul(x[0], x[1]); }, two({3, 4}, {4})});
  c.push_back({"linear_bias", [](auto& x) { return linear(x[0], x[1], x[2]); },
               [] { return std::vector<Tensor>{randn64({2, 3, 4}, 1), randn64({5, 4}, 2), randn64({5}, 3)}; }});
  // Views.
  c.push_back({"view_reshape", [](auto& x) { return mul(reshape(x[0], {4, 3}), reshape(x[0], {4, 3})); }, one({3, 4}, 12)});
  c.push_back({"permute", [](auto& x) { return permute(x[0], {2, 0, 1}); }, one({2, 3, 4}, 12)});
  c.push_back({"narrow", [](auto& x) { return narrow(x[0], 1, 1, 2); }, one({3, 4}, 12)});
  c.push_back({"expand", [](auto& x) { return expand(x[0], {2, 3, 4}); }, one({3, 1}, 12)});
  c.push_back({"unsqueeze_squeeze", [](auto& x) { return squeeze(unsqueeze(x[0], 1), 1); }, one({3, 4}, 12)});
  c.push_back({"concat", [](auto& x) { return concat({x[0], x[1]}, 1); }, two({2, 3}, {2, 2})});
  c.push_back({"split", [](auto& x) {
                 auto parts = split(x[0], {1, 3}, 1);
                 return mul(parts[0], parts[1]);
               },
               one({2, 4}, 13)});
  // Through f32 the function is a staircase at 1e-7 scale: difference over a wider step.
  c.push_back({"cast_roundtrip", [](auto& x) { return cast(cast(x[0], DType::f32), DType::f64); }, one({3}, 13), 1e-5, 1e-2});
  // Neural-network ops.
  c.push_back({"softmax", [](auto& x) { return softmax(x[0], -1); }, one({3, 5}, 14)});
  c.push_back({"softmax_dim0", [](auto& x) { return softmax(x[0], 0); }, one({3, 5}, 14)});
  c.push_back({"log_softmax", [](auto& x) { return log_softmax(x[0], -1); }, one({3, 5}, 14)});
  c.push_back({"cross_entropy_mean", [](auto& x) {
                 return cross_entropy(x[0], ids({1, -100, 4, 0}, {4}));
               },
               one({4, 6}, 15)});
  c.push_back({"cross_entropy_smooth_none", [](auto& x) {
                 CrossEntropyOptions o;
                 o.label_smoothing = 0.1;
                 o.reduction = Reduction::none;
                 return cross_entropy(x[0], ids({1, 2, 5, 0, 3, 3}, {2, 3}), o);
               },
               one({2, 3, 6}, 15)});
  // The fused LM head + loss: a mean (one gradient value per row: the GEMMs' alpha) and a
  // per-token loss weighted by R (a different value per row: the rows are scaled first).
  c.push_back({"linear_cross_entropy_mean", [](auto& x) {
                 return linear_cross_entropy(x[0], x[1], ids({1, -100, 4, 0}, {4}));
               },
               two({4, 3}, {6, 3})});
  c.push_back({"linear_cross_entropy_smooth_none", [](auto& x) {
                 CrossEntropyOptions o;
                 o.label_smoothing = 0.1;
                 o.reduction = Reduction::none;
                 return linear_cross_entropy(x[0], x[1], ids({1, 2, -100, 0, 3, 5}, {2, 3}), o);
               },
               two({2, 3, 4}, {6, 4})});
  c.push_back({"embedding", [](auto& x) { return embedding(x[0], ids({1, 3, 1, 0, 4, 1}, {2, 3})); }, one({5, 4}, 16)});
  c.push_back({"layer_norm", [](auto& x) { return layer_norm(x[0], x[1], x[2], 1e-5); },
               [] { return std::vector<Tensor>{randn64({3, 6}, 1), randn64({6}, 2), randn64({6}, 3)}; }});
  c.push_back({"rms_norm", [](auto& x) { return rms_norm(x[0], x[1], 1e-6); }, two({2, 3, 6}, {6})});
  c.push_back({"rms_norm_strided", [](auto& x) { return rms_norm(transpose(x[0], 0, 1), x[1], 1e-6); },
               two({6, 3}, {6})});
  c.push_back({"rope_repeating_positions", [](auto& x) {
                 Tensor pos = ids({0, 1, 2, 2, 7, 3, 3, 3}, {2, 4});
                 return rope(x[0], pos, 10000.0);
               },
               one({2, 4, 3, 6}, 17)});
  c.push_back({"dropout", [](auto& x) {
                 manual_seed(7);  // same mask for every evaluation
                 return dropout(x[0], 0.3, true);
               },
               one({4, 8}, 18)});
  // Indexing.
  c.push_back({"index_select_dup", [](auto& x) { return index_select(x[0], 1, ids({2, 0, 2}, {3})); }, one({2, 4, 3}, 19)});
  c.push_back({"gather", [](auto& x) { return gather(x[0], 1, ids({0, 2, 2, 1, 0, 0}, {2, 3})); }, one({2, 4}, 20)});
  c.push_back({"scatter_add", [](auto& x) { return scatter_add(x[0], 1, ids({0, 2, 2, 1, 0, 0}, {2, 3}), x[1]); },
               two({2, 3}, {2, 3})});
  // Attention: GQA with causal visibility, causal with a query offset (a decode step seeing
  // earlier keys), a dense mask, packed documents (segments), and the log-sum-exp output.
  auto qkv = [](Dims q, Dims kv) {
    return [q, kv] { return std::vector<Tensor>{randn64(q, 21), randn64(kv, 22), randn64(kv, 23)}; };
  };
  c.push_back({"attention_causal_gqa", [](auto& x) {
                 AttentionMask m;
                 m.causal = true;
                 return attention(x[0], x[1], x[2], m).out;
               },
               qkv({2, 5, 4, 3}, {2, 5, 2, 3})});
  c.push_back({"attention_query_offset", [](auto& x) {
                 AttentionMask m;
                 m.causal = true;
                 m.q_offset = 3;  // queries at positions 3..5 of 6 keys
                 return attention(x[0], x[1], x[2], m).out;
               },
               qkv({1, 3, 2, 4}, {1, 6, 2, 4})});
  c.push_back({"attention_dense_mask", [](auto& x) {
                 AttentionMask m;  // every row sees at least one key
                 m.mask = Tensor::from_vector<uint8_t>({1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1,
                                                        1, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0},
                                                       {2, 4, 4});
                 return attention(x[0], x[1], x[2], m).out;
               },
               qkv({2, 4, 2, 3}, {2, 4, 2, 3})});
  c.push_back({"attention_packed_documents", [](auto& x) {
                 AttentionMask m;
                 m.causal = true;
                 m.q_segments = Tensor::from_vector<int32_t>({0, 0, 1, 1, 1, 2}, {1, 6});
                 m.k_segments = m.q_segments;
                 m.visibility = segment_identity_visibility(3);
                 return attention(x[0], x[1], x[2], m).out;
               },
               qkv({1, 6, 2, 3}, {1, 6, 2, 3})});
  c.push_back({"attention_lse", [](auto& x) {
                 AttentionMask m;
                 m.causal = true;
                 AttentionResult r = attention(x[0], x[1], x[2], m);
                 return concat({reshape(r.out, {-1}), reshape(r.lse, {-1})}, 0);
               },
               qkv({1, 4, 2, 3}, {1, 4, 2, 3})});
  return c;
}


}  // namespace loom::testing
