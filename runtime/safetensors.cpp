// safetensors.cpp: the safetensors reader and writer (format and rules in safetensors.h).
// The reader validates the whole header before it allocates any tensor, then reads each
// tensor's bytes straight into its storage (one copy, no staging buffer of the whole file).
#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace loom::runtime {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using ordered_json = nlohmann::ordered_json;

// The Rust reference implementation refuses headers above 100 MB; so do we, before allocating.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("safetensors '" + path + "': " + what);
}

std::string errno_text() { return std::strerror(errno); }

// One header entry after validation.
struct Entry {
  std::string name;
  DType dtype;
  Dims shape;
  uint64_t begin, end;
  size_t order;  // position in the header, to keep zero-size tensors stable
};

// Parses the JSON header, refusing duplicate keys in any object (nlohmann keeps the last one).
ordered_json parse_header(const std::string& path, const std::string& text) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  int duplicate_depth = 0;
  ordered_json::parser_callback_t cb = [&](int depth, ordered_json::parse_event_t ev, ordered_json& parsed) {
    if (ev == ordered_json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (ev == ordered_json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (ev == ordered_json::parse_event_t::key && duplicate.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second) {
        duplicate = k;
        duplicate_depth = depth;
      }
    }
    return true;
  };
  ordered_json h;
  try {
    h = ordered_json::parse(text, cb);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("invalid JSON header: ") + e.what());
  }
  if (!duplicate.empty()) {
    if (duplicate_depth == 1) fail(path, "duplicate tensor name '" + duplicate + "' in the header");
    fail(path, "duplicate key '" + duplicate + "' in the header");
  }
  if (!h.is_object()) fail(path, "the JSON header is not an object");
  return h;
}

Entry parse_entry(const std::string& path, const std::string& name, const ordered_json& v, size_t order) {
  const std::string where = "tensor '" + name + "': ";
  if (!v.is_object()) fail(path, where + "entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) fail(path, where + "missing \"" + key + "\"");
  Entry e;
  e.name = name;
  e.order = order;
  if (!v["dtype"].is_string()) fail(path, where + "dtype is not a string");
  std::string dt = v["dtype"].get<std::string>();
  try {
    e.dtype = dtype_from_safetensors_name(dt);
  } catch (const std::invalid_argument&) {
    fail(path, where + "unknown dtype \"" + dt + "\" (Loom reads F32, F64, BF16, F16, I32, I64, U8, BOOL)");
  }
  const ordered_json& shape = v["shape"];
  if (!shape.is_array()) fail(path, where + "shape is not an array");
  if (shape.size() > size_t(kMaxDims)) fail(path, where + "shape has more than 8 dimensions");
  // Element count with overflow checks: a hostile shape must not wrap around to a small size.
  uint64_t numel = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) fail(path, where + "shape " + shape.dump() + " has an entry that is not a non-negative integer");
    uint64_t n = d.get<uint64_t>();
    if (n > uint64_t(std::numeric_limits<int64_t>::max()) ||
        (n != 0 && numel > uint64_t(std::numeric_limits<int64_t>::max()) / n))
      fail(path, where + "shape " + shape.dump() + " is too large");
    numel *= n;
    e.shape.push_back(int64_t(n));
  }
  const ordered_json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    fail(path, where + "data_offsets " + off.dump() + " is not [begin, end] with non-negative integers");
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.end < e.begin) fail(path, where + "data_offsets " + off.dump() + " end before begin");
  uint64_t esize = dtype_size(e.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / esize || numel * esize != e.end - e.begin)
    fail(path, where + "shape " + shape.dump() + " of " + dt + " needs " + std::to_string(numel) + " x " +
                   std::to_string(esize) + " bytes but data_offsets " + off.dump() + " span " +
                   std::to_string(e.end - e.begin));
  return e;
}

// Writes all of buf to fd, retrying short writes; false on error (errno set).
bool write_all(int fd, const char* buf, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    buf += w;
    n -= size_t(w);
  }
  return true;
}

std::string directory_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

// ---- dtype names ------------------------------------------------------------------------------

const char* safetensors_dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  throw std::invalid_argument("safetensors_dtype_name: unknown dtype");
}

DType dtype_from_safetensors_name(const std::string& name) {
  if (name == "F32") return DType::f32;
  if (name == "F64") return DType::f64;
  if (name == "BF16") return DType::bf16;
  if (name == "F16") return DType::f16;
  if (name == "I32") return DType::i32;
  if (name == "I64") return DType::i64;
  if (name == "U8" || name == "BOOL") return DType::u8;
  throw std::invalid_argument("unknown safetensors dtype \"" + name + "\"");
}

// ---- SafetensorsFile ----------------------------------------------------------------------------

