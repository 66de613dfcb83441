// mappings.h: collectives as conjugate autograd pairs, written once (Megatron-Core
// tensor_parallel/mappings.py). Tensor and sequence parallel layers are built only from these.
//
//   mapping                          forward                        backward
//   copy_to_region                   identity                       all_reduce (sum)
//   reduce_from_region               all_reduce (sum)               identity
//   scatter_to_region(dim)           this rank's chunk along dim    all_gather along dim
//   gather_from_region(dim)          all_gather along dim           this rank's chunk along dim
//   reduce_scatter_to_sequence(dim)  reduce_scatter along dim       all_gather along dim
//   all_gather_from_sequence(dim)    all_gather along dim           reduce_scatter along dim
//                                                                   (chunk if grad_is_partial = false)
//
// Chunks are equal: the size along dim must divide by the group size. Rank r holds chunk r.
// Each takes the group's communicator (kept alive by the backward node). Every member must
// run the same mappings in the same order, forward and backward.
#pragma once
#include "parallel/comm.h"

namespace loom::parallel {

Tensor copy_to_region(const Tensor& x, const CommPtr& comm);
Tensor reduce_from_region(const Tensor& x, const CommPtr& comm);
Tensor scatter_to_region(const Tensor& x, const CommPtr& comm, int64_t dim = -1);
Tensor gather_from_region(const Tensor& x, const CommPtr& comm, int64_t dim = -1);
// Sequence parallel (dim 0 for [T, B, C] activations, 1 for [B, T, C]).
Tensor reduce_scatter_to_sequence(const Tensor& x, const CommPtr& comm, int64_t dim = 0);
// grad_is_partial: the consumer is tensor parallel, so each rank's output gradient is a
// partial sum that must be reduced (Megatron's tensor_parallel_output_grad).
Tensor all_gather_from_sequence(const Tensor& x, const CommPtr& comm, int64_t dim = 0, bool grad_is_partial = true);

// The collectives along any dim, without autograd (results are new tensors).
Tensor all_reduced(const Tensor& x, Comm& comm);                    // sum
Tensor all_gathered(const Tensor& x, Comm& comm, int64_t dim);      // [.., S, ..] -> [.., n S, ..]
Tensor reduce_scattered(const Tensor& x, Comm& comm, int64_t dim);  // [.., n S, ..] -> [.., S, ..]
Tensor local_chunk(const Tensor& x, Comm& comm, int64_t dim);       // [.., n S, ..] -> [.., S, ..]

}  // namespace loom::parallel
