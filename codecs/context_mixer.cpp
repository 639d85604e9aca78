#include "codecs/context_mixer.h"

#include <algorithm>
#include <array>

#include "datasets/media.h"
#include "datasets/media_residuals.h"
#include "codecs/rans.h"

namespace rb {

namespace {

constexpr int kLogTableBits = 12;
constexpr int kMinMatch = 5;          // bytes that must repeat before the match model predicts
constexpr int kMaxMatchCheck = 64;    // how far back a candidate's match length is verified
constexpr int kMaxHashBits = 16;      // match table entries per lane, at most (fewer for short lanes)
constexpr int kSides = 2;             // context models beside the match model
constexpr int kSources = 2 + kSides;  // model, match, context models
constexpr int kMaxOrder2Bits = 12;    // hashed order-2 contexts of the byte model, at most
constexpr int kMatchSets = 5;         // no match, length < 8, < 16, < 32, longer
constexpr int kActivityBuckets = 16;
constexpr int32_t kWeightOne = 1 << 16;
constexpr int32_t kWeightLimit = 8 << 16;
constexpr int64_t kLearningRate = 256;  // weight step per bit of gradient, in units of 2^-16 (~0.004)
constexpr uint32_t kCountStep = 32, kCountLimit = 60000;
constexpr int32_t kMatchWeight = kWeightOne / 2, kSideWeight = kWeightOne / 8;  // starting weights

// Tables built from IEEE double +, -, *, / only (exact and identical on every x86-64 CPU).
struct Tables {
  std::array<int32_t, 1 << kLogTableBits> log2_mantissa;   // log2(1 + k / 4096) in Q16
  std::array<uint32_t, 1 << kLogTableBits> exp2_fraction;  // 2^(-k / 4096) in Q30
  std::vector<int32_t> log2_small;                         // log2_q16(v) for v < 65536 (count tables)
  int32_t log2(uint32_t v) const {
    const int n = 31 - __builtin_clz(v | 1);
    const uint32_t k = n >= kLogTableBits ? (v >> (n - kLogTableBits)) : (v << (kLogTableBits - n));
    return (n << 16) + log2_mantissa[k & ((1u << kLogTableBits) - 1)];
  }
  uint32_t exp2(int64_t d) const {  // d <= 0
    const int64_t m = -d, whole = m >> 16;
    return whole >= 31 ? 0 : exp2_fraction[size_t((m & 0xFFFF) >> (16 - kLogTableBits))] >> whole;
  }
  Tables() {
    const double ln2 = 0.69314718055994530942;
    for (int k = 0; k < (1 << kLogTableBits); k++) {
      const double f = double(k) / double(1 << kLogTableBits);
      const double u = f / (2.0 + f), u2 = u * u;  // ln(1 + f) = 2 atanh(u)
      double term = u, sum = 0.0;
      for (int n = 1; n < 60; n += 2) {
        sum += term / double(n);
        term *= u2;
      }
      log2_mantissa[size_t(k)] = int32_t(2.0 * sum / ln2 * 65536.0 + 0.5);
      const double t = -f * ln2;  // e^t, t in (-ln 2, 0]
      double e = 1.0, p = 1.0;
      for (int n = 1; n < 30; n++) {
        p = p * t / double(n);
        e += p;
      }
      exp2_fraction[size_t(k)] = uint32_t(e * double(1 << 30) + 0.5);
    }
    log2_small.resize(65536);
    for (uint32_t v = 0; v < 65536; v++) log2_small[v] = log2(v);
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

int64_t floor_shift(int64_t v, int s) { return v >= 0 ? v >> s : -((-v + (int64_t(1) << s) - 1) >> s); }

int magnitude_bucket(uint32_t v) {  // 0, then one bucket per power of two
  int b = 0;
  while (v && b < kActivityBuckets - 1) v >>= 1, b++;
  return b;
}
int signed_bucket(int e) {  // 9 levels, finer near zero
  return e <= -16 ? 0 : e <= -6 ? 1 : e <= -2 ? 2 : e == -1 ? 3 : e == 0 ? 4 : e == 1 ? 5 : e <= 5 ? 6 : e <= 15 ? 7 : 8;
}
// Table sizes follow the lane's length, so memory grows with the content, not with the number
// of lanes a (possibly damaged) header declares: bits of log2(length), clamped.
int length_bits(size_t length, int lo, int hi) {
  int b = 0;
  while (b < hi && (size_t(1) << b) < length) b++;
  return std::max(lo, b);
}
int match_set(uint32_t len) { return len == 0 ? 0 : len < 8 ? 1 : len < 16 ? 2 : len < 32 ? 3 : 4; }
int match_bucket(uint32_t len) { return len < 16 ? int(len) : std::min(31, 16 + int((len - 16) / 16)); }

// Adaptive byte counts per context; the log-probabilities of the current context's table.
struct CountModel {
  int contexts = 0;
  std::vector<uint16_t> counts;
  std::vector<uint32_t> totals;
  int ctx = -1;  // the next byte's context (-1: none)
  std::array<int32_t, 256> log{};

  void init(int n) {
    contexts = n;
    counts.assign(size_t(n) * 256, 1);
    totals.assign(size_t(n), 256);
  }
  void prepare(const Tables& tab) {
    if (ctx < 0) return;
    const int32_t lt = tab.log2(totals[size_t(ctx)]);
    const uint16_t* c = counts.data() + size_t(ctx) * 256;
    const int32_t* small = tab.log2_small.data();
    for (int y = 0; y < 256; y++) log[size_t(y)] = small[c[y]] - lt;
  }
  void learn(uint8_t byte) {
    if (ctx < 0) return;
    uint16_t* c = counts.data() + size_t(ctx) * 256;
    c[byte] = uint16_t(c[byte] + kCountStep);
    totals[size_t(ctx)] += kCountStep;
    if (totals[size_t(ctx)] > kCountLimit) {
      uint32_t t = 0;
      for (int y = 0; y < 256; y++) t += c[y] = uint16_t((c[y] + 1) >> 1);
      totals[size_t(ctx)] = t;
    }
  }
};

}  // namespace

int32_t log2_q16(uint32_t v) { return tables().log2(v); }

uint32_t exp2_q30(int64_t d) { return tables().exp2(d > 0 ? 0 : d); }

struct LaneMixer::State {
  const Tables& tab = tables();
  LaneShape shape;
  std::vector<uint8_t> history;
  // Match model: the position after the last occurrence of each hashed kMinMatch-byte string.
  std::vector<uint32_t> last_seen;
  size_t match_ptr = 0;
  uint32_t match_len = 0;
  std::array<std::array<uint32_t, 2>, 32> match_stats{};  // per length bucket: hits, uses
  std::array<CountModel, kSides> side;
  // Mixer weights per set.
  std::vector<int32_t> weights;
  // What mix() computed for update().
  int activity = 0, set = 0, predicted = -1;
  int32_t hit_log = 0, miss_log = 0;
  std::array<int32_t, 256> model_log{};
  std::array<uint32_t, 256> freq{};

