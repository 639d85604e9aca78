// A small deterministic generator (SplitMix64 seeding xoshiro256**), identical on every platform,
// so weight initialisation and sampling depend only on the seed.
#pragma once
#include <cmath>
#include <cstdint>

#include "src/common/dmath.h"

namespace rb {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed) {
    for (auto& w : s_) {
      seed += 0x9E3779B97F4A7C15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      w = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {                                              // Box-Muller, one value per call (simple and reproducible)
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * dmath::log(u1)) * dmath::cos(6.283185307179586 * u2);
  }
  uint64_t below(uint64_t n) { return next() % n; }
  const uint64_t* raw_state() const { return s_; }
  uint64_t* raw_state() { return s_; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace rb
