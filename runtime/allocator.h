// allocator.h: the allocator interface every device implements, plus the CPU one.
// Backends register their allocator here so Storage never needs to know devices.
// Every allocator keeps live/peak byte counters: pipeline tests read high-water marks.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "runtime/device.h"

namespace loom::runtime {

struct AllocatorStats {
  int64_t live_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t num_allocs = 0;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
  // Copies between host memory and this allocator's device (plain memcpy for cpu).
  virtual void copy_to_host(void* host_dst, const void* dev_src, size_t bytes) = 0;
  virtual void copy_from_host(void* dev_dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_on_device(void* dst, const void* src, size_t bytes) = 0;
  AllocatorStats stats() const;
  void reset_peak();

 protected:
  void record_alloc(size_t bytes);
  void record_free(size_t bytes);

 private:
  std::atomic<int64_t> live_{0}, peak_{0}, count_{0};
};

// 64-byte aligned host memory (one cache line; enough for AVX-512 loads), caching freed blocks.
Allocator& cpu_allocator();
void cpu_empty_cache();       // returns the cached free blocks to the system
int64_t cpu_cached_bytes();   // bytes held in the cache (not live)

// The allocator for a device; throws a clear error if the backend is not built/available.
Allocator& allocator_for(Device d);
void register_allocator(DeviceType type, Allocator* (*factory)(int index));

}  // namespace loom::runtime
