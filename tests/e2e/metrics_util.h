// metrics_util.h: reading a run's metrics.jsonl in the end-to-end tests.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace loom::testing {

// step -> loss of the training records (skipped steps and evaluations left out).
inline std::map<int64_t, double> training_losses(const std::string& run_dir) {
  std::map<int64_t, double> m;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("skipped")) m[j["step"]] = j["loss"];
  }
  return m;
}

}  // namespace loom::testing
