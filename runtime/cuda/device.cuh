// cuda/device.cuh: device-side helpers for the CUDA kernels: bit-exact twins of the dtype.h
// half-precision conversions and of cpu::convert, math overloads for float/double, warp and
// block reductions, a strided indexer (up to 8 dims, passed to kernels by value), and the
// host-side dtype visitors that pick kernel instantiations.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/check.h"
#include "runtime/kernels.h"

namespace loom::runtime::cuda {

// ---- dtype conversions (the same bits as dtype.h / dtype.cpp) ------------------------------
__device__ inline float bf16_to_float_d(bf16 h) { return __uint_as_float(uint32_t(h.bits) << 16); }
__device__ inline bf16 float_to_bf16_d(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{uint16_t(u >> 16)};
}
__device__ inline float f16_to_float_d(f16 h) {
  uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t mant = h.bits & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return __uint_as_float(u);
}
__device__ inline f16 float_to_f16_d(float f) {
  uint32_t u = __float_as_uint(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u)};  // NaN
  if (absu >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // overflow -> inf
  if (absu < 0x38800000u) {  // subnormal or zero in f16
    if (absu < 0x33000000u) return f16{uint16_t(sign)};
    uint32_t exp = absu >> 23;
    uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
    return f16{uint16_t(sign | half)};
  }
  uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);  // round to nearest even
  uint32_t h = ((r >> 13) - ((127 - 15) << 10));
  return f16{uint16_t(sign | h)};
}

// Element conversions through double, as cpu::to_double / from_double / convert.
template <class T> __device__ inline double to_double_d(T v) { return double(v); }
template <> __device__ inline double to_double_d(bf16 v) { return bf16_to_float_d(v); }
template <> __device__ inline double to_double_d(f16 v) { return f16_to_float_d(v); }
template <class T> __device__ inline T from_double_d(double v) { return T(v); }
template <> __device__ inline bf16 from_double_d(double v) { return float_to_bf16_d(float(v)); }
template <> __device__ inline f16 from_double_d(double v) { return float_to_f16_d(float(v)); }
template <class D, class S> __device__ inline D convert_d(S v) {
  if constexpr (std::is_same_v<D, S>) return v;
  else if constexpr (std::is_arithmetic_v<D> && std::is_arithmetic_v<S>) return D(v);
  else return from_double_d<D>(to_double_d<S>(v));
}

// ---- math overloads (IEEE, no fast-math) ------------------------------------------------------
__device__ inline float d_exp(float x) { return expf(x); }
__device__ inline double d_exp(double x) { return exp(x); }
__device__ inline float d_log(float x) { return logf(x); }
__device__ inline double d_log(double x) { return log(x); }
__device__ inline float d_sqrt(float x) { return sqrtf(x); }
__device__ inline double d_sqrt(double x) { return sqrt(x); }
__device__ inline float d_tanh(float x) { return tanhf(x); }
__device__ inline double d_tanh(double x) { return tanh(x); }
__device__ inline float d_erf(float x) { return erff(x); }
__device__ inline double d_erf(double x) { return erf(x); }
__device__ inline float d_pow(float x, float y) { return powf(x, y); }
__device__ inline double d_pow(double x, double y) { return pow(x, y); }
__device__ inline float d_abs(float x) { return fabsf(x); }
__device__ inline double d_abs(double x) { return fabs(x); }
template <class T> __device__ inline T d_neg_inf() { return T(-INFINITY); }

