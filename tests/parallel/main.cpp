// main.cpp: the parallel suite's main. Initialises Distributed (MPI when started by mpirun)
// before GoogleTest; rank 0 prints the usual report, other ranks print only their failures.
#include <gtest/gtest.h>

#include <cstdio>

#include "parallel/distributed.h"

namespace {
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::printf("[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                r.message());
    std::fflush(stdout);
  }

 private:
  int rank_;
};
}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto& dist = loom::parallel::init_distributed();
  if (dist.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(dist.rank()));
  }
  return RUN_ALL_TESTS();
}