  int hash_bits, order2_bits;

  explicit State(const LaneShape& s)
      : shape(s), hash_bits(length_bits(s.length, 8, kMaxHashBits)), order2_bits(length_bits(s.length / 16, 6, kMaxOrder2Bits)) {
    last_seen.assign(size_t(1) << hash_bits, 0);
    switch (shape.kind) {
      case LaneShape::Kind::ImagePixels:
      case LaneShape::Kind::ImageResiduals:
        side[0].init(kActivityBuckets * 4);
        side[1].init(9 * 9 * 4 + 8 * 8 * 4);
        break;
      case LaneShape::Kind::AudioResiduals:
        side[0].init(kActivityBuckets * 2 + 4 * kActivityBuckets * 2);
        side[1].init(2 * 8 * kActivityBuckets + 16 * 8);
        break;
      case LaneShape::Kind::AudioSamples:
        break;
      case LaneShape::Kind::Bytes:
        side[0].init(256);               // order 1
        side[1].init(1 << order2_bits);  // order 2, hashed
        break;
    }
    weights.assign(size_t(kMatchSets * kActivityBuckets * kSources), 0);
    for (size_t i = 0; i < weights.size(); i += kSources) {
      weights[i] = kWeightOne;
      weights[i + 1] = kMatchWeight;
      for (int k = 0; k < kSides; k++) weights[i + 2 + size_t(k)] = kSideWeight;
    }
  }

