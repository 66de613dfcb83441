// rng.h: counter-based random numbers (Philox4x32-10, Salmon et al., SC'11). The value for
// element i of a draw is a pure function of (seed, offset + i), so results do not depend on
// the thread count or on the device, and a region can be replayed exactly by restoring the
// generator's (seed, offset).
#pragma once
#include <array>
#include <cstdint>

namespace loom::runtime {

// One Philox block: four 32-bit words from a 64-bit key and a 128-bit counter.
std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi);

// Uniform in (0, 1] from 32 or 64 random bits; a standard normal from a Philox block.
inline float uniform_float(uint32_t bits) { return float((bits >> 8) + 1) * (1.0f / 16777216.0f); }
inline double uniform_double(uint32_t hi, uint32_t lo) {
  uint64_t b = (uint64_t(hi) << 32 | lo) >> 11;
  return double(b + 1) * (1.0 / 9007199254740992.0);
}
double normal_from_block(const std::array<uint32_t, 4>& w);

struct GeneratorState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// The process-wide generator for dropout, sampling and random init without an explicit seed.
class Generator {
 public:
  GeneratorState state() const { return state_; }
  void set_state(GeneratorState s) { state_ = s; }
  void manual_seed(uint64_t seed) { state_ = {seed, 0}; }
  // Reserves n counters and returns the first; the caller draws counters [first, first + n).
  uint64_t reserve(uint64_t n) {
    uint64_t first = state_.offset;
    state_.offset += n;
    return first;
  }
  uint64_t seed() const { return state_.seed; }

 private:
  GeneratorState state_;
};

Generator& default_generator();
inline void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

// A 64-bit hash (splitmix64 finaliser), used to derive seeds from names.
uint64_t mix64(uint64_t x);
uint64_t hash_string(const char* s, uint64_t seed = 0);

}  // namespace loom::runtime
