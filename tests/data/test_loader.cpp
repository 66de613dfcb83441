// test_loader.cpp: batches are pure functions of (seed, step, global row): determinism,
// data-parallel slices, shifted targets, windows inside one shard, the validation stream,
// and the arithmetic source's packing and prompt masking.
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include <unistd.h>

#include <filesystem>
#include <set>

#include "data/loader.h"

namespace fs = std::filesystem;
using namespace loom::data;
using loom::runtime::Tensor;

namespace {

struct TempDir : loom::testing::TempDir {
  TempDir() : loom::testing::TempDir("loom_loader") {}
};

std::vector<int64_t> vec(const Tensor& t) { return t.to_vector<int64_t>(); }

bool equal(const Batch& a, const Batch& b) { return vec(a.inputs) == vec(b.inputs) && vec(a.targets) == vec(b.targets); }

// Shard k holds tokens k*10000 + i (i < n_k), so a token names its shard and position.
std::vector<std::string> make_shards(const TempDir& dir, const std::string& prefix, const std::vector<int>& sizes,
                                     int base = 0) {
  std::vector<std::string> paths;
  for (size_t k = 0; k < sizes.size(); ++k) {
    std::vector<int32_t> toks(sizes[k]);
    for (int i = 0; i < sizes[k]; ++i) toks[i] = int32_t((base + k) * 10000 + i);
    paths.push_back(dir / (prefix + std::to_string(k) + ".bin"));
    write_shard(paths.back(), toks, 4, 100000, 1);
  }
  return paths;
}

}  // namespace

TEST(ShardLoader, SameSeedAndStepGiveTheSameBatch) {
  TempDir dir;
  auto paths = make_shards(dir, "t", {500, 3000, 40, 1200});
  ShardBatchSource a(paths, 1234), b(paths, 1234), other_seed(paths, 99);
  EXPECT_EQ(a.vocab_size(), 100000);
  EXPECT_EQ(a.num_tokens(), 4740);
  const int64_t B = 8, T = 32;
  for (uint64_t step : {0ull, 1ull, 17ull, 1000000ull}) {
    Batch x = a.batch(step, 0, B, T), y = b.batch(step, 0, B, T);
    EXPECT_EQ(x.inputs.shape(), (loom::runtime::Dims{B, T}));
    EXPECT_EQ(x.inputs.dtype(), loom::runtime::DType::i64);
    EXPECT_EQ(x.targets.dtype(), loom::runtime::DType::i64);
    EXPECT_TRUE(equal(x, y));
    EXPECT_FALSE(equal(x, a.batch(step + 1, 0, B, T)));
    EXPECT_FALSE(equal(x, other_seed.batch(step, 0, B, T)));
  }
}

TEST(ShardLoader, RowSlicesEqualRowsOfTheFullBatch) {
  TempDir dir;
  auto paths = make_shards(dir, "t", {800, 900});
  ShardBatchSource src(paths, 7);
  const int64_t B = 12, T = 16;
  Batch full = src.batch(5, 0, B, T);
  auto fi = vec(full.inputs), ft = vec(full.targets);
  // Four "ranks" of 3 rows, and an uneven split, reassemble the full batch.
  for (std::vector<int64_t> cuts : {std::vector<int64_t>{0, 3, 6, 9, 12}, std::vector<int64_t>{0, 1, 7, 12}}) {
    std::vector<int64_t> gi, gt;
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
      Batch part = src.batch(5, cuts[k], cuts[k + 1], T);
      EXPECT_EQ(part.inputs.size(0), cuts[k + 1] - cuts[k]);
      auto pi = vec(part.inputs), pt = vec(part.targets);
      gi.insert(gi.end(), pi.begin(), pi.end());
      gt.insert(gt.end(), pt.begin(), pt.end());
    }
    EXPECT_EQ(gi, fi);
    EXPECT_EQ(gt, ft);
  }
  // The rows of a larger global batch start with the rows of a smaller one.
  auto bigger = vec(src.batch(5, 0, 2 * B, T).inputs);
  EXPECT_EQ(std::vector<int64_t>(bigger.begin(), bigger.begin() + B * T), fi);
}

TEST(ShardLoader, RowsAreContiguousWindowsInsideOneShard) {
  TempDir dir;
  auto paths = make_shards(dir, "t", {100, 20, 300, 64});
  ShardBatchSource src(paths, 3);
  const int64_t B = 16, T = 63;  // the 64-token shard has exactly one window; the 20-token one none
  std::set<int64_t> shards_seen;
  for (uint64_t step = 0; step < 100; ++step) {
    Batch b = src.batch(step, 0, B, T);
    auto in = vec(b.inputs), tg = vec(b.targets);
    for (int64_t r = 0; r < B; ++r) {
      const int64_t first = in[r * T];
      const int64_t shard = first / 10000;
      shards_seen.insert(shard);
      EXPECT_NE(shard, 1);
      for (int64_t t = 0; t < T; ++t) {
        EXPECT_EQ(in[r * T + t], first + t);   // contiguous, same shard
        EXPECT_EQ(tg[r * T + t], first + t + 1);  // targets shifted by one
      }
      EXPECT_LT(tg[r * T + T - 1] % 10000, std::vector<int>({100, 20, 300, 64})[shard]);
    }
  }
  EXPECT_EQ(shards_seen, (std::set<int64_t>{0, 2, 3}));
  EXPECT_THROW(src.batch(0, 0, 1, 300), std::runtime_error);  // no shard holds 301 tokens
  EXPECT_THROW(src.batch(0, 2, 1, 8), std::invalid_argument);
  EXPECT_THROW(src.batch(0, 0, 1, 0), std::invalid_argument);
}

