// checkpoint.cpp: HDF5 checkpoint writer and verifying reader (layout in checkpoint.h).
// Every HDF5 handle lives in an Hid (closed on scope exit, also when an error unwinds), and
// HDF5's own error printing is switched off while we work, its innermost message folded into
// our one CheckpointError instead. HDF5 callbacks only collect names; all checks run outside
// them so no exception crosses the C library.
#include "launch/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "parallel/comm.h"

namespace loom::launch {
namespace fs = std::filesystem;
using runtime::DType;
using runtime::Tensor;

namespace {

// ---- checksums: FNV-1a 64 -------------------------------------------------------------------

constexpr const char* kChecksumAlgorithm = "fnv1a64-blocks";
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull, kFnvPrime = 0x100000001b3ull;

struct Fnv1a64 {
  uint64_t h = kFnvOffset;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    uint64_t x = h;
    for (size_t i = 0; i < n; ++i) x = (x ^ b[i]) * kFnvPrime;
    h = x;
  }
  void str(const std::string& s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
  void u64(uint64_t v) { bytes(&v, 8); }  // little-endian hosts only (x86-64, aarch64)
};

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Checksum of one tensor ("fnv1a64-blocks"): FNV-1a 64 over its name, dtype name, rank, dims,
// byte count, then the FNV-1a 64 digest of each 1 MiB block of its raw bytes (the last block
// shorter). Blocks hash in parallel: byte-serial FNV runs at ~0.5 GB/s per core, which would
// dominate saving and verifying a large model. (Small tensors stay on the calling thread, so
// a forked child never enters OpenMP.)
uint64_t tensor_checksum(const std::string& name, DType dt, const std::vector<int64_t>& shape, const void* data,
                         size_t nbytes) {
  constexpr size_t kBlock = size_t(1) << 20;
  const auto* bytes = static_cast<const uint8_t*>(data);
  const int64_t nblocks = int64_t((nbytes + kBlock - 1) / kBlock);
  std::vector<uint64_t> digests(static_cast<size_t>(nblocks));
#pragma omp parallel for schedule(static) if (nblocks >= 8)
  for (int64_t b = 0; b < nblocks; ++b) {
    Fnv1a64 h;
    h.bytes(bytes + size_t(b) * kBlock, std::min(kBlock, nbytes - size_t(b) * kBlock));
    digests[size_t(b)] = h.h;
  }
  Fnv1a64 f;
  f.str(name);
  f.str(runtime::dtype_name(dt));
  f.u64(shape.size());
  for (int64_t d : shape) f.u64(uint64_t(d));
  f.u64(nbytes);
  for (uint64_t d : digests) f.u64(d);
  return f.h;
}

uint64_t meta_checksum(const CheckpointState& s, int64_t num_tensors) {
  Fnv1a64 f;
  f.u64(uint64_t(s.step));
  f.u64(uint64_t(num_tensors));
  f.u64(s.strings.size());
  for (const auto& [k, v] : s.strings) f.str(k), f.str(v);
  f.u64(s.ints.size());
  for (const auto& [k, v] : s.ints) f.str(k), f.u64(uint64_t(v));
  f.u64(s.floats.size());
  for (const auto& [k, v] : s.floats) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    f.str(k), f.u64(bits);
  }
  return f.h;
}

// ---- HDF5 plumbing --------------------------------------------------------------------------

// An owned HDF5 identifier, closed with the matching H5?close.
class Hid {
 public:
  Hid() = default;
  explicit Hid(hid_t id) : id_(id) {}
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  Hid(Hid&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Hid& operator=(Hid&& o) noexcept {
    std::swap(id_, o.id_);
    return *this;
  }
  ~Hid() { close(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  herr_t close() {
    if (id_ < 0) return 0;
    hid_t id = id_;
    id_ = H5I_INVALID_HID;
    switch (H5Iget_type(id)) {
      case H5I_FILE: return H5Fclose(id);
      case H5I_GROUP: return H5Gclose(id);
      case H5I_DATASET: return H5Dclose(id);
      case H5I_DATASPACE: return H5Sclose(id);
      case H5I_DATATYPE: return H5Tclose(id);
      case H5I_ATTR: return H5Aclose(id);
      case H5I_GENPROP_LST: return H5Pclose(id);
      default: return H5Oclose(id);
    }
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Switches off HDF5's automatic error-stack printing for the scope (restored afterwards).
class QuietHdf5 {
 public:
  QuietHdf5() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The innermost message on HDF5's error stack (the most specific cause), e.g.
// "truncated file: eof = 1024, sblock->base_addr = 0, stored_eof = 4096".
std::string hdf5_cause() {
  std::string msg;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(data) = e->desc;
        return 0;
      },
      &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg.empty() ? "" : ": " + msg;
}

struct FileTypes {
  hid_t file, mem;
};

FileTypes hdf5_types(DType dt) {
  switch (dt) {
    case DType::f32: return {H5T_IEEE_F32LE, H5T_NATIVE_FLOAT};
    case DType::f64: return {H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE};
    case DType::bf16:
    case DType::f16: return {H5T_STD_U16LE, H5T_NATIVE_UINT16};
    case DType::i32: return {H5T_STD_I32LE, H5T_NATIVE_INT32};
    case DType::i64: return {H5T_STD_I64LE, H5T_NATIVE_INT64};
    case DType::u8: return {H5T_STD_U8LE, H5T_NATIVE_UINT8};
  }
  throw std::logic_error("hdf5_types: unknown dtype");
}

// Failures inside the writer/reader carry only the detail; the caller adds the file name.
struct Detail : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(herr_t rc, const std::string& what) {
  if (rc < 0) throw Detail(what + hdf5_cause());
}

hid_t check_id(hid_t id, const std::string& what) {
  if (id < 0) throw Detail(what + hdf5_cause());
  return id;
}

void write_attr(hid_t obj, const std::string& name, hid_t file_type, hid_t mem_type, const void* value) {
  Hid space(check_id(H5Screate(H5S_SCALAR), "H5Screate"));
  Hid attr(check_id(H5Acreate2(obj, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                    "cannot create attribute '" + name + "'"));
  check(H5Awrite(attr.get(), mem_type, value), "cannot write attribute '" + name + "'");
}

void write_string_attr(hid_t obj, const std::string& name, const std::string& value) {
  Hid type(check_id(H5Tcopy(H5T_C_S1), "H5Tcopy"));
  check(H5Tset_size(type.get(), std::max<size_t>(1, value.size())), "H5Tset_size");
  check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), "H5Tset_strpad");
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  write_attr(obj, name, type.get(), type.get(), padded.data());
}

void write_i64_attr(hid_t obj, const std::string& name, int64_t v) {
  write_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
void write_u64_attr(hid_t obj, const std::string& name, uint64_t v) {
  write_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}
void write_f64_attr(hid_t obj, const std::string& name, double v) {
  write_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

// Reading attributes: nullopt when absent; Detail when present but unreadable or mistyped.
Hid open_attr(hid_t obj, const std::string& name, const std::string& where) {
  htri_t exists = H5Aexists(obj, name.c_str());
  if (exists < 0) throw Detail(where + "cannot check attribute '" + name + "'" + hdf5_cause());
  if (exists == 0) return Hid();
  return Hid(check_id(H5Aopen(obj, name.c_str(), H5P_DEFAULT), where + "cannot open attribute '" + name + "'"));
}

std::optional<std::string> read_string_attr(hid_t obj, const std::string& name, const std::string& where = "") {
  Hid attr = open_attr(obj, name, where);
  if (!attr.valid()) return std::nullopt;
  Hid type(check_id(H5Aget_type(attr.get()), where + "attribute '" + name + "'"));
  if (H5Tget_class(type.get()) != H5T_STRING) throw Detail(where + "attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(type.get()) > 0) {
    Hid mem(check_id(H5Tcopy(H5T_C_S1), "H5Tcopy"));
    check(H5Tset_size(mem.get(), H5T_VARIABLE), "H5Tset_size");
    char* s = nullptr;
    check(H5Aread(attr.get(), mem.get(), &s), where + "cannot read attribute '" + name + "'");
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  size_t size = H5Tget_size(type.get());
  std::string buf(size, '\0');
  check(H5Aread(attr.get(), type.get(), buf.data()), where + "cannot read attribute '" + name + "'");
  while (!buf.empty() && buf.back() == '\0') buf.pop_back();
  return buf;
}

template <class T>
std::optional<T> read_number_attr(hid_t obj, const std::string& name, hid_t mem_type, H5T_class_t cls,
                                  const std::string& where = "") {
  Hid attr = open_attr(obj, name, where);
  if (!attr.valid()) return std::nullopt;
  Hid type(check_id(H5Aget_type(attr.get()), where + "attribute '" + name + "'"));
  Hid space(check_id(H5Aget_space(attr.get()), where + "attribute '" + name + "'"));
  if (H5Tget_class(type.get()) != cls || H5Sget_simple_extent_npoints(space.get()) != 1)
    throw Detail(where + "attribute '" + name + "' has the wrong type");
  T v{};
  check(H5Aread(attr.get(), mem_type, &v), where + "cannot read attribute '" + name + "'");
  return v;
}

std::vector<std::string> attribute_names(hid_t obj, const std::string& where) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  check(H5Aiterate2(
            obj, H5_INDEX_NAME, H5_ITER_INC, &idx,
            [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
              static_cast<std::vector<std::string>*>(data)->push_back(name);
              return 0;
            },
            &names),
        where + "cannot list attributes");
  return names;
}

// ---- names ----------------------------------------------------------------------------------

void check_tensor_names(const CheckpointState& s) {
  std::set<std::string> names;
  for (const auto& [name, t] : s.tensors) {
    bool ok = !name.empty() && name.front() != '/' && name.back() != '/' && name.find("//") == std::string::npos;
    for (size_t b = 0; ok && b <= name.size();) {
      size_t e = std::min(name.find('/', b), name.size());
      std::string part = name.substr(b, e - b);
      ok = part != "." && part != "..";
      b = e + 1;
    }
    if (!ok) throw Detail("invalid tensor name '" + name + "' (want slash-separated non-empty parts)");
    if (!names.insert(name).second) throw Detail("tensor '" + name + "' appears twice");
    if (!t.defined()) throw Detail("tensor '" + name + "' is undefined");
  }
  // "a" and "a/b" cannot both exist: "a" would be a dataset and a group.
  for (const std::string& n : names)
    for (size_t p = n.find('/'); p != std::string::npos; p = n.find('/', p + 1))
      if (names.count(n.substr(0, p)))
        throw Detail("tensor '" + n.substr(0, p) + "' is also a group of tensor '" + n + "'");
}

// A save writes ".step_00000100.h5.tmp-<pid>" next to its final name "step_00000100.h5".
bool is_temp_name(const std::string& fname) {
  return fname.rfind(".step_", 0) == 0 && fname.find(".h5.tmp-") != std::string::npos;
}

// "step_<digits>.h5" (one file) or, with directory = true, "step_<digits>" (one file per rank).
std::optional<int64_t> step_of(const std::string& fname, bool directory = false) {
  const size_t suffix = directory ? 0 : 3;
  if (fname.size() <= 5 + suffix || fname.rfind("step_", 0) != 0) return std::nullopt;
  if (!directory && fname.substr(fname.size() - 3) != ".h5") return std::nullopt;
  std::string digits = fname.substr(5, fname.size() - 5 - suffix);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  int64_t v = 0;
  auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (r.ec != std::errc()) return std::nullopt;
  return v;
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw Detail("cannot open '" + path + "' to fsync: " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) throw Detail("fsync of '" + path + "' failed: " + std::strerror(err));
}

// ---- writer ---------------------------------------------------------------------------------

void write_file(const std::string& path, const CheckpointState& s, int kill_after) {
  Hid fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"));
  check(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "H5Pset_fclose_degree");
  // 1.8 object headers: readable by any HDF5 >= 1.8 and allow attributes over 64 KiB.
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18), "H5Pset_libver_bounds");
  Hid file(check_id(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), "cannot create file"));
  Hid lcpl(check_id(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"));
  check(H5Pset_create_intermediate_group(lcpl.get(), 1), "H5Pset_create_intermediate_group");

  int64_t n = int64_t(s.tensors.size());
  write_string_attr(file.get(), "format", kCheckpointFormat);
  write_i64_attr(file.get(), "step", s.step);
  write_i64_attr(file.get(), "num_tensors", n);
  write_string_attr(file.get(), "checksum_algorithm", kChecksumAlgorithm);

  Hid tensors(check_id(H5Gcreate2(file.get(), "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "cannot create group"));
  for (int64_t i = 0; i < n; ++i) {
    const std::string& name = s.tensors[i].first;
    Tensor t = s.tensors[i].second.to(runtime::Device::cpu()).contiguous();
    std::vector<int64_t> shape = t.shape().vec();
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    Hid space(check_id(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                       "tensor '" + name + "': cannot create dataspace"));
    FileTypes types = hdf5_types(t.dtype());
    Hid dset(check_id(H5Dcreate2(tensors.get(), name.c_str(), types.file, space.get(), lcpl.get(), H5P_DEFAULT,
                                 H5P_DEFAULT),
                      "cannot create dataset '" + name + "'"));
    size_t nbytes = size_t(t.numel()) * t.element_size();
    if (nbytes > 0)
      check(H5Dwrite(dset.get(), types.mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw_data()),
            "cannot write dataset '" + name + "'");
    write_string_attr(dset.get(), "dtype", runtime::dtype_name(t.dtype()));
    write_i64_attr(dset.get(), "index", i);
    write_u64_attr(dset.get(), "checksum", tensor_checksum(name, t.dtype(), shape, t.raw_data(), nbytes));
    if (kill_after >= 0 && i + 1 == kill_after) {
      dset.close();
      H5Fflush(file.get(), H5F_SCOPE_GLOBAL);
      std::raise(SIGKILL);
    }
  }
  tensors.close();

  Hid strings(check_id(H5Gcreate2(file.get(), "strings", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2"));
  for (const auto& [k, v] : s.strings) write_string_attr(strings.get(), k, v);
  Hid ints(check_id(H5Gcreate2(file.get(), "ints", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2"));
  for (const auto& [k, v] : s.ints) write_i64_attr(ints.get(), k, v);
  Hid floats(check_id(H5Gcreate2(file.get(), "floats", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2"));
  for (const auto& [k, v] : s.floats) write_f64_attr(floats.get(), k, v);
  strings.close(), ints.close(), floats.close();
  write_u64_attr(file.get(), "meta_checksum", meta_checksum(s, n));

  check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "H5Fflush");
  check(file.close(), "cannot close file");
}

// ---- reader ---------------------------------------------------------------------------------

struct LinkNames {
  std::vector<std::string> names;
};

// Reads `path`; with keep=false tensors are checked and dropped (state.tensors stays empty).
CheckpointState read_file(const std::string& path, bool verify, bool keep) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Detail("no such file");
  if (fs::is_directory(path, ec)) throw Detail("is a directory");
  htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 <= 0) throw Detail("not an HDF5 file (empty, truncated or overwritten?)");

  Hid fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"));
  check(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "H5Pset_fclose_degree");
  Hid file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()));
  if (!file.valid()) throw Detail("cannot open as HDF5 (truncated or corrupt?)" + hdf5_cause());

  std::optional<std::string> format = read_string_attr(file.get(), "format");
  if (!format) throw Detail("missing attribute 'format' (not a Loom checkpoint)");
  if (*format != kCheckpointFormat)
    throw Detail("unsupported format '" + *format + "' (expected '" + kCheckpointFormat + "')");
  auto step = read_number_attr<int64_t>(file.get(), "step", H5T_NATIVE_INT64, H5T_INTEGER);
  auto num = read_number_attr<int64_t>(file.get(), "num_tensors", H5T_NATIVE_INT64, H5T_INTEGER);
  auto meta = read_number_attr<uint64_t>(file.get(), "meta_checksum", H5T_NATIVE_UINT64, H5T_INTEGER);
  auto algo = read_string_attr(file.get(), "checksum_algorithm");
  if (!step) throw Detail("missing attribute 'step'");
  if (!num || *num < 0) throw Detail("missing attribute 'num_tensors'");
  if (!meta) throw Detail("missing attribute 'meta_checksum'");
  if (!algo) throw Detail("missing attribute 'checksum_algorithm'");
  if (*algo != kChecksumAlgorithm) throw Detail("unknown checksum_algorithm '" + *algo + "'");

  CheckpointState s;
  s.step = *step;

  // Tensors: every dataset below /tensors, put back in saved order by its 'index'.
  htri_t has_tensors = H5Lexists(file.get(), "tensors", H5P_DEFAULT);
  if (has_tensors <= 0) throw Detail("missing group 'tensors'");
  Hid tgroup(check_id(H5Gopen2(file.get(), "tensors", H5P_DEFAULT), "cannot open group 'tensors'"));
  LinkNames links;
  check(H5Lvisit(
            tgroup.get(), H5_INDEX_NAME, H5_ITER_INC,
            [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
              static_cast<LinkNames*>(data)->names.push_back(name);
              return 0;
            },
            &links),
        "cannot list group 'tensors'");
  if (*num > int64_t(links.names.size()))
    throw Detail("expected " + std::to_string(*num) + " tensors, found only " + std::to_string(links.names.size()) +
                 " entries under 'tensors'");
  std::vector<std::pair<int64_t, std::pair<std::string, Tensor>>> found;
  std::vector<bool> seen(size_t(*num), false);
  std::vector<uint8_t> scratch;
  for (const std::string& name : links.names) {
    Hid obj(check_id(H5Oopen(tgroup.get(), name.c_str(), H5P_DEFAULT), "cannot open object '" + name + "'"));
    if (H5Iget_type(obj.get()) != H5I_DATASET) continue;
    std::string where = "dataset '" + name + "': ";
    auto dtype_name = read_string_attr(obj.get(), "dtype", where);
    auto index = read_number_attr<int64_t>(obj.get(), "index", H5T_NATIVE_INT64, H5T_INTEGER, where);
    auto sum = read_number_attr<uint64_t>(obj.get(), "checksum", H5T_NATIVE_UINT64, H5T_INTEGER, where);
    if (!dtype_name) throw Detail(where + "missing attribute 'dtype'");
    if (!index) throw Detail(where + "missing attribute 'index'");
    if (!sum) throw Detail(where + "missing attribute 'checksum'");
    DType dt;
    try {
      dt = runtime::dtype_from_name(*dtype_name);
    } catch (const std::exception&) {
      throw Detail(where + "unknown dtype '" + *dtype_name + "'");
    }
    if (*index < 0 || *index >= *num || seen[size_t(*index)])
      throw Detail(where + "bad or repeated index " + std::to_string(*index));
    seen[size_t(*index)] = true;

    Hid space(check_id(H5Dget_space(obj.get()), where + "cannot read dataspace"));
    H5S_class_t cls = H5Sget_simple_extent_type(space.get());
    int ndims = H5Sget_simple_extent_ndims(space.get());
    if ((cls != H5S_SCALAR && cls != H5S_SIMPLE) || ndims < 0 || ndims > runtime::kMaxDims)
      throw Detail(where + "unsupported dataspace");
    std::vector<hsize_t> dims(static_cast<size_t>(ndims));
    if (ndims > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    std::vector<int64_t> shape(dims.begin(), dims.end());

    FileTypes types = hdf5_types(dt);
    Hid ftype(check_id(H5Dget_type(obj.get()), where + "cannot read datatype"));
    if (H5Tget_class(ftype.get()) != H5Tget_class(types.file) || H5Tget_size(ftype.get()) != H5Tget_size(types.file))
      throw Detail(where + "stored type does not match dtype " + *dtype_name);

    Tensor t;
    size_t nbytes = size_t(runtime::numel_of(runtime::Dims(shape))) * runtime::dtype_size(dt);
    void* buf = nullptr;
    if (keep) {
      t = Tensor::empty(runtime::Dims(shape), dt);
      buf = t.raw_data();
    } else {
      scratch.resize(nbytes);
      buf = scratch.data();
    }
    if (nbytes > 0)
      check(H5Dread(obj.get(), types.mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), where + "cannot read data");
    if (verify) {
      uint64_t got = tensor_checksum(name, dt, shape, buf, nbytes);
      if (got != *sum)
        throw Detail("checksum mismatch in dataset '" + name + "' (stored " + hex(*sum) + ", computed " + hex(got) + ")");
    }
    if (keep) found.push_back({*index, {name, t}});
  }
  for (size_t i = 0; i < seen.size(); ++i)
    if (!seen[i]) throw Detail("tensor #" + std::to_string(i) + " of " + std::to_string(*num) + " is missing");
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& f : found) s.tensors.push_back(std::move(f.second));

  // Metadata maps.
  for (const char* group : {"strings", "ints", "floats"}) {
    if (H5Lexists(file.get(), group, H5P_DEFAULT) <= 0) throw Detail(std::string("missing group '") + group + "'");
    Hid g(check_id(H5Gopen2(file.get(), group, H5P_DEFAULT), std::string("cannot open group '") + group + "'"));
    std::string where = std::string("group '") + group + "': ";
    for (const std::string& k : attribute_names(g.get(), where)) {
      if (group[0] == 's') s.strings[k] = *read_string_attr(g.get(), k, where);
      if (group[0] == 'i') s.ints[k] = *read_number_attr<int64_t>(g.get(), k, H5T_NATIVE_INT64, H5T_INTEGER, where);
      if (group[0] == 'f') s.floats[k] = *read_number_attr<double>(g.get(), k, H5T_NATIVE_DOUBLE, H5T_FLOAT, where);
    }
  }
  if (verify && meta_checksum(s, *num) != *meta) throw Detail("checksum mismatch in metadata (step, strings, ints, floats)");
  check(file.close(), "cannot close file");
  return s;
}

CheckpointState read_sharded(const std::string& dir, bool verify, bool keep);

CheckpointState read_checkpoint(const std::string& path, bool verify, bool keep) {
  QuietHdf5 quiet;
  try {
    std::error_code ec;
    if (fs::is_directory(path, ec)) return read_sharded(path, verify, keep);
    return read_file(path, verify, keep);
  } catch (const Detail& e) {
    throw CheckpointError("checkpoint '" + path + "': " + e.what());
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint '" + path + "': " + e.what());
  }
}

}  // namespace

// ---- public API -----------------------------------------------------------------------------

Tensor CheckpointState::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  return Tensor();
}

std::string checkpoint_path(const std::string& dir, int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld.h5", static_cast<long long>(step));
  return (fs::path(dir) / buf).string();
}

namespace {

// Writes `state` to `final_path` through a temporary file in the same directory (flushed,
// fsynced, renamed, directory fsynced). Throws Detail.
void write_atomic(const std::string& final_path, const CheckpointState& state) {
  const std::string dir = fs::path(final_path).parent_path().string();
  std::string tmp = (fs::path(dir) / ("." + fs::path(final_path).filename().string() + ".tmp-" +
                                      std::to_string(::getpid()))).string();
  try {
    int kill_after = -1;
    if (const char* env = std::getenv("LOOM_TEST_KILL_IN_SAVE")) kill_after = std::atoi(env);
    write_file(tmp, state, kill_after);
    fsync_path(tmp, false);
    if (std::rename(tmp.c_str(), final_path.c_str()) != 0)
      throw Detail("cannot rename '" + tmp + "' into place: " + std::strerror(errno));
    tmp.clear();
    fsync_path(dir, true);
  } catch (...) {
    if (!tmp.empty()) std::remove(tmp.c_str());
    throw;
  }
}

void prepare_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Detail("cannot create directory '" + dir + "': " + ec.message());
  // Leftovers of saves that crashed: never valid, never listed; remove them now.
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string f = entry.path().filename().string();
    if (is_temp_name(f) || (f.rfind(".step_", 0) == 0 && f.find(".tmp") != std::string::npos))
      fs::remove_all(entry.path(), ec);
  }
}

void prune(const std::string& dir, const std::string& keep_path, int keep_last) {
  if (keep_last <= 0) return;
  std::vector<std::string> others;
  for (const std::string& p : list_checkpoints(dir))
    if (fs::path(p).filename() != fs::path(keep_path).filename()) others.push_back(p);
  while (!others.empty() && others.size() + 1 > size_t(keep_last)) {
    std::error_code ec;
    fs::remove_all(others.front(), ec);
    if (ec) std::cerr << "warning: cannot delete old checkpoint '" << others.front() << "': " << ec.message() << "\n";
    others.erase(others.begin());
  }
}

std::string rank_file(const std::string& dir, int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank_%05d.h5", rank);
  return (fs::path(dir) / buf).string();
}

// Assembles the pieces of every rank file into full tensors.
CheckpointState read_sharded(const std::string& dir, bool verify, bool keep) {
  CheckpointState first = read_file(rank_file(dir, 0), verify, keep);
  auto ws = first.ints.find("layout/world_size");
  if (ws == first.ints.end()) throw Detail("rank_00000.h5 has no layout/world_size");
  const int world = int(ws->second);
  CheckpointState out;
  out.step = first.step;
  out.strings = first.strings;
  out.ints = first.ints;
  out.floats = first.floats;
  out.strings.erase("layout/pieces");
  struct Full {
    Tensor t;
    int64_t covered = 0;
  };
  std::map<std::string, Full> full;
  std::vector<std::string> order;
  for (int r = 0; r < world; ++r) {
    const std::string path = rank_file(dir, r);
    CheckpointState s = r == 0 ? std::move(first) : read_file(path, verify, keep);
    if (s.step != out.step) throw Detail(fs::path(path).filename().string() + " is of step " + std::to_string(s.step));
    if (!keep) continue;
    nlohmann::json pieces = nlohmann::json::parse(s.strings.at("layout/pieces"));
    for (auto& [name, t] : s.tensors) {
      const nlohmann::json& pj = pieces.at(name);
      runtime::Dims shape;
      for (int64_t d : pj.at("shape")) shape.push_back(d);
      Full& f = full[name];
      if (!f.t.defined()) {
        f.t = Tensor::zeros(shape, t.dtype());
        order.push_back(name);
      } else if (f.t.shape() != shape) {
        throw Detail("tensor '" + name + "' has full shape " + shape.str() + " in " + path + " but " + f.t.shape().str() +
                     " elsewhere");
      }
      Tensor flat = f.t.view({f.t.numel()});
      int64_t at = 0;
      for (const auto& run : pj.at("runs")) {
        const int64_t off = run.at(0), len = run.at(1);
        if (off < 0 || len < 0 || off + len > f.t.numel() || at + len > t.numel())
          throw Detail("tensor '" + name + "' in " + path + ": run [" + std::to_string(off) + ", +" + std::to_string(len) +
                       ") out of range");
        flat.narrow(0, off, len).copy_(t.narrow(0, at, len));
        at += len;
        f.covered += len;
      }
    }
  }
  for (const std::string& name : order) {
    const Full& f = full[name];
    if (f.covered != f.t.numel())
      throw Detail("tensor '" + name + "': the rank files hold " + std::to_string(f.covered) + " of its " +
                   std::to_string(f.t.numel()) + " elements");
    out.tensors.push_back({name, f.t});
  }
  return out;
}

}  // namespace

std::string save_checkpoint(const std::string& dir, const CheckpointState& state, int keep_last) {
  std::string final_path = checkpoint_path(dir, state.step);
  QuietHdf5 quiet;
  try {
    if (state.step < 0) throw Detail("negative step " + std::to_string(state.step));
    check_tensor_names(state);
    prepare_dir(dir);
    write_atomic(final_path, state);
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint '" + final_path + "': cannot save: " + e.what());
  }
  prune(dir, final_path, keep_last);
  return final_path;
}

std::string save_sharded_checkpoint(const std::string& dir, const CheckpointState& meta,
                                    const std::vector<parallel::Piece>& pieces, parallel::Comm& world, int keep_last) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(meta.step));
  const std::string final_path = (fs::path(dir) / name).string();
  const std::string tmp = (fs::path(dir) / ("." + std::string(name) + ".tmp")).string();
  QuietHdf5 quiet;
  // Every rank learns whether every other succeeded, so none waits for a failed one.
  auto agree = [&](const std::string& error, const char* stage) {
    Tensor ok = Tensor::scalar(error.empty() ? 1.0 : 0.0, DType::f64);
    world.all_reduce(ok, parallel::ReduceOp::min);
    if (!error.empty()) throw CheckpointError("checkpoint '" + final_path + "': cannot save: " + error);
    if (ok.item() < 1.0)
      throw CheckpointError("checkpoint '" + final_path + "': another rank failed to " + stage + " (see its message)");
  };
  std::string error;
  try {
    if (world.rank() == 0) {
      prepare_dir(dir);
      std::error_code ec;
      fs::create_directories(tmp, ec);
      if (ec) throw Detail("cannot create '" + tmp + "': " + ec.message());
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(error, "prepare the directory");
  try {
    CheckpointState s;
    s.step = meta.step;
    if (world.rank() == 0) {
      s.strings = meta.strings;
      s.ints = meta.ints;
      s.floats = meta.floats;
    }
    s.ints["layout/world_size"] = world.size();
    s.ints["layout/rank"] = world.rank();
    nlohmann::json pj = nlohmann::json::object();
    for (const parallel::Piece& p : pieces) {
      std::vector<int64_t> shape(p.full.begin(), p.full.end());
      nlohmann::json runs = nlohmann::json::array();
      for (const parallel::Run& r : p.runs) runs.push_back({r.offset, r.length});
      pj[p.name] = {{"shape", shape}, {"runs", runs}};
      s.tensors.push_back({p.name, p.data});
    }
    s.strings["layout/pieces"] = pj.dump();
    check_tensor_names(s);
    write_atomic(rank_file(tmp, world.rank()), s);
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(error, "write its file");
  try {
    if (world.rank() == 0) {
      std::error_code ec;
      if (fs::exists(final_path, ec)) fs::remove_all(final_path, ec);
      if (std::rename(tmp.c_str(), final_path.c_str()) != 0)
        throw Detail("cannot rename '" + tmp + "' into place: " + std::strerror(errno));
      fsync_path(dir, true);
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(error, "rename the checkpoint into place");
  if (world.rank() == 0) prune(dir, final_path, keep_last);
  return final_path;
}

CheckpointState load_checkpoint(const std::string& path, bool verify) { return read_checkpoint(path, verify, true); }

void verify_checkpoint(const std::string& path) { read_checkpoint(path, true, false); }

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string fname = entry.path().filename().string();
    if (auto step = step_of(fname); step && entry.is_regular_file(ec)) found.push_back({*step, entry.path().string()});
    if (auto step = step_of(fname, true); step && entry.is_directory(ec)) found.push_back({*step, entry.path().string()});
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& f : found) paths.push_back(std::move(f.second));
  return paths;
}

std::optional<std::string> latest_checkpoint(const std::string& dir, bool fall_back_to_older) {
  std::vector<std::string> all = list_checkpoints(dir);
  std::string failures;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      verify_checkpoint(*it);
      return *it;
    } catch (const CheckpointError& e) {
      if (!fall_back_to_older) throw;
      std::cerr << "warning: skipping unusable checkpoint: " << e.what() << "\n";
      failures += std::string("\n  ") + e.what();
    }
  }
  if (!failures.empty())
    throw CheckpointError("no usable checkpoint in '" + dir + "'; every one failed to verify:" + failures);
  return std::nullopt;
}

}  // namespace loom::launch
