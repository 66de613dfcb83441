// cuda/register.cpp: fills the CUDA kernel table from each kernel file and registers the
// caching allocator. Touches no CUDA API, so building the table works on machines without a
// device; the first allocation on cuda:N is what asks the driver.
#include "runtime/cuda/cuda_backend.h"
#include "runtime/kernels.h"

namespace loom::runtime {
namespace cuda {
void register_copy_kernels(KernelTable& t);
void register_binary_kernels(KernelTable& t);
void register_compare_kernels(KernelTable& t);
void register_unary_kernels(KernelTable& t);
void register_softmax_kernels(KernelTable& t);
void register_norm_kernels(KernelTable& t);
void register_cross_entropy_kernels(KernelTable& t);
void register_reduce_kernels(KernelTable& t);
void register_matmul_kernels(KernelTable& t);
void register_optim_kernels(KernelTable& t);
void register_embedding_kernels(KernelTable& t);
void register_rope_kernels(KernelTable& t);
void register_attention_kernels(KernelTable& t);
void register_composite_kernels(KernelTable& t);

namespace {
Allocator* allocator_factory(int index) { return &caching_allocator(index); }
}  // namespace
}  // namespace cuda

void register_cuda_backend(KernelTable& t) {
  register_allocator(DeviceType::cuda, cuda::allocator_factory);
  cuda::register_copy_kernels(t);
  cuda::register_binary_kernels(t);
  cuda::register_compare_kernels(t);
  cuda::register_unary_kernels(t);
  cuda::register_softmax_kernels(t);
  cuda::register_norm_kernels(t);
  cuda::register_cross_entropy_kernels(t);
  cuda::register_reduce_kernels(t);
  cuda::register_matmul_kernels(t);
  cuda::register_optim_kernels(t);
  cuda::register_embedding_kernels(t);
  cuda::register_rope_kernels(t);
  cuda::register_attention_kernels(t);
  cuda::register_composite_kernels(t);
}

}  // namespace loom::runtime
