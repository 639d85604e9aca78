// Context mixing on top of the network (README "Compression"): each lane of a model-coded block
// codes its bytes with a mixture of the model's distribution and small adaptive models that see
// what the network sees badly:
// - a match model: the byte that followed the last occurrence of the current 5-byte string, with
//   a hit rate learned per match length (LZ77's copy, as a probability);
// - two count models keyed by context: for images, the size of the neighbours' prediction errors
//   (the row above lies a whole row of bytes back in the stream) and of the pixel's previous
//   channel; for audio, the last samples' errors and, in stereo, the first channel's error in the
//   same frame; for other bytes, the previous one and two bytes (order 1 and hashed order 2).
//
// The mixture is geometric: p(y) ∝ Π_i p_i(y)^{w_i}, with a weight vector chosen by a small
// context (match length and activity) and learned online by gradient steps
// on the code length (PAQ's mixer, on whole bytes). It starts as the model alone. Everything is
// integer arithmetic in a fixed order (logarithms and powers of two from tables built with exact
// IEEE operations), so encoder and decoder compute the same tables on every CPU: the model's own
// table is already bitwise equal on both sides (doc/SPEC.md §7).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace rb {

// What a lane's bytes are, so the side models know each byte's neighbours.
struct LaneShape {
  enum class Kind : uint8_t { Bytes, ImagePixels, ImageResiduals, AudioSamples, AudioResiduals };
  Kind kind = Kind::Bytes;
  int channels = 1;      // image: bytes per pixel; audio: channels (16-bit samples, MSB first)
  size_t row_bytes = 0;  // image: width * channels
  size_t start = 0;      // offset of the lane's first byte in the content (a whole pixel or frame)
  size_t length = 0;     // bytes in the lane (its tables are sized to it)
};

// The version of the mixer's arithmetic, recorded in .rbz files that use it; any change to what
// it computes bumps it.
constexpr uint8_t kMixerVersion = 1;

class LaneMixer {
 public:
  explicit LaneMixer(const LaneShape& shape);
  ~LaneMixer();
  LaneMixer(LaneMixer&&) noexcept;
  LaneMixer& operator=(LaneMixer&&) noexcept;

  // The cumulative table (same contract as logits_to_cumulative) to code the next byte with,
  // given the model's table for it.
  void mix(const uint32_t model_cum[257], uint32_t cum[257]);
  // The byte that was coded with the last mix() table.
  void update(uint8_t byte);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Fixed-point helpers, exposed for tests: log2(v) in Q16 for v >= 1, and 2^(d / 65536) in Q30
// for d <= 0.
int32_t log2_q16(uint32_t v);
uint32_t exp2_q30(int64_t d);

}  // namespace rb
