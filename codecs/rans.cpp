#include "codecs/rans.h"

#include "src/common/errors.h"

namespace rb {

namespace {
void put_u32_le(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; i++) out.push_back(uint8_t(v >> (8 * i)));
}
uint32_t get_u32_le(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
}  // namespace

void RansEncoder::put(uint32_t start, uint32_t freq) {
  // Renormalise: after encoding, x must stay below 2^63, i.e. x < (kLow >> kFreqBits << 32) * freq.
  const uint64_t x_max = ((kLow >> kFreqBits) << 32) * freq;
  if (x_ >= x_max) {
    words_.push_back(uint32_t(x_));
    x_ >>= 32;
  }
  x_ = ((x_ / freq) << kFreqBits) + (x_ % freq) + start;
}

std::vector<uint8_t> RansEncoder::finish() {
  std::vector<uint8_t> out;
  out.reserve(8 + 4 * words_.size());
  put_u32_le(out, uint32_t(x_));
  put_u32_le(out, uint32_t(x_ >> 32));
  for (size_t i = words_.size(); i-- > 0;) put_u32_le(out, words_[i]);
  x_ = kLow;
  words_.clear();
  return out;
}

RansDecoder::RansDecoder(const uint8_t* data, size_t n) : data_(data), n_(n) {
  if (n < 8 || n % 4 != 0) throw Error("model-coded block of " + std::to_string(n) + " bytes is not a valid rANS stream");
  x_ = uint64_t(get_u32_le(data)) | uint64_t(get_u32_le(data + 4)) << 32;
  pos_ = 8;
}

bool RansDecoder::advance(uint32_t start, uint32_t freq) {
  x_ = uint64_t(freq) * (x_ >> kFreqBits) + (x_ & (kFreqTotal - 1)) - start;
  if (x_ < RansEncoder::kLow) {
    if (pos_ + 4 > n_) return false;
    x_ = x_ << 32 | get_u32_le(data_ + pos_);
    pos_ += 4;
  }
  return true;
}

}  // namespace rb
