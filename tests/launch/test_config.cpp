// test_config.cpp: ConfigSchema / load_config: defaults, every error kind with its exact
// file:line:column, overrides, to_yaml round trip, help text, programming-error guards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "launch/config.h"

namespace loom::launch {
namespace {

ConfigSchema test_schema() {
  ConfigSchema s;
  s.add_int("model.n_layers", 4, "transformer blocks", 1, 1024)
      .add_int("model.d_model", 128, "width", 1)
      .add_enum("model.norm", "rmsnorm", {"rmsnorm", "layernorm"}, "normalization layer")
      .add_bool("model.tie_embeddings", false, "share embedding and LM head")
      .add_float("optim.lr", 3e-4, "peak learning rate", 0.0, 1.0)
      .add_float("optim.weight_decay", 0.1, "decoupled weight decay", 0.0)
      .add_float_list("optim.betas", {0.9, 0.95}, "Adam betas", 0.0, 1.0)
      .add_int_list("train.eval_steps", {}, "steps to evaluate at", 0)
      .add_string("run.name", "default-run", "run name")
      .add_string_list("data.files", {"a.bin", "b.bin"}, "token shards")
      .add_string_map("rewards", "reward name -> weight")
      .add_int("seed", 1234, "global seed");
  return s;
}

// Loads `text` as if it came from "cfg.yaml"; returns the ConfigError message ("" if none).
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    load_config_text(text, "cfg.yaml", test_schema(), overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsWhenEmpty) {
  Config c = load_config_text("", "<embedded>", test_schema());
  EXPECT_EQ(c.get_int("model.n_layers"), 4);
  EXPECT_EQ(c.get_string("model.norm"), "rmsnorm");
  EXPECT_FALSE(c.get_bool("model.tie_embeddings"));
  EXPECT_DOUBLE_EQ(c.get_float("optim.lr"), 3e-4);
  EXPECT_EQ(c.get_float_list("optim.betas"), (std::vector<double>{0.9, 0.95}));
  EXPECT_TRUE(c.get_int_list("train.eval_steps").empty());
  EXPECT_EQ(c.get_string_list("data.files"), (std::vector<std::string>{"a.bin", "b.bin"}));
  EXPECT_TRUE(c.get_string_map("rewards").empty());
  for (const ConfigKey& k : c.schema().keys()) EXPECT_FALSE(c.was_set(k.key)) << k.key;
  EXPECT_EQ(c.where("seed"), "default");
  // A mapping section left empty is fine too.
  EXPECT_EQ(load_config_text("model:\noptim:\n", "x", test_schema()).get_int("model.n_layers"), 4);
}

TEST(Config, ValuesFromText) {
  Config c = load_config_text(
      "model:\n"
      "  n_layers: 8\n"
      "  norm: layernorm\n"
      "  tie_embeddings: yes\n"
      "optim:\n"
      "  lr: 1e-3\n"
      "  betas: [0.8, 0.99]\n"
      "train:\n"
      "  eval_steps:\n"
      "    - 10\n"
      "    - 20\n"
      "run: {name: \"123\"}\n"
      "data:\n"
      "  files: [x.bin]\n"
      "rewards:\n"
      "  correct: 1.0\n"
      "  format: 0.25\n"
      "seed: 7\n",
      "cfg.yaml", test_schema());
  EXPECT_EQ(c.get_int("model.n_layers"), 8);
  EXPECT_EQ(c.get_string("model.norm"), "layernorm");
  EXPECT_TRUE(c.get_bool("model.tie_embeddings"));
  EXPECT_DOUBLE_EQ(c.get_float("optim.lr"), 1e-3);
  EXPECT_EQ(c.get_float_list("optim.betas"), (std::vector<double>{0.8, 0.99}));
  EXPECT_EQ(c.get_int_list("train.eval_steps"), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(c.get_string("run.name"), "123");
  EXPECT_EQ(c.get_string_list("data.files"), (std::vector<std::string>{"x.bin"}));
  EXPECT_EQ(c.get_string_map("rewards"), (std::map<std::string, std::string>{{"correct", "1.0"}, {"format", "0.25"}}));
  EXPECT_EQ(c.get_int("seed"), 7);
  EXPECT_DOUBLE_EQ(c.get_float("seed"), 7.0);  // ints read as floats too
  EXPECT_TRUE(c.was_set("model.n_layers"));
  EXPECT_FALSE(c.was_set("model.d_model"));
  EXPECT_EQ(c.where("model.n_layers"), "cfg.yaml:2:13");
  EXPECT_EQ(c.where("seed"), "cfg.yaml:18:7");
}

TEST(Config, LoadsFromFileAndNamesMissingFile) {
  std::string path = testing::TempDir() + "loom_cfg_" + std::to_string(::getpid()) + ".yaml";
  std::ofstream(path) << "model:\n  n_layers: 2\n  bogus: 1\n";
  try {
    load_config(path, test_schema());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), path + ":3:3: unknown key 'model.bogus'");
  }
  std::ofstream(path) << "model:\n  n_layers: 2\n";
  EXPECT_EQ(load_config(path, test_schema()).get_int("model.n_layers"), 2);
  std::filesystem::remove(path);
  try {
    load_config(path, test_schema());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read config file '" + path + "'"), std::string::npos) << e.what();
  }
}

TEST(Config, UnknownKeySuggestsClosest) {
  EXPECT_EQ(error_of("model:\n  n_layer: 4\n"), "cfg.yaml:2:3: unknown key 'model.n_layer' (did you mean 'model.n_layers'?)");
  EXPECT_EQ(error_of("optim:\n  lr: 0.1\n  weight_decy: 0.1\n"),
            "cfg.yaml:3:3: unknown key 'optim.weight_decy' (did you mean 'optim.weight_decay'?)");
  // Right name, wrong section.
  EXPECT_EQ(error_of("train:\n  n_layers: 4\n"), "cfg.yaml:2:3: unknown key 'train.n_layers' (did you mean 'model.n_layers'?)");
  // Unknown top-level section, nothing close.
  EXPECT_EQ(error_of("zzzzzz:\n  q: 1\n"), "cfg.yaml:1:1: unknown key 'zzzzzz'");
}

TEST(Config, WrongTypes) {
  EXPECT_EQ(error_of("model:\n  n_layers: four\n"), "cfg.yaml:2:13: model.n_layers: expected an integer, got 'four'");
  EXPECT_EQ(error_of("model:\n  n_layers: 4.5\n"), "cfg.yaml:2:13: model.n_layers: expected an integer, got '4.5'");
  EXPECT_EQ(error_of("optim:\n  lr: fast\n"), "cfg.yaml:2:7: optim.lr: expected a number, got 'fast'");
  EXPECT_EQ(error_of("model:\n  tie_embeddings: maybe\n"),
            "cfg.yaml:2:19: model.tie_embeddings: expected a boolean (true/false), got 'maybe'");
  EXPECT_EQ(error_of("optim:\n  betas: 0.9\n"), "cfg.yaml:2:10: optim.betas: expected a list, got '0.9'");
  EXPECT_EQ(error_of("optim:\n  betas: [0.9, x]\n"), "cfg.yaml:2:16: optim.betas[1]: expected a number, got 'x'");
  EXPECT_EQ(error_of("run:\n  name:\n"),
            "cfg.yaml:2:3: run.name: expected a string, got an empty value (write '' for an empty string)");
  EXPECT_EQ(error_of("seed: 99999999999999999999\n"), "cfg.yaml:1:7: seed: expected an integer, got '99999999999999999999'");
}

TEST(Config, MappingWhereScalarExpectedAndViceVersa) {
  EXPECT_EQ(error_of("model:\n  n_layers:\n    value: 4\n"),
            "cfg.yaml:3:5: model.n_layers: expected an integer, got a mapping");
  EXPECT_EQ(error_of("model: 4\n"),
            "cfg.yaml:1:8: model: expected a section (a mapping with keys such as model.n_layers), got '4'");
  EXPECT_EQ(error_of("- a\n- b\n"), "cfg.yaml:1:1: expected a mapping of config keys at the top level, got a list");
  EXPECT_EQ(error_of("rewards: [1, 2]\n"), "cfg.yaml:1:10: rewards: expected a mapping of names to values, got a list");
  EXPECT_EQ(error_of("rewards:\n  correct: [1, 2]\n"), "cfg.yaml:2:12: rewards.correct: expected a value, got a list");
}

TEST(Config, OutOfRangeAndEnum) {
  EXPECT_EQ(error_of("model:\n  n_layers: 0\n"), "cfg.yaml:2:13: model.n_layers: 0 is out of range [1, 1024]");
  EXPECT_EQ(error_of("model:\n  n_layers: 2048\n"), "cfg.yaml:2:13: model.n_layers: 2048 is out of range [1, 1024]");
  EXPECT_EQ(error_of("optim:\n  weight_decay: -0.5\n"), "cfg.yaml:2:17: optim.weight_decay: -0.5 is out of range [0.0, inf]");
  EXPECT_EQ(error_of("optim:\n  lr: .nan\n"), "cfg.yaml:2:7: optim.lr: .nan is out of range [0.0, 1.0]");
  EXPECT_EQ(error_of("optim:\n  betas: [0.9, 1.5]\n"), "cfg.yaml:2:16: optim.betas[1]: 1.5 is out of range [0.0, 1.0]");
  EXPECT_EQ(error_of("model:\n  norm: batchnorm\n"),
            "cfg.yaml:2:9: model.norm: 'batchnorm' is not one of: rmsnorm, layernorm");
  EXPECT_EQ(error_of("model:\n  norm: rmsnrom\n"),
            "cfg.yaml:2:9: model.norm: 'rmsnrom' is not one of: rmsnorm, layernorm (did you mean 'rmsnorm'?)");
  EXPECT_EQ(error_of("model:\n  norm: LayerNorm\n"),
            "cfg.yaml:2:9: model.norm: 'LayerNorm' is not one of: rmsnorm, layernorm (did you mean 'layernorm'?)");
  EXPECT_EQ(error_of("optim:\n  lr: 1e400\n"), "cfg.yaml:2:7: optim.lr: expected a number, got '1e400'");
}

TEST(Config, DuplicateKeys) {
  EXPECT_EQ(error_of("model:\n  n_layers: 2\n  n_layers: 3\n"),
            "cfg.yaml:3:3: model.n_layers: duplicate key (first given at line 2)");
  EXPECT_EQ(error_of("seed: 1\nmodel:\n  d_model: 8\nseed: 2\n"), "cfg.yaml:4:1: seed: duplicate key (first given at line 1)");
}

TEST(Config, DottedKeysInFile) {
  Config c = load_config_text("model.n_layers: 3\noptim: {lr: 0.5}\n", "cfg.yaml", test_schema());
  EXPECT_EQ(c.get_int("model.n_layers"), 3);
  EXPECT_EQ(c.where("model.n_layers"), "cfg.yaml:1:17");
  EXPECT_EQ(error_of("model:\n  n_layers: 2\nmodel.n_layers: 3\n"),
            "cfg.yaml:3:1: model.n_layers: duplicate key (first given at line 2)");
}

TEST(Config, SyntaxErrorNamesPosition) {
  std::string e = error_of("model:\n  n_layers: [1, 2\nseed: 3\n");
  EXPECT_EQ(e.rfind("cfg.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos) << e;
}

TEST(Config, ReportsAllErrorsAtOnceInFileOrder) {
  std::string e = error_of(
      "model:\n"
      "  n_layers: four\n"
      "  norm: batchnorm\n"
      "  n_layer: 3\n"
      "optim:\n"
      "  lr: 2.0\n"
      "seed: 1\n"
      "seed: 2\n",
      {"optim.lrr=0.1", "model.d_model=wide"});
  EXPECT_EQ(e,
            "cfg.yaml:2:13: model.n_layers: expected an integer, got 'four'\n"
            "cfg.yaml:3:9: model.norm: 'batchnorm' is not one of: rmsnorm, layernorm\n"
            "cfg.yaml:4:3: unknown key 'model.n_layer' (did you mean 'model.n_layers'?)\n"
            "cfg.yaml:6:7: optim.lr: 2.0 is out of range [0.0, 1.0]\n"
            "cfg.yaml:8:1: seed: duplicate key (first given at line 7)\n"
            "--set optim.lrr=0.1: unknown key 'optim.lrr' (did you mean 'optim.lr'?)\n"
            "--set model.d_model=wide: model.d_model: expected an integer, got 'wide'");
}

TEST(Config, Overrides) {
  Config c = load_config_text("model:\n  n_layers: 2\n", "cfg.yaml", test_schema(),
                              {"model.n_layers=6", "optim.betas=[0.5, 0.6]", "run.name=my run", "model.tie_embeddings=true",
                               "rewards.correct=2", "data.files=[]", " seed = 9 "});
  EXPECT_EQ(c.get_int("model.n_layers"), 6);
  EXPECT_EQ(c.where("model.n_layers"), "--set model.n_layers=6");
  EXPECT_EQ(c.get_float_list("optim.betas"), (std::vector<double>{0.5, 0.6}));
  EXPECT_EQ(c.get_string("run.name"), "my run");
  EXPECT_TRUE(c.get_bool("model.tie_embeddings"));
  EXPECT_EQ(c.get_string_map("rewards"), (std::map<std::string, std::string>{{"correct", "2"}}));
  EXPECT_TRUE(c.get_string_list("data.files").empty());
  EXPECT_EQ(c.get_int("seed"), 9);
  EXPECT_TRUE(c.was_set("seed"));
  // The later override wins; an override fixes a bad file value (validation runs after).
  EXPECT_EQ(load_config_text("model:\n  n_layers: four\n", "cfg.yaml", test_schema(),
                             {"model.n_layers=3", "model.n_layers=5"})
                .get_int("model.n_layers"),
            5);
  // An empty value is the empty string.
  EXPECT_EQ(load_config_text("", "x", test_schema(), {"run.name="}).get_string("run.name"), "");
}

TEST(Config, OverrideErrors) {
  EXPECT_EQ(error_of("", {"model.n_layer=3"}), "--set model.n_layer=3: unknown key 'model.n_layer' (did you mean 'model.n_layers'?)");
  EXPECT_EQ(error_of("", {"model.n_layers=four"}), "--set model.n_layers=four: model.n_layers: expected an integer, got 'four'");
  EXPECT_EQ(error_of("", {"model.n_layers=0"}), "--set model.n_layers=0: model.n_layers: 0 is out of range [1, 1024]");
  EXPECT_EQ(error_of("", {"model.n_layers"}), "--set model.n_layers: expected key.path=value");
  EXPECT_EQ(error_of("", {"model=3"}), "--set model=3: 'model' is a section; set its keys one at a time (e.g. model.n_layers=...)");
  EXPECT_EQ(error_of("", {"optim.betas=[0.9, 2]"}), "--set optim.betas=[0.9, 2]: optim.betas[1]: 2.0 is out of range [0.0, 1.0]");
  std::string e = error_of("", {"optim.betas=[0.9"});
  EXPECT_EQ(e.rfind("--set optim.betas=[0.9: optim.betas: cannot parse value '[0.9'", 0), 0u) << e;
}

TEST(Config, ToYamlRoundTrip) {
  Config a = load_config_text(
      "model:\n  n_layers: 12\n  norm: layernorm\noptim:\n  lr: 0.1\n  weight_decay: .inf\n"
      "train: {eval_steps: [1, 2, 3]}\nrewards: {correct: 1.5, 'odd key': 'x: y'}\n",
      "cfg.yaml", test_schema(),
      {"run.name=true", "data.files=['', 'a b', '#x', 'null', '123', '- z']", "optim.betas=[0.1, 0.30000000000000004]"});
  std::string yaml = a.to_yaml();
  // Nested, every key present.
  EXPECT_NE(yaml.find("model:\n  n_layers: 12\n  d_model: 128\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("seed: 1234"), std::string::npos) << yaml;
  Config b = load_config_text(yaml, "resolved.yaml", test_schema());
  for (const ConfigKey& k : a.schema().keys()) EXPECT_EQ(a.get(k.key), b.get(k.key)) << k.key << "\n" << yaml;
  EXPECT_EQ(b.get_string("run.name"), "true");
  EXPECT_EQ(b.get_float_list("optim.betas")[1], 0.30000000000000004);
  EXPECT_EQ(b.get_string_list("data.files"), (std::vector<std::string>{"", "a b", "#x", "null", "123", "- z"}));
  EXPECT_EQ(b.to_yaml(), yaml);
  // Defaults round-trip as well (empty lists and maps).
  Config d = load_config_text("", "x", test_schema());
  Config d2 = load_config_text(d.to_yaml(), "y", test_schema());
  for (const ConfigKey& k : d.schema().keys()) EXPECT_EQ(d.get(k.key), d2.get(k.key)) << k.key;
}

TEST(Config, HelpText) {
  std::string h = test_schema().help_text();
  EXPECT_NE(h.find("model.n_layers"), std::string::npos) << h;
  EXPECT_NE(h.find("transformer blocks [1, 1024]"), std::string::npos) << h;
  EXPECT_NE(h.find("normalization layer {rmsnorm, layernorm}"), std::string::npos) << h;
  EXPECT_NE(h.find("3e-04"), std::string::npos) << h;
  EXPECT_NE(h.find("[a.bin, b.bin]"), std::string::npos) << h;
  EXPECT_EQ(std::count(h.begin(), h.end(), '\n'), int(test_schema().keys().size()));
}

TEST(Config, ErrorForCrossKeyChecks) {
  Config c = load_config_text("model:\n  d_model: 100\n", "cfg.yaml", test_schema(), {"model.n_layers=3"});
  EXPECT_EQ(std::string(c.error("model.d_model", "must be a multiple of 64").what()),
            "cfg.yaml:2:12: model.d_model: must be a multiple of 64");
  EXPECT_EQ(std::string(c.error("model.n_layers", "bad").what()), "--set model.n_layers=3: model.n_layers: bad");
  EXPECT_EQ(std::string(c.error("seed", "bad").what()), "cfg.yaml: seed (default 1234): bad");
}

TEST(Config, ProgrammingErrorsAreLogicErrors) {
  ConfigSchema s = test_schema();
  EXPECT_THROW(s.add_int("model.n_layers", 1, "again"), std::logic_error);
  EXPECT_THROW(s.add_int("model", 1, "a section"), std::logic_error);
  EXPECT_THROW(s.add_int("seed.low", 1, "under a key"), std::logic_error);
  EXPECT_THROW(s.add_int("x", 0, "out of range", 1, 2), std::logic_error);
  EXPECT_THROW(s.add_enum("y", "c", {"a", "b"}, "bad default"), std::logic_error);
  EXPECT_THROW(s.add_int("bad..key", 0, "h"), std::logic_error);
  Config c = load_config_text("", "x", s);
  EXPECT_THROW(c.get_int("model.norm"), std::logic_error);
  EXPECT_THROW(c.get_bool("nope"), std::logic_error);
  EXPECT_THROW(c.get_string_list("optim.betas"), std::logic_error);
  EXPECT_EQ(c.get_float_list("train.eval_steps"), std::vector<double>{});
}

}  // namespace
}  // namespace loom::launch
