// Range asymmetric numeral systems (rANS, Duda 2013) with a 64-bit state and 32-bit output words:
// the entropy coder behind model-coded blocks. Frequencies have kFreqBits of precision (2^24 in
// all: the floor of 1 that every symbol keeps costs 256 / 2^24 of the probability mass, about
// 2e-5 bits per byte; at 2^16 it would be ~0.006 bits per byte, over 0.5% of a good model's
// cross-entropy). rANS decodes in the order opposite to encoding, so the encoder takes a block's
// symbols last to first; the decoder reads them first to last.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rb {

constexpr int kFreqBits = 24;
constexpr uint32_t kFreqTotal = uint32_t(1) << kFreqBits;

class RansEncoder {
 public:
  // Pushes one symbol occupying [start, start + freq) of kFreqTotal; call in reverse order.
  void put(uint32_t start, uint32_t freq);
  // The coded bytes (decoder order); the encoder is then empty again.
  std::vector<uint8_t> finish();

 private:
  uint64_t x_ = kLow;
  std::vector<uint32_t> words_;  // emitted last symbol first
 public:
  static constexpr uint64_t kLow = uint64_t(1) << 31;  // the state stays in [kLow, 2^63)
};

class RansDecoder {
 public:
  // data must outlive the decoder. Throws rb::Error when it is too short to hold a state.
  RansDecoder(const uint8_t* data, size_t n);
  // The slot in [0, kFreqTotal) that names the next symbol.
  uint32_t slot() const { return uint32_t(x_ & (kFreqTotal - 1)); }
  // Consumes the symbol occupying [start, start + freq), which must contain slot(). Returns false
  // when the data ran out (a damaged or truncated block).
  bool advance(uint32_t start, uint32_t freq);
  // True when every word was read and the state is back where the encoder started: any other end
  // means damaged data.
  bool finished_cleanly() const { return x_ == RansEncoder::kLow && pos_ == n_; }

 private:
  const uint8_t* data_;
  size_t n_, pos_ = 0;
  uint64_t x_ = 0;
};

}  // namespace rb
