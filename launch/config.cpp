// config.cpp: ConfigSchema, Config and load_config. Loading is three passes: walk the YAML
// tree collecting one entry per declared key (structural errors: unknown or duplicate keys,
// scalars where sections belong), lay the `--set` overrides on top, then convert and check
// every entry against its schema type. All errors are gathered, sorted by where they occur
// and thrown together, so one run shows the user everything to fix.
#include "launch/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <tuple>

namespace loom::launch {
namespace {

std::vector<std::string> split_dots(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest candidate by edit distance, if close enough to be a plausible typo.
std::optional<std::string> closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(lower(word), lower(c));
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

// Shortest decimal text that reads back to the same double; YAML spellings for inf/nan.
std::string format_float(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string format_bound(double v, ConfigType t) {
  if ((t == ConfigType::Int || t == ConfigType::IntList) && std::abs(v) < 9.2e18) return std::to_string(int64_t(v));
  return format_float(v);
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

// A value as it would appear in flow-style YAML (for help text and messages).
std::string format_value(const ConfigValue& v) {
  struct Visitor {
    std::string operator()(int64_t x) const { return std::to_string(x); }
    std::string operator()(double x) const { return format_float(x); }
    std::string operator()(bool x) const { return x ? "true" : "false"; }
    std::string operator()(const std::string& x) const { return x.empty() ? "''" : x; }
    std::string operator()(const std::vector<std::string>& x) const { return "[" + join(x, ", ") + "]"; }
    std::string operator()(const std::vector<double>& x) const {
      std::vector<std::string> s;
      for (double d : x) s.push_back(format_float(d));
      return "[" + join(s, ", ") + "]";
    }
    std::string operator()(const std::vector<int64_t>& x) const {
      std::vector<std::string> s;
      for (int64_t d : x) s.push_back(std::to_string(d));
      return "[" + join(s, ", ") + "]";
    }
    std::string operator()(const std::map<std::string, std::string>& x) const {
      std::vector<std::string> s;
      for (const auto& [k, val] : x) s.push_back(k + ": " + val);
      return "{" + join(s, ", ") + "}";
    }
  };
  return std::visit(Visitor{}, v);
}

// ---- scalar parsing -------------------------------------------------------------------------

std::optional<int64_t> parse_int(const std::string& text) {
  std::string s = trim(text);
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (e - b > 1 && *b == '+' && b[1] != '-') ++b;
  int64_t v = 0;
  auto r = std::from_chars(b, e, v);
  if (r.ec != std::errc() || r.ptr != e || b == e) return std::nullopt;
  return v;
}

std::optional<double> parse_float(const std::string& text) {
  std::string s = trim(text);
  if (s.empty()) return std::nullopt;
  std::string l = lower(s);
  if (l == ".inf" || l == "+.inf") return HUGE_VAL;
  if (l == "-.inf") return -HUGE_VAL;
  if (l == ".nan") return std::nan("");
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  if (errno == ERANGE && std::isinf(v)) return std::nullopt;  // "1e400" is a typo, not infinity
  return v;
}

std::optional<bool> parse_bool(const std::string& text) {
  std::string l = lower(trim(text));
  if (l == "true" || l == "yes" || l == "on") return true;
  if (l == "false" || l == "no" || l == "off") return false;
  return std::nullopt;
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "an empty value";
  }
}

// ---- where values come from -----------------------------------------------------------------

// A position: in the file (source 0, 1-based line/column) or the i-th override (source i+1).
struct Loc {
  int source = 0;
  int line = 0, column = 0;
  std::string override_text;
};

struct Problem {
  Loc loc;
  std::string message;
};

Loc file_loc(const YAML::Mark& m) {
  Loc l;
  l.line = m.line >= 0 ? m.line + 1 : 0;
  l.column = m.column >= 0 ? m.column + 1 : 0;
  return l;
}

std::string loc_text(const Loc& l, const std::string& source_name) {
  if (l.source > 0) return "--set " + l.override_text;
  if (l.line <= 0) return source_name;
  return source_name + ":" + std::to_string(l.line) + ":" + std::to_string(l.column);
}

struct Entry {
  YAML::Node node;
  Loc loc;
};

// A StringMap key collects its items (each with its own position) instead of one node.
struct MapEntry {
  Loc loc;
  std::map<std::string, Entry> items;
};

class Loader {
 public:
  Loader(const ConfigSchema& schema, std::string source) : schema_(schema), source_(std::move(source)) {}

  void walk_document(const YAML::Node& root) {
    if (!root || root.IsNull()) return;
    if (!root.IsMap()) {
      problem(file_loc(root.Mark()), "expected a mapping of config keys at the top level, got " + describe(root));
      return;
    }
    walk_map(root, "");
  }

  void apply_override(const std::string& text, int index) {
    Loc loc;
    loc.source = index + 1;
    loc.override_text = text;
    size_t eq = text.find('=');
    if (eq == std::string::npos) {
      problem(loc, "expected key.path=value");
      return;
    }
    std::string key = trim(text.substr(0, eq)), value = trim(text.substr(eq + 1));
    YAML::Node node;
    if (value.empty()) {
      node = YAML::Node(std::string());
    } else {
      try {
        node = YAML::Load(value);
      } catch (const YAML::Exception& e) {
        problem(loc, key + ": cannot parse value '" + value + "': " + e.msg);
        return;
      }
    }
    if (const ConfigKey* k = schema_.find(key)) {
      if (k->type == ConfigType::StringMap) {
        MapEntry m;
        m.loc = loc;
        if (node.IsMap()) {
          for (auto it = node.begin(); it != node.end(); ++it) m.items[it->first.Scalar()] = Entry{it->second, loc};
        } else if (!node.IsNull()) {
          problem(loc, key + ": expected a mapping, got " + describe(node));
          return;
        }
        maps_[key] = std::move(m);
        return;
      }
      entries_[key] = Entry{node, loc};
      return;
    }
    // "rewards.correct=1.0" sets one item of a free-form map.
    size_t dot = key.rfind('.');
    if (dot != std::string::npos) {
      const ConfigKey* parent = schema_.find(key.substr(0, dot));
      if (parent && parent->type == ConfigType::StringMap) {
        MapEntry& m = maps_[parent->key];
        if (m.items.empty() && m.loc.source == 0 && m.loc.line == 0) m.loc = loc;
        m.items[key.substr(dot + 1)] = Entry{node, loc};
        return;
      }
    }
    if (schema_.is_section(key)) {
      problem(loc, "'" + key + "' is a section; set its keys one at a time (e.g. " + first_key_under(key) + "=...)");
      return;
    }
    problem(loc, unknown_key_message(key));
  }

  // Converts every entry; fills `values` and `where` for keys that were given.
  void validate(std::map<std::string, ConfigValue>& values, std::map<std::string, std::string>& where) {
    for (const ConfigKey& k : schema_.keys()) {
      values[k.key] = k.default_value;
      if (k.type == ConfigType::StringMap) {
        auto it = maps_.find(k.key);
        if (it == maps_.end()) continue;
        std::map<std::string, std::string> out;
        bool ok = true;
        for (const auto& [name, e] : it->second.items) {
          if (!e.node.IsScalar()) {
            problem(e.loc, k.key + "." + name + ": expected a value, got " + describe(e.node));
            ok = false;
          } else {
            out[name] = e.node.Scalar();
          }
        }
        if (ok) values[k.key] = std::move(out);
        where[k.key] = loc_text(it->second.loc, source_);
        continue;
      }
      auto it = entries_.find(k.key);
      if (it == entries_.end()) continue;
      std::optional<ConfigValue> v = convert(k, it->second);
      if (v) values[k.key] = std::move(*v);
      where[k.key] = loc_text(it->second.loc, source_);
    }
  }

  void throw_if_problems() {
    if (problems_.empty()) return;
    std::stable_sort(problems_.begin(), problems_.end(), [](const Problem& a, const Problem& b) {
      return std::tie(a.loc.source, a.loc.line, a.loc.column) < std::tie(b.loc.source, b.loc.line, b.loc.column);
    });
    std::string msg;
    for (const Problem& p : problems_) {
      if (!msg.empty()) msg += '\n';
      msg += loc_text(p.loc, source_);
      msg += ": " + p.message;
    }
    throw ConfigError(msg);
  }

  void problem(const Loc& loc, const std::string& message) { problems_.push_back({loc, message}); }

 private:
  void walk_map(const YAML::Node& map, const std::string& prefix) {
    std::map<std::string, int> seen;  // name -> line of first occurrence
    for (auto it = map.begin(); it != map.end(); ++it) {
      // Copies: it-> returns a temporary pair, references into it would dangle.
      YAML::Node kn = it->first, vn = it->second;
      Loc kloc = file_loc(kn.Mark());
      if (!kn.IsScalar()) {
        problem(kloc, (prefix.empty() ? "" : prefix + ": ") + "keys must be plain names, got " + describe(kn));
        continue;
      }
      std::string name = kn.Scalar();
      std::string full = prefix.empty() ? name : prefix + "." + name;
      auto [pos, fresh] = seen.emplace(name, kloc.line);
      if (!fresh) {
        problem(kloc, full + ": duplicate key (first given at line " + std::to_string(pos->second) + ")");
        continue;
      }
      Loc vloc = vn.IsNull() ? kloc : file_loc(vn.Mark());
      if (const ConfigKey* k = schema_.find(full)) {
        // Also catches one key given both nested and dotted ("model: {n_layers: 2}", "model.n_layers: 3").
        auto [first, fresh_key] = key_lines_.emplace(full, kloc.line);
        if (!fresh_key) {
          problem(kloc, full + ": duplicate key (first given at line " + std::to_string(first->second) + ")");
          continue;
        }
        if (k->type == ConfigType::StringMap) {
          walk_string_map(vn, full, kloc);
        } else {
          entries_[full] = Entry{vn, vloc};
        }
      } else if (schema_.is_section(full)) {
        if (vn.IsMap()) {
          walk_map(vn, full);
        } else if (!vn.IsNull()) {
          problem(vloc, full + ": expected a section (a mapping with keys such as " + first_key_under(full) +
                            "), got " + describe(vn));
        }
      } else {
        problem(kloc, unknown_key_message(full));
      }
    }
  }

  void walk_string_map(const YAML::Node& vn, const std::string& key, const Loc& kloc) {
    MapEntry m;
    m.loc = kloc;
    if (vn.IsMap()) {
      std::map<std::string, int> seen;
      for (auto it = vn.begin(); it != vn.end(); ++it) {
        Loc iloc = file_loc(it->first.Mark());
        std::string name = it->first.IsScalar() ? it->first.Scalar() : "?";
        auto [pos, fresh] = seen.emplace(name, iloc.line);
        if (!fresh) {
          problem(iloc, key + "." + name + ": duplicate key (first given at line " + std::to_string(pos->second) + ")");
          continue;
        }
        m.items[name] = Entry{it->second, it->second.IsNull() ? iloc : file_loc(it->second.Mark())};
      }
    } else if (!vn.IsNull()) {
      problem(file_loc(vn.Mark()), key + ": expected a mapping of names to values, got " + describe(vn));
      return;
    }
    maps_[key] = std::move(m);
  }

  std::string first_key_under(const std::string& section) const {
    for (const ConfigKey& k : schema_.keys())
      if (k.key.rfind(section + ".", 0) == 0) return k.key;
    return section + ".?";
  }

  std::string unknown_key_message(const std::string& key) const {
    std::string msg = "unknown key '" + key + "'";
    std::vector<std::string> candidates;
    for (const ConfigKey& k : schema_.keys()) candidates.push_back(k.key);
    std::optional<std::string> hint = closest(key, candidates);
    if (!hint) {
      // Right name in the wrong section: "train.n_layers" -> "model.n_layers".
      std::string last = split_dots(key).back();
      for (const ConfigKey& k : schema_.keys()) {
        if (split_dots(k.key).back() == last) {
          if (hint) {
            hint.reset();
            break;
          }
          hint = k.key;
        }
      }
    }
    if (hint) msg += " (did you mean '" + *hint + "'?)";
    return msg;
  }

  std::optional<double> check_range(const ConfigKey& k, double v, const std::string& label, const Loc& loc) {
    bool below = k.min && !(v >= *k.min), above = k.max && !(v <= *k.max);
    if (!below && !above) return v;
    std::string range = "[" + (k.min ? format_bound(*k.min, k.type) : "-inf") + ", " +
                        (k.max ? format_bound(*k.max, k.type) : "inf") + "]";
    problem(loc, label + ": " + (k.type == ConfigType::Int || k.type == ConfigType::IntList ? std::to_string(int64_t(v))
                                                                                               : format_float(v)) +
                     " is out of range " + range);
    return std::nullopt;
  }

  // One scalar of a numeric/bool/string type; nullopt after recording a problem.
  std::optional<ConfigValue> convert_scalar(const ConfigKey& k, ConfigType type, const YAML::Node& n,
                                            const std::string& label, const Loc& loc) {
    static const std::map<ConfigType, std::string> expected = {
        {ConfigType::Int, "an integer"}, {ConfigType::Float, "a number"}, {ConfigType::Bool, "a boolean (true/false)"},
        {ConfigType::String, "a string"}, {ConfigType::Enum, "one of"}};
    std::string want = expected.at(type);
    if (type == ConfigType::Enum) want = "one of: " + join(k.allowed, ", ");
    if (!n.IsScalar()) {
      std::string hint = n.IsNull() && type == ConfigType::String ? " (write '' for an empty string)" : "";
      problem(loc, label + ": expected " + want + ", got " + describe(n) + hint);
      return std::nullopt;
    }
    const std::string& text = n.Scalar();
    switch (type) {
      case ConfigType::Int: {
        auto v = parse_int(text);
        if (!v) {
          problem(loc, label + ": expected an integer, got '" + text + "'");
          return std::nullopt;
        }
        if (!check_range(k, double(*v), label, loc)) return std::nullopt;
        return ConfigValue(*v);
      }
      case ConfigType::Float: {
        auto v = parse_float(text);
        if (!v) {
          problem(loc, label + ": expected a number, got '" + text + "'");
          return std::nullopt;
        }
        if (!check_range(k, *v, label, loc)) return std::nullopt;
        return ConfigValue(*v);
      }
      case ConfigType::Bool: {
        auto v = parse_bool(text);
        if (!v) {
          problem(loc, label + ": expected a boolean (true/false), got '" + text + "'");
          return std::nullopt;
        }
        return ConfigValue(*v);
      }
      case ConfigType::Enum: {
        if (std::find(k.allowed.begin(), k.allowed.end(), text) == k.allowed.end()) {
          std::string msg = label + ": '" + text + "' is not one of: " + join(k.allowed, ", ");
          if (auto hint = closest(text, k.allowed)) msg += " (did you mean '" + *hint + "'?)";
          problem(loc, msg);
          return std::nullopt;
        }
        return ConfigValue(std::in_place_type<std::string>, text);
      }
      default: return ConfigValue(std::in_place_type<std::string>, text);
    }
  }

  std::optional<ConfigValue> convert(const ConfigKey& k, const Entry& e) {
    const YAML::Node& n = e.node;
    if (k.type != ConfigType::StringList && k.type != ConfigType::FloatList && k.type != ConfigType::IntList)
      return convert_scalar(k, k.type, n, k.key, e.loc);
    if (!n.IsSequence()) {
      std::string hint = n.IsNull() ? " (write [] for an empty list)" : "";
      problem(e.loc, k.key + ": expected a list, got " + describe(n) + hint);
      return std::nullopt;
    }
    ConfigType elem = k.type == ConfigType::StringList  ? ConfigType::String
                      : k.type == ConfigType::FloatList ? ConfigType::Float
                                                        : ConfigType::Int;
    std::vector<std::string> strings;
    std::vector<double> floats;
    std::vector<int64_t> ints;
    bool ok = true;
    for (size_t i = 0; i < n.size(); ++i) {
      Loc loc = e.loc.source > 0 || n[i].IsNull() ? e.loc : file_loc(n[i].Mark());
      auto v = convert_scalar(k, elem, n[i], k.key + "[" + std::to_string(i) + "]", loc);
      if (!v) {
        ok = false;
        continue;
      }
      if (elem == ConfigType::String) strings.push_back(std::get<std::string>(*v));
      if (elem == ConfigType::Float) floats.push_back(std::get<double>(*v));
      if (elem == ConfigType::Int) ints.push_back(std::get<int64_t>(*v));
    }
    if (!ok) return std::nullopt;
    if (elem == ConfigType::String) return ConfigValue(std::move(strings));
    if (elem == ConfigType::Float) return ConfigValue(std::move(floats));
    return ConfigValue(std::move(ints));
  }

  const ConfigSchema& schema_;
  std::string source_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, MapEntry> maps_;
  std::map<std::string, int> key_lines_;  // full key -> line it was first given on
  std::vector<Problem> problems_;
};

// ---- to_yaml --------------------------------------------------------------------------------

// Keys grouped into nested sections, keeping the schema's first-appearance order.
struct Tree {
  std::vector<std::pair<std::string, Tree>> children;
  const ConfigKey* leaf = nullptr;
  Tree& child(const std::string& name) {
    for (auto& [n, t] : children)
      if (n == name) return t;
    children.emplace_back(name, Tree{});
    return children.back().second;
  }
};

void emit_value(YAML::Emitter& out, const ConfigValue& v) {
  if (auto* x = std::get_if<int64_t>(&v)) out << std::to_string(*x);
  else if (auto* x = std::get_if<double>(&v)) out << format_float(*x);
  else if (auto* x = std::get_if<bool>(&v)) out << (*x ? "true" : "false");
  else if (auto* x = std::get_if<std::string>(&v)) out << *x;
  else if (auto* x = std::get_if<std::vector<std::string>>(&v)) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : *x) out << s;
    out << YAML::EndSeq;
  } else if (auto* x = std::get_if<std::vector<double>>(&v)) {
    out << YAML::Flow << YAML::BeginSeq;
    for (double d : *x) out << format_float(d);
    out << YAML::EndSeq;
  } else if (auto* x = std::get_if<std::vector<int64_t>>(&v)) {
    out << YAML::Flow << YAML::BeginSeq;
    for (int64_t d : *x) out << std::to_string(d);
    out << YAML::EndSeq;
  } else if (auto* x = std::get_if<std::map<std::string, std::string>>(&v)) {
    if (x->empty()) out << YAML::Flow;
    out << YAML::BeginMap;
    for (const auto& [k, s] : *x) out << YAML::Key << k << YAML::Value << s;
    out << YAML::EndMap;
  }
}

void emit_tree(YAML::Emitter& out, const Tree& t, const std::map<std::string, ConfigValue>& values) {
  out << YAML::BeginMap;
  for (const auto& [name, child] : t.children) {
    out << YAML::Key << name << YAML::Value;
    if (child.leaf) emit_value(out, values.at(child.leaf->key));
    else emit_tree(out, child, values);
  }
  out << YAML::EndMap;
}

bool valid_key(const std::string& key) {
  if (key.empty()) return false;
  for (const std::string& part : split_dots(key)) {
    if (part.empty()) return false;
    for (char c : part)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}

}  // namespace

const char* config_type_name(ConfigType t) {
  switch (t) {
    case ConfigType::Int: return "int";
    case ConfigType::Float: return "float";
    case ConfigType::Bool: return "bool";
    case ConfigType::String: return "string";
    case ConfigType::Enum: return "enum";
    case ConfigType::StringList: return "string list";
    case ConfigType::FloatList: return "float list";
    case ConfigType::IntList: return "int list";
    case ConfigType::StringMap: return "map";
  }
  return "?";
}

// ---- ConfigSchema ---------------------------------------------------------------------------

ConfigSchema& ConfigSchema::add(ConfigKey k) {
  if (!valid_key(k.key))
    throw std::logic_error("ConfigSchema: invalid key '" + k.key + "' (dotted names of [A-Za-z0-9_-])");
  if (index_.count(k.key)) throw std::logic_error("ConfigSchema: key '" + k.key + "' declared twice");
  if (is_section(k.key)) throw std::logic_error("ConfigSchema: '" + k.key + "' is already a section");
  for (const ConfigKey& other : keys_)
    if (k.key.rfind(other.key + ".", 0) == 0)
      throw std::logic_error("ConfigSchema: '" + k.key + "' lies under the key '" + other.key + "'");
  auto in_range = [&](double v) { return (!k.min || v >= *k.min) && (!k.max || v <= *k.max); };
  bool ok = true;
  if (auto* v = std::get_if<int64_t>(&k.default_value)) ok = in_range(double(*v));
  if (auto* v = std::get_if<double>(&k.default_value)) ok = std::isnan(*v) ? !k.min && !k.max : in_range(*v);
  if (auto* v = std::get_if<std::vector<double>>(&k.default_value))
    for (double d : *v) ok = ok && in_range(d);
  if (auto* v = std::get_if<std::vector<int64_t>>(&k.default_value))
    for (int64_t d : *v) ok = ok && in_range(double(d));
  if (k.type == ConfigType::Enum) {
    if (k.allowed.empty()) throw std::logic_error("ConfigSchema: enum '" + k.key + "' has no allowed values");
    ok = std::find(k.allowed.begin(), k.allowed.end(), std::get<std::string>(k.default_value)) != k.allowed.end();
  }
  if (!ok) throw std::logic_error("ConfigSchema: default of '" + k.key + "' is not an allowed value");
  index_[k.key] = keys_.size();
  keys_.push_back(std::move(k));
  return *this;
}

ConfigSchema& ConfigSchema::add_int(const std::string& key, int64_t def, const std::string& help,
                                    std::optional<int64_t> min, std::optional<int64_t> max) {
  ConfigKey k{key, ConfigType::Int, ConfigValue(def), {}, {}, {}, help};
  if (min) k.min = double(*min);
  if (max) k.max = double(*max);
  return add(std::move(k));
}

ConfigSchema& ConfigSchema::add_float(const std::string& key, double def, const std::string& help,
                                      std::optional<double> min, std::optional<double> max) {
  return add(ConfigKey{key, ConfigType::Float, ConfigValue(def), min, max, {}, help});
}

ConfigSchema& ConfigSchema::add_bool(const std::string& key, bool def, const std::string& help) {
  return add(ConfigKey{key, ConfigType::Bool, ConfigValue(def), {}, {}, {}, help});
}

ConfigSchema& ConfigSchema::add_string(const std::string& key, const std::string& def, const std::string& help) {
  return add(ConfigKey{key, ConfigType::String, ConfigValue(std::in_place_type<std::string>, def), {}, {}, {}, help});
}

ConfigSchema& ConfigSchema::add_enum(const std::string& key, const std::string& def,
                                     const std::vector<std::string>& allowed, const std::string& help) {
  return add(ConfigKey{key, ConfigType::Enum, ConfigValue(std::in_place_type<std::string>, def), {}, {}, allowed, help});
}

ConfigSchema& ConfigSchema::add_string_list(const std::string& key, const std::vector<std::string>& def,
                                            const std::string& help) {
  return add(ConfigKey{key, ConfigType::StringList, ConfigValue(def), {}, {}, {}, help});
}

ConfigSchema& ConfigSchema::add_float_list(const std::string& key, const std::vector<double>& def,
                                           const std::string& help, std::optional<double> min,
                                           std::optional<double> max) {
  return add(ConfigKey{key, ConfigType::FloatList, ConfigValue(def), min, max, {}, help});
}

ConfigSchema& ConfigSchema::add_int_list(const std::string& key, const std::vector<int64_t>& def,
                                         const std::string& help, std::optional<int64_t> min,
                                         std::optional<int64_t> max) {
  ConfigKey k{key, ConfigType::IntList, ConfigValue(def), {}, {}, {}, help};
  if (min) k.min = double(*min);
  if (max) k.max = double(*max);
  return add(std::move(k));
}

ConfigSchema& ConfigSchema::add_string_map(const std::string& key, const std::string& help) {
  return add(ConfigKey{key, ConfigType::StringMap, ConfigValue(std::map<std::string, std::string>{}), {}, {}, {}, help});
}

const ConfigKey* ConfigSchema::find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &keys_[it->second];
}

bool ConfigSchema::is_section(const std::string& path) const {
  std::string prefix = path + ".";
  auto it = index_.lower_bound(prefix);
  return it != index_.end() && it->first.rfind(prefix, 0) == 0;
}

std::string ConfigSchema::help_text() const {
  size_t wk = 0, wt = 0, wd = 0;
  std::vector<std::string> defaults;
  for (const ConfigKey& k : keys_) {
    defaults.push_back(format_value(k.default_value));
    wk = std::max(wk, k.key.size());
    wt = std::max(wt, std::string(config_type_name(k.type)).size());
    wd = std::max(wd, std::min<size_t>(defaults.back().size(), 24));
  }
  std::ostringstream os;
  for (size_t i = 0; i < keys_.size(); ++i) {
    const ConfigKey& k = keys_[i];
    std::string line = "  " + k.key + std::string(wk - k.key.size() + 2, ' ') + config_type_name(k.type) +
                       std::string(wt - std::string(config_type_name(k.type)).size() + 2, ' ') + defaults[i];
    line += std::string(defaults[i].size() < wd ? wd - defaults[i].size() + 2 : 2, ' ') + k.help;
    if (k.min || k.max)
      line += " [" + (k.min ? format_bound(*k.min, k.type) : "-inf") + ", " +
              (k.max ? format_bound(*k.max, k.type) : "inf") + "]";
    if (k.type == ConfigType::Enum) line += " {" + join(k.allowed, ", ") + "}";
    os << line << "\n";
  }
  return os.str();
}

// ---- Config ---------------------------------------------------------------------------------

const ConfigKey& Config::declared(const std::string& key, const char* getter) const {
  const ConfigKey* k = schema_.find(key);
  if (!k) throw std::logic_error(std::string("Config::") + getter + ": undeclared key '" + key + "'");
  return *k;
}

namespace {
[[noreturn]] void type_mismatch(const char* getter, const ConfigKey& k) {
  throw std::logic_error(std::string("Config::") + getter + ": key '" + k.key + "' is a " + config_type_name(k.type));
}
}  // namespace

const ConfigValue& Config::get(const std::string& key) const {
  declared(key, "get");
  return values_.at(key);
}

int64_t Config::get_int(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_int");
  if (k.type != ConfigType::Int) type_mismatch("get_int", k);
  return std::get<int64_t>(values_.at(key));
}

double Config::get_float(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_float");
  if (k.type == ConfigType::Int) return double(std::get<int64_t>(values_.at(key)));
  if (k.type != ConfigType::Float) type_mismatch("get_float", k);
  return std::get<double>(values_.at(key));
}

bool Config::get_bool(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_bool");
  if (k.type != ConfigType::Bool) type_mismatch("get_bool", k);
  return std::get<bool>(values_.at(key));
}

std::string Config::get_string(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_string");
  if (k.type != ConfigType::String && k.type != ConfigType::Enum) type_mismatch("get_string", k);
  return std::get<std::string>(values_.at(key));
}

std::vector<std::string> Config::get_string_list(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_string_list");
  if (k.type != ConfigType::StringList) type_mismatch("get_string_list", k);
  return std::get<std::vector<std::string>>(values_.at(key));
}

std::vector<double> Config::get_float_list(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_float_list");
  if (k.type == ConfigType::IntList) {
    const auto& v = std::get<std::vector<int64_t>>(values_.at(key));
    return std::vector<double>(v.begin(), v.end());
  }
  if (k.type != ConfigType::FloatList) type_mismatch("get_float_list", k);
  return std::get<std::vector<double>>(values_.at(key));
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_int_list");
  if (k.type != ConfigType::IntList) type_mismatch("get_int_list", k);
  return std::get<std::vector<int64_t>>(values_.at(key));
}

std::map<std::string, std::string> Config::get_string_map(const std::string& key) const {
  const ConfigKey& k = declared(key, "get_string_map");
  if (k.type != ConfigType::StringMap) type_mismatch("get_string_map", k);
  return std::get<std::map<std::string, std::string>>(values_.at(key));
}

bool Config::was_set(const std::string& key) const {
  declared(key, "was_set");
  return where_.count(key) > 0;
}

std::string Config::where(const std::string& key) const {
  declared(key, "where");
  auto it = where_.find(key);
  return it == where_.end() ? "default" : it->second;
}

ConfigError Config::error(const std::string& key, const std::string& message) const {
  declared(key, "error");
  auto it = where_.find(key);
  if (it != where_.end()) return ConfigError(it->second + ": " + key + ": " + message);
  return ConfigError(source_ + ": " + key + " (default " + format_value(values_.at(key)) + "): " + message);
}

std::string Config::to_yaml() const {
  Tree root;
  for (const ConfigKey& k : schema_.keys()) {
    Tree* t = &root;
    for (const std::string& part : split_dots(k.key)) t = &t->child(part);
    t->leaf = &k;
  }
  YAML::Emitter out;
  if (root.children.empty()) return "{}\n";
  emit_tree(out, root, values_);
  return std::string(out.c_str()) + "\n";
}

// ---- loading --------------------------------------------------------------------------------

Config load_config_text(const std::string& yaml_text, const std::string& source_name, const ConfigSchema& schema,
                        const std::vector<std::string>& overrides) {
  Loader loader(schema, source_name);
  try {
    loader.walk_document(YAML::Load(yaml_text));
  } catch (const YAML::Exception& e) {
    Loc loc = file_loc(e.mark);
    throw ConfigError(loc_text(loc, source_name) + ": YAML syntax error: " + e.msg);
  }
  for (size_t i = 0; i < overrides.size(); ++i) loader.apply_override(overrides[i], int(i));
  Config cfg;
  loader.validate(cfg.values_, cfg.where_);
  loader.throw_if_problems();
  cfg.schema_ = schema;
  cfg.source_ = source_name;
  return cfg;
}

Config load_config(const std::string& path, const ConfigSchema& schema, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read config file '" + path + "': " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return load_config_text(ss.str(), path, schema, overrides);
}

}  // namespace loom::launch
