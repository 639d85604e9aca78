// The bitwise context-mixing stage (codecs/bit_mixer.h, codecs/cm_parts.h): each part's counts,
// states and updates against their definitions, the binary coder's round trip and its damage
// checks, and the whole stage's encoder and decoder agreeing on every kind of lane.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "codecs/bit_mixer.h"
#include "codecs/bit_mixer_contexts.h"
#include "codecs/byte_frequencies.h"
#include "datasets/media.h"
#include "datasets/media_residuals.h"
#include "src/common/rng.h"

namespace rb {
namespace {

using cm::BitHistory;

// The state a sequence of bits ("0110...") leads to from the empty history.
uint8_t history_of(const std::string& bits) {
  uint8_t s = 0;
  for (char c : bits) s = BitHistory::next(s, c == '1');
  return s;
}

TEST(BitMixer, BitHistoriesCountAndDiscountAsDefined) {
  struct Case {
    std::string bits;
    int zeros, ones;
  } cases[] = {
      {"", 0, 0},
      {"1", 0, 1},
      {"0", 1, 0},
      {"1111", 0, 4},
      {"10", 1, 1},  // a count of 1 or 2 survives the other bit
      {"110", 1, 2},
      {"11110", 1, 3},  // 4 -> 4 / 2 + 1
      {"1111111111"
       "0",
       1, 6},
      {std::string(70, '0'), 60, 0},        // capped at 60 while the other count is 0
      {"1" + std::string(70, '0'), 30, 1},  // ... at 30 while it is 1
      {std::string(30, '1') + "00", 2, 9},  // ones 30 -> 16 -> 9 as zeros count 1, 2 (cap 3)
  };
  for (const Case& c : cases) {
    const uint8_t s = history_of(c.bits);
    EXPECT_EQ(BitHistory::zeros(s), c.zeros) << c.bits;
    EXPECT_EQ(BitHistory::ones(s), c.ones) << c.bits;
  }
  // Every state is a distinct pair of counts, and next() stays among them.
  const int n = BitHistory::count();
  EXPECT_LE(n, 256);
  EXPECT_GT(n, 100);
  std::set<std::pair<int, int>> seen;
  for (int s = 0; s < n; s++) {
    EXPECT_TRUE(seen.insert({BitHistory::zeros(uint8_t(s)), BitHistory::ones(uint8_t(s))}).second) << s;
    for (int bit = 0; bit < 2; bit++) EXPECT_LT(BitHistory::next(uint8_t(s), bit), n);
  }
}

TEST(BitMixer, StretchAndSquashAreInversesAndMonotone) {
  EXPECT_EQ(cm::squash(0), 2048);
  EXPECT_EQ(cm::squash(-5000), cm::squash(-2047));  // clamped
  for (int x = -2046; x <= 2047; x++) EXPECT_LE(cm::squash(x - 1), cm::squash(x)) << x;
  for (int x = -2047; x <= 2047; x++)  // the logistic function in 12 bits, rounded down, kept inside 1..4095
    EXPECT_NEAR(cm::squash(x), std::clamp(std::floor(4096.0 / (1.0 + std::exp(-x / 256.0))), 1.0, 4095.0), 1.0) << x;
  for (int p = 1; p < 4096; p++) EXPECT_NEAR(cm::squash(cm::stretch(p)), p, std::max(1, p / 40)) << p;
}

TEST(BitMixer, StateMapMovesByOneOverCountPlusOneAndAHalf) {
  cm::StateMap m(4, 1023);
  m.set(1, 1024);
  // p_{n+1} = p_n + (target - p_n) / (n + 1.5), in a 22-bit fixed point.
  double expect = 1024.0 / 4096;
  for (int n = 0; n < 20; n++) {
    EXPECT_NEAR(m.p(1) / 4096.0, expect, 1.0 / 4096) << n;
    const int bit = n % 3 == 0 ? 0 : 1;
    m.update(bit);
    expect += (bit - expect) / (n + 1.5);
  }
  EXPECT_EQ(m.p(0), 2048);  // other entries untouched
  // The count stops at the limit: the rate stays at 1 / (limit + 1.5).
  cm::StateMap fast(1, 2);
  for (int i = 0; i < 50; i++) {
    fast.p(0);
    fast.update(0);
  }
  fast.p(0);
  const double before = fast.p(0) / 4096.0;
  fast.update(1);
  EXPECT_NEAR(fast.p(0) / 4096.0, before + (1 - before) / 3.5, 2.0 / 4096);
}

TEST(BitMixer, ApmStartsAsTheIdentityAndLearnsPerContext) {
  cm::Apm apm(2, 6);
  for (int p = 64; p < 4096; p += 61) EXPECT_NEAR(apm.refine(p, 0), p, std::max(24, p / 12)) << p;
  // In context 1 a prediction of 0.3 is always followed by a one: it moves up there only (the
  // nearer of its two points learns; the other still pulls it a third of the way back).
  for (int i = 0; i < 200; i++) {
    apm.refine(1229, 1);
    apm.update(1);
  }
  EXPECT_GT(apm.refine(1229, 1), 3000);
  EXPECT_NEAR(apm.refine(1229, 0), 1229, 60);
}

TEST(BitMixer, MixerStepsItsWeightsAlongTheCodeLengthGradient) {
  cm::Mixer m(2, 2, 16, 1 << 15);
  const int x[2] = {400, -100};
  const int p = m.mix(x, 1);
  // p = squash((w . x) >> 16) with w = 0.5 each
  EXPECT_EQ(p, cm::squash((400 * (1 << 15) + -100 * (1 << 15)) >> 16));
  m.update(1);
  const int err = ((1 << 12) - p) * 16;
  const int32_t w0 = (1 << 15) + int32_t((int64_t(400) * err) >> 14), w1 = (1 << 15) + int32_t((int64_t(-100) * err) >> 14);
  EXPECT_EQ(m.mix(x, 1), cm::squash(int((int64_t(400) * w0 + int64_t(-100) * w1) >> 16)));
  EXPECT_EQ(m.mix(x, 0), p) << "another weight set is untouched";
  // Trained on a stream where the first input tells the bit and the second is noise, it trusts the first.
  cm::Mixer learn(2, 1, 6, 1 << 14);
  Rng rng(3);
  for (int i = 0; i < 20000; i++) {
    const int bit = int(rng.below(2));
    const int in[2] = {bit ? 500 : -500, int(rng.below(1001)) - 500};
    learn.mix(in, 0);
    learn.update(bit);
  }
  const int one[2] = {500, -500}, zero[2] = {-500, 500};
  EXPECT_GT(learn.mix(one, 0), 3900);
  EXPECT_LT(learn.mix(zero, 0), 196);
}

TEST(BitMixer, BinaryCoderRoundTripsAndNoticesDamage) {
  Rng rng(11);
  std::vector<int> bits, probs;
  for (int i = 0; i < 20000; i++) {
    const int p = i % 97 == 0 ? 1 : i % 89 == 0 ? 4095 : 1 + int(rng.below(4095));
    probs.push_back(p);
    bits.push_back(int(rng.below(4096)) < p ? 1 : (i % 500 == 0 ? 1 : 0));  // some surprises at p = 1 too
  }
  cm::BinaryEncoder enc;
  double ideal = 0;
  for (size_t i = 0; i < bits.size(); i++) {
    enc.encode(bits[i], probs[i]);
    ideal -= std::log2((bits[i] ? probs[i] : 4096 - probs[i]) / 4096.0);
  }
  const std::vector<uint8_t> coded = enc.finish();
  EXPECT_LT(double(coded.size()) * 8, ideal * 1.01 + 64);  // within 1% of the ideal code length
  cm::BinaryDecoder dec(coded.data(), coded.size());
  for (size_t i = 0; i < bits.size(); i++) ASSERT_EQ(dec.decode(probs[i]), bits[i]) << i;
  EXPECT_TRUE(dec.finished_cleanly());
  // A truncated stream runs out; a changed last byte does not end where the encoder ended.
  for (size_t cut : {size_t(1), size_t(4)}) {
    cm::BinaryDecoder d(coded.data(), coded.size() - cut);
    for (size_t i = 0; i < bits.size(); i++) d.decode(probs[i]);
    EXPECT_FALSE(d.finished_cleanly()) << cut;
  }
  for (size_t back = 1; back <= 4; back++) {
    std::vector<uint8_t> bad = coded;
    bad[bad.size() - back] ^= 0x20;
    cm::BinaryDecoder d(bad.data(), bad.size());
    bool same = true;
    for (size_t i = 0; i < bits.size(); i++) same &= d.decode(probs[i]) == bits[i];
    EXPECT_FALSE(same && d.finished_cleanly()) << back;
  }
}

// A table with most of its mass on `likely`.
void peaked_table(uint8_t likely, uint32_t cum[257]) {
  std::vector<float> logits(256, 0.0f);
  logits[likely] = 8.0f;
  logits_to_cumulative(logits.data(), cum);
}

struct Coded {
  std::vector<uint8_t> bytes;
  double bits = 0;
};

// Codes `data` as one lane of `shape`; the model's table is peaked at the true byte when
// `oracle`, at a fixed wrong byte otherwise, or absent when `no_model`. Decodes and checks.
Coded round_trip(LaneShape shape, const std::vector<uint8_t>& data, bool oracle, bool no_model = false) {
  shape.length = data.size();
  uint32_t cum[257];
  Coded out;
  cm::BinaryEncoder enc;
  {
    BitMixer m(shape);
    for (uint8_t b : data) {
      peaked_table(oracle ? b : uint8_t(b + 1), cum);
      out.bits += m.encode(enc, no_model ? nullptr : cum, b);
    }
  }
  out.bytes = enc.finish();
  BitMixer m(shape);
  cm::BinaryDecoder dec(out.bytes.data(), out.bytes.size());
  size_t i = 0;
  for (; i < data.size(); i++) {
    const uint8_t b = data[i];
    peaked_table(oracle ? b : uint8_t(b + 1), cum);  // the decoder's model sees the same tables
    if (m.decode(dec, no_model ? nullptr : cum) != b) break;
  }
  EXPECT_EQ(i, data.size()) << "the first byte decoded wrong";
  EXPECT_TRUE(dec.finished_cleanly());
  return out;
}

TEST(BitMixer, EncoderAndDecoderAgreeOnEveryKindOfLane) {
  Rng rng(5);
  std::vector<uint8_t> text;
  const std::string words[] = {"the ", "model ", "mixes ", "bits ", "of ", "context\n", "and ", "counts "};
  while (text.size() < 6000) {
    const std::string& w = words[rng.below(8)];
    text.insert(text.end(), w.begin(), w.end());
  }
  std::vector<uint8_t> noise(3000);
  for (auto& b : noise) b = uint8_t(rng.below(256));
  LaneShape bytes;
  const Coded t = round_trip(bytes, text, false, true);
  EXPECT_LT(t.bits / double(text.size()), 2.5) << "the side models alone learn the words";
  EXPECT_NEAR(double(t.bytes.size()) * 8, t.bits, t.bits * 0.01 + 64);
  const Coded n = round_trip(bytes, noise, false, true);
  EXPECT_LT(n.bits / double(noise.size()), 8.2) << "noise costs little more than its 8 bits";
  // The network is an input: a model that knows each byte makes the noise nearly free; one that
  // is always wrong costs little once the mixer stops trusting it.
  EXPECT_LT(round_trip(bytes, noise, true).bits / double(noise.size()), 1.0);
  EXPECT_LT(round_trip(bytes, noise, false).bits / double(noise.size()), 8.6);
  // Images (pixels and residuals, with the row above) and audio (16-bit samples, stereo).
  std::vector<uint8_t> image;
  for (int y = 0; y < 40; y++)
    for (int x = 0; x < 50; x++)
      for (int c = 0; c < 3; c++) image.push_back(uint8_t(x * 3 + y * 2 + c * 40 + int(rng.below(5))));
  Image img;
  img.width = 50, img.height = 40, img.channels = 3, img.pixels = image;
  for (LaneShape::Kind k : {LaneShape::Kind::ImagePixels, LaneShape::Kind::ImageResiduals}) {
    LaneShape s;
    s.kind = k, s.channels = 3, s.row_bytes = 150;
    const std::vector<uint8_t> lane = k == LaneShape::Kind::ImagePixels ? image : image_residuals(img);
    EXPECT_LT(round_trip(s, lane, false, true).bits / double(image.size()), 5.0) << int(k);
    // With a network that knows each byte (residual lanes permute its table to plane values).
    EXPECT_LT(round_trip(s, lane, true).bits / double(image.size()), 1.0) << int(k);
  }
  std::vector<uint8_t> audio;
  for (int i = 0; i < 3000; i++)
    for (int c = 0; c < 2; c++) {
      const int v = int(8000 * std::sin(i * 0.05 + c)) + int(rng.below(17)) - 8;
      audio.push_back(uint8_t(uint16_t(v) >> 8)), audio.push_back(uint8_t(v));
    }
  for (LaneShape::Kind k : {LaneShape::Kind::AudioSamples, LaneShape::Kind::AudioResiduals}) {
    LaneShape s;
    s.kind = k, s.channels = 2, s.start = 4;  // a lane that starts on a whole frame inside the content
    EXPECT_LT(round_trip(s, audio, false, true).bits / double(audio.size()), 7.0);
  }
}

// Lanes of one file may share what their mixers learn (version 3), coded position by position in
// lane order: a lane that repeats another's bytes then codes them almost free, while a lane on
// its own statistics (version 2) pays as much as the first; both decode in the same order.
TEST(BitMixer, LanesThatShareStatisticsLearnFromEachOther) {
  Rng rng(12);
  std::vector<uint8_t> first(4000), other(4000);
  for (auto& b : first) b = uint8_t('a' + rng.below(26));
  for (auto& b : other) b = uint8_t('a' + rng.below(26));
  const std::vector<std::vector<uint8_t>> lanes = {first, first, other};
  LaneShape whole;
  whole.length = 3 * first.size();
  for (bool shared : {false, true}) {
    auto stats = shared ? BitMixer::shared_statistics(whole) : nullptr;
    std::vector<BitMixer> enc, dec;
    std::vector<cm::BinaryEncoder> coders(lanes.size());
    std::vector<double> bits(lanes.size(), 0.0);
    for (size_t b = 0; b < lanes.size(); b++) {
      LaneShape s;
      s.start = b * first.size(), s.length = first.size();
      enc.emplace_back(s, stats);
    }
    for (size_t i = 0; i < first.size(); i++)
      for (size_t b = 0; b < lanes.size(); b++) bits[b] += enc[b].encode(coders[b], nullptr, lanes[b][i]);
    std::vector<std::vector<uint8_t>> payloads;
    for (auto& c : coders) payloads.push_back(c.finish());
    auto dec_stats = shared ? BitMixer::shared_statistics(whole) : nullptr;
    std::vector<cm::BinaryDecoder> decoders;
    for (size_t b = 0; b < lanes.size(); b++) {
      LaneShape s;
      s.start = b * first.size(), s.length = first.size();
      dec.emplace_back(s, dec_stats);
      decoders.emplace_back(payloads[b].data(), payloads[b].size());
    }
    for (size_t i = 0; i < first.size(); i++)
      for (size_t b = 0; b < lanes.size(); b++) ASSERT_EQ(dec[b].decode(decoders[b], nullptr), lanes[b][i]) << b << " " << i;
    for (auto& d : decoders) EXPECT_TRUE(d.finished_cleanly());
    const double per_byte = 1.0 / double(first.size());
    EXPECT_NEAR(bits[0] * per_byte, std::log2(26.0), 0.35) << "random letters cost their entropy";
    if (shared) {
      EXPECT_LT(bits[1] * per_byte, 1.0) << "the repeating lane reads the first lane's statistics";
    } else {
      EXPECT_NEAR(bits[1], bits[0], bits[0] * 0.001) << "on its own statistics a lane codes as if alone";
    }
    EXPECT_NEAR(bits[2] * per_byte, std::log2(26.0), 0.35);
  }
}

// A residual image lane is coded as plane values: the contexts' prediction must be the residual
// transform's, so that value - prediction folds to exactly the residual the transform wrote.
TEST(BitMixer, ResidualImageLanesPredictAsTheResidualTransformDoes) {
  Rng rng(9);
  Image img;
  img.width = 23, img.height = 17, img.channels = 3;
  for (int i = 0; i < img.width * img.height * 3; i++) img.pixels.push_back(uint8_t(i % 7 * 30 + int(rng.below(40))));
  const std::vector<uint8_t> residuals = image_residuals(img);
  LaneShape s;
  s.kind = LaneShape::Kind::ImageResiduals, s.channels = 3, s.row_bytes = size_t(img.width) * 3, s.length = residuals.size();
  cm::LaneContexts ctx(s);
  std::vector<uint8_t> planes;
  for (size_t i = 0; i < img.pixels.size(); i++) {
    const size_t c = i % 3;
    const uint8_t plane = c == 1 ? img.pixels[i] : uint8_t(img.pixels[i] - img.pixels[i - c + 1]);  // R-G, G, B-G
    const int error = int(int8_t(uint8_t(plane - ctx.prediction())));
    ASSERT_EQ(error >= 0 ? 2 * error : -2 * error - 1, residuals[i]) << i;
    planes.push_back(plane);
    ctx.update(planes);
  }
}

// Contexts name what they say: in text, a byte's column context is the same on every line where the
// byte above and the byte before agree, whatever came earlier; images' neighbour contexts likewise.
TEST(BitMixer, ContextsDependOnTheNeighboursTheyName) {
  LaneShape text;
  text.length = 64;
  auto hashes_after = [](const LaneShape& shape, const std::string& s) {
    cm::LaneContexts ctx(shape);
    std::vector<uint8_t> h;
    for (char c : s) {
      h.push_back(uint8_t(c));
      ctx.update(h);
    }
    return std::vector<uint32_t>(ctx.hashes(), ctx.hashes() + ctx.count());
  };
  const auto a = hashes_after(text, "alpha 12\nbeta  34\ngamma 5"), b = hashes_after(text, "zzzzz 99\nqqqqq 74\nfffff 5");
  EXPECT_EQ(a[0], b[0]) << "order 2: ' 5'";
  EXPECT_NE(a[2], b[2]) << "order 4 differs";
  EXPECT_EQ(a[10], b[10]) << "column: the byte above ('4') and the byte before ('5')";
  EXPECT_EQ(a[11], b[11]) << "column: the byte above and the column";
  EXPECT_NE(a[6], b[6]) << "the word before differs";
  // Two images equal around the last pixel (W, N, NW, NE and the rows above) share its neighbour contexts.
  LaneShape im;
  im.kind = LaneShape::Kind::ImagePixels, im.channels = 1, im.row_bytes = 4, im.length = 12;
  auto image_hashes = [&](std::vector<uint8_t> px) {
    cm::LaneContexts ctx(im);
    std::vector<uint8_t> h;
    for (uint8_t p : px) {
      h.push_back(p);
      ctx.update(h);
    }
    return std::vector<uint32_t>(ctx.hashes(), ctx.hashes() + ctx.count());
  };
  const auto p = image_hashes({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}), q = image_hashes({1, 2, 3, 4, 5, 6, 7, 8, 99, 10});
  // The next pixel is (x 2, y 2): W 10, N 7, NW 6, NE 8 in both; WW is 9 or 99.
  EXPECT_EQ(p[0], q[0]) << "W";
  EXPECT_EQ(p[1], q[1]) << "N";
  EXPECT_EQ(p[2], q[2]) << "W and N";
  EXPECT_EQ(p[3], q[3]) << "W + N - NW";
  EXPECT_NE(p[6], q[6]) << "2W - WW";
}

}  // namespace
}  // namespace rb
