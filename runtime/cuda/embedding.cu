// cuda/embedding.cu: embedding lookup and its backward, the twins of cpu/nn.cpp's k_embedding
// and k_embedding_backward. Token ids are checked as on the CPU (the same message): the forward
// reads them back to the host once per call (one small copy, which waits for the device).
// Backward sums, for each vocabulary row, the gradient rows of its tokens in token order, as the
// CPU does, so the result is bit-identical to the CPU's and deterministic: the host counting-sorts
// the ids (it has them from the check) into per-row position lists, and one block per used row
// adds that row's gradient rows in order. Contiguous f32/f64; anything else runs on the host.
#include <string>
#include <vector>

#include "runtime/cuda/device.cuh"

namespace loom::runtime::cuda {
namespace {

bool plain(const Tensor& t, DType dt) { return t.defined() && t.dtype() == dt && t.is_contiguous(); }

// The ids on the host, checked against [0, V) with the CPU's message.
std::vector<int64_t> host_ids(const Tensor& ids, int64_t V, const char* op) {
  std::vector<int64_t> h(size_t(ids.numel()));
  if (!h.empty())
    LOOM_CUDA_CHECK(cudaMemcpy(h.data(), ids.raw_data(), h.size() * sizeof(int64_t), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < h.size(); ++i)
    if (h[i] < 0 || h[i] >= V)
      throw std::invalid_argument(std::string(op) + ": token id " + std::to_string(h[i]) + " at position " +
                                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  return h;
}

template <class T>
__global__ void embedding_kernel(const T* __restrict__ w, const int64_t* __restrict__ ids, T* __restrict__ out,
                                 int64_t N, int64_t C) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* src = w + ids[n] * C;
    T* dst = out + n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
  }
}

// Block u handles vocabulary row rows[u]: gw[row] = sum over its positions (in token order).
template <class T>
__global__ void embedding_backward_kernel(const T* __restrict__ g, const int64_t* __restrict__ rows,
                                          const int64_t* __restrict__ starts, const int64_t* __restrict__ positions,
                                          T* __restrict__ gw, int64_t used, int64_t C) {
  for (int64_t u = blockIdx.x; u < used; u += gridDim.x) {
    T* dst = gw + rows[u] * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      T acc = T(0);
      for (int64_t p = starts[u]; p < starts[u + 1]; ++p) acc += g[positions[p] * C + c];
      dst[c] = acc;
    }
  }
}

void k_embedding(const KernelArgs& a) {
  const Tensor& w = a.in[0];
  const Tensor& ids = a.in[1];
  Tensor& out = a.out[0];
  DType dt = w.dtype();
  if (!visit_f32_f64(dt, [](auto) {}) || !plain(w, dt) || !plain(ids, DType::i64) || !plain(out, dt) || w.dim() != 2)
    return dispatch_on_host(Op::embedding, a.in, a.out, a.attrs);
  const int64_t V = w.size(0), C = w.size(1), N = ids.numel();
  DeviceGuard g(device_index(w));
  host_ids(ids, V, "embedding");
  if (N == 0 || C == 0) return;
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    embedding_kernel<T><<<unsigned(std::min<int64_t>(N, int64_t(1) << 20)), row_threads(C)>>>(
        static_cast<const T*>(w.raw_data()), static_cast<const int64_t*>(ids.raw_data()),
        static_cast<T*>(out.raw_data()), N, C);
  });
  LOOM_CUDA_LAUNCH_CHECK("embedding kernel");
}

void k_embedding_backward(const KernelArgs& a) {
  const Tensor& ids = a.in[0];
  const Tensor& g = a.in[1];
  Tensor& gw = a.out[0];
  DType dt = gw.dtype();
  if (!visit_f32_f64(dt, [](auto) {}) || !plain(ids, DType::i64) || !plain(g, dt) || !plain(gw, dt) || gw.dim() != 2)
    return dispatch_on_host(Op::embedding_backward, a.in, a.out, a.attrs);
  const int64_t V = gw.size(0), C = gw.size(1), N = ids.numel();
  const int dev = device_index(gw);
  DeviceGuard guard(dev);
  std::vector<int64_t> h = host_ids(ids, V, "embedding_backward");
  LOOM_CUDA_CHECK(cudaMemsetAsync(gw.raw_data(), 0, size_t(V * C) * dtype_size(dt), 0));
  if (N == 0 || C == 0) return;
  // Counting sort of the positions by id (stable: token order within a row).
  std::vector<int64_t> count(size_t(V), 0);
  for (int64_t id : h) ++count[size_t(id)];
  std::vector<int64_t> rows, starts{0};
  std::vector<int64_t> slot(size_t(V), -1);
  for (int64_t r = 0; r < V; ++r)
    if (count[size_t(r)] > 0) {
      slot[size_t(r)] = int64_t(rows.size());
      rows.push_back(r);
      starts.push_back(starts.back() + count[size_t(r)]);
    }
  std::vector<int64_t> fill(starts.begin(), starts.end() - 1);  // next free slot of each used row
  std::vector<int64_t> positions(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) positions[size_t(fill[size_t(slot[size_t(h[size_t(n)])])]++)] = n;
  const int64_t used = int64_t(rows.size());
  // One upload: rows [used], starts [used + 1], positions [N].
  std::vector<int64_t> packed;
  packed.reserve(rows.size() + starts.size() + positions.size());
  packed.insert(packed.end(), rows.begin(), rows.end());
  packed.insert(packed.end(), starts.begin(), starts.end());
  packed.insert(packed.end(), positions.begin(), positions.end());
  Scratch index(dev, packed.size() * sizeof(int64_t));
  LOOM_CUDA_CHECK(cudaMemcpy(index.as<int64_t>(), packed.data(), packed.size() * sizeof(int64_t),
                             cudaMemcpyHostToDevice));
  const int64_t* prows = index.as<int64_t>();
  visit_f32_f64(dt, [&](auto z) {
    using T = decltype(z);
    embedding_backward_kernel<T><<<unsigned(std::min<int64_t>(used, int64_t(1) << 20)), row_threads(C)>>>(
        static_cast<const T*>(g.raw_data()), prows, prows + used, prows + 2 * used + 1, static_cast<T*>(gw.raw_data()),
        used, C);
  });
  LOOM_CUDA_LAUNCH_CHECK("embedding backward kernel");
}

}  // namespace

void register_embedding_kernels(KernelTable& t) {
  t.fn[size_t(Op::embedding)] = k_embedding;
  t.fn[size_t(Op::embedding_backward)] = k_embedding_backward;
}

}  // namespace loom::runtime::cuda
