// io.h: small file helpers shared by the data layer: reading a whole file, atomic writes
// (temporary file in the same directory, fsync, rename, fsync of the directory, so a crash
// leaves either the old file or the new one, never a torn one), and the FNV-1a 64 checksum
// that token shards carry. Every failure is a std::runtime_error naming the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace loom::data {

// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3). Chainable: pass the
// previous result as `h` to checksum data that arrives in pieces.
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull);

// The whole file as bytes; throws "cannot open PATH: reason".
std::string read_file(const std::string& path);

// An output file that appears under its final name only when commit() succeeds. Destroying
// an uncommitted AtomicFile removes the temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Overwrites bytes already written (used to fill in a header after the body).
  void pwrite(const void* data, size_t n, uint64_t offset);
  void commit();  // fsync, rename onto the target, fsync the directory
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail(const std::string& what);
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically.
void atomic_write_file(const std::string& path, std::string_view bytes);

}  // namespace loom::data
