// test_shards.cpp: token shard files (write, map, validate, errors) and prepare_shards on
// generated text and JSONL inputs.
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/io.h"
#include "data/shards.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using namespace loom::data;

namespace {

struct TempDir : loom::testing::TempDir {
  TempDir() : loom::testing::TempDir("loom_shards") {}
};

void write_text(const std::string& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary);
  f << s;
}

void patch(const std::string& path, uint64_t offset, const void* bytes, size_t n) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(std::streamoff(offset));
  f.write(static_cast<const char*>(bytes), std::streamsize(n));
}

// Expects `fn` to throw std::runtime_error whose message contains every needle.
template <class F> void expect_error(F&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

std::vector<int32_t> all_tokens(const std::vector<std::string>& paths) {
  std::vector<int32_t> out;
  for (const auto& p : paths) {
    TokenShard s(p);
    for (int64_t i = 0; i < s.size(); ++i) out.push_back(int32_t(s.token(i)));
  }
  return out;
}

// Splits a token stream at eos into decoded documents.
std::vector<std::string> documents(const BpeTokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<std::string> docs;
  std::vector<int32_t> cur;
  for (int32_t id : ids) {
    if (id == tok.eos_id()) {
      docs.push_back(tok.decode(cur));
      cur.clear();
    } else {
      cur.push_back(id);
    }
  }
  EXPECT_TRUE(cur.empty()) << "the stream does not end with eos";
  return docs;
}

}  // namespace

TEST(Shards, WriteAndReadBothWidths) {
  TempDir dir;
  for (int tb : {2, 4}) {
    const uint32_t vocab = tb == 2 ? 65536 : 100000;
    std::vector<int32_t> toks;
    for (int i = 0; i < 1000; ++i) toks.push_back(int32_t((i * 7919) % vocab));
    toks.push_back(int32_t(vocab - 1));
    const std::string path = dir / ("s" + std::to_string(tb) + ".bin");
    write_shard(path, toks, tb, vocab, 3);
    EXPECT_EQ(fs::file_size(path), 64u + toks.size() * tb);
    TokenShard s(path);
    EXPECT_EQ(s.size(), int64_t(toks.size()));
    EXPECT_EQ(s.vocab_size(), vocab);
    EXPECT_EQ(s.num_documents(), 3);
    EXPECT_EQ(s.header().token_bytes, uint32_t(tb));
    for (size_t i = 0; i < toks.size(); ++i) ASSERT_EQ(s.token(int64_t(i)), uint32_t(toks[i]));
    std::vector<int64_t> win(10);
    s.read(990, 10, win.data());
    for (int i = 0; i < 10; ++i) EXPECT_EQ(win[i], toks[990 + i]);
    EXPECT_THROW(s.read(995, 10, win.data()), std::out_of_range);
    EXPECT_THROW(s.token(-1), std::out_of_range);
    ShardHeader h = read_shard_header(path);
    EXPECT_EQ(h.num_tokens, toks.size());
    EXPECT_EQ(h.checksum, fnv1a64(loom::data::read_file(path).data() + 64, toks.size() * tb));
    // Moving keeps the mapping valid.
    TokenShard moved = std::move(s);
    EXPECT_EQ(moved.token(5), uint32_t(toks[5]));
  }
  // An empty shard is valid.
  write_shard(dir / "empty.bin", {}, 2, 10, 0);
  EXPECT_EQ(TokenShard(dir / "empty.bin").size(), 0);
  EXPECT_EQ(token_bytes_for_vocab(65536), 2);
  EXPECT_EQ(token_bytes_for_vocab(65537), 4);
}

