// shards.cpp: token shard writing, memory-mapped reading, and prepare_shards.
#include "data/shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/io.h"
#include "data/tokenizer.h"
#include "runtime/rng.h"

namespace loom::data {

static_assert(std::endian::native == std::endian::little, "token shards are little-endian; so is every supported host");

namespace {

[[noreturn]] void shard_error(const std::string& path, const std::string& what) {
  throw std::runtime_error("token shard " + path + ": " + what);
}

template <class T> T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Parses and checks the header against the file size.
ShardHeader parse_header(const uint8_t* p, uint64_t file_bytes, const std::string& path) {
  if (file_bytes < kShardHeaderBytes)
    shard_error(path, "truncated: " + std::to_string(file_bytes) + " bytes, shorter than the 64-byte header");
  if (std::memcmp(p, kShardMagic, 8) != 0) shard_error(path, "bad magic (not a Loom token shard; expected \"LOOMTOK1\")");
  ShardHeader h;
  h.version = load_le<uint32_t>(p + 8);
  h.token_bytes = load_le<uint32_t>(p + 12);
  h.num_tokens = load_le<uint64_t>(p + 16);
  h.num_documents = load_le<uint64_t>(p + 24);
  h.checksum = load_le<uint64_t>(p + 32);
  h.vocab_size = load_le<uint32_t>(p + 40);
  if (h.version != kShardVersion)
    shard_error(path, "unsupported version " + std::to_string(h.version) + " (this build reads version 1)");
  if (h.token_bytes != 2 && h.token_bytes != 4)
    shard_error(path, "token_bytes is " + std::to_string(h.token_bytes) + ", expected 2 or 4");
  if (h.vocab_size == 0) shard_error(path, "vocab_size is 0");
  if (h.token_bytes == 2 && h.vocab_size > 65536)
    shard_error(path, "vocab_size " + std::to_string(h.vocab_size) + " does not fit 2-byte tokens");
  const uint64_t body = file_bytes - kShardHeaderBytes;
  if (h.num_tokens > body / h.token_bytes)
    shard_error(path, "truncated: header says " + std::to_string(h.num_tokens) + " tokens (" +
                          std::to_string(h.num_tokens * h.token_bytes) + " bytes) but only " + std::to_string(body) +
                          " bytes follow the header");
  if (body != h.num_tokens * h.token_bytes)
    shard_error(path, std::to_string(body - h.num_tokens * h.token_bytes) + " unexpected bytes after the " +
                          std::to_string(h.num_tokens) + " tokens the header announces");
  return h;
}

// Streams tokens into a shard file; the header (count, checksum) is filled in at commit.
class ShardStream {
 public:
  ShardStream(const std::string& path, int token_bytes, uint32_t vocab_size)
      : file_(path), token_bytes_(token_bytes), vocab_size_(vocab_size) {
    if (token_bytes != 2 && token_bytes != 4)
      throw std::invalid_argument("write_shard " + path + ": token_bytes must be 2 or 4, got " + std::to_string(token_bytes));
    if (vocab_size == 0 || (token_bytes == 2 && vocab_size > 65536))
      throw std::invalid_argument("write_shard " + path + ": vocab_size " + std::to_string(vocab_size) +
                                  " does not fit " + std::to_string(token_bytes) + "-byte tokens");
    uint8_t zeros[kShardHeaderBytes] = {};
    file_.write(zeros, sizeof zeros);
  }

  void append(std::span<const int32_t> tokens) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      int32_t t = tokens[i];
      if (t < 0 || uint32_t(t) >= vocab_size_)
        throw std::invalid_argument("write_shard " + file_.path() + ": token " + std::to_string(t) + " at index " +
                                    std::to_string(num_tokens_ + i) + " is outside [0, " + std::to_string(vocab_size_) + ")");
      if (token_bytes_ == 2) {
        uint16_t v = uint16_t(t);
        buf_.insert(buf_.end(), reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + 2);
      } else {
        uint32_t v = uint32_t(t);
        buf_.insert(buf_.end(), reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + 4);
      }
      if (buf_.size() >= (1u << 20)) flush();
    }
    num_tokens_ += tokens.size();
  }
  uint64_t num_tokens() const { return num_tokens_; }

