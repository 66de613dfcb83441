// cuda/attention_tiled.h: the fast path of attention.cu for the common case (f32, causal or
// full visibility with offsets, no dense mask or segments, head width 16, 32, 64 or 128):
// FlashAttention-2's tiling on CUDA cores. Each block takes a 128 x 64 or 64 x 64 tile of the
// score matrix at a time, each of its 256 threads an 8 x 4 or 4 x 4 piece held in registers,
// with both operands in shared memory; the softmax runs online over key tiles, and the T x T
// matrix is never built.
// Same outputs and conventions as the general kernels (attention.cu's header).
#pragma once
#include <cstdint>
#include <initializer_list>

namespace loom::runtime::cuda {

struct TiledAttention {
  const float* q;  // [B, Tq, H, D]
  const float* k;  // [B, Tk, Hkv, D]
  const float* v;  // [B, Tk, Hkv, D]
  int64_t B, Tq, Tk, H, Hkv, D;
  bool causal;  // key j is visible to query i when k_offset + j <= q_offset + i
  int64_t q_offset, k_offset;
  float scale;
};

// True when the tiled kernels take this head width and these pointers (16-byte aligned rows).
bool tiled_attention_applies(int64_t D, std::initializer_list<const void*> pointers);

// out [B, Tq, H, D], lse [B, H, Tq].
void tiled_attention_forward(const TiledAttention& a, float* out, float* lse);

// Dv [B, H, Tq] = rowsum(gout * out) - glse, computed by the caller. gq [B, Tq, H, D];
// gk, gv [B, Tk, Hkv, D] (each element written once: deterministic, no atomics).
void tiled_attention_backward(const TiledAttention& a, const float* lse, const float* gout, const float* Dv,
                              float* gq, float* gk, float* gv);

}  // namespace loom::runtime::cuda