TEST(Shards, HeaderLayoutIsAsDocumented) {
  TempDir dir;
  write_shard(dir / "h.bin", std::vector<int32_t>{1, 2, 3}, 2, 259, 1);
  std::string b = loom::data::read_file(dir / "h.bin");
  ASSERT_EQ(b.size(), 70u);
  EXPECT_EQ(b.substr(0, 8), "LOOMTOK1");
  auto u32 = [&](size_t o) { uint32_t v; std::memcpy(&v, b.data() + o, 4); return v; };
  auto u64 = [&](size_t o) { uint64_t v; std::memcpy(&v, b.data() + o, 8); return v; };
  EXPECT_EQ(u32(8), 1u);
  EXPECT_EQ(u32(12), 2u);
  EXPECT_EQ(u64(16), 3u);
  EXPECT_EQ(u64(24), 1u);
  EXPECT_EQ(u64(32), fnv1a64(b.data() + 64, 6));
  EXPECT_EQ(u32(40), 259u);
  for (size_t i = 44; i < 64; ++i) EXPECT_EQ(b[i], 0);
  EXPECT_EQ(uint8_t(b[64]), 1);  // little-endian uint16 tokens
  EXPECT_EQ(uint8_t(b[65]), 0);
  // FNV-1a 64 reference values.
  EXPECT_EQ(fnv1a64("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
}

TEST(Shards, WriteRejectsBadTokens) {
  TempDir dir;
  EXPECT_THROW(write_shard(dir / "a.bin", std::vector<int32_t>{1, 300}, 2, 259, 1), std::invalid_argument);
  EXPECT_THROW(write_shard(dir / "b.bin", std::vector<int32_t>{-1}, 2, 259, 1), std::invalid_argument);
  EXPECT_THROW(write_shard(dir / "c.bin", std::vector<int32_t>{1}, 3, 259, 1), std::invalid_argument);
  EXPECT_THROW(write_shard(dir / "d.bin", std::vector<int32_t>{1}, 2, 70000, 1), std::invalid_argument);
  EXPECT_FALSE(fs::exists(dir / "a.bin"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()), 0);  // no temporaries left
}

TEST(Shards, CorruptFilesGiveErrorsNamingTheFileAndProblem) {
  TempDir dir;
  std::vector<int32_t> toks(100);
  for (int i = 0; i < 100; ++i) toks[i] = i;
  const std::string good = dir / "good.bin";
  write_shard(good, toks, 2, 1000, 1);
  auto copy = [&](const std::string& name) {
    fs::copy_file(good, dir / name);
    return dir / name;
  };

  std::string p = copy("magic.bin");
  patch(p, 0, "X", 1);
  expect_error([&] { TokenShard s(p); }, {p, "bad magic"});

  p = copy("trunc.bin");
  fs::resize_file(p, 64 + 150);
  expect_error([&] { TokenShard s(p); }, {p, "truncated"});
  expect_error([&] { read_shard_header(p); }, {p, "truncated"});

  p = copy("tiny.bin");
  fs::resize_file(p, 20);
  expect_error([&] { TokenShard s(p); }, {p, "truncated", "header"});

  p = copy("long.bin");
  {
    std::ofstream f(p, std::ios::binary | std::ios::app);
    f << "xx";
  }
  expect_error([&] { TokenShard s(p); }, {p, "unexpected bytes"});

  p = copy("checksum.bin");
  uint16_t v = 7;
  patch(p, 64 + 2 * 50, &v, 2);
  expect_error([&] { TokenShard s(p); }, {p, "checksum mismatch"});
  TokenShard unverified(p, /*verify_checksum=*/false);  // still opens without verification
  EXPECT_EQ(unverified.token(50), 7u);

  p = copy("version.bin");
  uint32_t ver = 9;
  patch(p, 8, &ver, 4);
  expect_error([&] { TokenShard s(p); }, {p, "version 9"});

  // A token >= vocab_size, with a correct checksum: found by the verifying pass, and by
  // window reads when verification is off.
  p = copy("vocab.bin");
  uint32_t small_vocab = 60;
  patch(p, 40, &small_vocab, 4);
  expect_error([&] { TokenShard s(p); }, {p, "token 60", ">= vocab_size 60"});
  TokenShard lazy(p, false);
  std::vector<int64_t> win(10);
  EXPECT_NO_THROW(lazy.read(0, 10, win.data()));
  expect_error([&] { lazy.read(55, 10, win.data()); }, {p, "token 60"});

  expect_error([&] { TokenShard s(dir / "nope.bin"); }, {dir / "nope.bin", "cannot open"});
}

TEST(Prepare, TextFilesToShardsWithValidationSplit) {
  TempDir dir;
  fs::create_directories(dir / "in");
  std::vector<std::string> docs;
  for (int f = 0; f < 3; ++f) {
    std::string body;
    for (int l = 0; l < 80; ++l) {
      std::string line = "document " + std::to_string(f) + "." + std::to_string(l) + ": the fox <|eos|> jumps \xFF";
      docs.push_back(line);
      body += line + "\n";
    }
    write_text(dir / ("in/part" + std::to_string(f) + ".txt"), body);
  }
  PrepareOptions opt;
  opt.inputs = {dir / "in"};
  opt.output_dir = dir / "out";
  opt.lines = true;
  opt.val_fraction = 0.25;
  opt.max_tokens_per_shard = 1000;
  PrepareResult r = prepare_shards(opt);

  EXPECT_EQ(r.vocab_size, 259);  // byte-level default
  EXPECT_EQ(r.token_bytes, 2);
  EXPECT_EQ(r.train.documents + r.val.documents, 240);
  EXPECT_GT(r.val.documents, 30);
  EXPECT_LT(r.val.documents, 100);
  EXPECT_GT(r.train.shards.size(), 1u);
  auto tok = BpeTokenizer::load(dir / "out/tokenizer.json");
  auto train_paths = prepared_shards(dir / "out", "train");
  auto val_paths = prepared_shards(dir / "out", "val");
  ASSERT_EQ(train_paths.size(), r.train.shards.size());
  int64_t docs_in_headers = 0;
  for (size_t i = 0; i < train_paths.size(); ++i) {
    TokenShard s(train_paths[i]);
    EXPECT_LE(s.size(), 1000);
    if (i + 1 < train_paths.size()) {
      EXPECT_EQ(s.size(), 1000);
    }
    docs_in_headers += s.num_documents();
  }
  EXPECT_EQ(docs_in_headers, r.train.documents);

  // Every document comes back exactly once, in order within its split, special-token text
  // included literally.
  auto train_docs = documents(tok, all_tokens(train_paths));
  auto val_docs = documents(tok, all_tokens(val_paths));
  EXPECT_EQ(int64_t(all_tokens(train_paths).size()), r.train.tokens);
  std::vector<std::string> merged;
  size_t ti = 0, vi = 0;
  for (const auto& d : docs) {
    if (ti < train_docs.size() && train_docs[ti] == d) merged.push_back(train_docs[ti++]);
    else if (vi < val_docs.size() && val_docs[vi] == d) merged.push_back(val_docs[vi++]);
  }
  EXPECT_EQ(merged, docs);
  EXPECT_EQ(ti, train_docs.size());
  EXPECT_EQ(vi, val_docs.size());

  auto meta = nlohmann::json::parse(loom::data::read_file(dir / "out/meta.json"));
  EXPECT_EQ(meta["train"]["documents"], r.train.documents);
  EXPECT_EQ(meta["val"]["tokens"], r.val.tokens);
  EXPECT_EQ(meta["eos_id"], tok.eos_id());

  // The split is a pure function of (seed, document index): a second run is identical, and
  // a bigger shard limit drops the now-stale higher-numbered shards.
  opt.max_tokens_per_shard = 1 << 20;
  PrepareResult r2 = prepare_shards(opt);
  EXPECT_EQ(r2.val.documents, r.val.documents);
  EXPECT_EQ(r2.train.shards.size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "out/train_001.bin"));
  EXPECT_EQ(documents(tok, all_tokens(prepared_shards(dir / "out", "train"))), train_docs);
}

TEST(Prepare, WholeFilesAreDocumentsAndTrainedTokenizer) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 50; ++i) text += "the quick brown fox jumps over the lazy dog again and again. ";
  write_text(dir / "a.txt", text);
  write_text(dir / "b.txt", "short second document\nwith two lines");
  write_text(dir / "empty.txt", "");
  PrepareOptions opt;
  opt.inputs = {dir / "a.txt", dir / "b.txt", dir / "empty.txt"};
  opt.output_dir = dir / "out";
  opt.vocab_size = 300;
  opt.val_fraction = 0.0;
  PrepareResult r = prepare_shards(opt);
  EXPECT_EQ(r.train.documents, 2);  // the empty file holds no document
  EXPECT_EQ(r.val.documents, 0);
  EXPECT_TRUE(r.val.shards.empty());
  auto tok = BpeTokenizer::load(dir / "out/tokenizer.json");
  EXPECT_LE(tok.vocab_size(), 300);  // stops early once every word is one token
  EXPECT_GT(tok.vocab_size(), 280);
  EXPECT_LT(r.train.tokens, int64_t(text.size()) / 2);  // merges compress
  auto docs = documents(tok, all_tokens(prepared_shards(dir / "out", "train")));
  EXPECT_EQ(docs, (std::vector<std::string>{text, "short second document\nwith two lines"}));

  // A given tokenizer is copied into the output.
  opt.vocab_size = 0;
  opt.tokenizer_path = dir / "out/tokenizer.json";
  opt.output_dir = dir / "out2";
  PrepareResult r2 = prepare_shards(opt);
  EXPECT_EQ(r2.train.tokens, r.train.tokens);
  EXPECT_EQ(loom::data::read_file(dir / "out2/tokenizer.json"), loom::data::read_file(dir / "out/tokenizer.json"));
}

