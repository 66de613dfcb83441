// test_nccl.cpp: the NCCL backend against the expected values and the MPI backend's results.
// Runs where each rank has its own GPU (device = local rank), under mpirun; NCCL refuses two
// ranks on one device, so a one-GPU machine runs it with -np 1 (a real one-rank NCCL
// communicator). Skips everywhere else; compiled only with NCCL.
#include <gtest/gtest.h>

#ifdef LOOM_WITH_NCCL

#include "parallel/mappings.h"
#include "parallel/mesh.h"
#include "parallel_test_util.h"
#include "runtime/cuda/cuda_backend.h"

namespace loom::parallel::testing {
namespace {

// The world's NCCL communicator on this rank's GPU, or null (with the reason) when not runnable.
CommPtr nccl_world(std::string& why) {
  Distributed& d = init_distributed();
  if (!d.uses_mpi()) {
    why = "needs mpirun (NCCL's unique id travels over MPI)";
    return nullptr;
  }
  // Every rank must agree to go on, so the check is collective.
  const int devices = runtime::cuda::device_count();
  Tensor ok = Tensor::full({1}, double(d.local_rank() < devices), DType::i32);
  d.world()->all_reduce(ok, ReduceOp::min);
  if (ok.item() == 0) {
    why = devices == 0 ? "no CUDA device: " + runtime::cuda::unavailable_reason() : "fewer GPUs than ranks on a node";
    return nullptr;
  }
  static CommPtr c = make_nccl_comm(d.world(), d.local_rank());
  return c;
}

#define NCCL_WORLD(var)           \
  std::string why_;               \
  CommPtr var = nccl_world(why_); \
  if (!var) GTEST_SKIP() << why_; \
  const Device dev = Device::cuda(init_distributed().local_rank())

TEST(Nccl, AllReduceBroadcastBarrier) {
  NCCL_WORLD(g);
  const int n = g->size(), r = g->rank();
  EXPECT_EQ(g->backend(), std::string("nccl"));
  for (DType dt : {DType::f32, DType::f64, DType::i64, DType::bf16}) {
    auto x = [&] { return make({2, 3}, dt, [&](int64_t i) { return (r + 1) * (i + 1); }).to(dev); };
    Tensor s = x(), mx = x();
    g->all_reduce(s);
    g->all_reduce(mx, ReduceOp::max);
    expect_values(
        s, [&](int64_t i) { return (i + 1) * n * (n + 1) / 2.0; }, std::string("nccl sum ") + dtype_name(dt));
    expect_values(
        mx, [&](int64_t i) { return double((i + 1) * n); }, std::string("nccl max ") + dtype_name(dt));
    if (runtime::is_floating(dt)) {
      Tensor a = x();
      g->all_reduce(a, ReduceOp::avg);
      expect_values(
          a, [&](int64_t i) { return (i + 1) * (n + 1) / 2.0; }, std::string("nccl avg ") + dtype_name(dt));
    }
    for (int root = 0; root < n; ++root) {
      Tensor b = make({4}, dt, [&](int64_t i) { return r * 10 + i; }).to(dev);
      g->broadcast(b, root);
      expect_values(
          b, [&](int64_t i) { return root * 10 + i; }, "nccl broadcast");
    }
  }
  g->barrier();
  EXPECT_THROW(g->all_reduce(Tensor::zeros({2})), std::invalid_argument);  // a CPU tensor
}

TEST(Nccl, ScatterGatherAllToAllEqualAndVariable) {
  NCCL_WORLD(g);
  const int n = g->size(), r = g->rank();
  std::vector<int64_t> rows(n);
  for (int j = 0; j < n; ++j) rows[j] = (j + 1) % 3;
  auto off = [&](const std::vector<int64_t>& v, int j) {
    int64_t o = 0;
    for (int i = 0; i < j; ++i) o += v[i];
    return o;
  };
  const double S = n * (n + 1) / 2.0;
  Tensor in = make({2 * n, 3}, DType::f32, [&](int64_t i) { return (r + 1) * (i + 1); }).to(dev);
  Tensor out = Tensor::empty({2, 3}, DType::f32, dev);
  g->reduce_scatter(in, out);
  expect_values(
      out, [&](int64_t k) { return S * (6 * r + k + 1); }, "nccl reduce_scatter");
  Tensor vin = make({off(rows, n), 3}, DType::f32, [&](int64_t i) { return (r + 1) * (i + 1); }).to(dev);
  Tensor vout = Tensor::empty({rows[r], 3}, DType::f32, dev);
  g->reduce_scatter(vin, vout, ReduceOp::sum, rows);
  expect_values(
      vout, [&](int64_t k) { return S * (3 * off(rows, r) + k + 1); }, "nccl reduce_scatter rows");

  Tensor gin = make({2, 3}, DType::f64, [&](int64_t i) { return (r + 1) * 1000 + i; }).to(dev);
  Tensor gout = Tensor::empty({2 * n, 3}, DType::f64, dev);
  g->all_gather(gin, gout);
  expect_values(
      gout, [&](int64_t i) { return (i / 6 + 1) * 1000 + i % 6; }, "nccl all_gather");
  Tensor vg = make({rows[r], 3}, DType::f64, [&](int64_t i) { return (r + 1) * 1000 + i; }).to(dev);
  Tensor vgo = Tensor::empty({off(rows, n), 3}, DType::f64, dev);
  g->all_gather(vg, vgo, rows);
  for (int j = 0; j < n; ++j)
    expect_values(
        vgo.narrow(0, off(rows, j), rows[j]), [&](int64_t i) { return (j + 1) * 1000 + i; }, "nccl all_gather rows");

  Tensor ain = make({2 * n, 3}, DType::i64, [&](int64_t i) { return r * 1000 + (i / 6) * 100 + i % 6; }).to(dev);
  Tensor aout = Tensor::empty({2 * n, 3}, DType::i64, dev);
  g->all_to_all(ain, aout);
  expect_values(
      aout, [&](int64_t i) { return (i / 6) * 1000 + r * 100 + i % 6; }, "nccl all_to_all");
  auto cnt = [](int src, int dst) { return int64_t((src + 2 * dst) % 3); };
  std::vector<int64_t> send(n), recv(n);
  for (int j = 0; j < n; ++j) send[j] = cnt(r, j), recv[j] = cnt(j, r);
  Tensor vin2 = Tensor::empty({off(send, n), 2}, DType::f32);
  for (int j = 0; j < n; ++j)
    vin2.narrow(0, off(send, j), send[j]).copy_(make({send[j], 2}, DType::f32, [&](int64_t k) {
      return r * 1000 + j * 100 + k;
    }));
  Tensor vout2 = Tensor::empty({off(recv, n), 2}, DType::f32, dev);
  g->all_to_all(vin2.to(dev), vout2, send, recv);
  for (int j = 0; j < n; ++j)
    expect_values(
        vout2.narrow(0, off(recv, j), recv[j]), [&](int64_t k) { return j * 1000 + r * 100 + k; },
        "nccl all_to_all rows");
}

TEST(Nccl, AsyncAndSendRecv) {
  NCCL_WORLD(g);
  const int n = g->size(), r = g->rank();
  Tensor a = Tensor::full({1 << 20}, r + 1.0, DType::f32, dev), b = Tensor::full({16}, r + 1.0, DType::f32, dev);
  WorkPtr wa = g->all_reduce_async(a), wb = g->all_reduce_async(b);
  wb->wait();
  while (!wa->test()) {
  }
  expect_values(
      b, [&](int64_t) { return n * (n + 1) / 2.0; }, "nccl async small");
  std::vector<double> av = a.to_double_vector();
  EXPECT_EQ(av.front(), n * (n + 1) / 2.0);
  EXPECT_EQ(av.back(), n * (n + 1) / 2.0);
  if (n < 2) return;  // NCCL send/recv to oneself on one stream would wait for itself
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  Tensor x = Tensor::full({3}, double(r), DType::f64, dev), y = Tensor::empty({3}, DType::f64, dev);
  auto s = g->send_async(x, next);
  g->recv(y, prev);
  s->wait();
  expect_values(
      y, [&](int64_t) { return double(prev); }, "nccl ring");
  EXPECT_THROW(g->send(x, next, 3), std::invalid_argument);  // NCCL has no tags
}

TEST(Nccl, MappingsMatchTheCpu) {
  NCCL_WORLD(g);
  const CommPtr& cpu = world();
  const int r = g->rank(), n = g->size();
  for (int64_t d : {0, 1}) {
    Dims block = {2, 4};
    Tensor xc = make(block, DType::f64, [&](int64_t i) { return (r + 1) * (i + 1); }).set_requires_grad(true);
    Tensor xg = xc.detach().to(dev).set_requires_grad(true);
    Tensor gc = all_gather_from_sequence(xc, cpu, d), gg = all_gather_from_sequence(xg, g, d);
    expect_equal(gg, gc, "nccl all_gather_from_sequence dim " + std::to_string(d));
    Tensor up = make(gc.shape(), DType::f64, [&](int64_t i) { return (r + 1) * 10 + i; });
    gc.backward(up);
    gg.backward(up.to(dev));
    expect_equal(xg.grad(), xc.grad(), "nccl all_gather_from_sequence backward");
  }
  // A dp x tp mesh over the GPUs: the tp group's NCCL communicator reduces only within it.
  if (n % 2 == 0) {
    Mesh mesh(cpu, ParallelDims{.dp = n / 2, .tp = 2});
    CommPtr tp = mesh.comm("tp", dev);
    Tensor t = Tensor::full({3}, double(world()->rank()), DType::f32, dev);
    tp->all_reduce(t);
    const int base = world()->rank() / 2 * 2;
    expect_values(
        t, [&](int64_t) { return double(2 * base + 1); }, "nccl tp all_reduce");
  }
}

}  // namespace
}  // namespace loom::parallel::testing

#endif  // LOOM_WITH_NCCL
