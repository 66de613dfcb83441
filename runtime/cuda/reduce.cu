// cuda/reduce.cu: sum_dim and max_dim over the middle axis of a contiguous [O, N, I] view,
// twins of cpu/reduce.cpp. Sums accumulate in double in a fixed order (deterministic; ints are
// exact up to 2^53 as on the CPU). max_dim keeps the CPU's tie and NaN rules: the first maximum
// wins, and the first NaN wins over any number. f32, f64, i32, i64, u8.
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

// ---- sum_dim --------------------------------------------------------------------------------------
// I == 1: one block per row of N, read in packs of V where aligned.
template <class T, int V>
__global__ void sum_rows_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t O, int64_t N) {
  __shared__ double red[32];
  const int64_t np = N / V;
  for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
    const T* row = x + o * N;
    double s = 0;
#pragma unroll 4
    for (int64_t n = threadIdx.x; n < np; n += blockDim.x) {
      Pack<T, V> p = load_pack<V>(row + n * V);
#pragma unroll
      for (int k = 0; k < V; ++k) s += double(p.v[k]);
    }
    s = block_reduce(s, SumOp{}, 0.0, red);
    if (threadIdx.x == 0) out[o] = T(s);
  }
}

// Many outputs: one thread per (o, i), summing n in order (reads coalesce along i).
template <class T>
__global__ void sum_cols_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t O, int64_t N, int64_t I) {
  for (int64_t oi = global_thread(); oi < O * I; oi += grid_stride()) {
    int64_t o = oi / I, i = oi % I;
    const T* base = x + o * N * I + i;
    double s = 0;
    for (int64_t n = 0; n < N; ++n) s += double(base[n * I]);
    out[oi] = T(s);
  }
}

// Few outputs, long N: fixed row chunks into a double scratch buffer, then an ordered sum.
constexpr int kTile = 32, kLanes = 8;
template <class T>
__global__ void sum_chunks_kernel(const T* __restrict__ x, double* __restrict__ partial, int64_t N, int64_t I,
                                  int64_t tiles, int chunks) {
  __shared__ double sh[kLanes][kTile + 1];
  int64_t o = blockIdx.x / tiles, i = (blockIdx.x % tiles) * kTile + threadIdx.x;
  int64_t k = blockIdx.y, n0 = N * k / chunks, n1 = N * (k + 1) / chunks;
  double s = 0;
  if (i < I)
    for (int64_t n = n0 + threadIdx.y; n < n1; n += kLanes) s += double(x[(o * N + n) * I + i]);
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && i < I) {
    double t = 0;
    for (int l = 0; l < kLanes; ++l) t += sh[l][threadIdx.x];
    partial[(o * chunks + k) * I + i] = t;
  }
}
template <class T>
__global__ void sum_chunks_final_kernel(const double* __restrict__ partial, T* __restrict__ out, int64_t O, int64_t I,
                                        int chunks) {
  for (int64_t oi = global_thread(); oi < O * I; oi += grid_stride()) {
    int64_t o = oi / I, i = oi % I;
    double t = 0;
    for (int k = 0; k < chunks; ++k) t += partial[(o * chunks + k) * I + i];
    out[oi] = T(t);
  }
}

template <class F> bool visit_reduce_dtype(DType t, F&& fn) {
  switch (t) {
    case DType::f32: fn(float{}); return true;
    case DType::f64: fn(double{}); return true;
    case DType::i32: fn(int32_t{}); return true;
    case DType::i64: fn(int64_t{}); return true;
    case DType::u8: fn(uint8_t{}); return true;
    default: return false;
  }
}

bool oni_ok(const Tensor& x) { return x.dim() == 3 && x.is_contiguous(); }

void k_sum_dim(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  Tensor& out = a.out[0];
  if (!oni_ok(x) || out.dtype() != x.dtype() || !out.is_contiguous() || !visit_reduce_dtype(x.dtype(), [](auto) {}))
    return dispatch_on_host(Op::sum_dim, a.in, a.out, a.attrs);
  int64_t O = x.size(0), N = x.size(1), I = x.size(2);
  if (O * I == 0) return;
  int dev = device_index(out);
  DeviceGuard g(dev);
  visit_reduce_dtype(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    if (I == 1 && N > 32) {
      with_pack_width<T>(rows_pack_aligned(px, N, sizeof(T)), [&](auto v) {
        constexpr int V = decltype(v)::value;
        sum_rows_kernel<T, V><<<unsigned(std::min<int64_t>(O, int64_t(1) << 20)), row_threads_for_packs(N / V)>>>(
            px, po, O, N);
      });
    } else if (O * I >= 16384 || N <= 256) {
      sum_cols_kernel<T><<<grid_for(O * I, kThreads), kThreads>>>(px, po, O, N, I);
    } else {
      int64_t tiles = (I + kTile - 1) / kTile;
      int chunks = int(std::clamp<int64_t>(N / 256, 1, 256));
      Scratch partial(dev, size_t(O * chunks * I) * sizeof(double));
      sum_chunks_kernel<T><<<dim3(unsigned(O * tiles), unsigned(chunks)), dim3(kTile, kLanes)>>>(
          px, partial.as<double>(), N, I, tiles, chunks);
      LOOM_CUDA_LAUNCH_CHECK("sum_dim chunk kernel");
      sum_chunks_final_kernel<T><<<grid_for(O * I, kThreads), kThreads>>>(partial.as<double>(), po, O, I, chunks);
    }
  });
  LOOM_CUDA_LAUNCH_CHECK("sum_dim kernel");
}

