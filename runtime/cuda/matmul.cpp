// cuda/matmul.cpp: batched matmul through cuBLAS, the twin of cpu/gemm.cpp's k_matmul.
// a [Bt, M, K] @ b [Bt, K, N] -> out [Bt, M, N] (contiguous). Each operand matrix is stored
// row-major or transposed (one unit stride), with batch stride 0 for a broadcast operand, and is
// read in place. cuBLAS is column-major, so the row-major product C = op(A) op(B) is computed
// as C^T = op(B)^T op(A)^T: a row-major matrix with leading dimension ld is the column-major
// matrix of its transpose with the same ld.
// Full-precision FP32/FP64 (CUBLAS_DEFAULT_MATH: no TF32), on the legacy default stream.
#include <cublas_v2.h>

#include <array>
#include <climits>
#include <mutex>
#include <string>

#include "runtime/cuda/check.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"

namespace loom::runtime::cuda {
namespace {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error: ") + call + " failed at " + file + ":" + std::to_string(line) +
                             ": " + cublas_status_name(s) + " (" + std::to_string(int(s)) + ")");
}
#define LOOM_CUBLAS_CHECK(expr) check_cublas((expr), #expr, __FILE__, __LINE__)

// One handle per device, created on first use and never destroyed (the CUDA runtime may be
// gone by the time static destructors run).
cublasHandle_t handle_for(int device) {
  constexpr int kMax = 64;
  static std::array<cublasHandle_t, kMax> handles{};
  static std::mutex mu;
  if (device < 0 || device >= kMax) throw std::runtime_error("matmul: cuda:" + std::to_string(device) + " out of range");
  std::lock_guard<std::mutex> lk(mu);
  if (!handles[size_t(device)]) {
    cublasHandle_t h = nullptr;
    LOOM_CUBLAS_CHECK(cublasCreate(&h));
    LOOM_CUBLAS_CHECK(cublasSetStream(h, 0));
    LOOM_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    LOOM_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    handles[size_t(device)] = h;
  }
  return handles[size_t(device)];
}

// How a [rows, cols] matrix operand (dims 1, 2) is stored, exactly as cpu/gemm.cpp decides.
struct MatrixLayout {
  bool ok, trans;
  int64_t ld;
};
MatrixLayout layout_of(const Tensor& t) {
  int64_t rs = t.stride(1), cs = t.stride(2), rows = t.size(1), cols = t.size(2);
  if (cs == 1 || cols == 1) return {true, false, std::max<int64_t>(rs, std::max<int64_t>(cols, 1))};
  if (rs == 1 || rows == 1) return {true, true, std::max<int64_t>(cs, std::max<int64_t>(rows, 1))};
  return {false, false, 0};
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

void k_matmul(const KernelArgs& args) {
  if (args.in.size() > 2 && args.in[2].defined()) {  // a bias row: C starts as its rows, then
    Tensor c = args.out[0];                           // C = scale A B + C
    c.copy_(expand(args.in[2], c.shape()));
    OpAttrs accumulate = args.attrs;
    accumulate.beta = 1.0;
    return k_matmul(KernelArgs{args.in.first(2), args.out, accumulate});
  }
  const Tensor& a = args.in[0];
  const Tensor& b = args.in[1];
  Tensor& c = args.out[0];
  DType dt = c.dtype();
  bool ok = a.dim() == 3 && b.dim() == 3 && c.dim() == 3 && (dt == DType::f32 || dt == DType::f64) &&
            a.dtype() == dt && b.dtype() == dt && c.is_contiguous();
  MatrixLayout la{}, lb{};
  if (ok) {
    la = layout_of(a);
    lb = layout_of(b);
    ok = la.ok && lb.ok;
  }
  int64_t batch = ok ? c.size(0) : 0, M = ok ? c.size(1) : 0, N = ok ? c.size(2) : 0, K = ok ? a.size(2) : 0;
  ok = ok && fits_int(batch) && fits_int(M) && fits_int(N) && fits_int(K) && fits_int(la.ld) && fits_int(lb.ld);
  // Odd layouts (no unit stride; the CPU kernel reports them) and int-overflowing sizes.
  if (!ok) return dispatch_on_host(Op::matmul, args.in, args.out, args.attrs);
  if (c.numel() == 0) return;
  int dev = c.device().index;
  DeviceGuard g(dev);
  if (K == 0 && args.attrs.beta != 0.0) return dispatch_on_host(Op::matmul, args.in, args.out, args.attrs);
  if (K == 0) {
    LOOM_CUDA_CHECK(cudaMemsetAsync(c.raw_data(), 0, size_t(c.numel()) * c.element_size(), 0));
    return;
  }
  int64_t sa = a.size(0) == 1 ? 0 : a.stride(0), sb = b.size(0) == 1 ? 0 : b.stride(0);
  cublasHandle_t h = handle_for(dev);
  // Column-major: C^T [N, M] = op(B)^T [N, K] * op(A)^T [K, M].
  cublasOperation_t opb = lb.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opa = la.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (dt == DType::f32) {
    const float alpha = float(args.attrs.scale), beta = float(args.attrs.beta);  // C = scale A B + beta C
    LOOM_CUBLAS_CHECK(cublasSgemmStridedBatched(h, opb, opa, int(N), int(M), int(K), &alpha,
                                                static_cast<const float*>(b.raw_data()), int(lb.ld), sb,
                                                static_cast<const float*>(a.raw_data()), int(la.ld), sa, &beta,
                                                static_cast<float*>(c.raw_data()), int(N), M * N, int(batch)));
  } else {
    const double alpha = args.attrs.scale, beta = args.attrs.beta;
    LOOM_CUBLAS_CHECK(cublasDgemmStridedBatched(h, opb, opa, int(N), int(M), int(K), &alpha,
                                                static_cast<const double*>(b.raw_data()), int(lb.ld), sb,
                                                static_cast<const double*>(a.raw_data()), int(la.ld), sa, &beta,
                                                static_cast<double*>(c.raw_data()), int(N), M * N, int(batch)));
  }
}

}  // namespace

void register_matmul_kernels(KernelTable& t) { t.fn[size_t(Op::matmul)] = k_matmul; }

}  // namespace loom::runtime::cuda
