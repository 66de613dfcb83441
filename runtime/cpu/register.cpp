// cpu/register.cpp: fills the CPU kernel table from each kernel file.
#include "runtime/kernels.h"

namespace loom::runtime {
namespace cpu {
void register_elementwise_kernels(KernelTable& t);
void register_reduce_kernels(KernelTable& t);
void register_gemm_kernels(KernelTable& t);
void register_nn_kernels(KernelTable& t);
void register_index_kernels(KernelTable& t);
void register_attention_kernels(KernelTable& t);
void register_optim_kernels(KernelTable& t);
}  // namespace cpu

void register_cpu_kernels(KernelTable& t) {
  cpu::register_elementwise_kernels(t);
  cpu::register_reduce_kernels(t);
  cpu::register_gemm_kernels(t);
  cpu::register_nn_kernels(t);
  cpu::register_index_kernels(t);
  cpu::register_attention_kernels(t);
  cpu::register_optim_kernels(t);
}

}  // namespace loom::runtime
