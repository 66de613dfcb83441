// cuda/norm.cu: RMSNorm and LayerNorm with their backward passes, twins of cpu/nn.cpp.
// Forward and the gx part of backward: one block per row, read in 16-byte packs where aligned,
// row statistics accumulated in double through a fixed-shape block reduction. Parameter
// gradients (gweight, gbias) are column sums over rows, done in two deterministic stages: fixed
// row chunks into a double scratch buffer, then one ordered sum per column. f32/f64 with
// contiguous x/gy; anything else goes to the host.
#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

// ---- column sums over rows: out_s[c] = sum_r f_s(r, c) ----------------------------------------
constexpr int kColTile = 32, kRowLanes = 8;

template <int NS, class F>
__global__ void colsum_partial_kernel(F f, double* __restrict__ partial, int64_t R, int64_t C, int chunks) {
  __shared__ double sh[NS][kRowLanes][kColTile + 1];
  int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  int64_t k = blockIdx.y;
  int64_t r0 = R * k / chunks, r1 = R * (k + 1) / chunks;
  double acc[NS];
  for (int s = 0; s < NS; ++s) acc[s] = 0;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) f(r, c, acc);
  for (int s = 0; s < NS; ++s) sh[s][threadIdx.y][threadIdx.x] = acc[s];
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int s = 0; s < NS; ++s) {
      double t = 0;
      for (int i = 0; i < kRowLanes; ++i) t += sh[s][i][threadIdx.x];
      partial[(k * NS + s) * C + c] = t;
    }
  }
}

template <class T, int NS>
__global__ void colsum_final_kernel(const double* __restrict__ partial, T* out0, T* out1, int64_t C, int chunks) {
  for (int64_t c = global_thread(); c < C; c += grid_stride()) {
    for (int s = 0; s < NS; ++s) {
      T* out = s == 0 ? out0 : out1;
      if (!out) continue;
      double t = 0;
      for (int k = 0; k < chunks; ++k) t += partial[(int64_t(k) * NS + s) * C + c];
      out[c] = T(t);
    }
  }
}

template <class T, int NS, class F> void column_sums(int dev, F f, int64_t R, int64_t C, T* out0, T* out1) {
  if (C == 0) return;
  int chunks = int(std::clamp<int64_t>((R + 63) / 64, 1, 256));
  Scratch partial(dev, size_t(chunks) * NS * size_t(C) * sizeof(double));
  dim3 grid(unsigned((C + kColTile - 1) / kColTile), unsigned(chunks));
  colsum_partial_kernel<NS><<<grid, dim3(kColTile, kRowLanes)>>>(f, partial.as<double>(), R, C, chunks);
  LOOM_CUDA_LAUNCH_CHECK("column-sum kernel");
  colsum_final_kernel<T, NS><<<grid_for(C, kThreads), kThreads>>>(partial.as<double>(), out0, out1, C, chunks);
  LOOM_CUDA_LAUNCH_CHECK("column-sum final kernel");
}

bool plain(const Tensor& t, DType dt) { return t.defined() && t.dtype() == dt && t.is_contiguous(); }
bool plain_or_absent(const Tensor& t, DType dt) { return !t.defined() || plain(t, dt); }
const Tensor& opt_out(const KernelArgs& a, size_t i) {
  static const Tensor none;
  return i < a.out.size() ? a.out[i] : none;
}
template <class T> T* ptr(const Tensor& t) { return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr; }
unsigned row_grid(int64_t rows) { return unsigned(std::min<int64_t>(rows, int64_t(1) << 20)); }
// True when rows of C elements of every defined tensor (the [R, C] ones and the [C] weight/bias)
// can be read in 16-byte packs.
bool norm_packs(std::initializer_list<Tensor> ts, int64_t C, int elem_size) {
  for (const Tensor& t : ts)
    if (t.defined() && !rows_pack_aligned(t.raw_data(), C, elem_size)) return false;
  return true;
}

