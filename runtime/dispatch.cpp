// dispatch.cpp: picks the kernel table by device, runs half-precision tensors through f32
// kernels, and runs ops a device does not implement on host copies.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/kernels.h"

namespace loom::runtime {

namespace {
const char* const kOpNames[] = {
#define LOOM_OP(name, doc) #name,
#include "runtime/ops.def"
#undef LOOM_OP
};
std::atomic<int64_t> g_fallbacks[kNumOps];

// For LOOM_PROFILE=shapes: a matmul's depth and which operands are transposed views, since the
// output shape alone lumps together a layer's forward and its input gradient ("K=704 b^T").
std::string matmul_profile_suffix(std::span<const Tensor> in) {
  if (in.size() < 2 || !in[0].defined() || !in[1].defined() || in[0].dim() < 2 || in[1].dim() < 2) return "";
  auto transposed = [](const Tensor& t) { return t.stride(t.dim() - 1) != 1 && t.size(t.dim() - 1) != 1; };
  std::string s = " K=" + std::to_string(in[0].size(in[0].dim() - 1));
  if (transposed(in[0])) s += " a^T";
  if (transposed(in[1])) s += " b^T";
  return s;
}

// LOOM_PROFILE=1: wall time and calls per op, printed to stderr at exit (where the time goes);
// LOOM_PROFILE=shapes adds the 25 costliest (op, first output shape) pairs.
struct OpProfile {
  bool enabled = std::getenv("LOOM_PROFILE") != nullptr;
  bool shapes = enabled && std::string(std::getenv("LOOM_PROFILE")) == "shapes";
  std::atomic<int64_t> ns[kNumOps] = {}, calls[kNumOps] = {};
  std::mutex mu;
  std::map<std::string, std::pair<int64_t, int64_t>> by_shape;  // "op shape" -> (ns, calls)
  void reset() {
    for (int i = 0; i < kNumOps; ++i) ns[i] = 0, calls[i] = 0;
    std::lock_guard<std::mutex> lk(mu);
    by_shape.clear();
  }
  ~OpProfile() {
    if (!enabled) return;
    if (shapes) {
      std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> v(by_shape.begin(), by_shape.end());
      std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
      std::fprintf(stderr, "\n%-72s %10s %10s\n", "op and output shape (LOOM_PROFILE=shapes)", "calls", "ms");
      for (size_t i = 0; i < std::min<size_t>(v.size(), 25); ++i)
        std::fprintf(stderr, "%-72s %10lld %10.1f\n", v[i].first.c_str(), (long long)v[i].second.second,
                     double(v[i].second.first) / 1e6);
    }
    std::vector<int> order;
    int64_t total = 0;
    for (int i = 0; i < kNumOps; ++i)
      if (calls[i]) order.push_back(i), total += ns[i];
    std::sort(order.begin(), order.end(), [&](int a, int b) { return ns[a] > ns[b]; });
    std::fprintf(stderr, "\n%-28s %10s %10s %7s\n", "op (LOOM_PROFILE)", "calls", "ms", "share");
    for (int i : order)
      std::fprintf(stderr, "%-28s %10lld %10.1f %6.1f%%\n", op_name(Op(i)), (long long)calls[i].load(),
                   double(ns[i]) / 1e6, 100.0 * double(ns[i]) / double(std::max<int64_t>(total, 1)));
  }
};
OpProfile g_profile;

KernelTable make_cpu_table() {
  KernelTable t;
  register_cpu_kernels(t);
  return t;
}

KernelTable make_cuda_table() {
  KernelTable t;
#ifdef LOOM_WITH_CUDA
  register_cuda_backend(t);
#endif
  return t;
}

bool is_memory_op(Op op) { return op == Op::copy || op == Op::fill; }

// Half-precision storage, f32 arithmetic: widen inputs, run, narrow outputs.
void dispatch_widened(Op op, std::span<const Tensor> in, std::span<Tensor> out, const OpAttrs& attrs) {
  std::vector<Tensor> win, wout;
  for (const Tensor& t : in) win.push_back(t.defined() && is_half(t.dtype()) ? t.to(DType::f32) : t);
  const bool reads_out = op == Op::matmul && attrs.beta != 0.0;  // C = A B + beta C
  for (const Tensor& t : out) {
    if (!t.defined() || !is_half(t.dtype())) wout.push_back(t);
    else wout.push_back(reads_out ? t.to(DType::f32) : Tensor::empty(t.shape(), DType::f32, t.device()));
  }
  dispatch(op, win, wout, attrs);
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].defined() && is_half(out[i].dtype())) dispatch(Op::copy, {wout[i]}, {out[i]});
}

}  // namespace

void dispatch_on_host(Op op, std::span<const Tensor> in, std::span<Tensor> out, const OpAttrs& attrs) {
  g_fallbacks[int(op)].fetch_add(1);
  std::vector<Tensor> hin, hout;
  for (const Tensor& t : in) hin.push_back(t.defined() ? t.to(Device::cpu()) : t);
  for (const Tensor& t : out) hout.push_back(t.defined() ? t.to(Device::cpu()) : t);
  kernel_table(DeviceType::cpu).fn[size_t(op)](KernelArgs{hin, hout, attrs});
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].defined()) out[i].copy_(hout[i]);
}

const char* op_name(Op op) { return kOpNames[int(op)]; }

KernelTable& kernel_table(DeviceType type) {
  static KernelTable cpu = make_cpu_table();
  static KernelTable cuda = make_cuda_table();  // empty when built without CUDA
  return type == DeviceType::cpu ? cpu : cuda;
}

int64_t host_fallback_count(Op op) { return g_fallbacks[int(op)].load(); }

void dispatch(Op op, std::span<const Tensor> in, std::span<Tensor> out, const OpAttrs& attrs) {
  Device dev = Device::cpu();
  bool have_dev = false, has_half = false;
  auto visit = [&](const Tensor& t) {
    if (!t.defined()) return;
    if (!have_dev) {
      dev = t.device();
      have_dev = true;
    } else if (t.device() != dev) {
      throw std::invalid_argument(std::string(op_name(op)) + ": tensors on " + dev.str() + " and " +
                                  t.device().str() + "; move them to one device");
    }
    has_half |= is_half(t.dtype());
  };
  for (const Tensor& t : out) visit(t);
  for (const Tensor& t : in) visit(t);
  if (has_half && !is_memory_op(op)) return dispatch_widened(op, in, out, attrs);
  KernelFn fn = kernel_table(dev.type).fn[size_t(op)];
  if (fn && g_profile.enabled) {
    auto t0 = std::chrono::steady_clock::now();
    fn(KernelArgs{in, out, attrs});
    g_profile.ns[int(op)] += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    g_profile.calls[int(op)] += 1;
    if (g_profile.shapes) {
      int64_t dt = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
      std::string key = std::string(op_name(op)) + " " + (out.empty() ? std::string("-") : out[0].shape().str());
      if (op == Op::matmul) key += matmul_profile_suffix(in);
      std::lock_guard<std::mutex> lk(g_profile.mu);
      auto& e = g_profile.by_shape[key];
      e.first += dt;
      e.second += 1;
    }
    return;
  }
  if (fn) return fn(KernelArgs{in, out, attrs});
  if (dev.is_cpu()) throw std::logic_error(std::string("no CPU kernel for ") + op_name(op));
  dispatch_on_host(op, in, out, attrs);
}

void reset_op_profile() { g_profile.reset(); }

}  // namespace loom::runtime
