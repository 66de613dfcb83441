// tokenizer.cpp: byte-level BPE: pre-tokenization, training, encoding, tokenizer.json I/O.
#include "data/tokenizer.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <queue>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/io.h"

namespace loom::data {

const char* const kPretokenizerPattern =
    R"( ?[A-Za-z\x{80}-\x{10FFFF}]+|[0-9]| ?[^\t\n\x{0B}\f\r A-Za-z0-9\x{80}-\x{10FFFF}]+|)"
    R"([\t\n\x{0B}\f\r ]+(?![^\t\n\x{0B}\f\r ])|[\t\n\x{0B}\f\r ]+)";

// ---- pre-tokenization ---------------------------------------------------------------------

namespace {

enum class ByteClass : uint8_t { letter, digit, space, punct };

constexpr std::array<ByteClass, 256> make_classes() {
  std::array<ByteClass, 256> c{};
  for (int b = 0; b < 256; ++b) {
    if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || b >= 0x80) c[b] = ByteClass::letter;
    else if (b >= '0' && b <= '9') c[b] = ByteClass::digit;
    else if (b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r') c[b] = ByteClass::space;
    else c[b] = ByteClass::punct;
  }
  return c;
}
constexpr std::array<ByteClass, 256> kClass = make_classes();

inline ByteClass cls(std::string_view s, size_t i) { return kClass[uint8_t(s[i])]; }

// Calls f(chunk) for each chunk of `text` in order; the chunks concatenate to `text`.
template <class F> void for_each_chunk(std::string_view text, F&& f) {
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const ByteClass c = cls(text, i);
    size_t j = i;
    // An optional leading space joins a following letter or punctuation run.
    const bool lead_space = text[i] == ' ' && i + 1 < n;
    const ByteClass after = lead_space ? cls(text, i + 1) : c;
    if (c == ByteClass::letter || (lead_space && after == ByteClass::letter)) {
      j = (c == ByteClass::letter) ? i : i + 1;
      while (j < n && cls(text, j) == ByteClass::letter) ++j;
    } else if (c == ByteClass::digit) {
      j = i + 1;
    } else if (c == ByteClass::punct || (lead_space && after == ByteClass::punct)) {
      j = (c == ByteClass::punct) ? i : i + 1;
      while (j < n && cls(text, j) == ByteClass::punct) ++j;
    } else {  // whitespace
      while (j < n && cls(text, j) == ByteClass::space) ++j;
      if (j < n && j - i >= 2) --j;  // leave the last byte to start the next chunk
    }
    f(text.substr(i, j - i));
    i = j;
  }
}

}  // namespace

std::vector<std::string_view> pretokenize(std::string_view text) {
  std::vector<std::string_view> out;
  for_each_chunk(text, [&](std::string_view c) { out.push_back(c); });
  return out;
}

// ---- the GPT-2 byte alphabet ---------------------------------------------------------------

