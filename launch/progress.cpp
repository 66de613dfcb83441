// progress.cpp: progress line and JSONL metrics.
#include "launch/progress.h"

#include <unistd.h>

#include <stdexcept>

namespace loom::launch {

std::string format_duration(double s) {
  char buf[32];
  int64_t t = int64_t(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%llds", (long long)t);
  return buf;
}

Progress::Progress() : tty_(isatty(fileno(stdout))) {}

void Progress::update(const StepStats& s, bool log) {
  if (!tty_ && !log) return;
  char line[256];
  std::snprintf(line, sizeof line,
                "step %6lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %7.0f tok/s | MFU %5.1f%% | ETA %s",
                (long long)s.step, (long long)s.total_steps, s.loss, s.lr, s.grad_norm, s.tokens_per_s,
                100.0 * s.mfu, format_duration(s.eta_s).c_str());
  if (tty_) {
    std::printf("\r\033[K%s", line);
    live_ = true;
    if (log) {
      std::printf("\n");
      live_ = false;
    }
  } else {
    std::printf("%s\n", line);
  }
  std::fflush(stdout);
}

void Progress::message(const std::string& text) {
  if (live_) std::printf("\n");
  live_ = false;
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

void Progress::finish() {
  if (live_) std::printf("\n");
  live_ = false;
  std::fflush(stdout);
}

MetricsLog::MetricsLog(const std::string& path, bool append) : f_(std::fopen(path.c_str(), append ? "a" : "w")) {
  if (!f_) throw std::runtime_error("cannot open metrics file '" + path + "' for writing");
}
MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}
void MetricsLog::write(const nlohmann::json& record) {
  std::string s = record.dump() + "\n";
  std::fwrite(s.data(), 1, s.size(), f_);
  std::fflush(f_);
}

}  // namespace loom::launch
