// cpu/line_vector.h: std::vector whose storage starts on a 64-byte cache line, for the kernels'
// packed operands and scratch blocks. malloc aligns blocks to 16 bytes only, and then every
// 64-byte vector load from them straddles two lines: the AMX bf16 GEMM's training step took 16%
// longer, the f32 GEMM's products 1% (bench/README.md).
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace loom::runtime::cpu {

template <class T> struct LineAllocator {
  using value_type = T;
  LineAllocator() = default;
  template <class U> LineAllocator(const LineAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U> bool operator==(const LineAllocator<U>&) const { return true; }
};

template <class T> using LineVector = std::vector<T, LineAllocator<T>>;

}  // namespace loom::runtime::cpu
