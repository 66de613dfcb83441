// storage.h: a ref-counted block of device memory. Tensors (and views) share it.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>

#include "runtime/allocator.h"

namespace loom::runtime {

class Storage {
 public:
  Storage(size_t nbytes, Allocator& alloc)
      : data_(alloc.allocate(nbytes)), nbytes_(nbytes), alloc_(&alloc), device_(alloc.device()) {}
  // Wraps memory owned elsewhere (an mmap'd token shard); `release` runs on destruction.
  Storage(void* data, size_t nbytes, Device dev, std::function<void()> release)
      : data_(data), nbytes_(nbytes), device_(dev), release_(std::move(release)) {}
  ~Storage() {
    if (release_) release_();
    else if (alloc_) alloc_->deallocate(data_, nbytes_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  Allocator& allocator() const { return alloc_ ? *alloc_ : allocator_for(device_); }

 private:
  void* data_;
  size_t nbytes_;
  Allocator* alloc_ = nullptr;
  Device device_;
  std::function<void()> release_;
};

}  // namespace loom::runtime
