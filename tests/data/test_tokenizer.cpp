// test_tokenizer.cpp: byte-level BPE: chunking, lossless round trips, training, special
// tokens, tokenizer.json save/load, and agreement with a naive reference BPE.
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "data/io.h"
#include "data/tokenizer.h"
#include "runtime/rng.h"

namespace fs = std::filesystem;
using loom::data::BpeTokenizer;

namespace {

struct TempDir : loom::testing::TempDir {
  TempDir() : loom::testing::TempDir("loom_tok") {}
};

std::string random_bytes(uint64_t seed, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 4) {
    auto w = loom::runtime::philox4x32(seed, i, 7);
    for (size_t k = 0; k < 4 && i + k < n; ++k) s[i + k] = char(w[k] & 0xFF);
  }
  return s;
}

// A small English corpus with enough repetition for merges to pay off.
std::vector<std::string> english_corpus() {
  const char* sentences[] = {
      "The quick brown fox jumps over the lazy dog.",
      "A tokenizer splits text into tokens that a language model can read.",
      "Training a model takes data, time and a good deal of patience.",
      "The weather today is sunny with a chance of rain in the evening.",
      "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
      "In the beginning the training loss falls quickly, then it flattens out.",
      "Reading the documentation first saves a lot of time later on.",
      "Numbers like 482 and 397 add up to 879, which the model should learn.",
  };
  std::vector<std::string> texts;
  for (int rep = 0; rep < 30; ++rep) {
    std::string doc;
    for (int i = 0; i < 8; ++i) doc += std::string(sentences[(rep + i) % 8]) + (i % 3 == 2 ? "\n" : " ");
    texts.push_back(doc);
  }
  return texts;
}

const std::vector<std::string> kSpecials = {"<|bos|>", "<|eos|>", "<|pad|>"};

const BpeTokenizer& trained() {
  static const BpeTokenizer tok = BpeTokenizer::train(english_corpus(), 600, kSpecials);
  return tok;
}

std::vector<std::string> chunks(std::string_view s) {
  std::vector<std::string> out;
  for (auto c : loom::data::pretokenize(s)) out.emplace_back(c);
  return out;
}

}  // namespace

