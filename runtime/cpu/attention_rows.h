// cpu/attention_rows.h: the GEMM-based attention kernels for causal or full visibility
// (cpu/attention_rows.cpp). Each returns false, touching nothing, when the call needs the tiled
// kernel of cpu/attention.cpp (a mask, segments, or more keys than its buffers are sized for).
#pragma once
#include "runtime/kernels.h"

namespace loom::runtime::cpu {

// in: q, k, v, mask?, q_segments?, k_segments?, visibility?   out: out, lse
bool attention_forward_rows(const KernelArgs& a);
// in: q, k, v, out, lse, gout, glse?, masks...   out: gq, gk, gv
bool attention_backward_rows(const KernelArgs& a);

}  // namespace loom::runtime::cpu