// ---- max_dim --------------------------------------------------------------------------------------
template <class T> __device__ bool is_nan(T v) { return v != v; }
// true when (v, n) should replace (best, arg): the CPU's scan order rules, made associative.
template <class T> __device__ bool better(T v, int64_t n, T best, int64_t arg) {
  bool vn = is_nan(v), bn = is_nan(best);
  if (vn || bn) return vn && (!bn || n < arg);
  if (v > best) return true;
  return v == best && n < arg;
}

template <class T>
__global__ void max_rows_kernel(const T* __restrict__ x, T* __restrict__ values, int64_t* __restrict__ indices,
                                int64_t O, int64_t N) {
  __shared__ T sv[1024];
  __shared__ int64_t si[1024];
  for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
    const T* row = x + o * N;
    T best = row[0];
    int64_t arg = 0;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x)
      if (better(row[n], n, best, arg)) best = row[n], arg = n;
    sv[threadIdx.x] = best;
    si[threadIdx.x] = arg;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
      if (threadIdx.x < w && better(sv[threadIdx.x + w], si[threadIdx.x + w], sv[threadIdx.x], si[threadIdx.x])) {
        sv[threadIdx.x] = sv[threadIdx.x + w];
        si[threadIdx.x] = si[threadIdx.x + w];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      values[o] = sv[0];
      if (indices) indices[o] = si[0];
    }
    __syncthreads();
  }
}

template <class T>
__global__ void max_cols_kernel(const T* __restrict__ x, T* __restrict__ values, int64_t* __restrict__ indices,
                                int64_t O, int64_t N, int64_t I) {
  for (int64_t oi = global_thread(); oi < O * I; oi += grid_stride()) {
    int64_t o = oi / I, i = oi % I;
    const T* base = x + o * N * I + i;
    T best = base[0];
    int64_t arg = 0;
    for (int64_t n = 1; n < N; ++n) {
      T v = base[n * I];
      if (v > best || (v != v && best == best)) {
        best = v;
        arg = n;
      }
    }
    values[oi] = best;
    if (indices) indices[oi] = arg;
  }
}

void k_max_dim(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  Tensor& values = a.out[0];
  const Tensor& indices = a.out.size() > 1 ? a.out[1] : Tensor();
  bool ok = oni_ok(x) && values.dtype() == x.dtype() && values.is_contiguous() &&
            (!indices.defined() || (indices.dtype() == DType::i64 && indices.is_contiguous())) &&
            visit_reduce_dtype(x.dtype(), [](auto) {}) && x.size(1) > 0;
  if (!ok) return dispatch_on_host(Op::max_dim, a.in, a.out, a.attrs);  // the CPU reports empty N
  int64_t O = x.size(0), N = x.size(1), I = x.size(2);
  if (O * I == 0) return;
  DeviceGuard g(device_index(values));
  int64_t* pi = indices.defined() ? static_cast<int64_t*>(indices.raw_data()) : nullptr;
  visit_reduce_dtype(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw_data());
    T* pv = static_cast<T*>(values.raw_data());
    if (I == 1 && N > 32 && O < 16384) {
      max_rows_kernel<T><<<unsigned(std::min<int64_t>(O, int64_t(1) << 20)), row_threads(std::min<int64_t>(N, 256))>>>(
          px, pv, pi, O, N);
    } else {
      max_cols_kernel<T><<<grid_for(O * I, kThreads), kThreads>>>(px, pv, pi, O, N, I);
    }
  });
  LOOM_CUDA_LAUNCH_CHECK("max_dim kernel");
}

}  // namespace

void register_reduce_kernels(KernelTable& t) {
  t.fn[size_t(Op::sum_dim)] = k_sum_dim;
  t.fn[size_t(Op::max_dim)] = k_max_dim;
}

}  // namespace loom::runtime::cuda
