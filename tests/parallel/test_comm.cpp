// test_comm.cpp: every collective of Comm, exactly, with rank-valued tensors, on the world and
// its sub-groups (sizes 1 to 4 across the mpirun runs), in f32, f64 and i64 (and bf16/f16
// for the reductions, which use Loom's own MPI ops); variable splits with uneven and empty
// blocks; the async forms; argument errors.
#include <gtest/gtest.h>

#include "parallel_test_util.h"

namespace loom::parallel::testing {
namespace {

const DType kDtypes[] = {DType::f32, DType::f64, DType::i64};

// Rows per rank for the variable forms: uneven, and rank 2 (if any) gets none.
std::vector<int64_t> uneven_rows(int n) {
  std::vector<int64_t> rows(n);
  for (int j = 0; j < n; ++j) rows[j] = (j + 1) % 3;
  return rows;
}
int64_t offset_of(const std::vector<int64_t>& rows, int j) {
  int64_t o = 0;
  for (int i = 0; i < j; ++i) o += rows[i];
  return o;
}

TEST(Comm, AllReduceOps) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    for (DType dt : kDtypes) {
      std::string at = group_str(*g) + " " + dtype_name(dt);
      auto x = [&] { return make({2, 3}, dt, [&](int64_t i) { return (r + 1) * (i + 1); }); };
      Tensor s = x(), mx = x(), mn = x();
      g->all_reduce(s, ReduceOp::sum);
      g->all_reduce(mx, ReduceOp::max);
      g->all_reduce(mn, ReduceOp::min);
      expect_values(
          s, [&](int64_t i) { return (i + 1) * n * (n + 1) / 2.0; }, "sum " + at);
      expect_values(
          mx, [&](int64_t i) { return double((i + 1) * n); }, "max " + at);
      expect_values(
          mn, [&](int64_t i) { return double(i + 1); }, "min " + at);
      if (runtime::is_floating(dt)) {
        Tensor a = x();
        g->all_reduce(a, ReduceOp::avg);
        expect_values(
            a, [&](int64_t i) { return (i + 1) * (n + 1) / 2.0; }, "avg " + at);
      }
    }
  }
}

TEST(Comm, AllReduceHalf) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    for (DType dt : {DType::bf16, DType::f16}) {
      std::string at = group_str(*g) + " " + dtype_name(dt);
      Tensor s = make({5}, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
      Tensor mx = s.clone(), a = s.clone();
      g->all_reduce(s);
      g->all_reduce(mx, ReduceOp::max);
      g->all_reduce(a, ReduceOp::avg);
      expect_values(
          s, [&](int64_t i) { return (i + 1) * n * (n + 1) / 2.0; }, "sum " + at);
      expect_values(
          mx, [&](int64_t i) { return double((i + 1) * n); }, "max " + at);
      expect_values(
          a, [&](int64_t i) { return (i + 1) * (n + 1) / 2.0; }, "avg " + at);
    }
  }
}

TEST(Comm, ReduceScatterEqual) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    for (DType dt : kDtypes) {
      Tensor in = make({2 * n, 3}, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
      Tensor out = Tensor::empty({2, 3}, dt);
      g->reduce_scatter(in, out);
      expect_values(
          out, [&](int64_t k) { return n * (n + 1) / 2.0 * (6 * r + k + 1); },
          "reduce_scatter " + group_str(*g) + " " + dtype_name(dt));
      Tensor mx = Tensor::empty({2, 3}, dt);
      g->reduce_scatter(in, mx, ReduceOp::max);
      expect_values(
          mx, [&](int64_t k) { return double(n * (6 * r + k + 1)); }, "reduce_scatter max " + group_str(*g));
    }
  }
}

TEST(Comm, ReduceScatterVariable) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    const std::vector<int64_t> rows = uneven_rows(n);
    const int64_t total = offset_of(rows, n), off = offset_of(rows, r);
    for (DType dt : kDtypes) {
      Tensor in = make({total, 3}, dt, [&](int64_t i) { return (r + 1) * (i + 1); });
      Tensor out = Tensor::empty({rows[r], 3}, dt);
      g->reduce_scatter(in, out, ReduceOp::sum, rows);
      expect_values(
          out, [&](int64_t k) { return n * (n + 1) / 2.0 * (3 * off + k + 1); },
          "reduce_scatter rows " + group_str(*g) + " " + dtype_name(dt));
    }
  }
}

