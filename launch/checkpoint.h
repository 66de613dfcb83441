// checkpoint.h: training checkpoints as HDF5 files, written atomically and verified on load.
// The rule it keeps (DESIGN.md invariant 3, "nothing lost"): a checkpoint file either is
// complete and verified or is not under its final name. A save writes a temporary file in the
// same directory, flushes and fsyncs it, renames it into place and fsyncs the directory, so a
// crash at any point leaves the previous checkpoint intact; a load checks the format tag and a
// checksum of every tensor and of the metadata, and any problem is one CheckpointError naming
// the file (and the dataset).
//
// File layout (readable with h5py / h5dump):
//   /                  attrs: format = "loom-checkpoint-v1", step (i64), num_tensors (i64),
//                             checksum_algorithm = "fnv1a64-blocks", meta_checksum (u64,
//                             FNV-1a 64 over step, num_tensors and the three maps)
//   /tensors/<name>    one dataset per tensor; '/' in the name makes groups, dots stay in the
//                      dataset name ("tensors/optim/model.norm.weight/exp_avg"). Stored type:
//                      f32/f64 IEEE LE, i32/i64/u8 integers LE, bf16/f16 as raw u16. attrs:
//                      dtype (name), index (position in CheckpointState::tensors),
//                      checksum (u64: FNV-1a 64 over name, dtype name, shape, byte count and
//                      the FNV-1a 64 digests of each 1 MiB block of the raw LE bytes)
//   /strings, /ints, /floats   groups holding CheckpointState's maps as attributes
//
// Sharded form (runs of several ranks, save_sharded_checkpoint): a directory step_<N>/ with one
// such file per rank, rank_<r>.h5, whose tensors are pieces of full tensors: the string
// "layout/pieces" maps each tensor name to {"shape": full shape, "runs": [[offset, length],..]}
// (flat row-major runs of the full tensor, in the order of the stored 1-D data), and the ints
// layout/world_size and layout/rank say which file it is. Rank 0's file also holds the
// metadata. Loading assembles the full tensors and checks that the pieces cover each exactly,
// so a checkpoint from any layout loads into any other (and into one process).
//
// One save per directory at a time. The HDF5 library is the serial build: call these from one
// thread at a time.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parallel/shard.h"
#include "runtime/tensor.h"

namespace loom::parallel {
class Comm;
}

namespace loom::launch {

inline constexpr const char* kCheckpointFormat = "loom-checkpoint-v1";

// Any failure to write or read a checkpoint; what() names the file first:
//   "checkpoint 'ckpt/step_00000100.h5': checksum mismatch in dataset 'model/lm_head.weight'"
class CheckpointError : public std::runtime_error {
 public:
  explicit CheckpointError(const std::string& what) : std::runtime_error(what) {}
};

struct CheckpointState {
  int64_t step = 0;
  // Slash-path names, unique, e.g. "model/model.layers.0.self_attn.q_proj.weight",
  // "optim/model.norm.weight/exp_avg". Saved from any device and layout; loaded as
  // contiguous CPU tensors in the same order.
  std::vector<std::pair<std::string, runtime::Tensor>> tensors;
  std::map<std::string, std::string> strings;  // e.g. "config" -> Config::to_yaml()
  std::map<std::string, int64_t> ints;         // e.g. "data/cursor"
  std::map<std::string, double> floats;        // e.g. "loss_scale"

  // The tensor called `name`, or an undefined Tensor.
  runtime::Tensor find(const std::string& name) const;
};

// "dir/step_00000100.h5" (8 digits, wider for steps >= 10^8).
std::string checkpoint_path(const std::string& dir, int64_t step);

// Writes dir/step_<step>.h5 atomically (creating `dir` if needed) and returns its path. Stray
// temporary files of earlier crashed saves are removed first. Afterwards, when keep_last > 0,
// the oldest checkpoints are deleted until keep_last remain; the file just written is never
// deleted. An existing checkpoint of the same step is replaced atomically.
//
// Test hook: with LOOM_TEST_KILL_IN_SAVE=<n> in the environment the process SIGKILLs itself
// after writing (and flushing) n tensors to the temporary file, to test crash safety.
std::string save_checkpoint(const std::string& dir, const CheckpointState& state, int keep_last = 0);

// Collective over `world`: every rank writes its pieces (and rank 0 `meta`'s step, strings,
// ints and floats) into dir/.step_<N>.tmp/rank_<r>.h5; once all have succeeded rank 0 renames
// the directory to dir/step_<N> and prunes to keep_last. A failure on any rank makes every
// rank throw CheckpointError (none waits for a failed one). Returns the directory's path.
std::string save_sharded_checkpoint(const std::string& dir, const CheckpointState& meta,
                                    const std::vector<parallel::Piece>& pieces, parallel::Comm& world,
                                    int keep_last = 0);

// Reads a checkpoint (a file, or a sharded directory whose pieces it assembles). Checks the format tag, the structure and (with verify) every checksum;
// throws CheckpointError naming the file on any problem (missing file, not HDF5, truncated,
// missing attribute, checksum mismatch naming the dataset, ...).
CheckpointState load_checkpoint(const std::string& path, bool verify = true);

// Reads and checks a checkpoint like load_checkpoint(path, true) without keeping the tensors
// (memory: one tensor at a time). Throws CheckpointError.
void verify_checkpoint(const std::string& path);

// Checkpoints (files dir/step_<digits>.h5 and directories dir/step_<digits>) sorted by increasing step; temporaries ignored.
// Empty when `dir` does not exist.
std::vector<std::string> list_checkpoints(const std::string& dir);

// The newest checkpoint in `dir` that verifies, or nullopt when there is none. When the newest
// fails to verify: with fall_back_to_older=false its CheckpointError is thrown; with true a
// warning naming the bad file goes to stderr and older ones are tried in turn; if every one
// fails, CheckpointError (starting over silently could overwrite the run).
// Verifying reads the whole file, one tensor at a time.
std::optional<std::string> latest_checkpoint(const std::string& dir, bool fall_back_to_older = false);

}  // namespace loom::launch
