// allocator.cpp: the aligned CPU allocator, byte counters and the device registry.
#include "runtime/allocator.h"

#include "runtime/kernels.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>

namespace loom::runtime {

AllocatorStats Allocator::stats() const {
  return {live_.load(), peak_.load(), count_.load()};
}
void Allocator::reset_peak() { peak_.store(live_.load()); }

void Allocator::record_alloc(size_t bytes) {
  int64_t now = live_.fetch_add(int64_t(bytes)) + int64_t(bytes);
  count_.fetch_add(1);
  int64_t p = peak_.load();
  while (now > p && !peak_.compare_exchange_weak(p, now)) {
  }
}
void Allocator::record_free(size_t bytes) { live_.fetch_sub(int64_t(bytes)); }

namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    record_alloc(bytes);
    return p;
  }
  void deallocate(void* p, size_t bytes) override {
    std::free(p);
    record_free(bytes == 0 ? 64 : bytes);
  }
  Device device() const override { return Device::cpu(); }
  void copy_to_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_from_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_on_device(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
};

Allocator* (*g_factories[kNumDeviceTypes])(int) = {nullptr, nullptr};
std::mutex g_mu;

}  // namespace

Allocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
}

void register_allocator(DeviceType type, Allocator* (*factory)(int)) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_factories[int(type)] = factory;
}

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
  kernel_table(d.type);  // a backend registers its allocator when its table is built
  Allocator* (*f)(int) = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    f = g_factories[int(d.type)];
  }
  if (!f) throw std::runtime_error("device " + d.str() + " is not available: Loom was built without its backend");
  return *f(d.index);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) return cuda(std::stoi(s.substr(5)));
  throw std::invalid_argument("unknown device '" + s + "' (expected cpu, cuda or cuda:N)");
}

}  // namespace loom::runtime
