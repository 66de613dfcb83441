// parity_util.h: shared by the parity suites (test_train_parity.cpp, test_pipeline.cpp): a
// deterministic token batch with some ignored targets, the count of counted targets, and the
// relative difference used against the one-process reference.
#pragma once
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace loom::parallel::testing {

// Step `step`'s batch [rows, seq]: ids and targets, one target in `ignore_every` set to -100.
inline std::pair<runtime::Tensor, runtime::Tensor> token_batch(int64_t step, int64_t vocab, int64_t rows, int64_t seq,
                                                               uint64_t ignore_every) {
  std::vector<int64_t> ids(static_cast<size_t>(rows * seq)), tg(static_cast<size_t>(rows * seq));
  for (size_t i = 0; i < ids.size(); ++i) {
    uint64_t h = runtime::mix64(uint64_t(step) * 1000003u + i);
    ids[i] = int64_t(h % uint64_t(vocab));
    tg[i] = (h >> 20) % ignore_every == 0 ? -100 : int64_t((h >> 32) % uint64_t(vocab));
  }
  return {runtime::Tensor::from_vector(ids, {rows, seq}), runtime::Tensor::from_vector(tg, {rows, seq})};
}

inline double count_valid(const runtime::Tensor& targets) {
  double n = 0;
  for (int64_t t : targets.to_vector<int64_t>()) n += t != -100;
  return n;
}

// Max abs difference relative to the largest reference value, floored at 1e-3: some gradients
// are exactly zero in exact arithmetic (a key bias shifts every score of a row equally) and
// are rounding noise on both sides.
inline double rel_diff(const runtime::Tensor& got, const runtime::Tensor& want) {
  std::vector<double> a = got.to_double_vector(), b = want.to_double_vector();
  double num = 0, den = 1e-3;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

}  // namespace loom::parallel::testing