  void commit(uint64_t num_documents) {
    flush();
    uint8_t h[kShardHeaderBytes] = {};
    std::memcpy(h, kShardMagic, 8);
    uint32_t version = kShardVersion, tb = uint32_t(token_bytes_);
    std::memcpy(h + 8, &version, 4);
    std::memcpy(h + 12, &tb, 4);
    std::memcpy(h + 16, &num_tokens_, 8);
    std::memcpy(h + 24, &num_documents, 8);
    std::memcpy(h + 32, &checksum_, 8);
    std::memcpy(h + 40, &vocab_size_, 4);
    file_.pwrite(h, sizeof h, 0);
    file_.commit();
  }

 private:
  void flush() {
    checksum_ = fnv1a64(buf_.data(), buf_.size(), checksum_);
    file_.write(buf_.data(), buf_.size());
    buf_.clear();
  }
  AtomicFile file_;
  int token_bytes_;
  uint32_t vocab_size_;
  uint64_t num_tokens_ = 0, checksum_ = fnv1a64(nullptr, 0);
  std::vector<uint8_t> buf_;
};

}  // namespace

void write_shard(const std::string& path, std::span<const int32_t> tokens, int token_bytes, uint32_t vocab_size,
                 uint64_t num_documents) {
  ShardStream s(path, token_bytes, vocab_size);
  s.append(tokens);
  s.commit(num_documents);
}

// ---- reading -------------------------------------------------------------------------------

ShardHeader read_shard_header(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) shard_error(path, std::string("cannot open (") + std::strerror(errno) + ")");
  struct stat st {};
  uint8_t h[kShardHeaderBytes] = {};
  bool ok = ::fstat(fd, &st) == 0;
  ssize_t got = ok ? ::pread(fd, h, sizeof h, 0) : -1;
  ::close(fd);
  if (!ok || got < 0) shard_error(path, "cannot read");
  return parse_header(h, uint64_t(st.st_size), path);
}

TokenShard::TokenShard(const std::string& path, bool verify_checksum) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) shard_error(path, std::string("cannot open (") + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    shard_error(path, "cannot stat");
  }
  map_bytes_ = size_t(st.st_size);
  if (map_bytes_ > 0) {
    void* m = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      shard_error(path, std::string("cannot mmap (") + std::strerror(errno) + ")");
    }
    map_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  try {
    header_ = parse_header(map_, map_bytes_, path);
    if (verify_checksum) {
      const uint8_t* body = map_ + kShardHeaderBytes;
      const uint64_t n = header_.num_tokens;
      uint64_t sum = fnv1a64(body, n * header_.token_bytes);
      if (sum != header_.checksum)
        shard_error(path, "checksum mismatch (header " + std::to_string(header_.checksum) + ", data " +
                              std::to_string(sum) + "): the file is corrupt");
      for (uint64_t i = 0; i < n; ++i) {
        uint32_t t = header_.token_bytes == 2 ? load_le<uint16_t>(body + 2 * i) : load_le<uint32_t>(body + 4 * i);
        if (t >= header_.vocab_size)
          shard_error(path, "token " + std::to_string(t) + " at index " + std::to_string(i) + " is >= vocab_size " +
                                std::to_string(header_.vocab_size));
      }
    }
  } catch (...) {
    release();
    throw;
  }
}

TokenShard::~TokenShard() { release(); }

void TokenShard::release() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), header_(o.header_), map_(o.map_), map_bytes_(o.map_bytes_) {
  o.map_ = nullptr;
  o.map_bytes_ = 0;
}

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    header_ = o.header_;
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    o.map_ = nullptr;
    o.map_bytes_ = 0;
  }
  return *this;
}