// ---- RMSNorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) -------------------------------
// Row kernels read rows of C = np * V elements in packs of V (norm_pack_width), the weight and
// bias too; V = 1 is the scalar path.
template <int V, class T> __device__ inline Pack<T, V> load_or(const T* p, int64_t j, T value) {
  if (p) return load_pack<V>(p + j * V);
  Pack<T, V> r;
#pragma unroll
  for (int k = 0; k < V; ++k) r.v[k] = value;
  return r;
}

template <class T, int V>
__global__ void rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                T* __restrict__ rstd, int64_t rows, int64_t C, double eps) {
  __shared__ double red[32];
  const int64_t np = C / V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    double ss = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V);
#pragma unroll
      for (int k = 0; k < V; ++k) ss += double(p.v[k]) * double(p.v[k]);
    }
    ss = block_reduce(ss, SumOp{}, 0.0, red);
    T rs = T(1.0 / sqrt(ss / double(C) + eps));
    if (threadIdx.x == 0) rstd[r] = rs;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V), wp = load_or<V>(w, j, T(1));
#pragma unroll
      for (int k = 0; k < V; ++k) p.v[k] = w ? wp.v[k] * (p.v[k] * rs) : p.v[k] * rs;
      store_pack<V>(yr + j * V, p);
    }
  }
}

// gx = rstd (g - xhat mean(g xhat)), g = gy w, xhat = x rstd
template <class T, int V>
__global__ void rms_norm_backward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                         const T* __restrict__ rstd, const T* __restrict__ gy,
                                         T* __restrict__ gx, int64_t rows, int64_t C) {
  __shared__ double red[32];
  const int64_t np = C / V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * C;
    const T* gr = gy + r * C;
    double rs = double(rstd[r]), sgx = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> xp = load_pack<V>(xr + j * V), gp = load_pack<V>(gr + j * V), wp = load_or<V>(w, j, T(1));
#pragma unroll
      for (int k = 0; k < V; ++k) sgx += double(gp.v[k]) * double(wp.v[k]) * double(xp.v[k]) * rs;
    }
    sgx = block_reduce(sgx, SumOp{}, 0.0, red) / double(C);
    T* out = gx + r * C;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> xp = load_pack<V>(xr + j * V), gp = load_pack<V>(gr + j * V), wp = load_or<V>(w, j, T(1)), o;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        double g = double(gp.v[k]) * double(wp.v[k]);
        o.v[k] = T(rs * (g - double(xp.v[k]) * rs * sgx));
      }
      store_pack<V>(out + j * V, o);
    }
  }
}

template <class T> struct RmsGradW {
  const T* x;
  const T* gy;
  const T* rstd;
  int64_t C;
  __device__ void operator()(int64_t r, int64_t c, double* acc) const {
    acc[0] += double(gy[r * C + c]) * double(x[r * C + c]) * double(rstd[r]);
  }
};

