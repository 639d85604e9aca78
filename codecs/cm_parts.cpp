#include "codecs/cm_parts.h"

#include <algorithm>
#include <array>
#include <map>
#include <utility>

#include "src/common/dmath.h"
#include "src/common/errors.h"

namespace rb::cm {

namespace {

struct LogisticTables {
  std::array<int16_t, 4095> squash;  // index x + 2047
  std::array<int16_t, 4096> stretch;
  LogisticTables() {
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
  static const LogisticTables t;
  return t;
}

// The count that survives when the other bit is seen: small counts stay (a context seen once
// either way is still uncertain), larger ones are roughly halved.
int discount(int n) { return n < 3 ? n : n / 2 + 1; }
// The largest count a bit may reach while the other bit's count is `other`.
int cap(int other) { return other == 0 ? 60 : other == 1 ? 30 : other == 2 ? 16 : other <= 4 ? 9 : other <= 7 ? 6 : 3; }

struct StateTable {
  std::vector<std::array<uint8_t, 2>> next;
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
  }
};

const StateTable& states() {
  static const StateTable t;
  return t;
}

}  // namespace

int squash(int x) { return logistic().squash[size_t(std::clamp(x, -2047, 2047) + 2047)]; }
int stretch(int p) { return logistic().stretch[size_t(p)]; }

uint8_t BitHistory::next(uint8_t state, int bit) { return states().next[state][size_t(bit)]; }
int BitHistory::zeros(uint8_t state) { return states().counts[state].first; }
int BitHistory::ones(uint8_t state) { return states().counts[state].second; }
int BitHistory::count() { return int(states().counts.size()); }

StateMap::StateMap(size_t contexts, int limit) : t_(contexts, uint32_t(2048) << 20), limit_(std::min(limit, 1023)) {}

void StateMap::set(size_t i, int p) { t_[i] = uint32_t(std::clamp(p, 1, 4095)) << 20; }

void StateMap::update(int bit) {
  uint32_t& e = t_[last_];
  const uint32_t n = e & 1023, p = e >> 10;  // p: 22 bits
  // p += (target - p) / (n + 1.5), in integers: 2 / (2n + 3) as a 16-bit reciprocal.
  const int64_t target = bit ? (int64_t(1) << 22) - 1 : 0;
  const int64_t step = ((target - int64_t(p)) * (65536 * 2 / (2 * int64_t(n) + 3))) >> 16;
  const uint32_t np = uint32_t(std::clamp<int64_t>(int64_t(p) + step, 1 << 10, (int64_t(1) << 22) - (1 << 10)));
  e = (np << 10) | (n < uint32_t(limit_) ? n + 1 : n);
}

Apm::Apm(size_t contexts, int rate) : t_(contexts * 33), rate_(rate) {
  for (size_t c = 0; c < contexts; c++)
    for (int j = 0; j < 33; j++) t_[c * 33 + size_t(j)] = uint16_t(squash((j - 16) * 128) * 16);
}

int Apm::refine(int p, size_t context) {
  const int s = stretch(p) + 2048;  // 1..4095
  const int lo = s >> 7, w = s & 127;
  const size_t at = context * 33 + size_t(lo);
  index_ = at + (w >= 64 ? 1 : 0);
  return std::clamp((int(t_[at]) * (128 - w) + int(t_[at + 1]) * w) >> 11, 1, 4095);
}

void Apm::update(int bit) {
  const int target = bit ? 65535 : 0;
  int v = t_[index_];
  v += (target - v) >> rate_;
  t_[index_] = uint16_t(std::clamp(v, 16, 65535 - 16));
}

Mixer::Mixer(int inputs, int sets, int learning_rate, int32_t initial_weight)
    : n_(inputs), lr_(learning_rate), w_(size_t(inputs) * size_t(sets), initial_weight) {}

void Mixer::set_weight(int input, int32_t w) {
  for (size_t i = size_t(input); i < w_.size(); i += size_t(n_)) w_[i] = w;
}

int Mixer::mix(const int* x, int set) {
  x_ = x;
  set_ = size_t(set) * size_t(n_);
  const int32_t* w = w_.data() + set_;
  int64_t dot = 0;
  for (int i = 0; i < n_; i++) dot += int64_t(x[i]) * w[i];
  p_ = squash(int(std::clamp<int64_t>(dot >> 16, -2047, 2047)));
  return p_;
}

void Mixer::update(int bit) {
  const int err = ((bit << 12) - p_) * lr_;
  int32_t* w = w_.data() + set_;
  for (int i = 0; i < n_; i++) {
    const int64_t v = int64_t(w[i]) + ((int64_t(x_[i]) * err) >> 14);
    w[i] = int32_t(std::clamp<int64_t>(v, -(int64_t(1) << 22), int64_t(1) << 22));
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
