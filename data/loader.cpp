// loader.cpp: ShardBatchSource and ArithmeticBatchSource.
#include "data/loader.h"

#include <algorithm>
#include <stdexcept>

#include "runtime/rng.h"

namespace loom::data {

namespace {

constexpr uint64_t kShardStream = 0x5348415244534545ull;   // "SHARDSEE"
constexpr uint64_t kArithStream = 0x4152495448524F57ull;   // "ARITHROW"
constexpr uint64_t kTrainStream = 0, kValStream = 1;

// 64 random bits for (stream, step, row): Philox keyed by the seed, counter (step, stream|row).
uint64_t row_bits(uint64_t key, uint64_t stream, uint64_t step, int64_t row) {
  auto w = runtime::philox4x32(key, step, stream << 56 | uint64_t(row));
  return uint64_t(w[0]) << 32 | w[1];
}

void check_rows(const char* who, int64_t row_begin, int64_t row_end, int64_t seq_len) {
  if (row_begin < 0 || row_end < row_begin || row_end >= (int64_t(1) << 56))
    throw std::invalid_argument(std::string(who) + ": bad row range [" + std::to_string(row_begin) + ", " +
                                std::to_string(row_end) + ")");
  if (seq_len < 1) throw std::invalid_argument(std::string(who) + ": seq_len must be >= 1, got " + std::to_string(seq_len));
}

}  // namespace

// ---- shards --------------------------------------------------------------------------------

ShardBatchSource::ShardBatchSource(std::vector<std::string> shard_paths, uint64_t seed,
                                   std::vector<std::string> val_shard_paths, bool verify_checksum)
    : seed_(seed) {
  if (shard_paths.empty()) throw std::invalid_argument("ShardBatchSource: no training shards given");
  const std::string* first = nullptr;
  auto open = [&](const std::vector<std::string>& paths, std::vector<TokenShard>& into) {
    for (const auto& p : paths) {
      into.emplace_back(p, verify_checksum);
      int64_t v = into.back().vocab_size();
      if (!first) {
        first = &p;
        vocab_size_ = v;
      } else if (v != vocab_size_) {
        throw std::runtime_error("token shard " + p + ": vocab_size " + std::to_string(v) + " differs from " +
                                 std::to_string(vocab_size_) + " in " + *first);
      }
    }
  };
  open(shard_paths, train_);
  open(val_shard_paths, val_);
}

int64_t ShardBatchSource::num_tokens() const {
  int64_t n = 0;
  for (const auto& s : train_) n += s.size();
  return n;
}

Batch ShardBatchSource::windows(const std::vector<TokenShard>& shards, uint64_t stream, uint64_t step,
                                int64_t row_begin, int64_t row_end, int64_t seq_len) const {
  check_rows("ShardBatchSource", row_begin, row_end, seq_len);
  // starts[i] = number of window starts before shard i; shard i has size - seq_len starts.
  std::vector<int64_t> starts(shards.size() + 1, 0);
  int64_t longest = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    starts[i + 1] = starts[i] + std::max<int64_t>(0, shards[i].size() - seq_len);
    longest = std::max(longest, shards[i].size());
  }
  const int64_t total = starts.back();
  if (total == 0)
    throw std::runtime_error("ShardBatchSource: no " + std::string(stream == kTrainStream ? "training" : "validation") +
                             " shard holds a window of seq_len + 1 = " + std::to_string(seq_len + 1) +
                             " tokens (longest has " + std::to_string(longest) + ")");
  const int64_t B = row_end - row_begin, T = seq_len;
  Batch out{runtime::Tensor::empty({B, T}, runtime::DType::i64), runtime::Tensor::empty({B, T}, runtime::DType::i64)};
  int64_t* in = out.inputs.data<int64_t>();
  int64_t* tg = out.targets.data<int64_t>();
  const uint64_t key = runtime::mix64(seed_ ^ kShardStream);
  std::vector<int64_t> buf(T + 1);
  for (int64_t b = 0; b < B; ++b) {
    uint64_t bits = row_bits(key, stream, step, row_begin + b);
    int64_t start = int64_t((unsigned __int128)bits * uint64_t(total) >> 64);  // uniform in [0, total)
    size_t s = size_t(std::upper_bound(starts.begin(), starts.end(), start) - starts.begin()) - 1;
    shards[s].read(start - starts[s], T + 1, buf.data());
    std::copy(buf.begin(), buf.end() - 1, in + b * T);
    std::copy(buf.begin() + 1, buf.end(), tg + b * T);
  }
  return out;
}

