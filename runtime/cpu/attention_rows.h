// cpu/attention_rows.h: the GEMM-based attention kernels for causal or full visibility
// (cpu/attention_rows.cpp). Each returns false, touching nothing, when the call needs the tiled
// kernel of cpu/attention.cpp (a mask, segments, or more keys than its buffers are sized for).
#pragma once
#include "runtime/kernels.h"

namespace loom::runtime::cpu {

// LOOM_ATTENTION=tiled sends every call to cpu/attention.cpp's tiled kernel (to compare the two);
// LOOM_ATTENTION=recompute keeps the row kernel but never keeps the probabilities for the
// backward (FlashAttention's memory: nothing of size Tq x Tk outlives the forward).
enum class AttentionEnv { standard, tiled, recompute };
AttentionEnv attention_env();

// in: q, k, v, mask?, q_segments?, k_segments?, visibility?   out: out, lse, kept? (see the .cpp)
bool attention_forward_rows(const KernelArgs& a);
// in: q, k, v, out, lse, gout, glse?, mask?, q_segments?, k_segments?, visibility?, kept?
// out: gq, gk, gv
bool attention_backward_rows(const KernelArgs& a);

}  // namespace loom::runtime::cpu