TEST(ShardLoader, ValidationStreamIsFixedAndSeparate) {
  TempDir dir;
  auto train = make_shards(dir, "t", {1000});
  auto val = make_shards(dir, "v", {500}, 5);
  ShardBatchSource src(train, 11, val);
  Batch v0 = src.val_batch(0, 0, 4, 16);
  EXPECT_TRUE(equal(v0, ShardBatchSource(train, 11, val).val_batch(0, 0, 4, 16)));
  EXPECT_FALSE(equal(v0, src.val_batch(1, 0, 4, 16)));
  for (int64_t x : vec(v0.inputs)) EXPECT_EQ(x / 10000, 5);  // from the validation shard
  EXPECT_THROW(ShardBatchSource(train, 11).val_batch(0, 0, 1, 8), std::runtime_error);
  // Shards with different vocabularies cannot be mixed.
  write_shard(dir / "other.bin", std::vector<int32_t>{1, 2, 3}, 2, 300, 1);
  EXPECT_THROW(ShardBatchSource({train[0], dir / "other.bin"}, 1), std::runtime_error);
}

TEST(ArithmeticLoader, RowsArePackedVerifiableProblems) {
  ArithmeticConfig cfg{1, 4, "+-*"};
  BpeTokenizer tok = arithmetic_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 259);
  ArithmeticBatchSource src(cfg, tok, 2024);
  EXPECT_EQ(src.vocab_size(), 259);
  const int64_t B = 6, T = 64;
  Batch b = src.batch(3, 0, B, T);
  auto in = vec(b.inputs), tg = vec(b.targets);
  int complete = 0;
  for (int64_t r = 0; r < B; ++r) {
    std::vector<int32_t> ids;
    for (int64_t t = 0; t < T; ++t) ids.push_back(int32_t(in[r * T + t]));
    ids.push_back(int32_t(tg[r * T + T - 1]));
    for (int64_t t = 0; t + 1 < T; ++t) EXPECT_EQ(tg[r * T + t], in[r * T + t + 1]);
    std::string text = tok.decode(ids);
    // The row is the problems of its row seed, in order, cut at T + 1 tokens.
    std::string expect;
    for (uint64_t j = 0; expect.size() < size_t(T + 1); ++j)
      expect += sample_problem(cfg, src.row_seed(0, 3, r), j).text();
    EXPECT_EQ(text, expect.substr(0, T + 1));
    // Each complete line is a correct problem.
    size_t pos = 0, nl;
    while ((nl = text.find('\n', pos)) != std::string::npos) {
      std::string line = text.substr(pos, nl - pos);
      size_t eq = line.find('=');
      ASSERT_NE(eq, std::string::npos) << line;
      std::string prompt = line.substr(0, eq + 1), answer = line.substr(eq + 1);
      bool found = false;
      for (uint64_t j = 0; j < 64 && !found; ++j) {
        auto p = sample_problem(cfg, src.row_seed(0, 3, r), j);
        if (p.prompt == prompt) found = check_answer(p, answer);
      }
      EXPECT_TRUE(found) << line;
      ++complete;
      pos = nl + 1;
    }
  }
  EXPECT_GT(complete, 4 * B);
}

TEST(ArithmeticLoader, DeterministicSlicedAndSeparateValidation) {
  ArithmeticConfig cfg{1, 3, "+"};
  BpeTokenizer tok = arithmetic_tokenizer();
  ArithmeticBatchSource a(cfg, tok, 5), b(cfg, tok, 5);
  const int64_t B = 8, T = 40;
  Batch full = a.batch(9, 0, B, T);
  EXPECT_TRUE(equal(full, b.batch(9, 0, B, T)));
  EXPECT_FALSE(equal(full, a.batch(10, 0, B, T)));
  auto fi = vec(full.inputs);
  auto lo = vec(b.batch(9, 0, 5, T).inputs), hi = vec(b.batch(9, 5, B, T).inputs);
  lo.insert(lo.end(), hi.begin(), hi.end());
  EXPECT_EQ(lo, fi);
  // Validation batches are fixed per index and are not training batches.
  Batch v = a.val_batch(9, 0, B, T);
  EXPECT_TRUE(equal(v, b.val_batch(9, 0, B, T)));
  EXPECT_FALSE(equal(v, full));
  EXPECT_NE(a.row_seed(1, 9, 0), a.row_seed(0, 9, 0));
}

TEST(ArithmeticLoader, MaskPromptHidesPromptTargets) {
  ArithmeticConfig cfg{2, 3, "+*"};
  BpeTokenizer tok = arithmetic_tokenizer();
  ArithmeticBatchSource plain(cfg, tok, 8), masked(cfg, tok, 8, {.mask_prompt = true});
  const int64_t B = 4, T = 50;
  Batch p = plain.batch(0, 0, B, T), m = masked.batch(0, 0, B, T);
  EXPECT_EQ(vec(p.inputs), vec(m.inputs));
  auto pt = vec(p.targets), mt = vec(m.targets), in = vec(p.inputs);
  int kept = 0, hidden = 0;
  for (int64_t r = 0; r < B; ++r) {
    // Walk the row's text: a target is kept iff it is an answer digit/sign or the newline.
    bool in_answer = false;
    for (int64_t t = 0; t < T; ++t) {
      char prev = char(in[r * T + t]);
      if (prev == '=') in_answer = true;
      if (prev == '\n') in_answer = false;
      if (in_answer) {
        EXPECT_EQ(mt[r * T + t], pt[r * T + t]);
        ++kept;
      } else {
        EXPECT_EQ(mt[r * T + t], kIgnoreIndex);
        ++hidden;
      }
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(hidden, kept);
}
