// cpu/common.h: helpers every CPU kernel uses: the one OpenMP-based parallel_for, the fixed-block
// row reduction, dtype visitors, and element load/store with half-precision conversion.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/kernels.h"

namespace loom::runtime::cpu {

// Splits [0, n) into at most omp_get_max_threads() contiguous ranges of at least `grain`
// items; runs serially when that gives one range. fn(begin, end).
template <class F> void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  int64_t max_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  int64_t chunks = std::min<int64_t>(max_threads, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  if (chunks <= 1) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(int(chunks))
  {
    int64_t t = omp_get_thread_num();
    int64_t begin = n * t / chunks, end = n * (t + 1) / chunks;
    if (begin < end) fn(begin, end);
  }
}

// Sums per-row contributions over rows [0, rows) in fixed blocks of kReduceRowBlock rows: the
// blocks' f64 partial sums run in parallel, then are added in block order, so the result
// depends on `rows` only, never on the thread count (parameter gradients of the norms, sums
// over a tensor's middle axis). per_row(r, acc) adds row r's terms to acc[0, width); the
// partials take width doubles per block, 1/32 of an f32 input whose rows are width wide.
constexpr int64_t kReduceRowBlock = 64;
template <class F> void reduce_rows_fixed(int64_t rows, int64_t width, std::vector<double>& result, F&& per_row) {
  const int64_t blocks = std::max<int64_t>(1, (rows + kReduceRowBlock - 1) / kReduceRowBlock);
  std::vector<double> partial(size_t(blocks * width), 0.0);
  parallel_for(blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      for (int64_t r = k * kReduceRowBlock; r < std::min(rows, (k + 1) * kReduceRowBlock); ++r)
        per_row(r, partial.data() + k * width);
  });
  result.assign(size_t(width), 0.0);
  parallel_for(width, 4096, [&](int64_t b, int64_t e) {
    for (int64_t k = 0; k < blocks; ++k)
      for (int64_t j = b; j < e; ++j) result[size_t(j)] += partial[size_t(k * width + j)];
  });
}

[[noreturn]] inline void bad_dtype(Op op, DType t) {
  throw std::invalid_argument(std::string(op_name(op)) + ": unsupported dtype " + dtype_name(t));
}

// Calls fn(T{}) with T = float or double.
template <class F> void visit_float(Op op, DType t, F&& fn) {
  switch (t) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    default: bad_dtype(op, t);
  }
}

// Calls fn(T{}) for every dtype.
template <class F> void visit_any(Op op, DType t, F&& fn) {
  switch (t) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    case DType::bf16: fn(bf16{}); return;
    case DType::f16: fn(f16{}); return;
    case DType::i32: fn(int32_t{}); return;
    case DType::i64: fn(int64_t{}); return;
    case DType::u8: fn(uint8_t{}); return;
  }
  bad_dtype(op, t);
}

// Element conversions through double (exact for every dtype but i64 beyond 2^53).
template <class T> inline double to_double(T v) { return double(v); }
template <> inline double to_double(bf16 v) { return bf16_to_float(v); }
template <> inline double to_double(f16 v) { return f16_to_float(v); }
template <class T> inline T from_double(double v) { return T(v); }
template <> inline bf16 from_double(double v) { return float_to_bf16(float(v)); }
template <> inline f16 from_double(double v) { return float_to_f16(float(v)); }

// Converts S -> D directly where a plain cast is exact enough.
template <class D, class S> inline D convert(S v) {
  if constexpr (std::is_same_v<D, S>) return v;
  else if constexpr (std::is_arithmetic_v<D> && std::is_arithmetic_v<S>) return D(v);
  else return from_double<D>(to_double<S>(v));
}

inline void require_contiguous(const Tensor& t, Op op, const char* which) {
  if (t.defined() && !t.is_contiguous())
    throw std::logic_error(std::string(op_name(op)) + ": " + which + " must be contiguous");
}

// Number of rows of length shape.back() in a shape (1 for a scalar).
inline int64_t outer_rows(const Dims& shape) {
  if (shape.size() == 0) return 1;
  int64_t r = 1;
  for (int i = 0; i + 1 < shape.size(); ++i) r *= shape[i];
  return r;
}

// Offset of row `row` (all dims but the last) given strides.
inline int64_t row_offset(const Dims& shape, const Dims& strides, int64_t row) {
  int64_t off = 0;
  for (int i = shape.size() - 2; i >= 0; --i) {
    int64_t idx = row % shape[i];
    row /= shape[i];
    off += idx * strides[i];
  }
  return off;
}

}  // namespace loom::runtime::cpu
