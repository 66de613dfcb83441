// gguf.cpp: the GGUF container reader and writer (layout and rules in gguf.h). The reader
// checks every length against the bytes left in the file before it allocates, so a truncated
// or hostile file fails with a message instead of a huge allocation.
#include "launch/gguf.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

#include "data/io.h"

namespace loom::launch {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

using runtime::DType;
using runtime::Tensor;

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("gguf '" + path + "': " + what);
}

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
    case GgufType::u16: case GgufType::i16: return 2;
    case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
    case GgufType::u64: case GgufType::i64: case GgufType::f64: return 8;
    default: return 0;  // string, array
  }
}

bool known_type(uint32_t t) { return t <= uint32_t(GgufType::f64); }

DType dtype_of_ggml(uint32_t t) {
  if (t == kGgmlF32) return DType::f32;
  if (t == kGgmlF16) return DType::f16;
  if (t == kGgmlBF16) return DType::bf16;
  throw std::invalid_argument("ggml type " + std::to_string(t));
}

uint32_t ggml_of_dtype(DType d) {
  if (d == DType::f32) return kGgmlF32;
  if (d == DType::f16) return kGgmlF16;
  if (d == DType::bf16) return kGgmlBF16;
  throw std::invalid_argument(std::string("dtype ") + runtime::dtype_name(d));
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// ---- writing --------------------------------------------------------------------------------

struct Buffer {
  std::string bytes;
  template <class T> void put(T v) { bytes.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.append(s);
  }
  void put_scalar(GgufType t, int64_t i, double f) {
    switch (t) {
      case GgufType::u8: put<uint8_t>(uint8_t(i)); break;
      case GgufType::i8: put<int8_t>(int8_t(i)); break;
      case GgufType::u16: put<uint16_t>(uint16_t(i)); break;
      case GgufType::i16: put<int16_t>(int16_t(i)); break;
      case GgufType::u32: put<uint32_t>(uint32_t(i)); break;
      case GgufType::i32: put<int32_t>(int32_t(i)); break;
      case GgufType::u64: put<uint64_t>(uint64_t(i)); break;
      case GgufType::i64: put<int64_t>(i); break;
      case GgufType::boolean: put<uint8_t>(i ? 1 : 0); break;
      case GgufType::f32: put<float>(float(f)); break;
      case GgufType::f64: put<double>(f); break;
      default: throw std::logic_error("put_scalar: not a scalar type");
    }
  }
  void put_value(const GgufValue& v) {
    if (v.type == GgufType::string) return put_string(v.s);
    if (v.type != GgufType::array) return put_scalar(v.type, v.i, v.f);
    put<uint32_t>(uint32_t(v.elem));
    put<uint64_t>(v.array_size());
    if (v.elem == GgufType::string)
      for (const auto& s : v.strings) put_string(s);
    else if (v.elem == GgufType::f32 || v.elem == GgufType::f64)
      for (double f : v.floats) put_scalar(v.elem, 0, f);
    else
      for (int64_t i : v.ints) put_scalar(v.elem, i, 0);
  }
};

// ---- reading --------------------------------------------------------------------------------

// Sequential reads with a bound: every read first checks that the file holds the bytes.
struct Cursor {
  const std::string& path;
  std::ifstream& in;
  uint64_t size, pos = 0;

  void need(uint64_t n, const std::string& what) {
    if (n > size - pos)
      fail(path, "truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos) +
                     " but the file has " + std::to_string(size) + " bytes");
  }
  template <class T> T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    in.read(reinterpret_cast<char*>(&v), sizeof(T));
    if (!in) fail(path, "cannot read " + what);
    pos += sizeof(T);
    return v;
  }
  std::string get_string(const std::string& what) {
    uint64_t n = get<uint64_t>(what + " length");
    need(n, what);
    std::string s(size_t(n), '\0');
    in.read(s.data(), std::streamsize(n));
    if (!in) fail(path, "cannot read " + what);
    pos += n;
    return s;
  }
  void get_scalar(GgufType t, int64_t& i, double& f, const std::string& what) {
    switch (t) {
      case GgufType::u8: i = get<uint8_t>(what); break;
      case GgufType::i8: i = get<int8_t>(what); break;
      case GgufType::u16: i = get<uint16_t>(what); break;
      case GgufType::i16: i = get<int16_t>(what); break;
      case GgufType::u32: i = get<uint32_t>(what); break;
      case GgufType::i32: i = get<int32_t>(what); break;
      case GgufType::u64: i = int64_t(get<uint64_t>(what)); break;
      case GgufType::i64: i = get<int64_t>(what); break;
      case GgufType::boolean: {
        uint8_t b = get<uint8_t>(what);
        if (b > 1) fail(path, what + ": bool value " + std::to_string(b) + " is not 0 or 1");
        i = b;
        break;
      }
      case GgufType::f32: f = get<float>(what); break;
      case GgufType::f64: f = get<double>(what); break;
      default: throw std::logic_error("get_scalar: not a scalar type");
    }
  }
  GgufValue get_value(uint32_t type, const std::string& what) {
    if (!known_type(type)) fail(path, what + ": unknown value type " + std::to_string(type));
    GgufValue v;
    v.type = GgufType(type);
    if (v.type == GgufType::string) {
      v.s = get_string(what);
    } else if (v.type == GgufType::array) {
      uint32_t et = get<uint32_t>(what + " element type");
      if (!known_type(et)) fail(path, what + ": unknown array element type " + std::to_string(et));
      if (GgufType(et) == GgufType::array) fail(path, what + ": nested arrays are not supported");
      v.elem = GgufType(et);
      uint64_t n = get<uint64_t>(what + " element count");
      // Each element takes at least one byte (strings at least 8): bound n before reserving.
      uint64_t min_bytes = v.elem == GgufType::string ? 8 : scalar_size(v.elem);
      if (n > (size - pos) / min_bytes)
        fail(path, "truncated: " + what + " claims " + std::to_string(n) + " elements, more than the " +
                       std::to_string(size - pos) + " bytes left in the file hold");
      for (uint64_t k = 0; k < n; ++k) {
        if (v.elem == GgufType::string) {
          v.strings.push_back(get_string(what + "[" + std::to_string(k) + "]"));
        } else {
          int64_t i = 0;
          double f = 0;
          get_scalar(v.elem, i, f, what);
          if (v.elem == GgufType::f32 || v.elem == GgufType::f64) v.floats.push_back(f);
          else v.ints.push_back(i);
        }
      }
    } else {
      get_scalar(v.type, v.i, v.f, what);
    }
    return v;
  }
};

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::u8: return "uint8";
    case GgufType::i8: return "int8";
    case GgufType::u16: return "uint16";
    case GgufType::i16: return "int16";
    case GgufType::u32: return "uint32";
    case GgufType::i32: return "int32";
    case GgufType::f32: return "float32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::u64: return "uint64";
    case GgufType::i64: return "int64";
    case GgufType::f64: return "float64";
  }
  return "?";
}

