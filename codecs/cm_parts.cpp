#include "codecs/cm_parts.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <utility>

#include "src/common/dmath.h"
#include "src/common/errors.h"

namespace rb::cm {

namespace {

struct BuiltLogisticTables : LogisticTables {
  BuiltLogisticTables() {
    for (int x = -2047; x <= 2047; x++) {
      const double v = 4096.0 / (1.0 + dmath::exp(-double(x) / 256.0));
      squash[size_t(x + 2047)] = int16_t(std::clamp(int(v), 1, 4095));
    }
    // stretch is squash's inverse: the smallest x whose squash reaches p, then ties go up.
    int p = 0;
    for (int x = -2047; x <= 2047; x++) {
      const int v = squash[size_t(x + 2047)];
      for (; p <= v; p++) stretch[size_t(p)] = int16_t(x);
    }
    for (; p < 4096; p++) stretch[size_t(p)] = 2047;
  }
};

const LogisticTables& logistic() {
  static const BuiltLogisticTables t;
  return t;
}

// 2 / (2n + 3) in 16 bits for every count a StateMap keeps (0..1023).
struct StateMapRates {
  int32_t rate[1024];
  StateMapRates() {
    for (int n = 0; n < 1024; n++) rate[n] = int32_t(65536 * 2 / (2 * n + 3));
  }
};

// The count that survives when the other bit is seen: small counts stay (a context seen once
// either way is still uncertain), larger ones are roughly halved.
int discount(int n) { return n < 3 ? n : n / 2 + 1; }
// The largest count a bit may reach while the other bit's count is `other`.
int cap(int other) { return other == 0 ? 60 : other == 1 ? 30 : other == 2 ? 16 : other <= 4 ? 9 : other <= 7 ? 6 : 3; }

struct StateTable {
  std::vector<std::array<uint8_t, 2>> next;
  std::vector<uint8_t> next_flat;           // next[state][bit] at state * 2 + bit, 256 states
  std::vector<std::pair<int, int>> counts;  // (n0, n1)
  StateTable() {
    std::map<std::pair<int, int>, int> index;
    counts.push_back({0, 0});
    index[{0, 0}] = 0;
    for (size_t i = 0; i < counts.size(); i++) {  // breadth first: every state reachable from (0, 0)
      std::array<uint8_t, 2> to{};
      for (int bit = 0; bit < 2; bit++) {
        auto [n0, n1] = counts[i];
        int& same = bit ? n1 : n0;
        int& other = bit ? n0 : n1;
        other = discount(other);
        same = std::min(same + 1, cap(other));
        auto it = index.find({n0, n1});
        if (it == index.end()) {
          it = index.emplace(std::make_pair(n0, n1), int(counts.size())).first;
          counts.push_back({n0, n1});
        }
        to[size_t(bit)] = uint8_t(it->second);
      }
      next.push_back(to);
    }
    if (counts.size() > 256) throw Error("internal: bit history table has more than 256 states");
    next_flat.assign(512, 0);
    for (size_t i = 0; i < next.size(); i++) next_flat[2 * i] = next[i][0], next_flat[2 * i + 1] = next[i][1];
  }
};

const StateTable& states() {
  static const StateTable t;
  return t;
}

const StateMapRates& state_map_rates() {
  static const StateMapRates t;
  return t;
}

}  // namespace

const LogisticTables& logistic_tables() { return logistic(); }

int squash(int x) { return logistic().squash[size_t(std::clamp(x, -2047, 2047) + 2047)]; }
int stretch(int p) { return logistic().stretch[size_t(p)]; }

uint8_t BitHistory::next(uint8_t state, int bit) { return states().next[state][size_t(bit)]; }
int BitHistory::zeros(uint8_t state) { return states().counts[state].first; }
int BitHistory::ones(uint8_t state) { return states().counts[state].second; }
int BitHistory::count() { return int(states().counts.size()); }
const uint8_t* BitHistory::next_table() { return states().next_flat.data(); }

StateMap::StateMap(size_t contexts, int limit)
    : t_(contexts, uint32_t(2048) << 20), limit_(std::min(limit, 1023)), rate_(state_map_rates().rate) {}

void StateMap::set(size_t i, int p) { t_[i] = uint32_t(std::clamp(p, 1, 4095)) << 20; }

Apm::Apm(size_t contexts, int rate) : t_(contexts * 33), rate_(rate), stretch_(logistic().stretch) {
  for (size_t c = 0; c < contexts; c++)
    for (int j = 0; j < 33; j++) t_[c * 33 + size_t(j)] = uint16_t(squash((j - 16) * 128) * 16);
}

Mixer::Mixer(int inputs, int sets, int learning_rate, int32_t initial_weight)
    : n_(inputs), lr_(learning_rate), w_(size_t(inputs) * size_t(sets), initial_weight), squash_(logistic().squash) {
  // The bounds that keep mixer_dot's and mixer_train's 32-bit sums exact.
  if (inputs < 1 || inputs > 256 || learning_rate < 0 || learning_rate > 255 || std::abs(initial_weight) > (1 << 22))
    throw Error("internal: mixer shape out of range");
}

void Mixer::set_weight(int input, int32_t w) {
  w = std::clamp(w, -(1 << 22), 1 << 22);
  for (size_t i = size_t(input); i < w_.size(); i += size_t(n_)) w_[i] = w;
}

// Vector lanes where the CPU has them; integer arithmetic, so every clone gives the same result.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define RB_CM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RB_CM_CLONES
#endif

// |x| <= 2047 and |w| <= 2^22: w = hi 2^11 + lo with |hi| <= 2^11 and 0 <= lo < 2^11, so each
// product is under 2^22 and n <= 256 of them sum within 32 bits.
RB_CM_CLONES int64_t Mixer::mixer_dot(const int* x, const int32_t* w, int n) {
  int32_t hi = 0, lo = 0;
  for (int i = 0; i < n; i++) {
    hi += x[i] * (w[i] >> 11);
    lo += x[i] * (w[i] & 2047);
  }
  return int64_t(hi) * 2048 + lo;
}

// |err| <= 4095 x 255 and |x| <= 2047: the product fits in 32 bits, and so does w plus its shift.
RB_CM_CLONES void Mixer::mixer_train(int32_t* w, const int* x, int n, int err) {
  for (int i = 0; i < n; i++) {
    const int32_t v = w[i] + ((x[i] * err) >> 14);
    w[i] = v < -(1 << 22) ? -(1 << 22) : v > (1 << 22) ? (1 << 22) : v;
  }
}

void BinaryEncoder::encode(int bit, int p1) {
  const uint32_t range = x2_ - x1_;
  const uint32_t mid = x1_ + (range >> 12) * uint32_t(p1) + (((range & 0xfff) * uint32_t(p1)) >> 12);
  if (bit)
    x2_ = mid;
  else
    x1_ = mid + 1;
  while (((x1_ ^ x2_) & 0xff000000u) == 0) {
    out_.push_back(uint8_t(x2_ >> 24));
    x1_ <<= 8;
    x2_ = (x2_ << 8) | 255;
  }
}

std::vector<uint8_t> BinaryEncoder::finish() {
  for (int i = 0; i < 4; i++) out_.push_back(uint8_t(x1_ >> (24 - 8 * i)));  // the decoder reads exactly these
  std::vector<uint8_t> out;
  out.swap(out_);
  x1_ = 0, x2_ = 0xffffffffu;
  return out;
}

BinaryDecoder::BinaryDecoder(const uint8_t* data, size_t n) : data_(data), n_(n) {
  for (int i = 0; i < 4; i++) x_ = (x_ << 8) | next_byte();
}

uint8_t BinaryDecoder::next_byte() {
  if (pos_ >= n_) {
    overrun_ = true;
    return 0;
  }
  return data_[pos_++];
}

int BinaryDecoder::decode(int p1) {
  const uint32_t range = x2_ - x1_;
  const uint32_t mid = x1_ + (range >> 12) * uint32_t(p1) + (((range & 0xfff) * uint32_t(p1)) >> 12);
  const int bit = x_ <= mid;
  if (bit)
    x2_ = mid;
  else
    x1_ = mid + 1;
  while (((x1_ ^ x2_) & 0xff000000u) == 0) {
    x1_ <<= 8;
    x2_ = (x2_ << 8) | 255;
    x_ = (x_ << 8) | next_byte();
  }
  return bit;
}

}  // namespace rb::cm