void k_rms_norm(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  DType dt = x.dtype();
  if (x.dim() == 0 || !plain(x, dt) || !plain_or_absent(w, dt) || !plain(a.out[0], dt) || !plain(a.out[1], dt) ||
      !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(Op::rms_norm, a.in, a.out, a.attrs);
  int64_t C = x.size(-1), R = C == 0 ? 0 : x.numel() / C;
  if (R == 0) return;
  DeviceGuard g(device_index(x));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    with_pack_width<T>(norm_packs({x, w, a.out[0]}, C, sizeof(T)), [&](auto v) {
      constexpr int V = decltype(v)::value;
      rms_norm_kernel<T, V><<<row_grid(R), row_threads_for_packs(C / V)>>>(
          ptr<const T>(x), ptr<const T>(w), ptr<T>(a.out[0]), ptr<T>(a.out[1]), R, C, a.attrs.eps);
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("rms_norm kernel");
}

void k_rms_norm_backward(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  const Tensor& rstd = a.in[2];
  const Tensor& gy = a.in[3];
  const Tensor& gx = a.out[0];
  const Tensor& gw = opt_out(a, 1);
  DType dt = x.dtype();
  if (x.dim() == 0 || !plain(x, dt) || !plain_or_absent(w, dt) || !plain(rstd, dt) || !plain(gy, dt) ||
      !plain_or_absent(gx, dt) || !plain_or_absent(gw, dt) || !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(Op::rms_norm_backward, a.in, a.out, a.attrs);
  int64_t C = x.size(-1), R = C == 0 ? 0 : x.numel() / C;
  DeviceGuard g(device_index(x));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    if (gx.defined() && R > 0) {
      with_pack_width<T>(norm_packs({x, w, gy, gx}, C, sizeof(T)), [&](auto v) {
        constexpr int V = decltype(v)::value;
        rms_norm_backward_kernel<T, V><<<row_grid(R), row_threads_for_packs(C / V)>>>(
            ptr<const T>(x), ptr<const T>(w), ptr<const T>(rstd), ptr<const T>(gy), ptr<T>(gx), R, C);
      });
      LOOM_CUDA_LAUNCH_CHECK("rms_norm backward kernel");
    }
    if (gw.defined())
      column_sums<T, 1>(device_index(x), RmsGradW<T>{ptr<const T>(x), ptr<const T>(gy), ptr<const T>(rstd), C}, R,
                        C, ptr<T>(gw), nullptr);
  });
}

// ---- LayerNorm: y = (x - mean) * rstd * w + b --------------------------------------------------
template <class T, int V>
__global__ void layer_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                  T* __restrict__ y, T* __restrict__ mean_out, T* __restrict__ rstd_out,
                                  int64_t rows, int64_t C, double eps) {
  __shared__ double red[32];
  const int64_t np = C / V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    double s = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V);
#pragma unroll
      for (int k = 0; k < V; ++k) s += double(p.v[k]);
    }
    double mean = block_reduce(s, SumOp{}, 0.0, red) / double(C);
    double v = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V);
#pragma unroll
      for (int k = 0; k < V; ++k) v += (double(p.v[k]) - mean) * (double(p.v[k]) - mean);
    }
    v = block_reduce(v, SumOp{}, 0.0, red);
    double rstd = 1.0 / sqrt(v / double(C) + eps);
    if (threadIdx.x == 0) {
      mean_out[r] = T(mean);
      rstd_out[r] = T(rstd);
    }
    T mt = T(mean), rt = T(rstd);
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> p = load_pack<V>(xr + j * V), wp = load_or<V>(w, j, T(1)), bp = load_or<V>(b, j, T(0));
#pragma unroll
      for (int k = 0; k < V; ++k) {
        T h = (p.v[k] - mt) * rt;
        p.v[k] = (w ? h * wp.v[k] : h) + bp.v[k];
      }
      store_pack<V>(yr + j * V, p);
    }
  }
}

// gx = rstd (g - mean(g) - xhat mean(g xhat)), g = gy w
template <class T, int V>
__global__ void layer_norm_backward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                           const T* __restrict__ mean, const T* __restrict__ rstd,
                                           const T* __restrict__ gy, T* __restrict__ gx, int64_t rows, int64_t C) {
  __shared__ double red[32];
  const int64_t np = C / V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * C;
    const T* gr = gy + r * C;
    double m = double(mean[r]), rs = double(rstd[r]), sg = 0, sgx = 0;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> xp = load_pack<V>(xr + j * V), gp = load_pack<V>(gr + j * V), wp = load_or<V>(w, j, T(1));
#pragma unroll
      for (int k = 0; k < V; ++k) {
        double g = double(gp.v[k]) * double(wp.v[k]);
        double xh = (double(xp.v[k]) - m) * rs;
        sg += g;
        sgx += g * xh;
      }
    }
    sg = block_reduce(sg, SumOp{}, 0.0, red) / double(C);
    sgx = block_reduce(sgx, SumOp{}, 0.0, red) / double(C);
    T* out = gx + r * C;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < np; j += blockDim.x) {
      Pack<T, V> xp = load_pack<V>(xr + j * V), gp = load_pack<V>(gr + j * V), wp = load_or<V>(w, j, T(1)), o;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        double g = double(gp.v[k]) * double(wp.v[k]);
        double xh = (double(xp.v[k]) - m) * rs;
        o.v[k] = T(rs * (g - sg - xh * sgx));
      }
      store_pack<V>(out + j * V, o);
    }
  }
}