TEST(Comm, AllGatherEqualAndVariable) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    for (DType dt : kDtypes) {
      std::string at = group_str(*g) + " " + dtype_name(dt);
      Tensor in = make({2, 3}, dt, [&](int64_t i) { return (r + 1) * 1000 + i; });
      Tensor out = Tensor::empty({2 * n, 3}, dt);
      g->all_gather(in, out);
      expect_values(
          out, [&](int64_t i) { return (i / 6 + 1) * 1000 + i % 6; }, "all_gather " + at);

      const std::vector<int64_t> rows = uneven_rows(n);
      Tensor vin = make({rows[r], 3}, dt, [&](int64_t i) { return (r + 1) * 1000 + i; });
      Tensor vout = Tensor::empty({offset_of(rows, n), 3}, dt);
      g->all_gather(vin, vout, rows);
      for (int j = 0; j < n; ++j)
        expect_values(
            vout.narrow(0, offset_of(rows, j), rows[j]), [&](int64_t i) { return (j + 1) * 1000 + i; },
            "all_gather rows, block " + std::to_string(j) + " " + at);
    }
  }
}

TEST(Comm, Broadcast) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    for (DType dt : kDtypes)
      for (int root = 0; root < n; ++root) {
        Tensor x = make({4}, dt, [&](int64_t i) { return r * 10 + i; });
        g->broadcast(x, root);
        expect_values(
            x, [&](int64_t i) { return root * 10 + i; },
            "broadcast from " + std::to_string(root) + " " + group_str(*g) + " " + dtype_name(dt));
      }
  }
}

TEST(Comm, AllToAllEqual) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    for (DType dt : kDtypes) {
      // Block j (2 rows x 3) goes to rank j: value src * 1000 + dst * 100 + k.
      Tensor in = make({2 * n, 3}, dt, [&](int64_t i) { return r * 1000 + (i / 6) * 100 + i % 6; });
      Tensor out = Tensor::empty({2 * n, 3}, dt);
      g->all_to_all(in, out);
      expect_values(
          out, [&](int64_t i) { return (i / 6) * 1000 + r * 100 + i % 6; },
          "all_to_all " + group_str(*g) + " " + dtype_name(dt));
    }
  }
}

TEST(Comm, AllToAllVariable) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    auto rows = [](int src, int dst) { return int64_t((src + 2 * dst) % 3); };  // 0, 1 or 2 rows
    std::vector<int64_t> send(n), recv(n);
    for (int j = 0; j < n; ++j) send[j] = rows(r, j), recv[j] = rows(j, r);
    for (DType dt : kDtypes) {
      Tensor in = Tensor::empty({offset_of(send, n), 2}, dt);
      for (int j = 0; j < n; ++j)
        in.narrow(0, offset_of(send, j), send[j]).copy_(make({send[j], 2}, dt, [&](int64_t k) {
          return r * 1000 + j * 100 + k;
        }));
      Tensor out = Tensor::empty({offset_of(recv, n), 2}, dt);
      g->all_to_all(in, out, send, recv);
      for (int j = 0; j < n; ++j)
        expect_values(
            out.narrow(0, offset_of(recv, j), recv[j]), [&](int64_t k) { return j * 1000 + r * 100 + k; },
            "all_to_all rows from " + std::to_string(j) + " " + group_str(*g) + " " + dtype_name(dt));
    }
  }
}

TEST(Comm, SendRecvRing) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank(), next = (r + 1) % n, prev = (r + n - 1) % n;
    for (DType dt : kDtypes) {
      Tensor x = make({3}, dt, [&](int64_t i) { return r * 10 + i; }), y = Tensor::empty({3}, dt);
      if (n > 1 && r == 0) {  // blocking: rank 0 sends first, the others receive first
        g->send(x, next, 5);
        g->recv(y, prev, 5);
      } else if (n > 1) {
        g->recv(y, prev, 5);
        g->send(x, next, 5);
      } else {
        auto s = g->send_async(x, next, 5);
        g->recv(y, prev, 5);
        s->wait();
      }
      expect_values(
          y, [&](int64_t i) { return prev * 10 + i; }, "ring " + group_str(*g) + " " + dtype_name(dt));
    }
    // Tags select the message: two sends, received in the opposite order.
    Tensor a = make({2}, DType::f64, [&](int64_t) { return 1.0 + r; }),
           b = make({2}, DType::f64, [&](int64_t) { return 2.0 + r; });
    auto sa = g->send_async(a, next, 1), sb = g->send_async(b, next, 2);
    Tensor rb = Tensor::empty({2}, DType::f64), ra = Tensor::empty({2}, DType::f64);
    g->recv(rb, prev, 2);
    g->recv(ra, prev, 1);
    sa->wait();
    sb->wait();
    expect_values(
        ra, [&](int64_t) { return 1.0 + prev; }, "tag 1 " + group_str(*g));
    expect_values(
        rb, [&](int64_t) { return 2.0 + prev; }, "tag 2 " + group_str(*g));
  }
}