// ---- GgufValue ------------------------------------------------------------------------------

GgufValue GgufValue::u32(uint32_t v) { GgufValue x; x.type = GgufType::u32; x.i = v; return x; }
GgufValue GgufValue::i32(int32_t v) { GgufValue x; x.type = GgufType::i32; x.i = v; return x; }
GgufValue GgufValue::u64(uint64_t v) { GgufValue x; x.type = GgufType::u64; x.i = int64_t(v); return x; }
GgufValue GgufValue::f32(float v) { GgufValue x; x.type = GgufType::f32; x.f = v; return x; }
GgufValue GgufValue::boolean(bool v) { GgufValue x; x.type = GgufType::boolean; x.i = v; return x; }
GgufValue GgufValue::str(std::string v) { GgufValue x; x.type = GgufType::string; x.s = std::move(v); return x; }
GgufValue GgufValue::string_array(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufType::array;
  x.elem = GgufType::string;
  x.strings = std::move(v);
  return x;
}
GgufValue GgufValue::i32_array(std::vector<int64_t> v) {
  GgufValue x;
  x.type = GgufType::array;
  x.elem = GgufType::i32;
  x.ints = std::move(v);
  return x;
}
size_t GgufValue::array_size() const {
  if (elem == GgufType::string) return strings.size();
  if (elem == GgufType::f32 || elem == GgufType::f64) return floats.size();
  return ints.size();
}

// ---- GgufFile -------------------------------------------------------------------------------

