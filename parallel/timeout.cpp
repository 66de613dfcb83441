// timeout.cpp: deadlines for every wait, the "who did not arrive" diagnosis, and the job
// abort (rules in mpi_comm.h). On the fast path: a polled wait spins on MPI_Test; a blocking
// call marks its thread's slot (two uncontended locks). A watchdog thread, started by the
// first blocking call, scans the slots every few milliseconds.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "parallel/mpi_comm.h"

namespace loom::parallel::detail {

using Clock = std::chrono::steady_clock;

// What one thread is inside of: a polled wait, or a blocking call the watchdog watches.
struct Slot {
  std::mutex mu;
  bool active = false, watched = false;
  Clock::time_point start;
  WaitInfo info;
};

namespace {

constexpr int kQueryTag = Comm::kMaxTag + 1;  // reserved tags on every MPI communicator
constexpr int kReplyTag = Comm::kMaxTag + 2;
// A rank answers diagnosis queries once a wait has lasted kServiceAfter, then every
// kServicePeriod: well inside the asker's grace period (>= 0.5 s), and rare enough that the
// probes (which run MPI's progress engine, from the watchdog thread concurrently with a
// blocking collective) do not slow it (bench_comm, 2 ranks, 64 MiB: probing every 5 ms after
// 1 ms cost 10-30% of the bandwidth).
constexpr auto kServiceAfter = std::chrono::milliseconds(50);
constexpr auto kServicePeriod = std::chrono::milliseconds(50);
constexpr auto kWatchdogPeriod = std::chrono::milliseconds(5);  // deadline checks (no MPI calls)

struct Query {
  int64_t channel, seq;
};
struct Reply {
  int64_t channel, entered;
  char waiting[112];  // what the answering rank is waiting in, if anything
};

// Never destroyed: communicators and the detached watchdog may outlive static teardown.
struct Registry {
  std::mutex mu;
  std::vector<MpiComm*> comms;
  std::deque<std::pair<MPI_Request, std::unique_ptr<Reply>>> replies_in_flight;
  bool finalizing = false;
};
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

struct Slots {
  std::mutex mu;
  std::vector<Slot*> all;
};
Slots& slots() {
  static Slots* s = new Slots;
  return *s;
}
// Each thread's slot, registered on first use and removed when the thread ends.
struct SlotHolder {
  Slot* slot = new Slot;
  SlotHolder() {
    std::lock_guard lk(slots().mu);
    slots().all.push_back(slot);
  }
  ~SlotHolder() {
    {
      std::lock_guard lk(slots().mu);
      auto& v = slots().all;
      v.erase(std::remove(v.begin(), v.end(), slot), v.end());
    }
    delete slot;
  }
};
Slot& my_slot() {
  thread_local SlotHolder h;
  return *h.slot;
}

// Puts `info` in this thread's slot for a scope, restoring what was there.
class SlotScope {
 public:
  SlotScope(Slot& s, const WaitInfo& info, bool watched) : s_(s) {
    std::lock_guard lk(s_.mu);
    active_ = s_.active, watched_ = s_.watched, start_ = s_.start, info_ = s_.info;
    s_.active = true, s_.watched = watched, s_.start = Clock::now(), s_.info = info;
  }
  ~SlotScope() {
    std::lock_guard lk(s_.mu);
    s_.active = active_, s_.watched = watched_, s_.start = start_, s_.info = info_;
  }

