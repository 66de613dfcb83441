// safetensors.h: reader and writer of the Hugging Face safetensors format, used for the
// golden test files and for Hugging Face export/import.
//
// Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON, then the data buffer.
//   {"__metadata__": {str: str},
//    "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// Offsets are bytes relative to the start of the data buffer; tensors are row-major,
// little-endian. Rules kept here:
//   - Writing: tensors are laid out in the order given, contiguous without holes; the header
//     is compact JSON ("__metadata__" first, then the tensors in order, keys dtype, shape,
//     data_offsets) padded with spaces so that 8 + N is a multiple of 8; the file is written
//     atomically (temporary file in the same directory, fsync, rename, fsync of the directory).
//   - Reading: every malformed file is refused with one std::runtime_error naming the file and
//     the problem (short file, header length beyond the file, invalid JSON, unknown dtype,
//     shape/offset size mismatch, offsets outside the buffer, overlapping tensors, holes or
//     trailing bytes in the data buffer, duplicate names). Tensors come back in data-offset
//     order. BOOL reads as u8; u8 writes as U8.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace loom::runtime {

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::vector<std::pair<std::string, Tensor>> tensors;  // in data-offset order

  bool contains(const std::string& name) const;
  // The tensor called `name`; throws std::out_of_range naming it if absent.
  const Tensor& at(const std::string& name) const;
};

SafetensorsFile read_safetensors(const std::string& path);

// Tensors may live on any device and need not be contiguous; they are copied to host memory.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The safetensors dtype string ("F32", "BF16", ...) for a Loom dtype, and back ("BOOL" -> u8).
const char* safetensors_dtype_name(DType dt);
DType dtype_from_safetensors_name(const std::string& name);  // throws std::invalid_argument

}  // namespace loom::runtime
