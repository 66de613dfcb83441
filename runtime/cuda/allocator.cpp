// cuda/allocator.cpp: the caching device allocator (one per device) and the device queries.
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "runtime/cuda/check.h"
#include "runtime/cuda/cuda_backend.h"

namespace loom::runtime::cuda {

std::string error_message(int code, const char* call, const char* file, int line) {
  return std::string("CUDA error: ") + call + " failed at " + file + ":" + std::to_string(line) + ": " +
         cudaGetErrorString(cudaError_t(code)) + " (" + cudaGetErrorName(cudaError_t(code)) + ")";
}

namespace {
struct DeviceQuery {
  int count = 0;
  std::string reason;
};
const DeviceQuery& query() {
  static const DeviceQuery q = [] {
    DeviceQuery r;
    cudaError_t err = cudaGetDeviceCount(&r.count);
    if (err != cudaSuccess) {
      r.count = 0;
      r.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
      cudaGetLastError();
    } else if (r.count == 0) {
      r.reason = "cudaGetDeviceCount returned 0 devices";
    }
    return r;
  }();
  return q;
}
}  // namespace

int device_count() { return query().count; }
std::string unavailable_reason() { return query().reason; }

// ---- CudaCachingAllocator -------------------------------------------------------------------
size_t CudaCachingAllocator::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= kSmallLimit) return (bytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (bytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

void* CudaCachingAllocator::device_malloc(size_t rounded) {
  DeviceGuard g(index_);
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, rounded);
  if (err == cudaErrorMemoryAllocation) {  // give the cache back to the driver and retry once
    cudaGetLastError();
    release_cached_locked();
    err = cudaMalloc(&p, rounded);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(error_message(int(err), "cudaMalloc", __FILE__, __LINE__) + " while allocating " +
                             std::to_string(rounded) + " bytes on cuda:" + std::to_string(index_) + " (" +
                             std::to_string(cs_.reserved_bytes) + " bytes reserved by Loom)");
  }
  ++cs_.device_mallocs;
  cs_.reserved_bytes += int64_t(rounded);
  return p;
}

void* CudaCachingAllocator::allocate(size_t bytes) {
  size_t rounded = round_size(bytes);
  bool small = rounded <= kSmallLimit;
  size_t limit = small ? 2 * rounded : rounded + std::max(rounded / 8, kLargeRound);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto& pool = small ? free_small_ : free_large_;
    auto it = pool.lower_bound(rounded);
    if (it != pool.end() && it->first <= limit) {
      p = it->second;
      rounded = it->first;
      pool.erase(it);
      cs_.cached_bytes -= int64_t(rounded);
      ++cs_.cache_hits;
    } else {
      p = device_malloc(rounded);
    }
    in_use_[p] = rounded;
  }
  record_alloc(bytes);
  return p;
}

void CudaCachingAllocator::deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = in_use_.find(ptr);
    if (it == in_use_.end()) return;  // not ours (never happens through Storage)
    size_t rounded = it->second;
    in_use_.erase(it);
    (rounded <= kSmallLimit ? free_small_ : free_large_).emplace(rounded, ptr);
    cs_.cached_bytes += int64_t(rounded);
  }
  record_free(bytes);
}

void CudaCachingAllocator::release_cached_locked() {
  if (free_small_.empty() && free_large_.empty()) return;
  DeviceGuard g(index_);
  cudaDeviceSynchronize();  // cached blocks may still be read by queued kernels
  for (auto* pool : {&free_small_, &free_large_}) {
    for (auto& [size, p] : *pool) {
      cudaFree(p);
      ++cs_.device_frees;
      cs_.reserved_bytes -= int64_t(size);
      cs_.cached_bytes -= int64_t(size);
    }
    pool->clear();
  }
}

void CudaCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lk(mu_);
  release_cached_locked();
}

CudaCachingAllocator::CacheStats CudaCachingAllocator::cache_stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cs_;
}

void CudaCachingAllocator::copy_to_host(void* host_dst, const void* dev_src, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard g(index_);
  LOOM_CUDA_CHECK(cudaMemcpy(host_dst, dev_src, bytes, cudaMemcpyDeviceToHost));
}
void CudaCachingAllocator::copy_from_host(void* dev_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard g(index_);
  LOOM_CUDA_CHECK(cudaMemcpy(dev_dst, host_src, bytes, cudaMemcpyHostToDevice));
}
void CudaCachingAllocator::copy_on_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard g(index_);
  LOOM_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

// ---- per-device instances -----------------------------------------------------------------------
namespace {
constexpr int kMaxDevices = 64;
std::array<std::atomic<CudaCachingAllocator*>, kMaxDevices> g_allocators{};
std::mutex g_create_mu;
}  // namespace

CudaCachingAllocator& caching_allocator(int index) {
  if (index >= 0 && index < kMaxDevices) {
    if (CudaCachingAllocator* a = g_allocators[size_t(index)].load(std::memory_order_acquire)) return *a;
  }
  int n = device_count();
  if (n == 0)
    throw std::runtime_error("cuda:" + std::to_string(index) + " is not available: no CUDA device (" +
                             unavailable_reason() + ")");
  if (index < 0 || index >= n || index >= kMaxDevices)
    throw std::runtime_error("cuda:" + std::to_string(index) + " is not available: this machine has " +
                             std::to_string(n) + " CUDA device(s)");
  std::lock_guard<std::mutex> lk(g_create_mu);
  CudaCachingAllocator* a = g_allocators[size_t(index)].load(std::memory_order_acquire);
  if (!a) {
    // Never deleted: tensors freed during static destruction still find their allocator, and
    // the CUDA runtime may already be torn down at exit, so cached blocks are left to the driver.
    a = new CudaCachingAllocator(index);
    g_allocators[size_t(index)].store(a, std::memory_order_release);
  }
  return *a;
}

}  // namespace loom::runtime::cuda