 private:
  Slot& s_;
  bool active_, watched_;
  Clock::time_point start_;
  WaitInfo info_;
};

int g_thread_level = MPI_THREAD_SINGLE;

std::string seconds_str(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

const std::string& group_name(const WaitInfo& w) { return w.group_name ? *w.group_name : w.group->name(); }

std::string describe(const WaitInfo& w) {
  std::string s = "waiting in " + std::string(w.op);
  if (w.peer >= 0)
    s += " with group rank " + std::to_string(w.peer);
  else
    s += " #" + std::to_string(w.seq);
  return s + " on group " + group_name(w);
}

// What this process is waiting in (any thread), for a diagnosis reply; "" when nothing.
std::string current_wait() {
  std::lock_guard lk(slots().mu);
  for (Slot* s : slots().all) {
    std::lock_guard sl(s->mu);
    if (s->active) return describe(s->info);
  }
  return "";
}

bool mpi_live() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

[[noreturn]] void diagnose_and_abort(const WaitInfo& w, double waited) {
  MpiComm& g = *w.group;
  const std::vector<int>& wr = g.world_ranks();
  std::string msg = "rank " + std::to_string(world_rank_for_messages()) + ": " + w.op + " on group " + group_name(w) +
                    " timed out after " + seconds_str(waited);
  if (w.peer >= 0) {
    msg += "; ranks not arrived: " + std::to_string(wr[w.peer]) +
           (std::strcmp(w.op, "send") == 0 ? " (the receiver)" : " (the sender)");
    abort_job(msg);
  }
  msg += " (collective #" + std::to_string(w.seq) + " of the group)";
  // Ask every other member how far it got on this group; answer their questions meanwhile.
  const int n = g.size(), me = g.rank();
  std::vector<Query> q(n, Query{w.channel, w.seq});
  std::vector<MPI_Request> sent;
  for (int j = 0; j < n; ++j) {
    if (j == me) continue;
    sent.emplace_back();
    MPI_Isend(&q[j], 2, MPI_INT64_T, j, kQueryTag, g.handle(), &sent.back());
  }
  std::vector<std::optional<Reply>> got(n);
  const double grace = std::clamp(0.25 * w.timeout_s, 0.5, 5.0);
  const auto until = Clock::now() + std::chrono::duration<double>(grace);
  int answered = 0;
  while (answered < n - 1 && Clock::now() < until) {
    service_queries();
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, kReplyTag, g.handle(), &flag, &st);
    if (!flag) {
      sched_yield();
      continue;
    }
    Reply r;
    MPI_Recv(&r, sizeof r, MPI_BYTE, st.MPI_SOURCE, kReplyTag, g.handle(), MPI_STATUS_IGNORE);
    r.waiting[sizeof r.waiting - 1] = '\0';
    if (r.channel == w.channel && !got[st.MPI_SOURCE]) {
      got[st.MPI_SOURCE] = r;
      ++answered;
    }
  }
  std::string missing;
  for (int j = 0; j < n; ++j) {
    if (j == me) continue;
    std::string why;
    if (!got[j])
      why = "no reply: busy outside Loom's collectives, or dead";
    else if (got[j]->entered < w.seq)
      why = "at #" + std::to_string(got[j]->entered) + (got[j]->waiting[0] ? std::string(", ") + got[j]->waiting : "");
    else
      continue;
    missing += (missing.empty() ? "" : ", ") + std::to_string(wr[j]) + " (" + why + ")";
  }
  if (missing.empty())
    msg += "; every rank arrived (the transfer itself is stuck)";
  else
    msg += "; ranks not arrived: " + missing;
  abort_job(msg);
}

// ---- the watchdog -----------------------------------------------------------------------------
// Every period: aborts on an overdue setup guard; diagnoses an overdue blocking call; answers
// diagnosis queries while a blocking call or guarded setup call has lasted more than
// kServiceAfter.
struct Watchdog {
  struct Guard {
    Clock::time_point start, deadline;
    double timeout_s;
    std::string what;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Guard> guards;
  uint64_t next_id = 1;
  bool started = false;

  void start_locked() {
    if (started) return;
    started = true;
    std::thread([this] { run(); }).detach();
  }