  // The side models' contexts for the next byte and the activity bucket of the weight set.
  void side_contexts() {
    for (CountModel& m : side) m.ctx = -1;
    activity = 0;
    const size_t t = history.size(), a = shape.start + t;
    const uint8_t* h = history.data();
    if (shape.kind == LaneShape::Kind::ImagePixels || shape.kind == LaneShape::Kind::ImageResiduals) {
      const size_t rb = shape.row_bytes, C = size_t(shape.channels);
      if (rb == 0 || C == 0) return;
      const size_t xb = a % rb, c = xb % C;
      const bool w = xb >= C && t >= C, n = t >= rb, nw = n && xb >= C && t >= rb + C, ne = t >= rb && xb + C < rb;
      uint32_t act = 0, en = 0, ew = 0, ec = 0;
      int sn = 0, sw = 0;  // signed errors (pixels: differences) above and to the left
      if (shape.kind == LaneShape::Kind::ImageResiduals) {
        auto e = [&](size_t back) { return uint32_t(std::abs(unfold8(h[t - back]))); };
        sn = n ? unfold8(h[t - rb]) : 0, sw = w ? unfold8(h[t - C]) : 0;
        en = uint32_t(std::abs(sn)), ew = uint32_t(std::abs(sw));
        act = ew + en + (nw ? e(rb + C) : 0) + (ne ? e(rb - C) : 0);
        if (!n && w) act *= 2;  // first row of the lane: only the left neighbour
        if (c > 0) ec = e(1);   // the same pixel's previous channel
      } else {
        auto d = [&](size_t b1, size_t b2) { return uint32_t(std::abs(int(h[t - b1]) - int(h[t - b2]))); };
        if (w && nw) act += ew = d(C, rb + C), sw = int(h[t - C]) - int(h[t - rb - C]);
        if (n && nw) act += en = d(rb, rb + C), sn = int(h[t - rb]) - int(h[t - rb - C]);
        if (n && ne) act += d(rb, rb - C);
        if (w && !n && t >= 2 * C && xb >= 2 * C) act = ew = 2 * d(C, 2 * C);
        if (c > 0 && t >= C + 1 && w) ec = d(1, C + 1);
      }
      activity = magnitude_bucket(act);
      const int cc = int(std::min<size_t>(c, 3));
      side[0].ctx = activity * 4 + cc;
      // The first channel: the signed errors above and to the left (a bias the predictor keeps
      // making along an edge); later channels: the same pixel's previous channel's error size.
      side[1].ctx = c > 0 ? 9 * 9 * 4 + (std::min(7, magnitude_bucket(ec)) * 8 + std::min(7, magnitude_bucket(en + ew))) * 4 + cc
                          : (signed_bucket(sn) * 9 + signed_bucket(sw)) * 4 + cc;
    } else if (shape.kind == LaneShape::Kind::AudioResiduals) {
      const size_t C = size_t(std::max(1, shape.channels)), frame = 2 * C;
      const size_t ch = (a / 2) % C;
      const bool lo = a % 2 == 1;
      const size_t s0 = t - (lo ? 1 : 0);  // this sample's first byte in the lane
      auto folded = [&](size_t back) { return s0 >= back ? uint32_t(load_msb16(h + s0 - back)) : 0u; };
      const uint32_t m = folded(frame) + folded(2 * frame);
      activity = magnitude_bucket(m >> 1);
      const int c1 = int(std::min<size_t>(ch, 1));
      // Stereo: the first channel's error in this frame says how large the side channel's will be.
      const uint32_t other = ch > 0 ? folded(2 * ch) : folded(3 * frame);
      const int b8 = std::min(7, magnitude_bucket(other >> 1));
      if (!lo) {
        side[0].ctx = activity * 2 + c1;
        side[1].ctx = (b8 * kActivityBuckets + activity) * 2 + c1;
      } else {
        side[0].ctx = kActivityBuckets * 2 + (std::min<int>(h[t - 1], 3) * kActivityBuckets + activity) * 2 + c1;
        side[1].ctx = 8 * kActivityBuckets * 2 + std::min<int>(h[t - 1], 15) * 8 + b8;
      }
    } else if (shape.kind == LaneShape::Kind::Bytes && side[0].contexts) {
      const uint32_t p1 = t >= 1 ? h[t - 1] : 0, p2 = t >= 2 ? h[t - 2] : 0;
      side[0].ctx = int(p1);
      side[1].ctx = int(((p2 << 8 | p1) * 0x9E3779B1u) >> (32 - order2_bits));
    }
  }