bool GgufFile::contains(const std::string& key) const {
  for (const auto& [k, v] : kv)
    if (k == key) return true;
  return false;
}
const GgufValue& GgufFile::at(const std::string& key) const {
  for (const auto& [k, v] : kv)
    if (k == key) return v;
  throw std::runtime_error("gguf: no metadata key '" + key + "'");
}
const Tensor& GgufFile::tensor(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  throw std::runtime_error("gguf: no tensor '" + name + "'");
}

// ---- write ----------------------------------------------------------------------------------

void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kv,
                const std::vector<std::pair<std::string, Tensor>>& tensors, uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1))) fail(path, "alignment " + std::to_string(alignment) + " is not a power of two");
  Buffer h;
  h.put<uint32_t>(kMagic);
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors.size());
  h.put<uint64_t>(kv.size() + 1);
  std::set<std::string> keys;
  for (const auto& [k, v] : kv) {
    if (k == "general.alignment") fail(path, "general.alignment is written from the alignment argument");
    if (!keys.insert(k).second) fail(path, "duplicate metadata key '" + k + "'");
    h.put_string(k);
    h.put<uint32_t>(uint32_t(v.type));
    h.put_value(v);
  }
  h.put_string("general.alignment");
  h.put<uint32_t>(uint32_t(GgufType::u32));
  h.put<uint32_t>(alignment);

  std::vector<Tensor> host;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (!names.insert(name).second) fail(path, "duplicate tensor name '" + name + "'");
    Tensor c = t.detach().to(runtime::Device::cpu()).contiguous();
    uint32_t type;
    try {
      type = ggml_of_dtype(c.dtype());
    } catch (const std::invalid_argument& e) {
      fail(path, "tensor '" + name + "': " + e.what() + " cannot be written (f32, f16, bf16)");
    }
    if (c.dim() < 1 || c.dim() > 4) fail(path, "tensor '" + name + "': ggml tensors have 1 to 4 dimensions, not " + std::to_string(c.dim()));
    h.put_string(name);
    h.put<uint32_t>(uint32_t(c.dim()));
    for (int64_t d = c.dim() - 1; d >= 0; --d) h.put<uint64_t>(uint64_t(c.size(d)));  // ggml order
    h.put<uint32_t>(type);
    h.put<uint64_t>(offset);
    offset = align_up(offset + uint64_t(c.numel()) * c.element_size(), alignment);
    host.push_back(std::move(c));
  }
  h.bytes.append(align_up(h.bytes.size(), alignment) - h.bytes.size(), '\0');

  data::AtomicFile f(path);
  f.write(h.bytes);
  static const char zeros[64] = {};
  for (const Tensor& c : host) {
    size_t bytes = size_t(c.numel()) * c.element_size();
    f.write(c.raw_data(), bytes);
    size_t pad = size_t(align_up(bytes, alignment) - bytes);
    while (pad > 0) {
      size_t n = std::min(pad, sizeof(zeros));
      f.write(zeros, n);
      pad -= n;
    }
  }
  f.commit();
}

// ---- read -----------------------------------------------------------------------------------

