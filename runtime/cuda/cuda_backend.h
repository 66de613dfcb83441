// cuda/cuda_backend.h: the public face of the CUDA backend: the caching device allocator and
// device queries. Includes no CUDA header, so plain C++ code (tests, tools) can use it; it is
// only compiled when Loom is built with LOOM_WITH_CUDA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "runtime/allocator.h"

namespace loom::runtime::cuda {

// Number of visible CUDA devices; 0 when there is no device or no usable driver (never throws).
int device_count();
// Why device_count() is 0 ("cudaGetDeviceCount: no CUDA-capable device is detected"), or "".
std::string unavailable_reason();
// "CUDA error: <call> failed at <file>:<line>: <cudaGetErrorString(code)> (<code>)".
std::string error_message(int code, const char* call, const char* file, int line);

// A caching allocator for one device. Freed blocks go to a free list keyed by their rounded
// size and are handed out again without cudaFree/cudaMalloc (both synchronise the device).
//  - small requests (<= 1 MiB) round up to 512 bytes and reuse a cached block of up to twice
//    the rounded size;
//  - large requests round up to a multiple of 2 MiB and reuse a cached block of up to the
//    rounded size + 1/8 (at least + 2 MiB).
// All kernels and copies run on the device's legacy default stream, so a block freed after
// its last use was enqueued may be reused at once (stream order keeps them apart).
// When cudaMalloc fails the cache is emptied and the allocation retried once.
// live/peak stats (Allocator::stats) count the requested bytes, like the CPU allocator.
class CudaCachingAllocator final : public Allocator {
 public:
  static constexpr size_t kSmallLimit = size_t(1) << 20;  // 1 MiB
  static constexpr size_t kSmallRound = 512;
  static constexpr size_t kLargeRound = size_t(2) << 20;  // 2 MiB
  static size_t round_size(size_t bytes);

  explicit CudaCachingAllocator(int index) : index_(index) {}
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  Device device() const override { return Device::cuda(index_); }
  void copy_to_host(void* host_dst, const void* dev_src, size_t bytes) override;
  void copy_from_host(void* dev_dst, const void* host_src, size_t bytes) override;
  void copy_on_device(void* dst, const void* src, size_t bytes) override;

  // Returns every cached (free) block to the driver (synchronises the device first).
  void empty_cache();
  struct CacheStats {
    int64_t reserved_bytes = 0;  // held from cudaMalloc: in use + cached
    int64_t cached_bytes = 0;    // on the free lists
    int64_t device_mallocs = 0;  // cudaMalloc calls so far
    int64_t device_frees = 0;    // cudaFree calls so far
    int64_t cache_hits = 0;      // allocations served from the free lists
  };
  CacheStats cache_stats() const;

 private:
  void* device_malloc(size_t rounded);
  void release_cached_locked();

  int index_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_small_, free_large_;  // rounded size -> block
  std::unordered_map<void*, size_t> in_use_;              // block -> rounded size
  CacheStats cs_;
};

// The allocator of cuda:index (created on first use; throws std::runtime_error naming the
// device when it does not exist or no device is present).
CudaCachingAllocator& caching_allocator(int index);

}  // namespace loom::runtime::cuda