uint32_t TokenShard::token(int64_t i) const {
  if (i < 0 || i >= size())
    throw std::out_of_range("token shard " + path_ + ": index " + std::to_string(i) + " outside [0, " +
                            std::to_string(size()) + ")");
  const uint8_t* body = map_ + kShardHeaderBytes;
  return header_.token_bytes == 2 ? load_le<uint16_t>(body + 2 * i) : load_le<uint32_t>(body + 4 * i);
}

void TokenShard::read(int64_t begin, int64_t count, int64_t* out) const {
  if (begin < 0 || count < 0 || begin + count > size())
    throw std::out_of_range("token shard " + path_ + ": window [" + std::to_string(begin) + ", " +
                            std::to_string(begin + count) + ") outside [0, " + std::to_string(size()) + ")");
  const uint8_t* body = map_ + kShardHeaderBytes;
  uint32_t bad = 0;
  if (header_.token_bytes == 2) {
    for (int64_t i = 0; i < count; ++i) out[i] = load_le<uint16_t>(body + 2 * (begin + i));
  } else {
    for (int64_t i = 0; i < count; ++i) out[i] = load_le<uint32_t>(body + 4 * (begin + i));
  }
  for (int64_t i = 0; i < count; ++i) bad |= uint32_t(out[i] >= int64_t(header_.vocab_size));
  if (bad)
    for (int64_t i = 0; i < count; ++i)
      if (out[i] >= int64_t(header_.vocab_size))
        shard_error(path_, "token " + std::to_string(out[i]) + " at index " + std::to_string(begin + i) +
                               " is >= vocab_size " + std::to_string(header_.vocab_size));
}

// ---- prepare -------------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    auto st = fs::status(in, ec);
    if (ec || !fs::exists(st)) throw std::runtime_error("input " + in + " does not exist");
    if (fs::is_directory(st)) {
      std::vector<std::string> found;
      for (auto& e : fs::recursive_directory_iterator(in))
        if (e.is_regular_file()) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw std::runtime_error("input directory " + in + " holds no files");
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(in);
    }
  }
  return files;
}

bool is_jsonl(const std::string& path) {
  return path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
}

// Calls f(document) for each non-empty document of the inputs, in order, while f returns true.
template <class F> void for_each_document(const std::vector<std::string>& files, const PrepareOptions& opt, F&& f) {
  for (const auto& path : files) {
    const std::string data = read_file(path);
    if (is_jsonl(path)) {
      size_t line_no = 0;
      for (size_t pos = 0; pos < data.size();) {
        size_t end = data.find('\n', pos);
        if (end == std::string::npos) end = data.size();
        std::string_view line(data.data() + pos, end - pos);
        pos = end + 1;
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        const std::string where = path + ":" + std::to_string(line_no) + ": ";
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
          throw std::runtime_error(where + "not valid JSON (" + e.what() + ")");
        }
        if (!j.is_object()) throw std::runtime_error(where + "not a JSON object");
        auto it = j.find(opt.text_field);
        if (it == j.end()) throw std::runtime_error(where + "no field \"" + opt.text_field + "\"");
        if (!it->is_string()) throw std::runtime_error(where + "field \"" + opt.text_field + "\" is not a string");
        const auto& text = it->get_ref<const std::string&>();
        if (!text.empty() && !f(std::string_view(text))) return;
      }
    } else if (opt.lines) {
      for (size_t pos = 0; pos < data.size();) {
        size_t end = data.find('\n', pos);
        if (end == std::string::npos) end = data.size();
        std::string_view line(data.data() + pos, end - pos);
        pos = end + 1;
        if (!line.empty() && !f(line)) return;
      }
    } else if (!data.empty() && !f(std::string_view(data))) {
      return;
    }
  }
}