namespace {

std::array<uint32_t, 256> make_byte_code_points() {
  // Printable bytes keep their code point; the rest map to 256, 257, ... in byte order.
  std::array<uint32_t, 256> cp{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    cp[b] = printable ? b : next++;
  }
  return cp;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// Code point -> byte for the alphabet (-1 outside it); the alphabet ends below 0x144.
const std::array<int16_t, 0x200>& unicode_to_byte() {
  static const std::array<int16_t, 0x200> table = [] {
    std::array<int16_t, 0x200> t;
    t.fill(-1);
    auto cp = make_byte_code_points();
    for (int b = 0; b < 256; ++b) t[cp[b]] = int16_t(b);
    return t;
  }();
  return table;
}

// Decodes a vocab string of the byte alphabet back into bytes; nullopt if it is not one.
std::optional<std::string> alphabet_to_bytes(const std::string& s) {
  std::string out;
  const auto& inv = unicode_to_byte();
  for (size_t i = 0; i < s.size();) {
    uint8_t c = uint8_t(s[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size() && (uint8_t(s[i + 1]) & 0xC0) == 0x80) {
      cp = (uint32_t(c & 0x1F) << 6) | (uint8_t(s[i + 1]) & 0x3F);
      i += 2;
    } else {
      return std::nullopt;
    }
    if (cp >= inv.size() || inv[cp] < 0) return std::nullopt;
    out += char(inv[cp]);
  }
  return out;
}

std::string bytes_to_alphabet(const std::string& bytes) {
  const auto& table = byte_to_unicode();
  std::string out;
  for (unsigned char c : bytes) out += table[c];
  return out;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    auto cp = make_byte_code_points();
    for (int b = 0; b < 256; ++b) t[b] = utf8(cp[b]);
    return t;
  }();
  return table;
}

// ---- construction --------------------------------------------------------------------------

// Per-chunk encode cache, sharded so concurrent encoders rarely contend.
struct BpeTokenizer::Cache {
  static constexpr size_t kShards = 16, kMaxEntriesPerShard = 1 << 16, kMaxChunkBytes = 256;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  std::array<Shard, kShards> shards;
};

BpeTokenizer::BpeTokenizer() {
  tokens_.reserve(256);
  for (int b = 0; b < 256; ++b) tokens_.push_back(std::string(1, char(b)));
  is_special_.assign(256, false);
  finish();
}

void BpeTokenizer::add_special(const std::string& token) {
  if (token.empty()) throw std::invalid_argument("BpeTokenizer: a special token is empty");
  if (special_.count(token)) throw std::invalid_argument("BpeTokenizer: special token '" + token + "' given twice");
  int32_t id = int32_t(tokens_.size());
  tokens_.push_back(token);
  is_special_.push_back(true);
  special_[token] = id;
  special_names_.push_back(token);
}

void BpeTokenizer::finish() {
  byte_id_.fill(-1);
  token_id_.clear();
  for (int32_t id = 0; id < int32_t(tokens_.size()); ++id) {
    if (is_special_[id]) continue;
    token_id_.emplace(tokens_[id], id);
    if (tokens_[id].size() == 1) byte_id_[uint8_t(tokens_[id][0])] = id;
  }
  merge_of_.clear();
  for (int32_t r = 0; r < int32_t(merges_.size()); ++r) {
    auto [a, b] = merges_[r];
    merge_of_.emplace(pair_key(a, b), Merge{r, token_id_.at(tokens_[a] + tokens_[b])});
  }
  cache_ = std::make_shared<Cache>();
}

BpeTokenizer BpeTokenizer::byte_level(const std::vector<std::string>& special_tokens) {
  BpeTokenizer t;
  for (const auto& s : special_tokens) t.add_special(s);
  t.finish();
  return t;
}

// ---- training ------------------------------------------------------------------------------

BpeTokenizer BpeTokenizer::train(const std::vector<std::string>& texts, int vocab_size,
                                 const std::vector<std::string>& special_tokens) {
  const int64_t min_vocab = 256 + int64_t(special_tokens.size());
  if (vocab_size < min_vocab)
    throw std::invalid_argument("BpeTokenizer::train: vocab_size " + std::to_string(vocab_size) + " is below 256 bytes + " +
                                std::to_string(special_tokens.size()) + " special tokens");
  const int64_t target_merges = vocab_size - min_vocab;
  BpeTokenizer t;

  // Unique chunks with their frequencies. Special token text is excluded from training.
  std::unordered_map<std::string_view, int64_t> freq;
  for (const std::string& text : texts) {
    std::string_view rest = text;
    while (!rest.empty()) {
      size_t cut = rest.size(), len = 0;
      for (const auto& s : special_tokens) {
        size_t p = s.empty() ? std::string_view::npos : rest.find(s);
        if (p < cut || (p == cut && s.size() > len)) cut = p, len = s.size();
      }
      for_each_chunk(rest.substr(0, cut), [&](std::string_view c) { ++freq[c]; });
      rest = cut == rest.size() ? std::string_view() : rest.substr(cut + len);
    }
  }
  std::vector<std::pair<std::string_view, int64_t>> uniq(freq.begin(), freq.end());
  std::sort(uniq.begin(), uniq.end());  // a fixed word order, independent of hashing
  std::vector<std::vector<int32_t>> words(uniq.size());
  std::vector<int64_t> counts(uniq.size());
  for (size_t w = 0; w < uniq.size(); ++w) {
    for (unsigned char c : uniq[w].first) words[w].push_back(int32_t(c));
    counts[w] = uniq[w].second;
  }

  // Pair counts, the words each pair occurs in (may hold stale entries), and a lazy max-heap
  // ordered by (count desc, pair asc). Merging only lowers the counts of existing pairs and
  // creates pairs with the new id, so an entry whose stored count equals the live count is
  // the true maximum.
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  struct Entry {
    int64_t count;
    uint64_t pair;
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::priority_queue<Entry> heap;
  auto note_word = [&](uint64_t p, int32_t w) {
    auto& v = where[p];
    if (v.empty() || v.back() != w) v.push_back(w);
  };
  for (int32_t w = 0; w < int32_t(words.size()); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      uint64_t p = pair_key(words[w][i], words[w][i + 1]);
      pair_count[p] += counts[w];
      note_word(p, w);
    }
  for (auto& [p, c] : pair_count) heap.push({c, p});

  std::unordered_map<uint64_t, int64_t> delta;
  while (int64_t(t.merges_.size()) < target_merges && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    auto it = pair_count.find(top.pair);
    int64_t live = it == pair_count.end() ? 0 : it->second;
    if (live != top.count) {
      if (live > 0) heap.push({live, top.pair});
      continue;
    }
    if (top.count < 2) break;
    const int32_t a = int32_t(top.pair >> 32), b = int32_t(uint32_t(top.pair));
    const int32_t id = int32_t(t.tokens_.size());
    t.tokens_.push_back(t.tokens_[a] + t.tokens_[b]);
    t.is_special_.push_back(false);
    t.merges_.emplace_back(a, b);

    std::vector<int32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    delta.clear();
    for (int32_t w : affected) {
      auto& ids = words[w];
      bool has = false;
      for (size_t i = 0; i + 1 < ids.size() && !has; ++i) has = ids[i] == a && ids[i + 1] == b;
      if (!has) continue;
      for (size_t i = 0; i + 1 < ids.size(); ++i) delta[pair_key(ids[i], ids[i + 1])] -= counts[w];
      size_t o = 0;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i + 1 < ids.size() && ids[i] == a && ids[i + 1] == b) {
          ids[o++] = id;
          ++i;
        } else {
          ids[o++] = ids[i];
        }
      }
      ids.resize(o);
      for (size_t i = 0; i + 1 < ids.size(); ++i) {
        uint64_t p = pair_key(ids[i], ids[i + 1]);
        delta[p] += counts[w];
        if (ids[i] == id || ids[i + 1] == id) note_word(p, w);
      }
    }
    for (auto& [p, d] : delta) {
      if (d == 0) continue;
      int64_t& c = pair_count[p];
      c += d;
      if (c == 0) pair_count.erase(p);
      else if (d > 0) heap.push({c, p});
    }
  }
  for (const auto& s : special_tokens) t.add_special(s);
  t.finish();
  return t;
}

// ---- encoding ------------------------------------------------------------------------------

void BpeTokenizer::bpe(std::string_view chunk, std::vector<int32_t>& out) const {
  // Hugging Face BPE: repeatedly apply the lowest-ranked merge present, leftmost first.
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  const int32_t n = int32_t(chunk.size());
  std::vector<Sym> sym(n);
  for (int32_t i = 0; i < n; ++i) sym[i] = {byte_id_[uint8_t(chunk[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  struct Cand {
    int32_t rank, pos, id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    auto it = merge_of_.find(pair_key(sym[pos].id, sym[sym[pos].next].id));
    if (it != merge_of_.end()) heap.push({it->second.rank, pos, it->second.id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Sym& s = sym[c.pos];
    if (!s.alive || s.next < 0) continue;
    auto it = merge_of_.find(pair_key(s.id, sym[s.next].id));
    if (it == merge_of_.end() || it->second.id != c.id) continue;  // stale candidate
    Sym& r = sym[s.next];
    r.alive = false;
    s.id = c.id;
    s.next = r.next;
    if (s.next >= 0) sym[s.next].prev = c.pos;
    consider(s.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) out.push_back(sym[i].id);
}

void BpeTokenizer::encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const {
  if (chunk.size() == 1) {
    out.push_back(byte_id_[uint8_t(chunk[0])]);
    return;
  }
  if (merges_.empty()) {
    for (unsigned char c : chunk) out.push_back(byte_id_[c]);
    return;
  }
  if (chunk.size() > Cache::kMaxChunkBytes) {
    bpe(chunk, out);
    return;
  }
  auto& shard = cache_->shards[std::hash<std::string_view>()(chunk) % Cache::kShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.map.find(std::string(chunk));
    if (it != shard.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  bpe(chunk, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.map.size() >= Cache::kMaxEntriesPerShard) shard.map.clear();
  shard.map.emplace(std::string(chunk), std::move(ids));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  auto plain = [&](std::string_view s) { for_each_chunk(s, [&](std::string_view c) { encode_chunk(c, out); }); };
  if (!parse_special || special_names_.empty()) {
    plain(text);
    return out;
  }
  // Leftmost special occurrence (longest on ties); each name's next match is searched again
  // only once the cursor has passed it, so the scan stays linear in len(text) * #specials.
  const size_t k = special_names_.size();
  std::vector<size_t> next(k);
  for (size_t s = 0; s < k; ++s) next[s] = text.find(special_names_[s]);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = std::string_view::npos, best_len = 0, best_s = 0;
    for (size_t s = 0; s < k; ++s) {
      if (next[s] != std::string_view::npos && next[s] < pos) next[s] = text.find(special_names_[s], pos);
      if (next[s] == std::string_view::npos) continue;
      size_t len = special_names_[s].size();
      if (next[s] < best || (next[s] == best && len > best_len)) best = next[s], best_len = len, best_s = s;
    }
    if (best == std::string_view::npos) {
      plain(text.substr(pos));
      break;
    }
    plain(text.substr(pos, best - pos));
    out.push_back(special_.at(special_names_[best_s]));
    pos = best + best_len;
  }
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

const std::string& BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= int32_t(tokens_.size()))
    throw std::out_of_range("BpeTokenizer: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(tokens_.size()) + ")");
  return tokens_[id];
}

std::optional<int32_t> BpeTokenizer::special_id(const std::string& token) const {
  auto it = special_.find(token);
  if (it == special_.end()) return std::nullopt;
  return it->second;
}

int32_t BpeTokenizer::bos_id() const { return special_id(kBosToken).value_or(-1); }
int32_t BpeTokenizer::eos_id() const {
  if (auto id = special_id(kEosToken)) return *id;
  return special_id("<|endoftext|>").value_or(-1);
}
int32_t BpeTokenizer::pad_id() const { return special_id(kPadToken).value_or(-1); }

// ---- tokenizer.json ------------------------------------------------------------------------

std::string BpeTokenizer::to_json() const {
  using nlohmann::ordered_json;
  ordered_json added = ordered_json::array();
  for (const auto& name : special_names_)
    added.push_back({{"id", special_.at(name)}, {"content", name}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  ordered_json vocab = ordered_json::object();
  for (int32_t id = 0; id < int32_t(tokens_.size()); ++id)
    if (!is_special_[id]) vocab[bytes_to_alphabet(tokens_[id])] = id;
  ordered_json merges = ordered_json::array();
  for (auto [a, b] : merges_) merges.push_back(bytes_to_alphabet(tokens_[a]) + " " + bytes_to_alphabet(tokens_[b]));
  ordered_json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", kPretokenizerPattern}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  return j.dump(2) + "\n";
}

void BpeTokenizer::save(const std::string& path) const { atomic_write_file(path, to_json()); }

BpeTokenizer BpeTokenizer::load(const std::string& path) { return from_json(read_file(path), path); }

BpeTokenizer BpeTokenizer::from_json(std::string_view text, const std::string& source) {
  auto fail = [&](const std::string& what) -> void {
    throw std::runtime_error("tokenizer " + source + ": " + what);
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail(std::string("invalid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail("top level is not a JSON object");
  if (!j.contains("model") || !j["model"].is_object()) fail("no \"model\" object");
  const auto& model = j["model"];
  if (model.contains("type") && model["type"] != "BPE")
    fail("model.type is " + model["type"].dump() + ", only \"BPE\" is supported");
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("model.vocab is missing or not an object");

  // Added (special) tokens first: their text is literal, not in the byte alphabet.
  std::vector<std::pair<int64_t, std::string>> specials;
  std::unordered_map<std::string, int64_t> special_of;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) fail("added_tokens is not an array");
    for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
      const auto& a = j["added_tokens"][i];
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string() || a["content"].get<std::string>().empty())
        fail("added_tokens[" + std::to_string(i) + "] needs an integer \"id\" and a non-empty string \"content\"");
      specials.emplace_back(a["id"].get<int64_t>(), a["content"].get<std::string>());
      special_of[specials.back().second] = specials.back().first;
    }
  }
  std::vector<std::string> tokens;
  std::vector<int8_t> kind;  // 0 unset, 1 normal, 2 special
  auto place = [&](int64_t id, const std::string& bytes, int8_t k, const std::string& what) {
    if (id < 0 || id > (int64_t(1) << 31) - 2) fail(what + " has id " + std::to_string(id) + " outside [0, 2^31-1)");
    if (id >= int64_t(tokens.size())) tokens.resize(id + 1), kind.resize(id + 1, 0);
    if (kind[id] != 0 && !(kind[id] == 2 && k == 2 && tokens[id] == bytes))
      fail(what + " reuses id " + std::to_string(id));
    tokens[id] = bytes;
    kind[id] = k;
  };
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer()) fail("model.vocab[" + nlohmann::json(it.key()).dump() + "] is not an integer id");
    int64_t id = it.value().get<int64_t>();
    auto sp = special_of.find(it.key());
    if (sp != special_of.end()) {
      if (sp->second != id) fail("special token " + it.key() + " has id " + std::to_string(id) + " in model.vocab and " +
                                 std::to_string(sp->second) + " in added_tokens");
      place(id, it.key(), 2, "special token " + it.key());
      continue;
    }
    auto bytes = alphabet_to_bytes(it.key());
    if (!bytes || bytes->empty())
      fail("model.vocab entry " + nlohmann::json(it.key()).dump() + " is not a byte-level (GPT-2 alphabet) token");
    place(id, *bytes, 1, "model.vocab entry " + nlohmann::json(it.key()).dump());
  }
  for (auto& [id, name] : specials) place(id, name, 2, "special token " + name);
  for (size_t id = 0; id < tokens.size(); ++id)
    if (kind[id] == 0) fail("no token has id " + std::to_string(id) + " (ids must be 0.." + std::to_string(tokens.size() - 1) + ")");

  BpeTokenizer t;
  t.tokens_ = tokens;
  t.is_special_.assign(tokens.size(), false);
  t.special_names_.clear();
  std::sort(specials.begin(), specials.end());
  for (auto& [id, name] : specials) {
    if (t.is_special_[id]) continue;
    t.is_special_[id] = true;
    t.special_[name] = int32_t(id);
    t.special_names_.push_back(name);
  }
  std::unordered_map<std::string, int32_t> ids_of;
  for (int32_t id = 0; id < int32_t(tokens.size()); ++id) {
    if (t.is_special_[id]) continue;
    if (!ids_of.emplace(tokens[id], id).second)
      fail("model.vocab has two entries for the bytes of " + nlohmann::json(bytes_to_alphabet(tokens[id])).dump());
  }
  for (int b = 0; b < 256; ++b)
    if (!ids_of.count(std::string(1, char(b))))
      fail("model.vocab lacks the single-byte token for byte " + std::to_string(b) + " (" +
           nlohmann::json(byte_to_unicode()[b]).dump() + "), so not every text can be encoded");

  if (model.contains("merges") && !model["merges"].is_null()) {
    if (!model["merges"].is_array()) fail("model.merges is not an array");
    const auto& merges = model["merges"];
    for (size_t r = 0; r < merges.size(); ++r) {
      const auto& m = merges[r];
      std::string left, right;
      if (m.is_string()) {
        std::string s = m.get<std::string>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail("model.merges[" + std::to_string(r) + "] " + m.dump() + " is not of the form \"a b\"");
        left = s.substr(0, sp), right = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get<std::string>(), right = m[1].get<std::string>();
      } else {
        fail("model.merges[" + std::to_string(r) + "] is neither \"a b\" nor [\"a\", \"b\"]");
      }
      auto lb = alphabet_to_bytes(left), rb = alphabet_to_bytes(right);
      auto li = lb ? ids_of.find(*lb) : ids_of.end(), ri = rb ? ids_of.find(*rb) : ids_of.end();
      if (li == ids_of.end() || ri == ids_of.end())
        fail("model.merges[" + std::to_string(r) + "] " + m.dump() + " names a token not in model.vocab");
      if (!ids_of.count(*lb + *rb))
        fail("model.merges[" + std::to_string(r) + "] " + m.dump() + ": the merged token is not in model.vocab");
      t.merges_.emplace_back(li->second, ri->second);
    }
  }
  t.finish();
  return t;
}

}  // namespace loom::data
