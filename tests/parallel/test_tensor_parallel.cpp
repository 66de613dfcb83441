// test_tensor_parallel.cpp: shards and the tensor-parallel ops. Shard runs and split ranges
// are checked against explicit index arithmetic; the vocabulary-parallel embedding and
// cross-entropy, forward and backward, against the one-process ops on every group of the suite
// (sizes 1-4), with vocabularies that do not divide by the group, in f64.
#include <gtest/gtest.h>

#include <cmath>

#include "parallel/tensor_parallel.h"
#include "parallel_test_util.h"

namespace loom::parallel::testing {
namespace {

TEST(ParallelUnitShard, SplitRangeCoversUnevenly) {
  std::vector<int64_t> sizes;
  int64_t next = 0;
  for (int i = 0; i < 4; ++i) {
    Range r = split_range(50257, 4, i);
    EXPECT_EQ(r.begin, next);
    next = r.end;
    sizes.push_back(r.size());
  }
  EXPECT_EQ(next, 50257);
  EXPECT_EQ(sizes, (std::vector<int64_t>{12565, 12564, 12564, 12564}));
  EXPECT_THROW(split_range(10, 0, 0), std::invalid_argument);
}

TEST(ParallelUnitShard, RunsMatchIndexArithmetic) {
  // Full [3, 5, 4]; split dim 1 into 2 parts (3 + 2): local [3, 2, 4] of part 1.
  Shard s = Shard::split({3, 5, 4}, 1, 2, 1);
  EXPECT_EQ(s.local_shape(), (runtime::Dims{3, 2, 4}));
  std::vector<int64_t> want;
  for (int64_t a = 0; a < 3; ++a)
    for (int64_t b = 3; b < 5; ++b)
      for (int64_t c = 0; c < 4; ++c) want.push_back((a * 5 + b) * 4 + c);
  for (auto [lo, hi] : std::vector<std::pair<int64_t, int64_t>>{{0, 24}, {5, 19}, {8, 16}, {7, 8}}) {
    std::vector<int64_t> got;
    for (const parallel::Run& r : s.runs(lo, hi))
      for (int64_t k = 0; k < r.length; ++k) got.push_back(r.offset + k);
    EXPECT_EQ(got, std::vector<int64_t>(want.begin() + lo, want.begin() + hi)) << lo << ":" << hi;
  }
  Shard rows = Shard::split({7, 3}, 0, 3, 2);  // rows 5:7 -> one run
  ASSERT_EQ(rows.runs().size(), 1u);
  EXPECT_EQ(rows.runs()[0].offset, 15);
  EXPECT_EQ(rows.runs()[0].length, 6);
  Tensor full = make({3, 5, 4}, DType::f64, [](int64_t i) { return double(i); });
  expect_values(take_local(full, s, 5, 19), [&](int64_t i) { return double(want[size_t(5 + i)]); }, "take_local");
}

constexpr int64_t kVocab = 11, kC = 3;

Tensor table() { return make({kVocab, kC}, DType::f64, [](int64_t i) { return 0.1 * double(i) - 1.0; }); }

TEST(TensorParallel, VocabParallelEmbeddingMatchesOneRank) {
  Tensor ids = Tensor::from_vector<int64_t>({0, 10, 5, 3, 3, 7, 1, 9}, {2, 4});
  Tensor gout = make({2, 4, kC}, DType::f64, [](int64_t i) { return double(i % 5) - 2.0; });
  Tensor full = table();
  full.set_requires_grad(true);
  Tensor want = runtime::embedding(full, ids);
  want.backward(gout);
  for (const CommPtr& g : groups()) {
    TensorParallel tp{g, false};
    Range vr = split_range(kVocab, g->size(), g->rank());
    Tensor w = table().narrow(0, vr.begin, vr.size()).contiguous();
    w.set_requires_grad(true);
    Tensor got = vocab_parallel_embedding(ids, w, vr, tp);
    expect_equal(got, want.detach(), "embedding on " + group_str(*g));
    got.backward(gout);
    expect_equal(w.grad(), full.grad().narrow(0, vr.begin, vr.size()).contiguous(), "grad on " + group_str(*g));
  }
}

TEST(TensorParallel, VocabParallelCrossEntropyMatchesOneRank) {
  const int64_t N = 7;
  Tensor targets = Tensor::from_vector<int64_t>({3, 10, -100, 0, 5, 6, -100}, {N});
  auto logits_fn = [](int64_t i) { return std::sin(0.7 * double(i)) * 3.0; };
  Tensor full = make({N, kVocab}, DType::f64, logits_fn);
  full.set_requires_grad(true);
  runtime::CrossEntropyOptions ce;
  ce.reduction = runtime::Reduction::sum;
  Tensor want = runtime::cross_entropy(full, targets, ce);
  runtime::mul_scalar(want, 0.5).backward();
  for (const CommPtr& g : groups()) {
    TensorParallel tp{g, false};
    Range vr = split_range(kVocab, g->size(), g->rank());
    Tensor local = make({N, kVocab}, DType::f64, logits_fn).narrow(1, vr.begin, vr.size()).contiguous();
    local.set_requires_grad(true);
    Tensor got = vocab_parallel_cross_entropy(local, targets, vr, tp);
    EXPECT_NEAR(got.item(), want.item(), 1e-12) << group_str(*g);
    runtime::mul_scalar(got, 0.5).backward();
    std::vector<double> a = local.grad().to_double_vector();
    std::vector<double> b = full.grad().narrow(1, vr.begin, vr.size()).contiguous().to_double_vector();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-14) << group_str(*g) << " element " << i;
  }
}

TEST(TensorParallel, SequenceChunkNeedsDivisibleLength) {
  for (const CommPtr& g : groups()) {
    TensorParallel tp{g, true};
    Tensor x = make({2, 5, 3}, DType::f64, [](int64_t i) { return double(i); });
    if (g->size() == 1 || 5 % g->size() == 0) {
      EXPECT_EQ(sequence_chunk(x, tp).size(1), 5 / g->size());
    } else {
      EXPECT_THROW(sequence_chunk(x, tp), std::invalid_argument) << group_str(*g);
    }
  }
}

}  // namespace
}  // namespace loom::parallel::testing