// Writes one split's shards: prefix_000.bin, prefix_001.bin, ... of at most max_tokens each.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string prefix, int token_bytes, uint32_t vocab, int64_t max_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), token_bytes_(token_bytes), vocab_(vocab), max_(max_tokens) {}

  // Appends one document's tokens (its eos included) to the split.
  void add_document(std::span<const int32_t> tokens) {
    while (!tokens.empty()) {
      if (!cur_) open_next();
      size_t take = std::min<size_t>(tokens.size(), size_t(max_ - int64_t(cur_->num_tokens())));
      cur_->append(tokens.first(take));
      tokens = tokens.subspan(take);
      if (tokens.empty()) ++docs_in_cur_;  // the document's eos landed here
      if (int64_t(cur_->num_tokens()) == max_) close();
    }
    ++stats.documents;
  }
  void finish() { close(); }
  SplitStats stats;

 private:
  void open_next() {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%03zu.bin", prefix_.c_str(), stats.shards.size());
    stats.shards.push_back(name);
    cur_ = std::make_unique<ShardStream>(dir_ + "/" + name, token_bytes_, vocab_);
    docs_in_cur_ = 0;
  }
  void close() {
    if (!cur_) return;
    stats.tokens += int64_t(cur_->num_tokens());
    cur_->commit(docs_in_cur_);
    cur_.reset();
  }
  std::string dir_, prefix_;
  int token_bytes_;
  uint32_t vocab_;
  int64_t max_;
  std::unique_ptr<ShardStream> cur_;
  uint64_t docs_in_cur_ = 0;
};

nlohmann::ordered_json split_json(const SplitStats& s) {
  return {{"documents", s.documents}, {"tokens", s.tokens}, {"shards", s.shards}};
}

}  // namespace

