// progress.h: the training progress line (rewritten in place on a terminal, plain lines
// otherwise) and the metrics.jsonl writer (one JSON object per line, flushed each record).
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace loom::launch {

struct StepStats {
  int64_t step = 0, total_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0, mfu = 0;  // mfu as a fraction of the measured GEMM peak
  double eta_s = 0;
};

class Progress {
 public:
  Progress();
  // Draws the line; on a terminal every call, otherwise only when `log` is true.
  void update(const StepStats& s, bool log);
  // A message on its own line (ends any live line first).
  void message(const std::string& text);
  void finish();

 private:
  bool tty_;
  bool live_ = false;
};

std::string format_duration(double seconds);  // "1h02m", "3m07s", "12s"

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path, bool append);
  ~MetricsLog();
  void write(const nlohmann::json& record);

 private:
  std::FILE* f_ = nullptr;
};

}  // namespace loom::launch
