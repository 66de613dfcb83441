// trainer.h: single-process training from a validated config: build the model, optimizer and
// data source, run steps with gradient accumulation and clipping, evaluate, log, checkpoint,
// and resume bit-exactly (parameters, optimizer state, step and random state are restored;
// data is a pure function of (seed, step)).
#pragma once
#include <string>

#include "launch/config.h"

namespace loom::launch {

struct TrainOptions {
  bool resume = false;          // continue from the newest good checkpoint in run.dir/checkpoints
  bool fallback = false;        // with resume: skip a corrupt newest checkpoint for an older good one
  std::string config_source;    // the file (or "<quickstart>") the config came from, for messages
};

// Returns the process exit code (0 ok; non-zero after a NaN stop). Throws ConfigError,
// CheckpointError or std::runtime_error with a clear message on bad input.
int train(const Config& cfg, const TrainOptions& opt);

}  // namespace loom::launch
