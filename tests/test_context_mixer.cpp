// The context mixer (codecs/context_mixer.h): its fixed-point arithmetic, that every table it
// gives the coder is valid whatever it is fed, and that its side models learn what a model
// cannot see (repeats, and an image's activity in the row above).
#include <gtest/gtest.h>

#include <cmath>

#include "codecs/byte_frequencies.h"
#include "codecs/context_mixer.h"
#include "src/common/rng.h"

namespace rb {
namespace {

double code_bits(const uint32_t cum[257], uint8_t byte) {
  return double(kFreqBits) - std::log2(double(cum[byte + 1] - cum[byte]));
}

// Codes `bytes` with a mixer over a fixed model table; returns the code length of bytes [from, n).
double mixed_bits(LaneShape shape, const std::vector<uint8_t>& bytes, const uint32_t model_cum[257], size_t from = 0) {
  shape.length = bytes.size();
  LaneMixer mixer(shape);
  uint32_t cum[257];
  double bits = 0;
  for (size_t i = 0; i < bytes.size(); i++) {
    mixer.mix(model_cum, cum);
    if (i >= from) bits += code_bits(cum, bytes[i]);
    mixer.update(bytes[i]);
  }
  return bits;
}

void uniform_table(uint32_t cum[257]) {
  for (int i = 0; i <= 256; i++) cum[i] = uint32_t(i) << (kFreqBits - 8);
}

TEST(ContextMixer, FixedPointLogarithmAndPowerAreAccurate) {
  for (uint32_t v = 1; v < (1u << 24); v = v * 3 / 2 + 1) {
    EXPECT_NEAR(log2_q16(v) / 65536.0, std::log2(double(v)), 4e-4) << v;
  }
  EXPECT_EQ(log2_q16(1), 0);
  EXPECT_EQ(log2_q16(1u << 20), 20 << 16);
  for (int64_t d = 0; d > -20 * 65536; d -= 777) {
    const double want = std::exp2(double(d) / 65536.0) * double(1 << 30);
    EXPECT_NEAR(double(exp2_q30(d)), want, want * 3e-4 + 1) << d;
  }
  EXPECT_EQ(exp2_q30(0), 1u << 30);
  EXPECT_EQ(exp2_q30(-40 * 65536), 0u);
}

TEST(ContextMixer, EveryTableIsValidForAnyShapeAndInput) {
  const LaneShape shapes[] = {
      {LaneShape::Kind::Bytes, 1, 0, 0},          {LaneShape::Kind::ImagePixels, 3, 3 * 17, 3 * 5},
      {LaneShape::Kind::ImageResiduals, 1, 9, 4}, {LaneShape::Kind::ImageResiduals, 4, 4, 0},
      {LaneShape::Kind::AudioResiduals, 2, 0, 8}, {LaneShape::Kind::AudioSamples, 1, 0, 2},
  };
  Rng rng(5);
  for (const LaneShape& shape : shapes) {
    LaneMixer mixer(shape);
    uint32_t model_cum[257], cum[257];
    float logits[256];
    for (int i = 0; i < 4000; i++) {
      const float spread = i % 3 == 0 ? 40.0f : 3.0f;  // sharp and flat model tables
      for (float& l : logits) l = spread * (float(rng.below(1000)) / 1000.0f - 0.5f);
      logits_to_cumulative(logits, model_cum);
      mixer.mix(model_cum, cum);
      ASSERT_EQ(cum[0], 0u);
      for (int s = 0; s < 256; s++) ASSERT_GT(cum[s + 1], cum[s]) << "symbol " << s << " at byte " << i;
      ASSERT_EQ(cum[256], kFreqTotal);
      // Long runs (matches) and random stretches alike.
      mixer.update(uint8_t(i % 700 < 300 ? (i * 7) % 13 : rng.below(256)));
    }
  }
}

TEST(ContextMixer, StartsAsTheModelWithNothingToAdd) {
  uint32_t model_cum[257], cum[257];
  float logits[256];
  for (int i = 0; i < 256; i++) logits[i] = float(i % 17) * 0.3f;
  logits_to_cumulative(logits, model_cum);
  LaneMixer mixer(LaneShape{});
  mixer.mix(model_cum, cum);
  for (int s = 0; s < 256; s++) {
    const double want = double(model_cum[s + 1] - model_cum[s]), got = double(cum[s + 1] - cum[s]);
    EXPECT_NEAR(got / want, 1.0, 2e-3) << s;
  }
}

TEST(ContextMixer, LearnsRepeatsAModelCannotSee) {
  uint32_t uniform[257];
  uniform_table(uniform);
  Rng rng(11);
  std::vector<uint8_t> block(3000);
  for (auto& b : block) b = uint8_t(rng.below(256));
  std::vector<uint8_t> bytes;
  for (int r = 0; r < 3; r++) bytes.insert(bytes.end(), block.begin(), block.end());
  const double first = mixed_bits(LaneShape{}, std::vector<uint8_t>(block), uniform);
  const double repeats = mixed_bits(LaneShape{}, bytes, uniform, block.size());
  EXPECT_NEAR(first / double(block.size()), 8.0, 0.05);  // nothing to learn from random bytes
  EXPECT_LT(repeats / double(2 * block.size()), 0.5);    // the copies cost little
}

TEST(ContextMixer, AnImagesActivityInTheRowAboveShrinksItsResiduals) {
  // Residual bytes of a 96x64 grey image whose columns are calm (|error| <= 1) or busy (|error| up
  // to 60) at random: a pixel's left neighbour says nothing about its error's size, the pixel
  // above (96 bytes back) says everything.
  const int W = 96, H = 64;
  Rng rng(3);
  std::vector<bool> busy(W);
  for (int x = 0; x < W; x++) busy[size_t(x)] = rng.below(2) == 1;
  std::vector<uint8_t> residuals;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      const int e = busy[size_t(x)] ? int(rng.below(121)) - 60 : int(rng.below(3)) - 1;
      residuals.push_back(uint8_t(e >= 0 ? 2 * e : -2 * e - 1));
    }
  uint32_t uniform[257];
  uniform_table(uniform);
  const double blind = mixed_bits(LaneShape{}, residuals, uniform);
  const double seeing = mixed_bits(LaneShape{LaneShape::Kind::ImageResiduals, 1, size_t(W), 0}, residuals, uniform);
  std::printf("shape-blind %.3f bits per byte, with the image's shape %.3f\n", blind / double(residuals.size()),
              seeing / double(residuals.size()));
  EXPECT_LT(seeing, 0.85 * blind);
}

}  // namespace
}  // namespace rb
