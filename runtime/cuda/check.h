// cuda/check.h: host-side helpers shared by the CUDA backend's .cu and .cpp files: error
// checking that throws std::runtime_error naming the call, file:line and CUDA's message, a
// device guard, and the launch-size helpers.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "runtime/cuda/cuda_backend.h"

namespace loom::runtime::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw std::runtime_error(error_message(int(err), call, file, line));
}

inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // reset the (non-sticky) error state so later calls do not report it
    throw_cuda_error(err, call, file, line);
  }
}

#define LOOM_CUDA_CHECK(expr) ::loom::runtime::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
// After a <<<...>>> launch: reports bad launch configurations at the launch site.
#define LOOM_CUDA_LAUNCH_CHECK(name) \
  ::loom::runtime::cuda::check_cuda(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)

// Makes `index` the current device for a scope, restoring the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    LOOM_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != index) LOOM_CUDA_CHECK(cudaSetDevice(index));
    else prev_ = -1;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// Grid size for a grid-stride loop over n items with `threads` per block.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return unsigned(std::clamp<int64_t>(blocks, 1, int64_t(1) << 20));
}

// Threads per block for a row kernel over rows of n items: a warp multiple in [32, 1024].
inline int row_threads(int64_t n) {
  int64_t t = 32;
  while (t < n && t < 1024) t *= 2;
  return int(t);
}

}  // namespace loom::runtime::cuda