TEST(Pretokenize, FollowsTheChunkRules) {
  using V = std::vector<std::string>;
  EXPECT_EQ(chunks("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(chunks("482+397=879\n"), (V{"4", "8", "2", "+", "3", "9", "7", "=", "8", "7", "9", "\n"}));
  EXPECT_EQ(chunks("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(chunks("x, y!!"), (V{"x", ",", " y", "!!"}));
  EXPECT_EQ(chunks("a \"quoted\""), (V{"a", " \"", "quoted", "\""}));
  EXPECT_EQ(chunks("end  "), (V{"end", "  "}));
  EXPECT_EQ(chunks("x\n\ny"), (V{"x", "\n", "\n", "y"}));
  EXPECT_EQ(chunks("pi 314"), (V{"pi", " ", "3", "1", "4"}));
  EXPECT_EQ(chunks("caf\xC3\xA9 ok"), (V{"caf\xC3\xA9", " ok"}));  // UTF-8 stays inside the word
  EXPECT_TRUE(chunks("").empty());
  // Chunks always concatenate back to the input.
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::string s = random_bytes(seed, 300), joined;
    for (auto& c : chunks(s)) {
      EXPECT_FALSE(c.empty());
      joined += c;
    }
    EXPECT_EQ(joined, s);
  }
}

TEST(Tokenizer, ByteLevelRoundTripsArbitraryBytes) {
  BpeTokenizer tok = BpeTokenizer::byte_level(kSpecials);
  EXPECT_EQ(tok.vocab_size(), 259);
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  auto ids = tok.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(tok.decode(ids), all);
}

TEST(Tokenizer, TrainedRoundTripsRandomBytesAndInvalidUtf8) {
  const BpeTokenizer& tok = trained();
  std::vector<std::string> cases = {"", "\xFF\xFE\xFD", "\xC3", "\xC3(", "\xE2\x82", "\xF0\x28\x8C\x28",
                                    "abc\x80\x81 def\xC0\xAF", std::string("nul\0byte", 8),
                                    "The quick brown fox \xED\xA0\x80 jumps"};
  for (uint64_t seed = 0; seed < 50; ++seed) cases.push_back(random_bytes(seed, 1 + seed * 13));
  for (const auto& s : cases) {
    EXPECT_EQ(tok.decode(tok.encode(s, false)), s);
    EXPECT_EQ(tok.decode(tok.encode(s, true)), s);
  }
}

TEST(Tokenizer, TrainedMergesReduceTokenCount) {
  const BpeTokenizer& tok = trained();
  EXPECT_LE(tok.vocab_size(), 600);
  EXPECT_GT(tok.num_merges(), 100);
  const std::string held_out = "The lazy fox reads the documentation about training a language model today.";
  auto ids = tok.encode(held_out);
  EXPECT_LT(double(ids.size()), 0.5 * double(held_out.size())) << ids.size() << " tokens";
  EXPECT_EQ(tok.decode(ids), held_out);
  // Digits stay one token each, even though "482", "397", "879" occur 30 times.
  EXPECT_EQ(tok.encode("482397879").size(), 9u);
}

TEST(Tokenizer, TrainingIsDeterministic) {
  auto a = BpeTokenizer::train(english_corpus(), 400, kSpecials);
  auto b = BpeTokenizer::train(english_corpus(), 400, kSpecials);
  EXPECT_EQ(a.to_json(), b.to_json());
  EXPECT_EQ(a.vocab_size(), 400);
  // Special tokens sit right after the merges.
  EXPECT_EQ(a.bos_id(), 397);
  EXPECT_EQ(a.eos_id(), 398);
  EXPECT_EQ(a.pad_id(), 399);
}

TEST(Tokenizer, TrainingRejectsBadArguments) {
  EXPECT_THROW(BpeTokenizer::train({"abc"}, 258, kSpecials), std::invalid_argument);
  EXPECT_THROW(BpeTokenizer::train({"abc"}, 300, {"<a>", "<a>"}), std::invalid_argument);
  EXPECT_THROW(BpeTokenizer::train({"abc"}, 300, {""}), std::invalid_argument);
}

TEST(Tokenizer, SpecialTokensEncodeToSingleIds) {
  const BpeTokenizer& tok = trained();
  ASSERT_GE(tok.bos_id(), 0);
  ASSERT_GE(tok.eos_id(), 0);
  ASSERT_GE(tok.pad_id(), 0);
  EXPECT_EQ(tok.special_id("<|eos|>"), tok.eos_id());
  EXPECT_FALSE(tok.special_id("<|nope|>").has_value());
  const std::string text = "<|bos|>The fox<|eos|><|pad|>x<|eos|>";
  auto ids = tok.encode(text);
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(ids.back(), tok.eos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.eos_id()), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.pad_id()), 1);
  EXPECT_EQ(tok.decode(ids), text);
  // Without special parsing the same text is plain bytes.
  auto plain = tok.encode(text, false);
  for (int32_t id : plain) EXPECT_LT(id, tok.vocab_size() - 3);
  EXPECT_EQ(tok.decode(plain), text);
  EXPECT_THROW(tok.decode({tok.vocab_size()}), std::out_of_range);
  EXPECT_THROW(tok.decode({-1}), std::out_of_range);
}

TEST(Tokenizer, LongestSpecialWinsAtTheSamePosition) {
  auto tok = BpeTokenizer::byte_level({"<a>", "<a>b"});
  auto ids = tok.encode("x<a>by<a>");
  EXPECT_EQ(ids, (std::vector<int32_t>{'x', 257, 'y', 256}));
}

TEST(Tokenizer, MatchesNaiveReferenceBpe) {
  // Reference: per chunk, repeatedly merge the lowest-ranked adjacent pair, all of its
  // occurrences left to right.
  const BpeTokenizer& tok = trained();
  auto j = nlohmann::json::parse(tok.to_json());
  std::map<std::pair<int32_t, int32_t>, int32_t> rank;
  std::map<std::string, int32_t> id_of;
  for (int32_t id = 0; id < tok.vocab_size() - 3; ++id) id_of[tok.token_bytes(id)] = id;
  // Merge ranks from the JSON: decode the two sides through the vocab ids.
  std::map<std::string, int32_t> vocab;
  for (auto& [k, v] : j["model"]["vocab"].items()) vocab[k] = v.get<int32_t>();
  int32_t r = 0;
  for (auto& m : j["model"]["merges"]) {
    std::string s = m.get<std::string>();
    size_t sp = s.find(' ');
    rank[{vocab.at(s.substr(0, sp)), vocab.at(s.substr(sp + 1))}] = r++;
  }
  auto naive = [&](const std::string& text) {
    std::vector<int32_t> out;
    for (auto chunk : loom::data::pretokenize(text)) {
      std::vector<int32_t> ids;
      for (unsigned char c : chunk) ids.push_back(c);
      while (true) {
        int best = -1;
        std::pair<int32_t, int32_t> bp;
        for (size_t i = 0; i + 1 < ids.size(); ++i) {
          auto it = rank.find({ids[i], ids[i + 1]});
          if (it != rank.end() && (best < 0 || it->second < best)) best = it->second, bp = it->first;
        }
        if (best < 0) break;
        int32_t merged = id_of.at(tok.token_bytes(bp.first) + tok.token_bytes(bp.second));
        std::vector<int32_t> next;
        for (size_t i = 0; i < ids.size(); ++i) {
          if (i + 1 < ids.size() && ids[i] == bp.first && ids[i + 1] == bp.second) next.push_back(merged), ++i;
          else next.push_back(ids[i]);
        }
        ids = next;
      }
      out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  };
  std::vector<std::string> texts = english_corpus();
  texts.push_back("sssseeeaaa shellsshells  the the   thethe");
  for (uint64_t seed = 0; seed < 10; ++seed) texts.push_back(random_bytes(seed, 200));
  for (const auto& t : texts) EXPECT_EQ(tok.encode(t, false), naive(t));
}

TEST(Tokenizer, SaveLoadRoundTripGivesIdenticalEncodings) {
  TempDir dir;
  const BpeTokenizer& tok = trained();
  tok.save(dir / "tokenizer.json");
  auto back = BpeTokenizer::load(dir / "tokenizer.json");
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  EXPECT_EQ(back.num_merges(), tok.num_merges());
  EXPECT_EQ(back.bos_id(), tok.bos_id());
  EXPECT_EQ(back.eos_id(), tok.eos_id());
  EXPECT_EQ(back.pad_id(), tok.pad_id());
  auto texts = english_corpus();
  texts.push_back("<|bos|>unseen words: zebra quantum 12345<|eos|>");
  texts.push_back(random_bytes(3, 500));
  for (const auto& t : texts) EXPECT_EQ(back.encode(t), tok.encode(t));
  EXPECT_EQ(back.to_json(), tok.to_json());
  // No temporary file is left behind.
  int files = 0;
  for (auto& e : fs::directory_iterator(dir.path)) ++files, (void)e;
  EXPECT_EQ(files, 1);
}

TEST(Tokenizer, JsonHasTheHuggingFaceStructure) {
  const BpeTokenizer& tok = trained();
  auto j = nlohmann::json::parse(tok.to_json());
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["model"]["vocab"].size(), size_t(tok.vocab_size() - 3));
  EXPECT_EQ(j["model"]["merges"].size(), size_t(tok.num_merges()));
  EXPECT_EQ(j["model"]["vocab"]["\xC4\xA0"], 32);  // "Ġ" is the space byte
  EXPECT_EQ(j["model"]["vocab"]["a"], 'a');
  EXPECT_EQ(j["model"]["vocab"]["\xC4\x80"], 0);  // "Ā" is byte 0
  for (auto& m : j["model"]["merges"]) {
    ASSERT_TRUE(m.is_string());
    std::string s = m.get<std::string>();
    EXPECT_EQ(std::count(s.begin(), s.end(), ' '), 1) << s;
  }
  ASSERT_EQ(j["added_tokens"].size(), 3u);
  EXPECT_EQ(j["added_tokens"][0]["content"], "<|bos|>");
  EXPECT_EQ(j["added_tokens"][0]["id"], tok.bos_id());
  EXPECT_EQ(j["added_tokens"][0]["special"], true);
  const auto& pre = j["pre_tokenizer"];
  EXPECT_EQ(pre["type"], "Sequence");
  EXPECT_EQ(pre["pretokenizers"][0]["type"], "Split");
  EXPECT_EQ(pre["pretokenizers"][1]["type"], "ByteLevel");
  EXPECT_EQ(pre["pretokenizers"][1]["add_prefix_space"], false);
  EXPECT_EQ(j["decoder"]["type"], "ByteLevel");
  // The GPT-2 alphabet is a bijection onto 256 distinct code points.
  std::set<std::string> seen(loom::data::byte_to_unicode().begin(), loom::data::byte_to_unicode().end());
  EXPECT_EQ(seen.size(), 256u);
}

TEST(Tokenizer, LoadAcceptsMergesAsArrays) {
  TempDir dir;
  const BpeTokenizer& tok = trained();
  auto j = nlohmann::json::parse(tok.to_json());
  nlohmann::json merges = nlohmann::json::array();
  for (auto& m : j["model"]["merges"]) {
    std::string s = m.get<std::string>();
    size_t sp = s.find(' ');
    merges.push_back({s.substr(0, sp), s.substr(sp + 1)});
  }
  j["model"]["merges"] = merges;
  loom::data::atomic_write_file(dir / "arrays.json", j.dump());
  auto back = BpeTokenizer::load(dir / "arrays.json");
  for (const auto& t : english_corpus()) EXPECT_EQ(back.encode(t), tok.encode(t));
}

TEST(Tokenizer, MalformedFilesGiveErrorsNamingTheFile) {
  TempDir dir;
  auto good = nlohmann::json::parse(trained().to_json());
  auto expect_error = [&](const std::string& name, const std::string& content, const std::string& needle) {
    const std::string path = dir / name;
    loom::data::atomic_write_file(path, content);
    try {
      BpeTokenizer::load(path);
      ADD_FAILURE() << name << ": no error";
    } catch (const std::runtime_error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  expect_error("truncated.json", trained().to_json().substr(0, 500), "invalid JSON");
  expect_error("array.json", "[1, 2]", "not a JSON object");
  auto j = good;
  j["model"]["type"] = "WordPiece";
  expect_error("wordpiece.json", j.dump(), "BPE");
  j = good;
  j["model"].erase("vocab");
  expect_error("novocab.json", j.dump(), "model.vocab");
  j = good;
  j["model"]["merges"].push_back("zzzzqq xx");
  expect_error("badmerge.json", j.dump(), "model.merges[");
  j = good;
  j["model"]["merges"][0] = 17;
  expect_error("mergetype.json", j.dump(), "model.merges[0]");
  j = good;
  j["model"]["vocab"].erase("a");
  expect_error("nobyte.json", j.dump(), "");
  j = good;
  j["model"]["vocab"]["\xE2\x98\x83"] = 9999;  // not in the byte alphabet
  expect_error("alphabet.json", j.dump(), "byte-level");
  try {
    BpeTokenizer::load(dir / "missing.json");
    ADD_FAILURE() << "no error for a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.json"), std::string::npos);
  }
}

TEST(Tokenizer, EncodesQuickly) {
  const BpeTokenizer& tok = trained();
  std::string big;
  for (const auto& t : english_corpus()) big += t;
  while (big.size() < (1u << 20)) big += big;
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok.encode(big);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(tok.decode(ids), big);
  EXPECT_LT(s, 10.0) << "1 MiB took " << s << " s";  // ~0.05 s in Release; generous for sanitizers
  // A long chunk without spaces takes the uncached path and stays linear-ish.
  std::string blob(200000, 'a');
  EXPECT_EQ(tok.decode(tok.encode(blob)), blob);
}

TEST(Tokenizer, HuggingFaceTokenizersAgreesWhenInstalled) {
  const char* py = std::getenv("LOOM_PYTHON");
  const std::string python = py ? py : "python3";
  if (std::system((python + " -c 'import tokenizers' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "python `tokenizers` is not importable (set LOOM_PYTHON to a python that has it)";
  TempDir dir;
  const BpeTokenizer& tok = trained();
  tok.save(dir / "tokenizer.json");
  std::vector<std::string> texts = english_corpus();
  texts.push_back("Hello   world!!  \"quoted\"\n\n\ttabs and 1234+5678=6912\n");
  texts.push_back("caf\xC3\xA9 na\xC3\xAFve \xE2\x80\x94 dash, emoji \xF0\x9F\x98\x80 end  ");
  texts.push_back("<|bos|>special tokens<|eos|> inside<|pad|>");
  texts.push_back("it's don't   x\r\ny\x0B\x0Cz");
  // Random strings over a small alphabet that exercises every chunk rule (valid UTF-8 only:
  // Python strings cannot hold anything else).
  const std::vector<std::string> pieces = {"a", "Th", "e", " ", "  ", "\n", "\t", ".", ",", "!?", "0", "7",
                                           "\xC3\xA9", "\xE2\x80\x94", "\"", "<|eos|>", "'", "-", "\r\n"};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::string s;
    for (uint64_t i = 0; i < 60; ++i) s += pieces[loom::runtime::philox4x32(seed, i, 3)[0] % pieces.size()];
    texts.push_back(s);
  }
  nlohmann::json in = texts;
  loom::data::atomic_write_file(dir / "texts.json", in.dump());
  const std::string script =
      "import json, sys\n"
      "from tokenizers import Tokenizer\n"
      "t = Tokenizer.from_file(sys.argv[1])\n"
      "texts = json.load(open(sys.argv[2]))\n"
      "ids = [t.encode(x, add_special_tokens=False).ids for x in texts]\n"
      "dec = [t.decode(i, skip_special_tokens=False) for i in ids]\n"
      "json.dump({'ids': ids, 'decoded': dec}, open(sys.argv[3], 'w'))\n";
  loom::data::atomic_write_file(dir / "check.py", script);
  std::string cmd = python + " " + (dir / "check.py") + " " + (dir / "tokenizer.json") + " " + (dir / "texts.json") +
                    " " + (dir / "out.json");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto out = nlohmann::json::parse(loom::data::read_file(dir / "out.json"));
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(out["ids"][i].get<std::vector<int32_t>>(), tok.encode(texts[i])) << texts[i];
    EXPECT_EQ(out["decoded"][i].get<std::string>(), texts[i]);
  }
}
