// train_config.h: the schema of `loom train` configs and the builders that turn a validated
// Config into the model config, the data source and the optimizer/schedule options.
#pragma once
#include <memory>

#include "data/loader.h"
#include "data/tokenizer.h"
#include "launch/config.h"
#include "models/config.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "parallel/mesh.h"

namespace loom::launch {

const ConfigSchema& train_schema();
// The quickstart config compiled into the binary (configs/quickstart.yaml).
const char* quickstart_yaml();

struct DataSetup {
  data::BpeTokenizer tokenizer;
  std::unique_ptr<data::BatchSource> source;
};
// `cfg` with the model.* architecture keys made explicit, so the config saved in checkpoints
// rebuilds the same model on its own: with init_from.format hf they come from init_from.path's
// config.json (a key the config set to another value is an error naming it); with the gpt2
// preset its defaults are written out.
Config resolve_model_keys(const Config& cfg);
// Builds the tokenizer and batch source named by data.* (the tokenizer from init_from.path
// when init_from.tokenizer says so); errors name the key or file.
DataSetup build_data(const Config& cfg);
// model.* with vocab from the tokenizer when model.vocab_size is 0.
models::ModelConfig build_model_config(const Config& cfg, int64_t tokenizer_vocab);
optim::ScheduleOptions build_schedule(const Config& cfg);
// parallel.* for a job of world_size ranks: dp 0 takes the remaining factor; the product must be
// the world size (a ConfigError naming the key and each factor otherwise).
parallel::ParallelDims build_parallel_dims(const Config& cfg, int world_size);
std::unique_ptr<optim::Optimizer> build_optimizer(const Config& cfg, std::vector<optim::ParamRef> params);

}  // namespace loom::launch
