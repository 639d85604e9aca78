#include "codecs/bit_mixer_contexts.h"

#include <algorithm>
#include <cstdlib>

#include "datasets/media.h"
#include "datasets/media_residuals.h"

namespace rb::cm {

namespace {

int magnitude_bucket(uint32_t v, int buckets) {  // 0, then one per power of two
  int b = 0;
  while (v && b < buckets - 1) v >>= 1, b++;
  return b;
}
bool word_byte(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 128; }
int char_class(uint8_t c) {
  return c >= 'a' && c <= 'z'   ? 0
         : c >= 'A' && c <= 'Z' ? 1
         : c >= '0' && c <= '9' ? 2
         : c == ' '             ? 3
         : c == '\n'            ? 4
         : c >= 128             ? 5
         : c < 32               ? 6
                                : 7;
}

}  // namespace

LaneContexts::LaneContexts(const LaneShape& shape) : shape_(shape) {
  switch (shape.kind) {
    case LaneShape::Kind::Bytes:
      count_ = 16;
      break;
    case LaneShape::Kind::ImagePixels:
    case LaneShape::Kind::ImageResiduals:
      count_ = shape.row_bytes && shape.channels > 0 ? 18 : 14;
      break;
    case LaneShape::Kind::AudioSamples:
      count_ = 10;
      break;
    case LaneShape::Kind::AudioResiduals:
      count_ = 14;
      break;
  }
  for (int i = 0; i < count_; i++) h_[i] = context_hash(0, 0, uint32_t(i));
}

void LaneContexts::update(const std::vector<uint8_t>& history) {
  const uint8_t c = history.back();
  c8_ = c8_ << 8 | c4_ >> 24;
  c4_ = c4_ << 8 | c;
  switch (shape_.kind) {
    case LaneShape::Kind::Bytes:
      return text(history);
    case LaneShape::Kind::ImagePixels:
    case LaneShape::Kind::ImageResiduals:
      return shape_.row_bytes && shape_.channels > 0 ? image(history) : text(history);  // no geometry: as bytes
    case LaneShape::Kind::AudioSamples:
    case LaneShape::Kind::AudioResiduals:
      return audio(history);
  }
}

void LaneContexts::text(const std::vector<uint8_t>& hist) {
  const size_t t = hist.size();
  const uint8_t c = hist.back();
  if (word_byte(c)) {
    word_ = (word_ + uint32_t(c >= 'A' && c <= 'Z' ? c + 32 : c) + 1) * 0x2F0F3A27u;
  } else if (word_) {
    prev_word_ = word_;
    word_ = 0;
  }
  if (c == '\n') prev_line_start_ = line_start_, line_start_ = t;
  const size_t col = t - line_start_;
  const size_t prev_len = line_start_ - prev_line_start_;
  const uint32_t above = col < prev_len ? hist[prev_line_start_ + col] : 0;
  const uint32_t c1 = c4_ & 0xff;
  uint32_t* h = h_;
  h[0] = context_hash(c4_ & 0xffff, 0, 0);
  h[1] = context_hash(c4_ & 0xffffff, 0, 1);
  h[2] = context_hash(c4_, 0, 2);
  h[3] = context_hash(c4_, c8_ & 0xff, 3);
  h[4] = context_hash(c4_, c8_ & 0xffff, 4);
  h[5] = context_hash(c4_, c8_, 5);
  h[6] = word_ ? context_hash(word_, 0, 6) : context_hash(prev_word_, c1, 6);
  h[7] = context_hash(word_, prev_word_, 7);
  h[8] = context_hash((c4_ >> 8) & 0xffff, 0, 8);  // bytes 2 and 3 back
  h[9] = context_hash(c4_ >> 16, 0, 9);            // bytes 3 and 4 back
  h[10] = context_hash(above, c1, 10);             // columns of line-structured text
  h[11] = context_hash(above, uint32_t(std::min<size_t>(col, 255)) << 8 | (col < prev_len + 1 ? 1 : 0), 11);
  // Indirect: the byte that followed the last occurrence of the previous two bytes.
  const uint32_t pair = (c4_ >> 8) & 0xffff;
  const uint32_t followed = indirect_[pair];
  indirect_[pair] = uint8_t(c1);
  const uint32_t predicted = indirect_[c4_ & 0xffff];
  h[12] = context_hash(predicted << 8 | c1, followed, 12);
  h[13] = context_hash(c1 << 8 | ((c4_ >> 16) & 0xff), 0, 13);  // bytes 1 and 3 back
  h[14] = context_hash(word_, c4_ & 0xffff, 14);                // the word and two bytes
  h[15] = context_hash(hist[line_start_ < t ? line_start_ : t - 1], uint32_t(std::min<size_t>(col, 63)) << 8 | c1,
                       15);  // the line's first byte
  selector_ = char_class(uint8_t(c1)) * 8 + char_class(uint8_t(c4_ >> 8));
}

void LaneContexts::image(const std::vector<uint8_t>& hist) {
  const size_t t = hist.size(), C = size_t(shape_.channels), rb = shape_.row_bytes;
  const size_t x = (shape_.start + t) % rb, ch = x % C;
  const uint8_t* p = hist.data();
  if (shape_.kind == LaneShape::Kind::ImageResiduals) {
    // The median edge detector of the residual form (datasets/media_residuals.h) on the planes
    // the mixer codes (it codes residual lanes as plane values: BitMixer).
    const int l = x >= C ? p[t - C] : 0, u = t >= rb ? p[t - rb] : 0, ul = t >= rb && x >= C ? p[t - rb - C] : 0;
    if (t < rb)
      prediction_ = x < C ? 0 : l;
    else if (x < C)
      prediction_ = u;
    else
      prediction_ = median_edge(l, u, ul);
  }
  // Neighbours of the next byte (0 outside the lane or the image).
  auto at = [&](size_t back, bool ok) -> int { return ok && t >= back ? p[t - back] : 0; };
  const bool has_w = x >= C, has_ww = x >= 2 * C, has_ne = x + C < rb;
  const int W = at(C, has_w), WW = at(2 * C, has_ww), N = at(rb, true), NN = at(2 * rb, true);
  const int NW = at(rb + C, has_w), NE = has_ne && t >= rb - C ? p[t - rb + C] : 0;
  const int P = ch > 0 ? at(1, true) : 0;  // the same pixel's previous channel
  const int PW = ch > 0 ? at(1 + C, has_w) : 0, PN = ch > 0 ? at(1 + rb, true) : 0;
  auto clamp8 = [](int v) { return uint32_t(std::clamp(v, 0, 255)); };
  const uint32_t c = uint32_t(ch);
  uint32_t* h = h_;
  h[0] = context_hash(uint32_t(W), c, 0);
  h[1] = context_hash(uint32_t(N), c, 1);
  h[2] = context_hash(uint32_t(W) << 8 | uint32_t(N), c, 2);
  h[3] = context_hash(clamp8(W + N - NW), c, 3);
  h[4] = context_hash(uint32_t((W + NE) / 2), c, 4);
  h[5] = context_hash(uint32_t(N) << 16 | uint32_t(NE) << 8 | uint32_t(NW >> 2), c, 5);
  h[6] = context_hash(clamp8(2 * W - WW) << 8 | clamp8(2 * N - NN), c, 6);
  h[7] = context_hash(uint32_t(P) << 8 | uint32_t(W >> 2), c, 7);
  h[8] = context_hash(clamp8(W + P - PW) << 8 | clamp8(N + P - PN), c, 8);
  h[9] = context_hash(uint32_t(W >> 3) << 10 | uint32_t(N >> 3) << 5 | uint32_t(NE >> 3), uint32_t(P >> 3) << 2 | c, 9);
  h[10] = context_hash(uint32_t(std::abs(W - NW) + std::abs(N - NW) + std::abs(N - NE)) >> 2, uint32_t(P), 10);
  const int NNE = has_ne && t >= 2 * rb - C ? p[t - 2 * rb + C] : 0;
  const int P2 = ch > 1 ? at(2, true) : 0;  // the pixel's first channel (R-G beside B-G)
  h[11] = context_hash(clamp8(N + NE - NNE) << 8 | clamp8(W + NE - N), c, 11);
  h[12] = context_hash(uint32_t(P2) << 16 | uint32_t(P) << 8 | clamp8(W + N - NW), c, 12);
  auto sbucket = [](int d) { return uint32_t(d < -16 ? 0 : d < -4 ? 1 : d < 0 ? 2 : d == 0 ? 3 : d <= 4 ? 4 : d <= 16 ? 5 : 6); };
  h[13] =
      context_hash(sbucket(W - NW) * 49 + sbucket(N - NW) * 7 + sbucket(NE - N), uint32_t((W + N + NW + NE) >> 4) << 2 | c, 13);
  h[14] = context_hash(clamp8((W + N + 1) / 2 + (NE - NW) / 4), c, 14);
  h[15] = context_hash(clamp8(2 * N - NN) >> 1 << 8 | clamp8(2 * W - WW) >> 1, c, 15);
  h[16] = context_hash(uint32_t(W) << 8 | uint32_t(NW), c, 16);
  h[17] = context_hash(uint32_t(N) << 16 | uint32_t(NN) << 8 | uint32_t(NE >> 2), c, 17);
  const int activity = magnitude_bucket(uint32_t(std::abs(W - NW) + std::abs(N - NW) + std::abs(NE - N)), 8);
  selector_ = int(std::min<size_t>(ch, 3)) * 16 + activity * 2 + (t >= rb ? 1 : 0);
}

void LaneContexts::audio(const std::vector<uint8_t>& hist) {
  const size_t t = hist.size(), C = size_t(std::max(1, shape_.channels)), frame = 2 * C;
  const size_t a = shape_.start + t;
  const bool lo = a % 2 == 1;
  const size_t ch = (a / 2) % C, s0 = t - (lo ? 1 : 0);  // this sample's first byte in the lane
  const bool residual = shape_.kind == LaneShape::Kind::AudioResiduals;
  auto value = [&](size_t start) -> int {
    const uint16_t v = load_msb16(hist.data() + start);
    return residual ? unfold16(v) : int(int16_t(v));
  };
  auto sample = [&](size_t k) { return s0 >= k * frame ? value(s0 - k * frame) : 0; };  // k frames back, this channel
  const int s1 = sample(1), s2 = sample(2), s3 = sample(3);
  const int o = ch > 0 && s0 >= 2 * ch ? value(s0 - 2 * ch) : 0;                   // channel 0 in this frame
  const int o1 = ch > 0 && s0 >= 2 * ch + frame ? value(s0 - 2 * ch - frame) : 0;  // ... and in the frame before
  uint32_t* h = h_;
  const uint32_t c = uint32_t(std::min<size_t>(ch, 3));
  const uint32_t msb = lo ? hist[t - 1] : 0;
  if (residual) {
    // Residuals are prediction errors already: what tells their size is how large the recent
    // errors were (this channel's last ones, its running average, the other channel's now).
    if (!lo && t >= 2) {  // a sample was completed: fold its size into its channel's average
      const size_t done = (a / 2 + C - 1) % C;
      const int r = std::abs(value(t - 2));
      int& avg = error_average_[std::min<size_t>(done, 1)];
      avg += ((r << 4) - avg) >> 4;
    }
    const uint32_t s3v = uint32_t(std::abs(s3));
    const uint32_t m1 = uint32_t(magnitude_bucket(uint32_t(std::abs(s1)), 16)),
                   m2 = uint32_t(magnitude_bucket(uint32_t(std::abs(s2)), 16));
    const uint32_t mavg = uint32_t(magnitude_bucket(uint32_t(error_average_[std::min<size_t>(ch, 1)]), 20));
    const uint32_t mo = uint32_t(magnitude_bucket(uint32_t(std::abs(o)), 16));
    const uint32_t sum4 =
        uint32_t(magnitude_bucket(uint32_t(std::abs(s1) + std::abs(s2)) + s3v + uint32_t(std::abs(sample(4))), 20));
    const uint32_t keys[4] = {mavg, mavg << 5 | m1, sum4 << 4 | mo, m1 << 8 | m2 << 4 | uint32_t(magnitude_bucket(s3v, 16))};
    for (uint32_t k = 0; k < 4; k++) h[10 + k] = context_hash(keys[k] << 9 | msb << 1 | (lo ? 1 : 0), c, 10 + k);
    selector_ = (lo ? 32 : 0) + int(std::min<size_t>(ch, 1)) * 16 + int(std::min<uint32_t>(mavg, 15));
  }
  const int preds[5] = {s1, 2 * s1 - s2, 3 * s1 - 3 * s2 + s3, (s1 * 3 + s2) / 4 + (s1 - s2) / 2, s1 + o - o1};
  for (uint32_t k = 0; k < 5; k++) {
    const uint32_t u = uint32_t(std::clamp(preds[k] + 32768, 0, 65535));
    // MSB: the predicted top byte, finer in a second context; LSB: the MSB just coded and where
    // the prediction puts the low byte.
    h[2 * k] = lo ? context_hash(msb << 16 | (u >> 2), c, 2 * k) : context_hash(u >> 8, c, 2 * k);
    h[2 * k + 1] = lo ? context_hash(msb << 8 | uint32_t(std::clamp(preds[k] - int(int16_t(msb << 8)), -128, 127) + 128),
                                     c << 4 | 1, 2 * k + 1)
                      : context_hash(u >> 5, c << 4 | uint32_t(magnitude_bucket(uint32_t(std::abs(s1 - s2)), 16)), 2 * k + 1);
  }
  if (!residual)
    selector_ = (lo ? 32 : 0) + int(std::min<size_t>(ch, 1)) * 16 + magnitude_bucket(uint32_t(std::abs(s1 - s2)), 16);
}

}  // namespace rb::cm