GgufFile read_gguf(const std::string& path, bool load_data) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(path, "cannot open for reading (no such file or not accessible)");
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  Cursor c{path, in, uint64_t(st.st_size)};
  GgufFile g;
  if (c.size < 4) fail(path, "file is " + std::to_string(c.size) + " bytes, too short for the GGUF magic");
  uint32_t magic = c.get<uint32_t>("magic");
  if (magic != kMagic) fail(path, "not a GGUF file (magic bytes are not \"GGUF\")");
  g.version = c.get<uint32_t>("version");
  if (g.version != 2 && g.version != 3) fail(path, "unsupported GGUF version " + std::to_string(g.version) + " (Loom reads 2 and 3)");
  uint64_t n_tensors = c.get<uint64_t>("tensor count"), n_kv = c.get<uint64_t>("metadata count");
  // Each entry needs more than 8 bytes: counts beyond that cannot be real.
  if (n_kv > c.size / 8 || n_tensors > c.size / 8)
    fail(path, "truncated or corrupt: " + std::to_string(n_kv) + " metadata entries and " + std::to_string(n_tensors) +
                   " tensors cannot fit in " + std::to_string(c.size) + " bytes");
  std::set<std::string> keys;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.get_string("metadata key #" + std::to_string(k));
    if (!keys.insert(key).second) fail(path, "duplicate metadata key '" + key + "'");
    uint32_t type = c.get<uint32_t>("type of '" + key + "'");
    g.kv.emplace_back(key, c.get_value(type, "metadata '" + key + "'"));
  }
  if (g.contains("general.alignment")) {
    const GgufValue& a = g.at("general.alignment");
    if (a.type != GgufType::u32) fail(path, std::string("general.alignment has type ") + gguf_type_name(a.type) + ", expected uint32");
    if (a.i == 0 || (a.i & (a.i - 1))) fail(path, "general.alignment " + std::to_string(a.i) + " is not a power of two");
    g.alignment = uint32_t(a.i);
  }
  std::set<std::string> names;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = c.get_string("tensor name #" + std::to_string(k));
    if (!names.insert(t.name).second) fail(path, "duplicate tensor name '" + t.name + "'");
    const std::string where = "tensor '" + t.name + "'";
    uint32_t nd = c.get<uint32_t>(where + " dimension count");
    if (nd < 1 || nd > 4) fail(path, where + ": " + std::to_string(nd) + " dimensions (ggml allows 1 to 4)");
    for (uint32_t d = 0; d < nd; ++d) {
      uint64_t n = c.get<uint64_t>(where + " dimensions");
      if (n == 0 || n > uint64_t(1) << 40) fail(path, where + ": dimension " + std::to_string(n) + " out of range");
      t.ne.push_back(int64_t(n));
    }
    t.ggml_type = c.get<uint32_t>(where + " type");
    try {
      dtype_of_ggml(t.ggml_type);
    } catch (const std::invalid_argument&) {
      fail(path, where + ": ggml type " + std::to_string(t.ggml_type) + " is not supported (Loom reads F32, F16, BF16; quantized types are not)");
    }
    t.offset = c.get<uint64_t>(where + " offset");
    if (t.offset % g.alignment) fail(path, where + ": data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(g.alignment));
    g.infos.push_back(std::move(t));
  }
  g.data_start = align_up(c.pos, g.alignment);
  if (g.data_start > c.size) fail(path, "truncated: the data section would start at " + std::to_string(g.data_start) + ", past the end of the file");
  const uint64_t data_size = c.size - g.data_start;
  // Bounds and overlaps, in offset order.
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // (begin, end) per tensor, info order
  for (const GgufTensorInfo& t : g.infos) {
    uint64_t bytes = runtime::dtype_size(dtype_of_ggml(t.ggml_type));
    bool too_big = false;
    for (int64_t n : t.ne) {  // stop before the product could overflow
      if (bytes > data_size / uint64_t(n)) too_big = true;
      else bytes *= uint64_t(n);
    }
    if (too_big) fail(path, "truncated or corrupt: tensor '" + t.name + "' is larger than the whole data section");
    if (t.offset > data_size || bytes > data_size - t.offset)
      fail(path, "truncated: tensor '" + t.name + "' needs bytes [" + std::to_string(t.offset) + ", " +
                     std::to_string(t.offset + bytes) + ") of a " + std::to_string(data_size) + "-byte data section");
    spans.push_back({t.offset, t.offset + bytes});
  }
  std::vector<size_t> order(g.infos.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return spans[a].first < spans[b].first; });
  for (size_t k = 1; k < order.size(); ++k)
    if (spans[order[k]].first < spans[order[k - 1]].second)
      fail(path, "tensors '" + g.infos[order[k - 1]].name + "' and '" + g.infos[order[k]].name + "' overlap");
  if (!load_data) return g;
  for (size_t k = 0; k < g.infos.size(); ++k) {
    const GgufTensorInfo& t = g.infos[k];
    runtime::Dims shape;
    for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it) shape.push_back(*it);
    Tensor x = Tensor::empty(shape, dtype_of_ggml(t.ggml_type));
    in.seekg(std::streamoff(g.data_start + t.offset));
    in.read(static_cast<char*>(x.raw_data()), std::streamsize(spans[k].second - spans[k].first));
    if (!in) fail(path, "cannot read the data of tensor '" + t.name + "'");
    g.tensors.emplace_back(t.name, std::move(x));
  }
  return g;
}

}  // namespace loom::launch
