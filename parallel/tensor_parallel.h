// tensor_parallel.h: Megatron-style tensor-parallel building blocks over the tp group, made only
// of the conjugate mappings (mappings.h) plus two vocabulary-parallel ops.
//
// A tensor-parallel region is entered once per sub-layer and left once:
//   enter_region(x):  identity forward / all-reduce backward            (copy_to_region)
//                     with sequence parallelism: all-gather the sequence dim forward /
//                     reduce-scatter backward (x arrives as this rank's 1/t of the tokens)
//   column-parallel linears inside: y_r = x W_r^T + b_r (W_r: this rank's output rows)
//   row-parallel linear: partial_r = y_r W'_r^T (W'_r: this rank's input columns)
//   exit_region(partial): all-reduce forward / identity backward        (reduce_from_region)
//                     with sequence parallelism: reduce-scatter the sequence dim forward /
//                     all-gather backward (the result is 1/t of the tokens)
// Activations are [B, T, C]; the sequence dim is 1.
#pragma once
#include "parallel/comm.h"
#include "parallel/shard.h"

namespace loom::parallel {

inline constexpr int64_t kSequenceDim = 1;

struct TensorParallel {
  CommPtr comm;                    // the tp group; null or size 1: no tensor parallelism
  bool sequence_parallel = false;  // Megatron SP: norms, dropout and residuals on 1/t of the tokens

  int size() const { return comm ? comm->size() : 1; }
  int rank() const { return comm ? comm->rank() : 0; }
  bool active() const { return size() > 1; }
  bool sp() const { return active() && sequence_parallel; }
};

Tensor enter_region(const Tensor& x, const TensorParallel& tp);
Tensor exit_region(const Tensor& partial, const TensorParallel& tp);
// This rank's tokens of a full-sequence tensor [B, T, ...] under sequence parallelism
// (no communication; the gradient flows back to the chunk).
Tensor sequence_chunk(const Tensor& x, const TensorParallel& tp);

// Vocabulary-parallel embedding: weight [V_r, C] holds rows vocab.begin..vocab.end of the full
// table; ids [B, T] are global. Each rank looks up the ids it owns (zeros elsewhere) and the
// region exit sums them: [B, T, C] (or [B, T/t, C] with sequence parallelism).
Tensor vocab_parallel_embedding(const Tensor& ids, const Tensor& weight, Range vocab, const TensorParallel& tp);

// Cross-entropy summed over the targets != ignore_index, from logits [N, V_r] that hold vocab
// columns vocab.begin..vocab.end of each row: the max, the sum of exponentials and the target
// logit are reduced over the tp group; the full logits are never gathered. Returns a scalar
// (the same on every rank); its gradient is (softmax - one_hot) restricted to this rank's
// columns. With tp inactive it equals cross_entropy(..., reduction sum).
Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, Range vocab,
                                    const TensorParallel& tp, int64_t ignore_index = -100);

}  // namespace loom::parallel
