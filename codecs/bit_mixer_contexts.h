// The hashed contexts of the bitwise mixer (codecs/bit_mixer.h), per kind of lane: after every
// byte, update() computes the contexts of the next one from the lane's history.
#pragma once
#include <cstdint>
#include <vector>

#include "codecs/context_mixer.h"

namespace rb::cm {

constexpr int kMaxHashedContexts = 18;
constexpr int kKindSelectors = 64;  // values of LaneContexts::selector()

// A 32-bit hash of (a, b) for context number i: well mixed in every bit (bucket index and check).
inline uint32_t context_hash(uint32_t a, uint32_t b, uint32_t i) {
  uint32_t h = (a + 0x632BE5ABu * (i + 1)) * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u;
  h ^= h >> 15;
  h *= 0xC2B2AE3Du;
  return h ^ (h >> 13);
}

class LaneContexts {
 public:
  explicit LaneContexts(const LaneShape& shape);
  int count() const { return count_; }  // hashed contexts per byte, fixed per kind
  // The contexts of the byte after history.back() (history: the lane's bytes so far).
  void update(const std::vector<uint8_t>& history);
  const uint32_t* hashes() const { return h_; }
  // A small context (< kKindSelectors) that picks one mixer's weights: character class for text,
  // channel and activity for images, byte of the sample and channel for audio.
  int selector() const { return selector_; }
  // Images in residual form: the residual transform's prediction of the next plane value, from
  // the plane values coded so far (a residual lane's history holds those, see BitMixer).
  int prediction() const { return prediction_; }

 private:
  void text(const std::vector<uint8_t>& h);
  void image(const std::vector<uint8_t>& h);
  void audio(const std::vector<uint8_t>& h);

  LaneShape shape_;
  int count_ = 0, selector_ = 0, prediction_ = 0;
  uint32_t h_[kMaxHashedContexts] = {};
  // Text: the last 8 bytes, words, lines.
  uint32_t c4_ = 0, c8_ = 0, word_ = 0, prev_word_ = 0;
  size_t line_start_ = 0, prev_line_start_ = 0;
  int error_average_[2] = {0, 0};                                // audio residuals: running mean size per channel (x 16)
  std::vector<uint8_t> indirect_ = std::vector<uint8_t>(65536);  // byte after each byte pair
};

}  // namespace rb::cm