Batch ShardBatchSource::batch(uint64_t step, int64_t row_begin, int64_t row_end, int64_t seq_len) const {
  return windows(train_, kTrainStream, step, row_begin, row_end, seq_len);
}

Batch ShardBatchSource::val_batch(int64_t index, int64_t row_begin, int64_t row_end, int64_t seq_len) const {
  if (val_.empty()) throw std::runtime_error("ShardBatchSource: no validation shards were given");
  if (index < 0) throw std::invalid_argument("ShardBatchSource: validation batch index must be >= 0");
  return windows(val_, kValStream, uint64_t(index), row_begin, row_end, seq_len);
}

// ---- arithmetic ----------------------------------------------------------------------------

ArithmeticBatchSource::ArithmeticBatchSource(ArithmeticConfig cfg, const BpeTokenizer& tokenizer, uint64_t seed,
                                             ArithmeticSourceOptions opt)
    : cfg_(std::move(cfg)), tokenizer_(tokenizer), seed_(seed), opt_(opt) {
  cfg_.validate();
}

uint64_t ArithmeticBatchSource::row_seed(uint64_t stream, uint64_t step, int64_t row) const {
  return row_bits(runtime::mix64(seed_ ^ kArithStream), stream, step, row);
}

Batch ArithmeticBatchSource::rows(uint64_t stream, uint64_t step, int64_t row_begin, int64_t row_end,
                                  int64_t seq_len) const {
  check_rows("ArithmeticBatchSource", row_begin, row_end, seq_len);
  const int64_t B = row_end - row_begin, T = seq_len;
  Batch out{runtime::Tensor::empty({B, T}, runtime::DType::i64), runtime::Tensor::empty({B, T}, runtime::DType::i64)};
  int64_t* in = out.inputs.data<int64_t>();
  int64_t* tg = out.targets.data<int64_t>();
  std::vector<int64_t> buf;
  std::vector<uint8_t> prompt;  // 1 where buf holds a prompt token
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t rs = row_seed(stream, step, row_begin + b);
    buf.clear();
    prompt.clear();
    for (uint64_t j = 0; int64_t(buf.size()) < T + 1; ++j) {
      ArithmeticProblem p = sample_problem(cfg_, rs, j);
      for (int32_t id : tokenizer_.encode(p.prompt, false)) buf.push_back(id), prompt.push_back(1);
      for (int32_t id : tokenizer_.encode(p.answer + "\n", false)) buf.push_back(id), prompt.push_back(0);
    }
    for (int64_t t = 0; t < T; ++t) {
      in[b * T + t] = buf[t];
      tg[b * T + t] = opt_.mask_prompt && prompt[t + 1] ? kIgnoreIndex : buf[t + 1];
    }
  }
  return out;
}

Batch ArithmeticBatchSource::batch(uint64_t step, int64_t row_begin, int64_t row_end, int64_t seq_len) const {
  return rows(kTrainStream, step, row_begin, row_end, seq_len);
}

Batch ArithmeticBatchSource::val_batch(int64_t index, int64_t row_begin, int64_t row_end, int64_t seq_len) const {
  if (index < 0) throw std::invalid_argument("ArithmeticBatchSource: validation batch index must be >= 0");
  return rows(kValStream, uint64_t(index), row_begin, row_end, seq_len);
}

BpeTokenizer arithmetic_tokenizer() { return BpeTokenizer::byte_level({kBosToken, kEosToken, kPadToken}); }

}  // namespace loom::data
