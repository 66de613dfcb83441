// shards.h: token shard files (memory-mapped, read-only) and `prepare_shards`, which turns
// text or JSONL files into train/validation shards.
//
// Shard file layout (all integers little-endian):
//   offset  size  field
//        0     8  magic "LOOMTOK1"
//        8     4  u32 version = 1
//       12     4  u32 token_bytes: 2 (uint16 tokens) or 4 (uint32 tokens)
//       16     8  u64 num_tokens
//       24     8  u64 num_documents (documents whose closing eos lies in this shard)
//       32     8  u64 checksum: FNV-1a 64 of the token bytes (the file after the header)
//       40     4  u32 vocab_size: every token is < vocab_size
//       44    20  zero padding (header is 64 bytes)
//       64     -  num_tokens * token_bytes bytes of tokens
// The file size is exactly 64 + num_tokens * token_bytes. Shards are written atomically
// (temporary file, fsync, rename). Reading refuses, with one std::runtime_error naming the
// file and the problem: a short or truncated file, bad magic, an unknown version or
// token_bytes, a size that disagrees with num_tokens, a checksum mismatch, a token >=
// vocab_size.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace loom::data {

inline constexpr char kShardMagic[8] = {'L', 'O', 'O', 'M', 'T', 'O', 'K', '1'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;
  uint64_t num_tokens = 0;
  uint64_t num_documents = 0;
  uint64_t checksum = 0;
  uint32_t vocab_size = 0;
};

// token_bytes 2 needs vocab_size <= 65536. Throws std::invalid_argument for a token outside
// [0, vocab_size) or a bad token_bytes, std::runtime_error (naming path) for I/O failures.
void write_shard(const std::string& path, std::span<const int32_t> tokens, int token_bytes, uint32_t vocab_size,
                 uint64_t num_documents);
// The smallest token width for a vocabulary: 2 if vocab_size <= 65536, else 4.
inline int token_bytes_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

class TokenShard {
 public:
  // Maps `path` read-only and validates it. verify_checksum also checks every token against
  // vocab_size (one pass over the file); without it, tokens are checked as windows are read.
  explicit TokenShard(const std::string& path, bool verify_checksum = true);
  ~TokenShard();
  TokenShard(TokenShard&& o) noexcept;
  TokenShard& operator=(TokenShard&& o) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  int64_t size() const { return int64_t(header_.num_tokens); }
  uint32_t token(int64_t i) const;  // bounds-checked
  // Copies tokens [begin, begin + count) into out (widened to int64); throws on a window
  // outside the shard or a token >= vocab_size.
  void read(int64_t begin, int64_t count, int64_t* out) const;
  const ShardHeader& header() const { return header_; }
  uint32_t vocab_size() const { return header_.vocab_size; }
  int64_t num_documents() const { return int64_t(header_.num_documents); }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  ShardHeader header_;
  const uint8_t* map_ = nullptr;  // the whole file
  size_t map_bytes_ = 0;
};

// Reads and validates only the 64-byte header (and the file size).
ShardHeader read_shard_header(const std::string& path);

struct PrepareOptions {
  std::vector<std::string> inputs;  // files, or directories (their files, recursively, sorted)
  std::string output_dir;
  // Tokenizer: load tokenizer_path if set; else train one with vocab_size (> 0) on the
  // inputs (at most train_max_bytes of text, specials <|bos|> <|eos|> <|pad|>); else the
  // byte-level tokenizer with those specials. OUT/tokenizer.json is written either way.
  std::string tokenizer_path;
  int vocab_size = 0;
  int64_t train_max_bytes = int64_t(1) << 30;
  bool lines = false;               // text files: each non-empty line is a document
  std::string text_field = "text";  // JSONL (*.jsonl) files: the string field holding the text
  double val_fraction = 0.01;       // share of documents sent to validation (by hash)
  uint64_t seed = 0;                // seeds the train/validation hash
  int64_t max_tokens_per_shard = int64_t(1) << 28;
};

struct SplitStats {
  int64_t documents = 0, tokens = 0;
  std::vector<std::string> shards;  // file names inside output_dir
};
struct PrepareResult {
  SplitStats train, val;
  int vocab_size = 0, token_bytes = 0;
};

// Writes OUT/train_000.bin ..., OUT/val_000.bin ..., OUT/tokenizer.json and OUT/meta.json.
// Each document is tokenized (special-token text in documents is taken literally) and
// followed by eos. Document d (numbered across all inputs in order) goes to validation iff
// mix64(mix64(seed) ^ d) / 2^64 < val_fraction. Stale shards of an earlier run with higher
// numbers are removed. Errors name the file (and line for JSONL: "FILE:LINE: ...").
PrepareResult prepare_shards(const PrepareOptions& opt);

// The shard paths of one split ("train" or "val") of a prepared directory, from meta.json.
std::vector<std::string> prepared_shards(const std::string& dir, const std::string& split);

}  // namespace loom::data