TEST(Prepare, JsonlInputsUseTheConfiguredField) {
  TempDir dir;
  write_text(dir / "d.jsonl",
             "{\"text\": \"first doc\", \"id\": 1}\n"
             "\n"
             "{\"text\": \"second \\u00e9 doc\"}\n"
             "{\"body\": \"other field\", \"text\": \"third\"}\n");
  PrepareOptions opt;
  opt.inputs = {dir / "d.jsonl"};
  opt.output_dir = dir / "out";
  opt.val_fraction = 0.0;
  PrepareResult r = prepare_shards(opt);
  auto tok = BpeTokenizer::load(dir / "out/tokenizer.json");
  EXPECT_EQ(documents(tok, all_tokens(prepared_shards(dir / "out", "train"))),
            (std::vector<std::string>{"first doc", "second \xC3\xA9 doc", "third"}));
  EXPECT_EQ(r.train.documents, 3);

  opt.text_field = "body";
  expect_error([&] { prepare_shards(opt); }, {dir / "d.jsonl:1", "no field \"body\""});
}

TEST(Prepare, MalformedJsonlNamesFileAndLine) {
  TempDir dir;
  write_text(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"fine\"}\n{\"text\": \"broken\n");
  PrepareOptions opt;
  opt.inputs = {dir / "bad.jsonl"};
  opt.output_dir = dir / "out";
  expect_error([&] { prepare_shards(opt); }, {dir / "bad.jsonl:3", "not valid JSON"});
  EXPECT_FALSE(fs::exists(dir / "out/meta.json"));

  write_text(dir / "notstr.jsonl", "{\"text\": \"ok\"}\n{\"text\": 5}\n");
  opt.inputs = {dir / "notstr.jsonl"};
  expect_error([&] { prepare_shards(opt); }, {dir / "notstr.jsonl:2", "not a string"});

  write_text(dir / "arr.jsonl", "[1, 2]\n");
  opt.inputs = {dir / "arr.jsonl"};
  expect_error([&] { prepare_shards(opt); }, {dir / "arr.jsonl:1", "not a JSON object"});

  opt.inputs = {dir / "missing.txt"};
  expect_error([&] { prepare_shards(opt); }, {dir / "missing.txt", "does not exist"});
  expect_error([&] { prepared_shards(dir / "nowhere", "train"); }, {"meta.json"});
}
