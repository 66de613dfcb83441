// tokenizer.h: BpeTokenizer, a byte-level BPE tokenizer (GPT-2 style) that trains on text,
// encodes and decodes any byte string losslessly (invalid UTF-8 included), recognises
// special tokens, and reads and writes Hugging Face tokenizer.json.
//
// Rules it keeps:
//   - Ids: a trained tokenizer has the 256 single bytes at ids 0..255 (id = byte value),
//     then one id per merge in merge order, then the special tokens in the order given.
//     A loaded tokenizer may number its byte tokens differently (GPT-2 does); it must hold
//     all 256 of them.
//   - Pre-tokenization (written by hand, no regex library): text is cut into chunks and
//     merges never cross a chunk. Bytes fall in four classes: letters ([A-Za-z] and every
//     byte >= 0x80, so UTF-8 sequences stay inside words), digits [0-9], whitespace
//     (space \t \n \v \f \r) and punctuation (everything else). At each position the first
//     rule that applies wins:
//       1. an optional space then a run of letters           " hello", "hello"
//       2. a single digit (numbers stay digit-level)          "4" "8" "2"
//       3. an optional space then a run of punctuation        " +", "=", ".\""
//       4. a whitespace run; when non-whitespace follows, the run's last byte is left to
//          start the next chunk (so "  x" -> " ", " x" as in GPT-2's \s+(?!\S)).
//     This is the regex written into tokenizer.json (see kPretokenizerPattern), so Hugging
//     Face `tokenizers` cuts text the same way.
//   - Merges: training counts chunk frequencies, then repeatedly merges the most frequent
//     adjacent pair (ties: the smaller (left id, right id)) while some pair occurs at
//     least twice. Encoding applies merges by rank (lowest first, leftmost first), the
//     Hugging Face BPE procedure, so both give identical ids.
//   - Special tokens are atomic: encode(text, parse_special=true) maps each occurrence of
//     a special token's text to its id (leftmost, then longest match); decode maps the id
//     back to that text.
//   - Thread safety: all const methods may be called concurrently (the per-chunk encode
//     cache is sharded behind mutexes and shared by copies of the tokenizer).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace loom::data {

// The tokenizer.json pre-tokenizer pattern equivalent to the hand-written chunking above.
extern const char* const kPretokenizerPattern;

// Conventional special token names (bos_id()/eos_id()/pad_id() look these up).
inline constexpr const char* kBosToken = "<|bos|>";
inline constexpr const char* kEosToken = "<|eos|>";
inline constexpr const char* kPadToken = "<|pad|>";

// Cuts `text` into pre-tokenization chunks (views into text), by the rules above.
std::vector<std::string_view> pretokenize(std::string_view text);

// The GPT-2 byte-to-unicode alphabet: byte b -> one code point, UTF-8 encoded.
const std::array<std::string, 256>& byte_to_unicode();

class BpeTokenizer {
 public:
  BpeTokenizer();  // 256 byte tokens, no merges, no special tokens

  // Trains on `texts` (each pre-tokenized separately). vocab_size counts the 256 byte
  // tokens, the merges and the special tokens; training stops early when no pair occurs
  // twice, so vocab_size() may come out smaller. Throws std::invalid_argument when
  // vocab_size < 256 + special_tokens.size() or a special token is empty or repeated.
  static BpeTokenizer train(const std::vector<std::string>& texts, int vocab_size,
                            const std::vector<std::string>& special_tokens);
  // The byte-level tokenizer without merges: vocab = 256 + special_tokens.size().
  static BpeTokenizer byte_level(const std::vector<std::string>& special_tokens);

  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Throws std::out_of_range naming the id when an id is outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;

  int vocab_size() const { return int(tokens_.size()); }
  int num_merges() const { return int(merges_.size()); }
  std::optional<int32_t> special_id(const std::string& token) const;
  const std::vector<std::string>& special_tokens() const { return special_names_; }
  int32_t bos_id() const;  // "<|bos|>", else -1
  int32_t eos_id() const;  // "<|eos|>", else "<|endoftext|>" (GPT-2), else -1
  int32_t pad_id() const;  // "<|pad|>", else -1
  // The bytes of one token (a special token's text for a special id).
  const std::string& token_bytes(int32_t id) const;

  // Hugging Face tokenizer.json: model BPE (vocab in the byte-to-unicode alphabet, merges
  // as "a b" strings), added_tokens (special: true), pre_tokenizer Sequence[Split with
  // kPretokenizerPattern, ByteLevel(add_prefix_space false, use_regex false)], decoder
  // ByteLevel. Written atomically.
  std::string to_json() const;
  void save(const std::string& path) const;
  // Reads tokenizer.json (merges as "a b" strings or [a, b] arrays; any pre_tokenizer, as
  // chunking is always the rule above; every added token is treated as special, i.e. atomic). Throws std::runtime_error naming `path` and the
  // problem for malformed input.
  static BpeTokenizer load(const std::string& path);
  static BpeTokenizer from_json(std::string_view json, const std::string& source = "<json>");

 private:
  struct Merge {
    int32_t rank, id;
  };
  struct Cache;
  void add_special(const std::string& token);
  void finish();  // builds the lookup tables after tokens_/merges_ are set
  void encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const;
  void bpe(std::string_view chunk, std::vector<int32_t>& out) const;
  static uint64_t pair_key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

  std::vector<std::string> tokens_;                    // id -> bytes
  std::vector<bool> is_special_;                       // id -> special?
  std::vector<std::pair<int32_t, int32_t>> merges_;    // rank -> (left, right)
  std::array<int32_t, 256> byte_id_{};                 // byte -> id
  std::unordered_map<uint64_t, Merge> merge_of_;       // pair -> (rank, merged id)
  std::unordered_map<std::string, int32_t> special_;   // special text -> id
  std::vector<std::string> special_names_;             // in id order
  std::unordered_map<std::string, int32_t> token_id_;  // bytes -> id (non-special)
  std::shared_ptr<Cache> cache_;
};

}  // namespace loom::data