  void mix(const uint32_t model_cum[257], uint32_t cum[257]) {
    for (int y = 0; y < 256; y++) model_log[size_t(y)] = tab.log2(model_cum[y + 1] - model_cum[y]) - (kFreqBits << 16);
    predicted = -1;
    if (match_len >= kMinMatch) {
      predicted = history[match_ptr];
      const auto& st = match_stats[size_t(match_bucket(match_len))];
      const uint32_t p = uint32_t(((uint64_t(2 * st[0] + 1)) << 16) / uint64_t(2 * st[1] + 2));  // P(hit), Q16, in (0, 1)
      hit_log = tab.log2(p) - (16 << 16);
      miss_log = tab.log2(65536 - p) - (16 << 16) - tab.log2(255);
    }
    side_contexts();
    for (CountModel& m : side) m.prepare(tab);
    set = (match_set(predicted >= 0 ? match_len : 0) * kActivityBuckets + activity) * kSources;
    const int32_t* w = weights.data() + set;
    std::array<int64_t, 256> z;
    int64_t zmax = INT64_MIN;
    int best = 0;
    // Sum of weighted log-probabilities; the match model's miss term is the same for every byte
    // but the predicted one, so only their difference enters.
    for (int y = 0; y < 256; y++) z[size_t(y)] = int64_t(w[0]) * model_log[size_t(y)];
    for (int k = 0; k < kSides; k++)
      if (side[size_t(k)].ctx >= 0)
        for (int y = 0; y < 256; y++) z[size_t(y)] += int64_t(w[2 + k]) * side[size_t(k)].log[size_t(y)];
    if (predicted >= 0) z[size_t(predicted)] += int64_t(w[1]) * (int64_t(hit_log) - miss_log);
    for (int y = 0; y < 256; y++) {
      z[size_t(y)] = floor_shift(z[size_t(y)], 16);
      if (z[size_t(y)] > zmax) zmax = z[size_t(y)], best = y;
    }
    std::array<uint32_t, 256> e;
    uint64_t sum = 0;
    for (int y = 0; y < 256; y++) sum += e[size_t(y)] = tab.exp2(z[size_t(y)] - zmax);
    const uint64_t scale = (uint64_t(kFreqTotal - 256) << 32) / sum;  // sum >= 2^30
    uint32_t total = 0;
    for (int y = 0; y < 256; y++) total += freq[size_t(y)] = 1 + uint32_t((uint64_t(e[size_t(y)]) * scale) >> 32);
    freq[size_t(best)] += kFreqTotal - total;  // each share was rounded down
    cum[0] = 0;
    for (int y = 0; y < 256; y++) cum[y + 1] = cum[y] + freq[size_t(y)];
  }

  void update(uint8_t byte) {
    int32_t* w = weights.data() + set;
    auto step = [](int32_t* wi, int64_t g) {
      *wi = int32_t(std::clamp<int64_t>(*wi + floor_shift(g * kLearningRate, 16), -kWeightLimit, kWeightLimit));
    };
    // Code-length gradient of each source's weight: its log-probability of the byte minus its
    // expectation under the mixture.
    const bool s0 = side[0].ctx >= 0, s1 = side[1].ctx >= 0;
    int64_t expected[3] = {0, 0, 0};
    for (int y = 0; y < 256; y++) {
      const int64_t f = freq[size_t(y)];
      expected[0] += f * model_log[size_t(y)];
      if (s0) expected[1] += f * side[0].log[size_t(y)];
      if (s1) expected[2] += f * side[1].log[size_t(y)];
    }
    step(&w[0], int64_t(model_log[byte]) - floor_shift(expected[0], kFreqBits));
    if (predicted >= 0) {
      const int64_t q = freq[size_t(predicted)];  // mixture's P(hit) in units of 2^-24
      const int64_t g = ((byte == predicted ? (int64_t(1) << kFreqBits) : 0) - q) * (int64_t(hit_log) - miss_log);
      step(&w[1], floor_shift(g, kFreqBits));
      auto& st = match_stats[size_t(match_bucket(match_len))];
      st[0] += byte == predicted, st[1]++;
      if (st[1] > 1024) st[0] >>= 1, st[1] >>= 1;
    }
    for (int k = 0; k < kSides; k++) {
      CountModel& m = side[size_t(k)];
      if (m.ctx < 0) continue;
      step(&w[2 + k], int64_t(m.log[byte]) - floor_shift(expected[1 + k], kFreqBits));
      m.learn(byte);
    }
    // The match continues or ends; then the table learns where this string ends.
    if (predicted >= 0 && byte == predicted)
      match_len = std::min<uint32_t>(match_len + 1, 65535), match_ptr++;
    else
      match_len = 0;
    history.push_back(byte);
    const size_t t = history.size();
    if (t < size_t(kMinMatch)) return;
    uint32_t hash = 0;
    for (size_t i = t - kMinMatch; i < t; i++) hash = (hash + history[i] + 1) * 0x9E3779B1u;
    hash >>= 32 - hash_bits;
    if (match_len == 0 && last_seen[hash] > 0) {
      const size_t cand = last_seen[hash];
      uint32_t len = 0;
      while (len < uint32_t(kMaxMatchCheck) && len < cand && history[cand - 1 - len] == history[t - 1 - len]) len++;
      if (len >= uint32_t(kMinMatch)) match_ptr = cand, match_len = len;
    }
    last_seen[hash] = uint32_t(t);
  }
};

LaneMixer::LaneMixer(const LaneShape& shape) : s_(std::make_unique<State>(shape)) {}
LaneMixer::~LaneMixer() = default;
LaneMixer::LaneMixer(LaneMixer&&) noexcept = default;
LaneMixer& LaneMixer::operator=(LaneMixer&&) noexcept = default;
void LaneMixer::mix(const uint32_t model_cum[257], uint32_t cum[257]) { s_->mix(model_cum, cum); }
void LaneMixer::update(uint8_t byte) { s_->update(byte); }

}  // namespace rb