// ---- reductions (fixed order for a given block size: deterministic) ----------------------------
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {
  __device__ double operator()(double a, double b) const { return a >= b ? a : b; }
};
template <class Op> __device__ inline double warp_reduce(double v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Reduces v over the block; every thread gets the result. blockDim.x must be a multiple of 32.
// `shared` is __shared__ double[32]; it may be reused by the next call.
template <class Op> __device__ inline double block_reduce(double v, Op op, double identity, double* shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();  // a previous call's readers are done with shared[]
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double w = lane < nwarps ? shared[lane] : identity;
    w = warp_reduce(w, op);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  return shared[0];
}

// ---- strided indexing ---------------------------------------------------------------------------
// Maps a row-major linear index over `shape` to an element offset in each of NT tensors.
template <int NT> struct Indexer {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[NT][kMaxDims] = {};

  __device__ void offsets(int64_t linear, int64_t (&off)[NT]) const {
    for (int t = 0; t < NT; ++t) off[t] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t idx = linear % shape[d];
      linear /= shape[d];
      for (int t = 0; t < NT; ++t) off[t] += idx * strides[t][d];
    }
  }
};

// Builds an Indexer, dropping extent-1 dims and merging dims that are contiguous in every
// tensor (so a transposed copy of [B, T, H, D] runs with at most the dims that really differ).
template <int NT> Indexer<NT> make_indexer(const Dims& shape, const std::array<Dims, NT>& strides) {
  Indexer<NT> ix;
  for (int d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (ix.ndim > 0) {
      int p = ix.ndim - 1;
      bool merge = true;
      for (int t = 0; t < NT; ++t) merge &= ix.strides[t][p] == strides[t][d] * shape[d];
      if (merge) {
        ix.shape[p] *= shape[d];
        for (int t = 0; t < NT; ++t) ix.strides[t][p] = strides[t][d];
        continue;
      }
    }
    ix.shape[ix.ndim] = shape[d];
    for (int t = 0; t < NT; ++t) ix.strides[t][ix.ndim] = strides[t][d];
    ++ix.ndim;
  }
  return ix;  // ndim 0: a single element at offset 0
}

// ---- host-side dtype visitors ---------------------------------------------------------------------
// Calls fn(T{}) for every dtype.
template <class F> void visit_all(DType t, F&& fn) {
  switch (t) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    case DType::bf16: fn(bf16{}); return;
    case DType::f16: fn(f16{}); return;
    case DType::i32: fn(int32_t{}); return;
    case DType::i64: fn(int64_t{}); return;
    case DType::u8: fn(uint8_t{}); return;
  }
}
// Calls fn(T{}) with T = float or double and returns true; false for any other dtype.
template <class F> bool visit_f32_f64(DType t, F&& fn) {
  if (t == DType::f32) fn(float{});
  else if (t == DType::f64) fn(double{});
  else return false;
  return true;
}

// Grid-stride loop bounds.
__device__ inline int64_t global_thread() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

constexpr int kThreads = 256;  // threads per block for elementwise kernels

