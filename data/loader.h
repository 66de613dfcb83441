// loader.h: deterministic batches for training and evaluation.
//
// The rule every source keeps: row r of the global batch of step s is a pure function of
// (seed, s, r) (and seq_len). A data-parallel rank asks for its slice [row_begin, row_end)
// of the global rows, so the union over ranks equals the single-process batch, and a run
// resumed at step s sees exactly the batches it would have seen without the restart.
// Validation rows come from a separate Philox stream (and, for shards, separate files), so
// they never replay training draws.
//
// Shapes: inputs and targets are i64 [B, T] with B = row_end - row_begin, T = seq_len and
// targets[b, t] = the token after inputs[b, t] (or -100 where a target is masked).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/arithmetic.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "runtime/tensor.h"

namespace loom::data {

inline constexpr int64_t kIgnoreIndex = -100;  // matches CrossEntropyOptions::ignore_index

struct Batch {
  runtime::Tensor inputs;   // i64 [B, T]
  runtime::Tensor targets;  // i64 [B, T]
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Rows [row_begin, row_end) of the global training batch of `step`.
  virtual Batch batch(uint64_t step, int64_t row_begin, int64_t row_end, int64_t seq_len) const = 0;
  // Rows [row_begin, row_end) of validation batch `index` (a fixed stream: the same index
  // always gives the same rows).
  virtual Batch val_batch(int64_t index, int64_t row_begin, int64_t row_end, int64_t seq_len) const = 0;
  // Every token is < vocab_size().
  virtual int64_t vocab_size() const = 0;
};

// Random windows of seq_len + 1 tokens over token shards. Row r of step s starts at
// offset Philox(seed, s, r) uniform over all window starts of the concatenated shards;
// windows never straddle two shards (a shard shorter than seq_len + 1 contributes none).
class ShardBatchSource : public BatchSource {
 public:
  ShardBatchSource(std::vector<std::string> shard_paths, uint64_t seed, std::vector<std::string> val_shard_paths = {},
                   bool verify_checksum = true);
  Batch batch(uint64_t step, int64_t row_begin, int64_t row_end, int64_t seq_len) const override;
  Batch val_batch(int64_t index, int64_t row_begin, int64_t row_end, int64_t seq_len) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  int64_t num_tokens() const;  // training tokens over all shards

 private:
  Batch windows(const std::vector<TokenShard>& shards, uint64_t stream, uint64_t step, int64_t row_begin,
                int64_t row_end, int64_t seq_len) const;
  std::vector<TokenShard> train_, val_;
  uint64_t seed_;
  int64_t vocab_size_ = 0;
};

struct ArithmeticSourceOptions {
  bool mask_prompt = false;  // targets that predict prompt tokens become -100
};

// Rows packed from arithmetic problems: row r of step s concatenates the tokens of
// problems 0, 1, 2, ... drawn with sample_problem(cfg, Philox(seed, s, r), j), each as
// encode(prompt) ++ encode(answer + "\n"), cut at seq_len + 1 tokens.
class ArithmeticBatchSource : public BatchSource {
 public:
  ArithmeticBatchSource(ArithmeticConfig cfg, const BpeTokenizer& tokenizer, uint64_t seed,
                        ArithmeticSourceOptions opt = {});
  Batch batch(uint64_t step, int64_t row_begin, int64_t row_end, int64_t seq_len) const override;
  Batch val_batch(int64_t index, int64_t row_begin, int64_t row_end, int64_t seq_len) const override;
  int64_t vocab_size() const override { return tokenizer_.vocab_size(); }
  const ArithmeticConfig& config() const { return cfg_; }
  // The seed sample_problem uses for row `row` of `step` (stream 0 train, 1 validation):
  // lets an evaluator regenerate the exact problems of a row.
  uint64_t row_seed(uint64_t stream, uint64_t step, int64_t row) const;

 private:
  Batch rows(uint64_t stream, uint64_t step, int64_t row_begin, int64_t row_end, int64_t seq_len) const;
  ArithmeticConfig cfg_;
  BpeTokenizer tokenizer_;
  uint64_t seed_;
  ArithmeticSourceOptions opt_;
};

// The default tokenizer for arithmetic: byte-level (no merges) with <|bos|> <|eos|> <|pad|>;
// vocab 259.
BpeTokenizer arithmetic_tokenizer();

}  // namespace loom::data