template <class T> struct LnGradWB {
  const T* x;
  const T* gy;
  const T* mean;
  const T* rstd;
  int64_t C;
  __device__ void operator()(int64_t r, int64_t c, double* acc) const {
    double g = double(gy[r * C + c]);
    acc[0] += g * (double(x[r * C + c]) - double(mean[r])) * double(rstd[r]);
    acc[1] += g;
  }
};

void k_layer_norm(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  const Tensor& b = a.in[2];
  DType dt = x.dtype();
  if (x.dim() == 0 || !plain(x, dt) || !plain_or_absent(w, dt) || !plain_or_absent(b, dt) ||
      !plain(a.out[0], dt) || !plain(a.out[1], dt) || !plain(a.out[2], dt) || !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(Op::layer_norm, a.in, a.out, a.attrs);
  int64_t C = x.size(-1), R = C == 0 ? 0 : x.numel() / C;
  if (R == 0) return;
  DeviceGuard g(device_index(x));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    with_pack_width<T>(norm_packs({x, w, b, a.out[0]}, C, sizeof(T)), [&](auto v) {
      constexpr int V = decltype(v)::value;
      layer_norm_kernel<T, V><<<row_grid(R), row_threads_for_packs(C / V)>>>(
          ptr<const T>(x), ptr<const T>(w), ptr<const T>(b), ptr<T>(a.out[0]), ptr<T>(a.out[1]), ptr<T>(a.out[2]),
          R, C, a.attrs.eps);
    });
  });
  LOOM_CUDA_LAUNCH_CHECK("layer_norm kernel");
}

void k_layer_norm_backward(const KernelArgs& a) {
  const Tensor& x = a.in[0];
  const Tensor& w = a.in[1];
  const Tensor& mean = a.in[2];
  const Tensor& rstd = a.in[3];
  const Tensor& gy = a.in[4];
  const Tensor& gx = a.out[0];
  const Tensor& gw = opt_out(a, 1);
  const Tensor& gb = opt_out(a, 2);
  DType dt = x.dtype();
  if (x.dim() == 0 || !plain(x, dt) || !plain_or_absent(w, dt) || !plain(mean, dt) || !plain(rstd, dt) ||
      !plain(gy, dt) || !plain_or_absent(gx, dt) || !plain_or_absent(gw, dt) || !plain_or_absent(gb, dt) ||
      !visit_f32_f64(dt, [](auto) {}))
    return dispatch_on_host(Op::layer_norm_backward, a.in, a.out, a.attrs);
  int64_t C = x.size(-1), R = C == 0 ? 0 : x.numel() / C;
  DeviceGuard g(device_index(x));
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    if (gx.defined() && R > 0) {
      with_pack_width<T>(norm_packs({x, w, gy, gx}, C, sizeof(T)), [&](auto v) {
        constexpr int V = decltype(v)::value;
        layer_norm_backward_kernel<T, V><<<row_grid(R), row_threads_for_packs(C / V)>>>(
            ptr<const T>(x), ptr<const T>(w), ptr<const T>(mean), ptr<const T>(rstd), ptr<const T>(gy), ptr<T>(gx),
            R, C);
      });
      LOOM_CUDA_LAUNCH_CHECK("layer_norm backward kernel");
    }
    if (gw.defined() || gb.defined())
      column_sums<T, 2>(device_index(x),
                        LnGradWB<T>{ptr<const T>(x), ptr<const T>(gy), ptr<const T>(mean), ptr<const T>(rstd), C}, R,
                        C, ptr<T>(gw), ptr<T>(gb));
  });
}

}  // namespace

void register_norm_kernels(KernelTable& t) {
  t.fn[size_t(Op::rms_norm)] = k_rms_norm;
  t.fn[size_t(Op::rms_norm_backward)] = k_rms_norm_backward;
  t.fn[size_t(Op::layer_norm)] = k_layer_norm;
  t.fn[size_t(Op::layer_norm_backward)] = k_layer_norm_backward;
}

}  // namespace loom::runtime::cuda