bool SafetensorsFile::contains(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return true;
  return false;
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  throw std::out_of_range("safetensors: no tensor named '" + name + "'");
}

// ---- reading ------------------------------------------------------------------------------------

SafetensorsFile read_safetensors(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(path, "cannot open for reading (" + errno_text() + ")");
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading (" + errno_text() + ")");
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) fail(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  if (!in) fail(path, "could not read the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > file_size - 8)
    fail(path, "header length " + std::to_string(n) + " goes beyond the file (" + std::to_string(file_size) + " bytes)");
  if (n > kMaxHeaderBytes) fail(path, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  std::string text(size_t(n), '\0');
  in.read(text.data(), std::streamsize(n));
  if (!in) fail(path, "could not read the " + std::to_string(n) + "-byte header");

  ordered_json h = parse_header(path, text);
  const uint64_t data_start = 8 + n, buffer_size = file_size - data_start;

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [key, value] : h.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail(path, "__metadata__ value for '" + mk + "' is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, value, entries.size()));
    const Entry& e = entries.back();
    if (e.end > buffer_size)
      fail(path, "tensor '" + key + "': data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                     "] outside the " + std::to_string(buffer_size) + "-byte data buffer");
  }

  // Overlaps: sorted by begin, each non-empty range must start at or after the previous end.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.order < b.order;
  });
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (prev && e.begin < prev->end)
      fail(path, "tensors '" + prev->name + "' [" + std::to_string(prev->begin) + ", " + std::to_string(prev->end) +
                     ") and '" + e.name + "' [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ") overlap");
    prev = &e;
  }
  // Contiguous without holes, as the format requires (the Rust reference refuses the rest): the
  // non-empty ranges, in order, tile [0, buffer_size) exactly.
  uint64_t covered = 0;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (e.begin != covered)
      fail(path, "hole in the data buffer: bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) +
                     ") belong to no tensor (before '" + e.name + "')");
    covered = e.end;
  }
  if (covered != buffer_size)
    fail(path, std::to_string(buffer_size - covered) + " bytes after the last tensor's data (the header describes " +
                   std::to_string(covered) + " of the " + std::to_string(buffer_size) + "-byte data buffer)");

  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.end > e.begin) {
      in.seekg(std::streamoff(data_start + e.begin));
      in.read(static_cast<char*>(t.raw_data()), std::streamsize(e.end - e.begin));
      if (!in) fail(path, "tensor '" + e.name + "': could not read its " + std::to_string(e.end - e.begin) + " bytes");
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

// ---- writing ------------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Host-contiguous copies, and the header with offsets in the order given.
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  ordered_json h = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json m = ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail(path, "a tensor may not be called __metadata__");
    if (!names.insert(name).second) fail(path, "duplicate tensor name '" + name + "'");
    if (!t.defined()) fail(path, "tensor '" + name + "' is undefined");
    Tensor c = t.detach().to(Device::cpu()).contiguous();
    uint64_t bytes = uint64_t(c.numel()) * c.element_size();
    ordered_json e = ordered_json::object();
    e["dtype"] = safetensors_dtype_name(c.dtype());
    e["shape"] = c.shape().vec();
    e["data_offsets"] = {offset, offset + bytes};
    h[name] = std::move(e);
    offset += bytes;
    host.push_back(std::move(c));
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("cannot encode the header (names and metadata must be UTF-8): ") + e.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = (uint64_t(header.size()) >> (8 * i)) & 0xffu;

  // Atomic replace: temporary file beside the target, fsync, rename, fsync the directory.
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) fail(path, "cannot create a temporary file beside it (" + errno_text() + ")");
  auto abandon = [&](const std::string& what) {
    std::string err = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, what + " (" + err + ")");
  };
  if (::fchmod(fd, 0644) != 0) abandon("cannot set permissions on " + tmp);
  if (!write_all(fd, reinterpret_cast<const char*>(len_bytes), 8) || !write_all(fd, header.data(), header.size()))
    abandon("cannot write the header to " + tmp);
  for (size_t i = 0; i < host.size(); ++i) {
    const Tensor& c = host[i];
    size_t bytes = size_t(c.numel()) * c.element_size();
    if (bytes && !write_all(fd, static_cast<const char*>(c.raw_data()), bytes))
      abandon("cannot write tensor '" + tensors[i].first + "' to " + tmp);
  }
  if (::fsync(fd) != 0) abandon("cannot fsync " + tmp);
  if (::close(fd) != 0) {
    std::string err = errno_text();
    ::unlink(tmp.c_str());
    fail(path, "cannot close " + tmp + " (" + err + ")");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = errno_text();
    ::unlink(tmp.c_str());
    fail(path, "cannot rename " + tmp + " onto it (" + err + ")");
  }
  int dfd = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {  // best effort: the data is already durable, this makes the rename so
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace loom::runtime
