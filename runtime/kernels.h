// kernels.h: the kernel table. Every op is one `Op` value (ops.def); a backend is a table of
// KernelFn, one per op. `dispatch` picks the table by device. A CUDA table entry left empty runs
// the CPU kernel on host copies (correct, slow, and counted so tests can see it).
// Kernels write into outputs the op layer allocated; they never record autograd.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/tensor.h"

namespace loom::runtime {

enum class Op : uint16_t {
#define LOOM_OP(name, doc) name,
#include "runtime/ops.def"
#undef LOOM_OP
  count
};
constexpr int kNumOps = int(Op::count);
const char* op_name(Op op);

// Attributes shared by all ops; each op documents which it reads (ops.def).
struct OpAttrs {
  int64_t dim = 0;
  int64_t k = 0;
  int64_t ignore_index = -100;
  double alpha = 0.0;
  double beta = 0.0;
  double eps = 1e-5;
  double p = 0.0;
  double label_smoothing = 0.0;
  double scale = 1.0;
  bool inverse = false;
  bool causal = false;
  bool replacement = true;
  uint64_t seed = 0;
  uint64_t offset = 0;
  int64_t q_offset = 0;  // attention: global position of the first query / key (ring shards)
  int64_t k_offset = 0;
};

struct KernelArgs {
  std::span<const Tensor> in;  // an undefined Tensor marks an absent optional input
  std::span<Tensor> out;
  const OpAttrs& attrs;
};
using KernelFn = void (*)(const KernelArgs&);

struct KernelTable {
  std::array<KernelFn, kNumOps> fn{};
};

KernelTable& kernel_table(DeviceType type);
// Runs `op`; inputs and outputs must be on one device.
void dispatch(Op op, std::span<const Tensor> in, std::span<Tensor> out, const OpAttrs& attrs = {});
inline void dispatch(Op op, std::initializer_list<Tensor> in, std::initializer_list<Tensor> out,
                     const OpAttrs& attrs = {}) {
  std::vector<Tensor> i(in), o(out);
  dispatch(op, i, o, attrs);
}
// Runs the CPU kernel of `op` on host copies and writes the results back to the device
// outputs. Device kernels call it for cases they do not specialise.
void dispatch_on_host(Op op, std::span<const Tensor> in, std::span<Tensor> out, const OpAttrs& attrs);
// How many times an op ran through the host fallback (tests assert on this).
int64_t host_fallback_count(Op op);
// Zeroes the LOOM_PROFILE counters (bench_train calls it after the warm-up steps).
void reset_op_profile();

void register_cpu_kernels(KernelTable& t);
// The row stride (elements, >= cols) to give an f32 [rows, cols] CPU matrix that a product
// will read as its row-major A with K = cols: padded where the CPU GEMM would otherwise have to
// repack it (cpu/gemm.h, gemm_row_stride).
int64_t cpu_gemm_row_stride(int64_t rows, int64_t cols);
#ifdef LOOM_WITH_CUDA
// Defined by runtime/cuda: fills the CUDA table and registers the CUDA allocator.
void register_cuda_backend(KernelTable& t);
#endif

}  // namespace loom::runtime