  void run() {
    Clock::time_point last_service{};
    std::unique_lock lk(mu);
    for (;;) {
      cv.wait_for(lk, kWatchdogPeriod);
      const auto now = Clock::now();
      bool long_wait = false;
      for (const auto& [id, g] : guards) {
        if (now >= g.deadline)
          abort_job("rank " + std::to_string(world_rank_for_messages()) + ": " + g.what + " timed out after " +
                    seconds_str(g.timeout_s));
        long_wait |= now - g.start > kServiceAfter;
      }
      lk.unlock();
      std::optional<WaitInfo> overdue;
      double waited = 0;
      {
        std::lock_guard sl(slots().mu);
        for (Slot* s : slots().all) {
          std::lock_guard l(s->mu);
          if (!s->active || !s->watched) continue;
          const auto el = now - s->start;
          long_wait |= el > kServiceAfter;
          if (std::chrono::duration<double>(el).count() >= s->info.timeout_s) {
            overdue = s->info;
            waited = std::chrono::duration<double>(el).count();
          }
        }
      }
      if (overdue) diagnose_and_abort(*overdue, waited);
      // Answer queries for this process while it is blocked (MPI must allow a second thread).
      if (long_wait && g_thread_level == MPI_THREAD_MULTIPLE && now - last_service >= kServicePeriod) {
        service_queries();
        last_service = now;
      }
      lk.lock();
    }
  }
};
Watchdog& watchdog() {
  static Watchdog* w = new Watchdog;
  return *w;
}

}  // namespace

void set_mpi_thread_level(int level) { g_thread_level = level; }
int mpi_thread_level() { return g_thread_level; }

bool blocking_calls_allowed() {
  static const bool poll = [] {
    const char* s = std::getenv("LOOM_COMM_POLL");
    return s && std::strcmp(s, "1") == 0;
  }();
  return g_thread_level == MPI_THREAD_MULTIPLE && !poll;
}

int world_rank_for_messages() {
  if (!mpi_live()) return 0;
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

void register_comm(MpiComm* c) {
  std::lock_guard lk(registry().mu);
  registry().comms.push_back(c);
}
void unregister_comm(MpiComm* c) {
  std::lock_guard lk(registry().mu);
  auto& v = registry().comms;
  v.erase(std::remove(v.begin(), v.end(), c), v.end());
}
void prepare_finalize() {
  std::lock_guard lk(registry().mu);
  registry().finalizing = true;
}

void service_queries() {
  Registry& reg = registry();
  std::lock_guard lk(reg.mu);
  if (reg.finalizing) return;
  for (MpiComm* c : reg.comms) {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, kQueryTag, c->handle(), &flag, &st);
      if (!flag) break;
      Query q;
      MPI_Recv(&q, 2, MPI_INT64_T, st.MPI_SOURCE, kQueryTag, c->handle(), MPI_STATUS_IGNORE);
      auto r = std::make_unique<Reply>();
      r->channel = q.channel;
      r->entered = c->channel_value(int(q.channel));
      std::snprintf(r->waiting, sizeof r->waiting, "%s", current_wait().c_str());
      MPI_Request req;
      MPI_Isend(r.get(), sizeof(Reply), MPI_BYTE, st.MPI_SOURCE, kReplyTag, c->handle(), &req);
      reg.replies_in_flight.emplace_back(req, std::move(r));
    }
  }
  while (!reg.replies_in_flight.empty()) {
    int done = 0;
    MPI_Test(&reg.replies_in_flight.front().first, &done, MPI_STATUS_IGNORE);
    if (!done) break;
    reg.replies_in_flight.pop_front();
  }
}

void wait_until(const std::function<bool()>& done, const WaitInfo& info) {
  if (done()) return;
  SlotScope scope(my_slot(), info, false);
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(info.timeout_s);
  auto next_service = start + kServiceAfter;
  // Spin a little (small messages finish within microseconds), then yield the core on every
  // poll: ranks are often oversubscribed, and MPI progresses only inside our MPI_Test calls,
  // so the loop never sleeps.
  for (int spins = 0;; ++spins) {
    if (done()) break;
    if (spins < 64) continue;
    auto now = Clock::now();
    if (now >= next_service) {
      service_queries();
      next_service = now + kServicePeriod;
    }
    if (now >= deadline) diagnose_and_abort(info, std::chrono::duration<double>(now - start).count());
    sched_yield();
  }
}

void abort_job(const std::string& msg) {
  std::fprintf(stderr, "loom: %s\n", msg.c_str());
  std::fflush(stderr);
  if (mpi_live()) MPI_Abort(MPI_COMM_WORLD, 3);
  std::_Exit(3);
}

BlockingOp::BlockingOp(const WaitInfo& info) : slot_(&my_slot()) {
  {
    Watchdog& w = watchdog();
    static thread_local bool started = false;  // skips the watchdog's lock after the first call
    if (!started) {
      std::lock_guard lk(w.mu);
      w.start_locked();
      started = true;
    }
  }
  std::lock_guard lk(slot_->mu);
  slot_->active = true, slot_->watched = true, slot_->start = Clock::now(), slot_->info = info;
}

BlockingOp::~BlockingOp() {
  std::lock_guard lk(slot_->mu);
  slot_->active = false, slot_->watched = false;
}

BlockingGuard::BlockingGuard(std::string what, double timeout_s) {
  Watchdog& w = watchdog();
  std::lock_guard lk(w.mu);
  id_ = w.next_id++;
  const auto now = Clock::now();
  const auto deadline = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  w.guards.emplace(id_, Watchdog::Guard{now, deadline, timeout_s, std::move(what)});
  w.start_locked();
}

BlockingGuard::~BlockingGuard() {
  Watchdog& w = watchdog();
  std::lock_guard lk(w.mu);
  w.guards.erase(id_);
}

}  // namespace loom::parallel::detail
