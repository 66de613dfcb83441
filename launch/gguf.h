// gguf.h: reader and writer of the GGUF container (the file llama.cpp and Ollama load), format
// only; what a llama model puts in it is export_gguf.h's business.
//
// Layout (GGUF v3, all little-endian):
//   u32 magic "GGUF", u32 version (3), u64 n_tensors, u64 n_kv
//   n_kv x  { string key, u32 value_type, value }     string = u64 length + bytes (no NUL)
//           array value = u32 element_type, u64 count, elements
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   zero padding to `general.alignment` (32 when absent), then the data section; each
//   tensor's offset is relative to its start and a multiple of the alignment.
// Dimensions are in ggml order: ne[0] is the fastest-varying one, so a row-major [R, C]
// tensor is ne = {C, R}. The tensors here are F32, F16 or BF16 (ggml types 0, 1, 30);
// quantized types are refused by name.
//
// Rules kept here: the writer lays data out in tensor-info order, each tensor padded to the
// alignment, and writes atomically (data/io.h AtomicFile). The reader refuses every malformed
// file with one std::runtime_error "gguf 'PATH': problem" (bad magic or version, a length or
// count past the end of the file, unknown value type, duplicate key or tensor name, bad
// alignment, misaligned or overlapping or out-of-file tensor data, unsupported ggml type).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace loom::launch {

enum class GgufType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Integers (and bools) live in `i`, floats in `f`, a string in `s`; an
// array holds its elements' type in `elem` and the elements in `ints`, `floats` or `strings`.
struct GgufValue {
  GgufType type = GgufType::u32;
  GgufType elem = GgufType::u32;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue str(std::string v);
  static GgufValue string_array(std::vector<std::string> v);
  static GgufValue i32_array(std::vector<int64_t> v);
  size_t array_size() const;
};

// ggml tensor types Loom reads and writes.
inline constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1, kGgmlBF16 = 30;

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order
  uint32_t ggml_type = kGgmlF32;
  uint64_t offset = 0;      // from the start of the data section
};

struct GgufFile {
  uint32_t version = 3;
  uint32_t alignment = 32;
  uint64_t data_start = 0;  // byte offset of the data section in the file
  std::vector<std::pair<std::string, GgufValue>> kv;  // in file order
  std::vector<GgufTensorInfo> infos;                   // in file order
  // In `infos` order; shape is ne reversed (row-major), dtype f32/f16/bf16. Empty when the
  // file was read with load_data = false.
  std::vector<std::pair<std::string, runtime::Tensor>> tensors;

  bool contains(const std::string& key) const;
  // The value of `key`; throws std::runtime_error naming the key when absent.
  const GgufValue& at(const std::string& key) const;
  const runtime::Tensor& tensor(const std::string& name) const;
};

// Writes a GGUF v3 file. Tensors must be f32, f16 or bf16 (any device, any strides); `kv`
// must not contain general.alignment (it is written from `alignment`, a power of two).
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kv,
                const std::vector<std::pair<std::string, runtime::Tensor>>& tensors, uint32_t alignment = 32);

GgufFile read_gguf(const std::string& path, bool load_data = true);

}  // namespace loom::launch