// ---- 16-byte packs --------------------------------------------------------------------------------
// Memory-bound kernels read and write whole 16-byte packs (4 floats, 2 doubles) where every
// pointer is 16-byte aligned: one thread then keeps 4x the bytes of a scalar load in flight,
// which is what it takes to approach HBM bandwidth. V = 1 is the scalar fallback.
template <class T, int V> struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <class T> constexpr int kPack = sizeof(T) >= 16 ? 1 : int(16 / sizeof(T));
template <int V, class T> __device__ inline Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <int V, class T> __device__ inline void store_pack(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
// Calls fn(std::integral_constant<int, V>{}) with V = kPack<T> when `vectorise`, else V = 1.
template <class T, class F> void with_pack_width(bool vectorise, F&& fn) {
  if (vectorise && kPack<T> > 1) fn(std::integral_constant<int, kPack<T>>{});
  else fn(std::integral_constant<int, 1>{});
}
// Row kernels with rows of n elements read in packs of V: true when every row starts aligned.
inline bool rows_pack_aligned(const void* base, int64_t n, int elem_size) {
  return aligned16(base) && (n * elem_size) % 16 == 0;
}
// Threads for one row of `packs` packs: about four packs per thread (loads in flight), a warp
// multiple in [32, 1024].
inline int row_threads_for_packs(int64_t packs) { return row_threads((packs + 3) / 4); }

// ---- elementwise maps over contiguous tensors -----------------------------------------------------
// o[i] = f(a[i]) (unary) or f(a[i], b[i]) (binary) for i < n, in packs of V; the n % V tail by the
// first threads of the grid. Launch with map_grid(n, V).
template <int V, bool kBinary, class T, class R, class F>
__global__ void map_kernel(const T* __restrict__ a, const T* __restrict__ b, R* __restrict__ o, int64_t n, F f) {
  const int64_t packs = n / V;
  for (int64_t p = global_thread(); p < packs; p += grid_stride()) {
    Pack<T, V> pa = load_pack<V>(a + p * V), pb;
    if constexpr (kBinary) pb = load_pack<V>(b + p * V);
    Pack<R, V> r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = kBinary ? f(pa.v[k], pb.v[k]) : f(pa.v[k], pa.v[k]);
    store_pack<V>(o + p * V, r);
  }
  for (int64_t i = packs * V + global_thread(); i < n; i += grid_stride())
    o[i] = kBinary ? f(a[i], b[i]) : f(a[i], a[i]);
}
// o[i] = f(full[i], vec[i % cols]) (kVecFirst: f(vec[i % cols], full[i])); cols == 1 reads vec[0].
// Packs need cols % V == 0 (or cols == 1), so a pack never straddles a row end.
template <int V, bool kVecFirst, class T, class R, class F>
__global__ void map_row_kernel(const T* __restrict__ full, const T* __restrict__ vec, R* __restrict__ o, int64_t n,
                               int64_t cols, F f) {
  const int64_t packs = n / V;
  for (int64_t p = global_thread(); p < packs; p += grid_stride()) {
    Pack<T, V> pf = load_pack<V>(full + p * V), pv;
    if (cols == 1) {
#pragma unroll
      for (int k = 0; k < V; ++k) pv.v[k] = vec[0];
    } else {
      pv = load_pack<V>(vec + (p * V) % cols);
    }
    Pack<R, V> r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = kVecFirst ? f(pv.v[k], pf.v[k]) : f(pf.v[k], pv.v[k]);
    store_pack<V>(o + p * V, r);
  }
  for (int64_t i = packs * V + global_thread(); i < n; i += grid_stride()) {
    T v = vec[cols == 1 ? 0 : i % cols];
    o[i] = kVecFirst ? f(v, full[i]) : f(full[i], v);
  }
}
// Blocks for a map over n elements in packs of V: one pack per thread, capped (grid-stride).
inline unsigned map_grid(int64_t n, int V) { return grid_for(std::max<int64_t>(n / V, 1), kThreads); }

// Launches kernel<<<grid, threads, smem>>>(args...), first raising the kernel's limit on dynamic
// shared memory when it asks for more than the default 48 KiB; `what` names it in errors.
template <class K, class... Args>
void launch_with_shared_memory(K kernel, dim3 grid, int threads, size_t smem, const char* what, Args... args) {
  if (smem > 48 * 1024)
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<grid, threads, smem>>>(args...);
  check_cuda(cudaGetLastError(), what, __FILE__, __LINE__);
}

// Temporary device memory from the caching allocator, returned at scope exit. Safe to return
// while kernels that use it are still queued: every Loom kernel runs on the legacy default
// stream, so the next user of the block is ordered after them.
class Scratch {
 public:
  Scratch(int device, size_t bytes) : alloc_(&allocator_for(Device::cuda(device))), bytes_(bytes) {
    ptr_ = alloc_->allocate(bytes);
  }
  ~Scratch() { alloc_->deallocate(ptr_, bytes_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T> T* as() const { return static_cast<T*>(ptr_); }

 private:
  Allocator* alloc_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

// Same device for every defined tensor is guaranteed by dispatch; kernels run on out's device.
inline int device_index(const Tensor& t) { return t.device().index; }

}  // namespace loom::runtime::cuda