TEST(Comm, AsyncOverlapping) {
  for (const CommPtr& g : groups()) {
    const int n = g->size(), r = g->rank();
    std::vector<Tensor> xs;
    std::vector<WorkPtr> works;
    for (int k = 0; k < 3; ++k) {
      xs.push_back(make({1000}, DType::f32, [&](int64_t i) { return (r + 1) * (k + 1) + i % 7; }));
      works.push_back(g->all_reduce_async(xs.back()));
    }
    Tensor in = make({2}, DType::i64, [&](int64_t i) { return r * 2 + i; }), out = Tensor::empty({2 * n}, DType::i64);
    works.push_back(g->all_gather_async(in, out));
    works.push_back(g->barrier_async());
    Tensor b = make({3}, DType::f64, [&](int64_t i) { return r + i; });
    works.push_back(g->broadcast_async(b, n - 1));
    // Complete in reverse order, the last by polling test().
    for (int k = int(works.size()) - 1; k > 0; --k) works[k]->wait();
    while (!works[0]->test()) {
    }
    EXPECT_TRUE(works[0]->test());
    for (int k = 0; k < 3; ++k)
      expect_values(
          xs[k], [&](int64_t i) { return n * (n + 1) / 2.0 * (k + 1) + n * double(i % 7); },
          "async all_reduce " + std::to_string(k) + " " + group_str(*g));
    expect_values(
        out, [&](int64_t i) { return double(i); }, "async all_gather " + group_str(*g));
    expect_values(
        b, [&](int64_t i) { return n - 1 + double(i); }, "async broadcast " + group_str(*g));
  }
}

TEST(Comm, WorkDestructorWaits) {
  const CommPtr& g = world();
  Tensor x = make({64}, DType::f64, [&](int64_t i) { return g->rank() + 1.0; });
  { auto w = g->all_reduce_async(x); }
  expect_values(
      x, [&](int64_t) { return g->size() * (g->size() + 1) / 2.0; }, "all_reduce waited by ~Work");
}

TEST(Comm, MembersAndNames) {
  const CommPtr& w = world();
  EXPECT_EQ(w->name(), "world");
  EXPECT_EQ(w->world_rank(), w->rank());
  for (const CommPtr& g : groups()) {
    ASSERT_EQ(int(g->world_ranks().size()), g->size());
    EXPECT_EQ(g->world_ranks()[g->rank()], w->rank()) << g->name();
    // The members' world ranks, gathered, are what each member reports.
    Tensor mine = Tensor::full({1}, w->rank(), DType::i64), all = Tensor::empty({g->size()}, DType::i64);
    g->all_gather(mine, all);
    std::vector<int64_t> got = all.to_vector<int64_t>();
    for (int j = 0; j < g->size(); ++j) EXPECT_EQ(got[j], g->world_ranks()[j]) << g->name();
  }
}

TEST(Comm, ArgumentErrorsNameTheCollective) {
  const CommPtr& g = world();
  const int n = g->size();
  auto expect_error = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one containing '" << part << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  Tensor a = Tensor::zeros({2, 3});
  expect_error([&] { g->all_reduce(a.transpose(0, 1)); }, "all_reduce on group world: x must be contiguous");
  expect_error([&] { g->all_reduce(Tensor::zeros({2}, DType::i64), ReduceOp::avg); }, "avg needs a floating dtype");
  expect_error([&] { g->all_gather(a, Tensor::zeros({2 * n + 1, 3})); }, "all_gather on group world: in has 2 rows");
  expect_error([&] { g->all_gather(a, Tensor::zeros({2 * n, 3}, DType::f64)); }, "differ in dtype");
  expect_error(
      [&] {
        g->reduce_scatter(Tensor::zeros({3, 3}), a, ReduceOp::sum, {1});
      },
      "reduce_scatter on group world");
  expect_error([&] { g->broadcast(a, n); }, "root " + std::to_string(n) + " is not a rank");
  expect_error([&] { g->all_to_all(Tensor::zeros({n, 3}), Tensor::zeros({n + 1, 3})); }, "equal split");
  expect_error([&] { g->all_to_all(a, a, {2}, {}); }, "give both send_rows and recv_rows");
  expect_error([&] { g->send(a, 0, Comm::kMaxTag); }, "tag 32000 outside");
  expect_error([&] { g->recv(a, n, 0); }, "source " + std::to_string(n));
  g->barrier();  // every rank still in step
}

}  // namespace
}  // namespace loom::parallel::testing
