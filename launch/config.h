// config.h: schema-validated YAML configuration. A ConfigSchema declares every key (dotted
// path, type, default, range, one-line help); load_config reads a YAML file (or embedded text),
// applies `--set key.path=value` overrides on top, and validates the result against the
// schema. The rule it keeps: a bad config never half-loads. Every problem found (unknown key,
// wrong type, out of range, disallowed enum value, duplicate key, mapping where a value is
// expected) is reported at once, one per line, each naming `file:line:column` (or the
// override) and the full key, in one ConfigError.
//
//   ConfigSchema s;
//   s.add_int("model.n_layers", 4, "transformer blocks", 1, 1024);
//   s.add_enum("model.norm", "rmsnorm", {"rmsnorm", "layernorm"}, "normalization layer");
//   s.add_float("optim.lr", 3e-4, "peak learning rate", 0.0);
//   Config cfg = load_config("run.yaml", s, {"optim.lr=1e-3"});
//   int64_t L = cfg.get_int("model.n_layers");
//
// YAML layout: dotted keys are nested mappings (`model: {n_layers: 4}`); keys left out take
// their defaults. Values are read according to the schema type, so quoting never changes the
// meaning (`name: 123` is the string "123" for a string key, `lr: "1e-3"` the float 1e-3).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace loom::launch {

// A bad configuration (file or overrides). what() holds one line per problem:
//   run.yaml:3:13: model.n_layers: expected an integer, got 'four'
//   --set optim.lrr=1e-3: unknown key 'optim.lrr' (did you mean 'optim.lr'?)
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(const std::string& what) : std::runtime_error(what) {}
};

enum class ConfigType {
  Int,         // int64; optional inclusive range
  Float,       // double; accepts integers, .inf/.nan; optional inclusive range (NaN never in range)
  Bool,        // true/false (also yes/no, on/off; any case)
  String,      // any scalar, verbatim
  Enum,        // a string from a fixed list of allowed values
  StringList,  // sequence of scalars
  FloatList,   // sequence of floats; the range applies to every element
  IntList,     // sequence of integers; the range applies to every element
  StringMap,   // free-form mapping of name -> scalar (e.g. reward weights); default empty
};
const char* config_type_name(ConfigType t);  // "int", "float", "bool", "string", "enum", ...

using ConfigValue = std::variant<int64_t, double, bool, std::string, std::vector<std::string>,
                                 std::vector<double>, std::vector<int64_t>, std::map<std::string, std::string>>;

// One declared key.
struct ConfigKey {
  std::string key;  // dotted path, e.g. "model.n_layers"
  ConfigType type = ConfigType::String;
  ConfigValue default_value;
  std::optional<double> min, max;    // Int/Float/IntList/FloatList only; inclusive
  std::vector<std::string> allowed;  // Enum only
  std::string help;
};

// The declared keys. Declaration mistakes (duplicate key, a key that is also a section,
// default outside its range or enum) are programming errors: std::logic_error.
class ConfigSchema {
 public:
  ConfigSchema& add_int(const std::string& key, int64_t def, const std::string& help,
                        std::optional<int64_t> min = std::nullopt, std::optional<int64_t> max = std::nullopt);
  ConfigSchema& add_float(const std::string& key, double def, const std::string& help,
                          std::optional<double> min = std::nullopt, std::optional<double> max = std::nullopt);
  ConfigSchema& add_bool(const std::string& key, bool def, const std::string& help);
  ConfigSchema& add_string(const std::string& key, const std::string& def, const std::string& help);
  ConfigSchema& add_enum(const std::string& key, const std::string& def, const std::vector<std::string>& allowed,
                         const std::string& help);
  ConfigSchema& add_string_list(const std::string& key, const std::vector<std::string>& def, const std::string& help);
  ConfigSchema& add_float_list(const std::string& key, const std::vector<double>& def, const std::string& help,
                               std::optional<double> min = std::nullopt, std::optional<double> max = std::nullopt);
  ConfigSchema& add_int_list(const std::string& key, const std::vector<int64_t>& def, const std::string& help,
                             std::optional<int64_t> min = std::nullopt, std::optional<int64_t> max = std::nullopt);
  // A free-form section: `key: {any_name: scalar, ...}`, read with Config::get_string_map.
  ConfigSchema& add_string_map(const std::string& key, const std::string& help);

  const std::vector<ConfigKey>& keys() const { return keys_; }  // in declaration order
  const ConfigKey* find(const std::string& key) const;          // nullptr when undeclared
  // Is `path` a section (a proper prefix of some key, e.g. "model")?
  bool is_section(const std::string& path) const;

  // One line per key, for `--help`:
  //   model.n_layers   int     4          transformer blocks [1, 1024]
  std::string help_text() const;

 private:
  ConfigSchema& add(ConfigKey k);
  std::vector<ConfigKey> keys_;
  std::map<std::string, size_t> index_;
};

// A fully resolved, validated configuration: every schema key has a value. Cheap to copy.
// Getters throw std::logic_error for an undeclared key or a type mismatch (programming errors);
// get_float also reads Int keys, get_string Enum keys, get_float_list IntList keys.
class Config {
 public:
  Config() = default;

  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<std::string> get_string_list(const std::string& key) const;
  std::vector<double> get_float_list(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  std::map<std::string, std::string> get_string_map(const std::string& key) const;
  const ConfigValue& get(const std::string& key) const;

  // True when the file or an override gave the key a value (false: the default).
  bool was_set(const std::string& key) const;
  // Where the value came from: "run.yaml:3:13", "--set model.n_layers=8" or "default".
  std::string where(const std::string& key) const;
  // A ConfigError for a check the schema cannot express (e.g. d_model % n_heads != 0):
  //   throw cfg.error("model.n_heads", "must divide model.d_model (512)");
  // -> "run.yaml:4:12: model.n_heads: must divide model.d_model (512)"
  ConfigError error(const std::string& key, const std::string& message) const;

  // The whole resolved config as nested YAML (every key, defaults filled, schema order).
  // Loading it again with the same schema gives the same values.
  std::string to_yaml() const;

  const ConfigSchema& schema() const { return schema_; }
  const std::string& source_name() const { return source_; }

 private:
  friend Config load_config_text(const std::string&, const std::string&, const ConfigSchema&,
                                 const std::vector<std::string>&);
  const ConfigKey& declared(const std::string& key, const char* getter) const;
  ConfigSchema schema_;
  std::string source_;
  std::map<std::string, ConfigValue> values_;
  std::map<std::string, std::string> where_;  // only keys that were set
};

// Reads `path`, applies `overrides` ("key.path=value", each parsed as a YAML scalar or flow
// sequence, e.g. "data.weights=[0.5, 0.5]"), validates. Throws ConfigError listing every
// problem (also a missing file or YAML syntax error).
Config load_config(const std::string& path, const ConfigSchema& schema,
                   const std::vector<std::string>& overrides = {});
// Same for YAML text held in memory (an embedded default config); `source_name` stands in
// for the file name in messages. Empty text means all defaults.
Config load_config_text(const std::string& yaml_text, const std::string& source_name, const ConfigSchema& schema,
                        const std::vector<std::string>& overrides = {});

}  // namespace loom::launch