PrepareResult prepare_shards(const PrepareOptions& opt) {
  if (opt.inputs.empty()) throw std::invalid_argument("prepare_shards: no input files");
  if (opt.output_dir.empty()) throw std::invalid_argument("prepare_shards: no output directory");
  if (!(opt.val_fraction >= 0.0 && opt.val_fraction <= 1.0))
    throw std::invalid_argument("prepare_shards: val_fraction must be in [0, 1], got " + std::to_string(opt.val_fraction));
  if (opt.max_tokens_per_shard <= 0) throw std::invalid_argument("prepare_shards: max_tokens_per_shard must be positive");
  if (opt.text_field.empty()) throw std::invalid_argument("prepare_shards: text_field is empty");
  const std::vector<std::string> files = expand_inputs(opt.inputs);
  const std::string& out = opt.output_dir;
  {
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec || !fs::is_directory(out)) throw std::runtime_error("cannot create output directory " + out + ": " + ec.message());
    fs::remove(out + "/meta.json", ec);  // a half-written directory has no meta.json
  }

  // The tokenizer.
  BpeTokenizer tok;
  const std::vector<std::string> specials = {kBosToken, kEosToken, kPadToken};
  std::string tokenizer_source = "byte-level";
  if (!opt.tokenizer_path.empty()) {
    tok = BpeTokenizer::load(opt.tokenizer_path);
    tokenizer_source = opt.tokenizer_path;
  } else if (opt.vocab_size > 0) {
    std::vector<std::string> texts;
    int64_t bytes = 0;
    for_each_document(files, opt, [&](std::string_view doc) {
      texts.emplace_back(doc);
      bytes += int64_t(doc.size());
      return bytes < opt.train_max_bytes;
    });
    tok = BpeTokenizer::train(texts, opt.vocab_size, specials);
    tokenizer_source = "trained";
  } else {
    tok = BpeTokenizer::byte_level(specials);
  }
  const int32_t eos = tok.eos_id();
  if (eos < 0)
    throw std::runtime_error("tokenizer " + tokenizer_source + " has no end-of-document token (" + kEosToken +
                             " or <|endoftext|>)");
  const std::string tok_out = out + "/tokenizer.json";
  std::error_code ec;
  if (!opt.tokenizer_path.empty() && fs::equivalent(opt.tokenizer_path, tok_out, ec)) {
    // already in place
  } else if (!opt.tokenizer_path.empty()) {
    atomic_write_file(tok_out, read_file(opt.tokenizer_path));
  } else {
    tok.save(tok_out);
  }

  PrepareResult res;
  res.vocab_size = tok.vocab_size();
  res.token_bytes = token_bytes_for_vocab(res.vocab_size);
  SplitWriter train(out, "train", res.token_bytes, uint32_t(res.vocab_size), opt.max_tokens_per_shard);
  SplitWriter val(out, "val", res.token_bytes, uint32_t(res.vocab_size), opt.max_tokens_per_shard);

  // Documents are tokenized in parallel batches and written in input order.
  const uint64_t split_key = runtime::mix64(opt.seed);
  uint64_t doc_index = 0;
  std::vector<std::string> batch;
  int64_t batch_bytes = 0;
  auto flush = [&] {
    std::vector<std::vector<int32_t>> ids(batch.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < int64_t(batch.size()); ++i) {
      ids[i] = tok.encode(batch[i], /*parse_special=*/false);
      ids[i].push_back(eos);
    }
    for (auto& d : ids) {
      double u = double(runtime::mix64(split_key ^ doc_index) >> 11) * (1.0 / 9007199254740992.0);
      (u < opt.val_fraction ? val : train).add_document(d);
      ++doc_index;
    }
    batch.clear();
    batch_bytes = 0;
  };
  for_each_document(files, opt, [&](std::string_view doc) {
    batch.emplace_back(doc);
    batch_bytes += int64_t(doc.size());
    if (batch_bytes >= (int64_t(64) << 20) || batch.size() >= 8192) flush();
    return true;
  });
  flush();
  train.finish();
  val.finish();
  res.train = train.stats;
  res.val = val.stats;

  nlohmann::ordered_json meta = {{"format", "LOOMTOK1"},
                                 {"tokenizer", "tokenizer.json"},
                                 {"tokenizer_source", tokenizer_source},
                                 {"vocab_size", res.vocab_size},
                                 {"token_bytes", res.token_bytes},
                                 {"eos_id", eos},
                                 {"val_fraction", opt.val_fraction},
                                 {"seed", opt.seed},
                                 {"max_tokens_per_shard", opt.max_tokens_per_shard},
                                 {"inputs", files},
                                 {"train", split_json(res.train)},
                                 {"val", split_json(res.val)}};
  atomic_write_file(out + "/meta.json", meta.dump(2) + "\n");

  // Remove shards an earlier run left behind with higher numbers.
  static const std::regex shard_name(R"((train|val)_[0-9]+\.bin)");
  for (auto& e : fs::directory_iterator(out)) {
    std::string name = e.path().filename().string();
    if (!std::regex_match(name, shard_name)) continue;
    const auto& keep = name[0] == 't' ? res.train.shards : res.val.shards;
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) fs::remove(e.path(), ec);
  }
  return res;
}

std::vector<std::string> prepared_shards(const std::string& dir, const std::string& split) {
  const std::string path = dir + "/meta.json";
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(path + ": invalid JSON (" + e.what() + ")");
  }
  if (!meta.is_object() || !meta.contains(split) || !meta[split].is_object() || !meta[split].contains("shards") ||
      !meta[split]["shards"].is_array())
    throw std::runtime_error(path + ": no \"" + split + "\".\"shards\" list");
  std::vector<std::string> paths;
  for (const auto& s : meta[split]["shards"]) {
    if (!s.is_string()) throw std::runtime_error(path + ": \"" + split + "\".\"shards\" holds a non-string");
    paths.push_back(dir + "/" + s.get<std::string>());
  }
  return paths;
}

}  // namespace loom::data
