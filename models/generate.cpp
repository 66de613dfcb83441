// generate.cpp: temperature / top-k / top-p sampling and the batched decoding loop.
#include "models/generate.h"

#include <algorithm>
#include <stdexcept>

namespace loom::models {

using namespace runtime;

std::vector<int32_t> sample_tokens(const Tensor& logits, const SamplingOptions& opt) {
  NoGradGuard ng;
  const int64_t R = logits.size(0), V = logits.size(1);
  Tensor lg = logits.to(DType::f32).contiguous();
  std::vector<int32_t> out(static_cast<size_t>(R));
  if (opt.temperature <= 0) {
    std::vector<int64_t> best = argmax(lg, 1).to_vector<int64_t>();
    for (int64_t r = 0; r < R; ++r) out[size_t(r)] = int32_t(best[size_t(r)]);
    return out;
  }
  // Keep the top k (all when k = 0), then the smallest prefix whose probability reaches top_p.
  int64_t k = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
  TopK tk = topk(mul_scalar(lg, 1.0 / opt.temperature), k);
  Tensor probs = softmax(tk.values, -1);
  if (opt.top_p < 1.0) {
    std::vector<float> p = probs.to_vector<float>();
    for (int64_t r = 0; r < R; ++r) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) {
        float& pj = p[size_t(r * k + j)];
        if (acc >= opt.top_p) pj = 0.0f;  // sorted descending: everything after the nucleus
        acc += pj;
      }
    }
    probs = Tensor::from_vector(p, {R, k});
  }
  std::vector<int64_t> pick = multinomial(probs, 1).to_vector<int64_t>();
  std::vector<int64_t> idx = tk.indices.to_vector<int64_t>();
  for (int64_t r = 0; r < R; ++r) out[size_t(r)] = int32_t(idx[size_t(r * k + pick[size_t(r)])]);
  return out;
}

std::vector<Generation> generate(const TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                 const SamplingOptions& opt, int64_t samples_per_prompt) {
  if (prompts.empty()) return {};
  if (samples_per_prompt < 1) throw std::invalid_argument("generate: samples_per_prompt must be >= 1");
  NoGradGuard ng;
  Generator& gen = default_generator();
  GeneratorState saved = gen.state();
  gen.manual_seed(opt.seed);
  const int64_t P = int64_t(prompts.size());
  int64_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw std::invalid_argument("generate: empty prompt");
    longest = std::max<int64_t>(longest, int64_t(p.size()));
  }
  const int64_t max_len = model.config().positions == "learned" ? model.config().max_seq_len : INT64_MAX;
  int64_t capacity = longest + opt.max_new_tokens;
  if (capacity > max_len)
    throw std::invalid_argument("generate: prompt + max_new_tokens = " + std::to_string(capacity) +
                                " exceeds max_seq_len " + std::to_string(max_len));
  // Prefill all prompts at once, right-padded, each row counting only its own tokens.
  std::vector<int64_t> ids(static_cast<size_t>(P * longest), 0), counts(static_cast<size_t>(P));
  for (int64_t r = 0; r < P; ++r) {
    counts[size_t(r)] = int64_t(prompts[size_t(r)].size());
    for (size_t i = 0; i < prompts[size_t(r)].size(); ++i) ids[size_t(r * longest) + i] = prompts[size_t(r)][i];
  }
  KVCache prompt_cache = model.new_cache(P, longest);
  Tensor logits = model.forward_cached(Tensor::from_vector(ids, {P, longest}), prompt_cache, counts);
  std::vector<Tensor> last_rows;
  for (int64_t r = 0; r < P; ++r) last_rows.push_back(logits.narrow(0, r, 1).narrow(1, counts[size_t(r)] - 1, 1).view({1, -1}));
  Tensor last = concat(last_rows, 0);  // [P, V]
  // Fork each prompt into its samples; they share the prompt's keys and values.
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < P; ++r)
    for (int64_t s = 0; s < samples_per_prompt; ++s) rows.push_back(r);
  const int64_t N = int64_t(rows.size());
  KVCache cache = prompt_cache.fork(rows, std::max<int64_t>(opt.max_new_tokens, 1));
  Tensor next_logits = index_select(last, 0, Tensor::from_vector(rows, {N}));
  std::vector<Generation> out(static_cast<size_t>(N));
  std::vector<bool> done(static_cast<size_t>(N), false);
  for (int64_t i = 0; i < N; ++i) out[size_t(i)].prompt_index = rows[size_t(i)];
  for (int64_t t = 0; t < opt.max_new_tokens; ++t) {
    std::vector<int32_t> tok = sample_tokens(next_logits, opt);
    bool all_done = true;
    std::vector<int64_t> feed(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) {
      feed[size_t(i)] = tok[size_t(i)];
      if (done[size_t(i)]) continue;
      out[size_t(i)].tokens.push_back(tok[size_t(i)]);
      if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), tok[size_t(i)]) != opt.stop_tokens.end())
        done[size_t(i)] = true;
      all_done = all_done && done[size_t(i)];
    }
    if (all_done || t + 1 == opt.max_new_tokens) break;
    next_logits = model.forward_cached(Tensor::from_vector(feed, {N, 1}), cache).view({N, -1});
  }
  gen.set_state(saved);
  return out;
}

}  // namespace loom::models
