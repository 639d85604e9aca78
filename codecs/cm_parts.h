// The parts of the bitwise context-mixing stage (codecs/bit_mixer.h), as in the PAQ family of
// compressors: probabilities are 12-bit integers (P(bit = 1) in 1..4095), "stretched" into the
// logistic domain (ln(p / (1 - p)) in units of 1/256, -2047..2047) where they are mixed, and
// "squashed" back. Every part is integer arithmetic in a fixed order, and the two tables are
// built from dmath's deterministic exp, so encoder and decoder agree on every CPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rb::cm {

int squash(int x);   // x in -2047..2047 (clamped) -> p in 1..4095
int stretch(int p);  // p in 0..4095 -> x; squash(stretch(p)) is p to within table rounding

// The two tables behind squash and stretch, built once. The parts below keep a pointer to them:
// they are read several times per coded bit, where a call and a guard per read cost more.
struct LogisticTables {
  int16_t squash[4095];  // index x + 2047
  int16_t stretch[4096];
};
const LogisticTables& logistic_tables();

// Bit histories: one byte per context and bit position, a state standing for counts (n0, n1) of
// the zeros and ones seen in that context. A new bit increments its count (up to a cap that
// shrinks as the other count grows) and, when the other count is above 2, discounts it, so a
// history follows a context that changes its mind (PAQ's non-stationary counters). The states
// are enumerated from (0, 0) at start-up; state 0 is "never seen".
struct BitHistory {
  static uint8_t next(uint8_t state, int bit);
  static int zeros(uint8_t state);
  static int ones(uint8_t state);
  static int count();  // number of states (at most 256)
  // next() as a flat table: entry state * 2 + bit (for loops that step many histories a bit).
  static const uint8_t* next_table();
};

// Adaptive map from a context (for example a bit-history state) to a probability: each entry
// moves toward each bit seen with a rate 1 / (n + 1.5) that falls with its count n up to `limit`.
class StateMap {
 public:
  StateMap() = default;
  StateMap(size_t contexts, int limit);
  // Starts entry i at probability p (12-bit).
  void set(size_t i, int p);
  int p(size_t i) {
    last_ = i;
    return int(t_[i] >> 20);
  }
  void update(int bit) {
    uint32_t& e = t_[last_];
    const uint32_t n = e & 1023, p = e >> 10;  // p: 22 bits
    // p += (target - p) / (n + 1.5), in integers: 2 / (2n + 3) as a 16-bit reciprocal.
    const int64_t target = bit ? (int64_t(1) << 22) - 1 : 0;
    const int64_t step = ((target - int64_t(p)) * rate_[n]) >> 16;
    int64_t np = int64_t(p) + step;
    np = np < (1 << 10) ? (1 << 10) : np > (int64_t(1) << 22) - (1 << 10) ? (int64_t(1) << 22) - (1 << 10) : np;
    e = uint32_t(np) << 10 | (n < uint32_t(limit_) ? n + 1 : n);
  }

 private:
  std::vector<uint32_t> t_;  // probability in the high 22 bits, count in the low 10
  size_t last_ = 0;
  int limit_ = 255;
  const int32_t* rate_ = nullptr;  // 2 / (2n + 3) in 16 bits, per count n (a table: no division per bit)
};

// Adaptive probability map (secondary estimation): refines a probability in a context by
// interpolating between 33 learned points along its stretched value.
class Apm {
 public:
  Apm(size_t contexts, int rate);
  int refine(int p, size_t context) {
    const int s = stretch_[p] + 2048;  // 1..4095
    const int lo = s >> 7, w = s & 127;
    const size_t at = context * 33 + size_t(lo);
    index_ = at + (w >= 64 ? 1 : 0);
    const int v = (int(t_[at]) * (128 - w) + int(t_[at + 1]) * w) >> 11;
    return v < 1 ? 1 : v > 4095 ? 4095 : v;
  }
  // Asks for the cache lines of a context's points (a hint; changes nothing).
  void prefetch(size_t context) const {
    __builtin_prefetch(&t_[context * 33]);
    __builtin_prefetch(&t_[context * 33 + 32]);
  }
  void update(int bit) {
    const int target = bit ? 65535 : 0;
    int v = t_[index_];
    v += (target - v) >> rate_;
    t_[index_] = uint16_t(v < 16 ? 16 : v > 65535 - 16 ? 65535 - 16 : v);
  }

 private:
  std::vector<uint16_t> t_;  // 16-bit probabilities
  size_t index_ = 0;         // the point nearer the last input
  int rate_;
  const int16_t* stretch_;
};

// A gated linear mixer in the logistic domain: p = squash(sum_i w_i x_i) with one weight vector
// per selector value, trained online to lower the code length (w += lr * x * (bit - p)).
// Inputs lie in -2047..2047 (stretched probabilities) and weights in +-2^22, so the sums below
// are split to fit 32-bit lanes (exact: integer sums in any order are the same sums).
class Mixer {
 public:
  Mixer(int inputs, int sets, int learning_rate, int32_t initial_weight);
  void set_weight(int input, int32_t w);  // that input's weight in every set
  // Returns p; remembers x and the set for update().
  int mix(const int* x, int set) {
    x_ = x;
    set_ = size_t(set) * size_t(n_);
    const int64_t dot = mixer_dot(x, w_.data() + set_, n_);
    p_ = squash_[dot >= int64_t(2047) << 16 ? 4094 : dot < -(int64_t(2047) << 16) ? 0 : (dot >> 16) + 2047];
    return p_;
  }
  void update(int bit) { mixer_train(w_.data() + set_, x_, n_, ((bit << 12) - p_) * lr_); }
  int inputs() const { return n_; }
  // Asks for the cache lines of `sets` weight sets from `first` (a hint; changes nothing).
  void prefetch(int first, int sets) const {
    const char* from = reinterpret_cast<const char*>(w_.data() + size_t(first) * size_t(n_));
    for (size_t b = 0; b < size_t(sets) * size_t(n_) * sizeof(int32_t); b += 64) __builtin_prefetch(from + b);
  }

  // sum_i x_i w_i, exactly.
  static int64_t mixer_dot(const int* x, const int32_t* w, int n);
  // w_i += (x_i err) >> 14, kept in +-2^22.
  static void mixer_train(int32_t* w, const int* x, int n, int err);

 private:
  int n_, lr_;
  std::vector<int32_t> w_;  // 16.16 fixed point
  const int* x_ = nullptr;
  size_t set_ = 0;
  int p_ = 2048;
  const int16_t* squash_;
};

// Binary arithmetic coder with 32-bit bounds and no carries (bytes leave once the top byte of
// both bounds agrees), coding bits with 12-bit probabilities.
class BinaryEncoder {
 public:
  void encode(int bit, int p1);  // p1 = P(bit = 1), 1..4095
  std::vector<uint8_t> finish();

 private:
  uint32_t x1_ = 0, x2_ = 0xffffffffu;
  std::vector<uint8_t> out_;
};

class BinaryDecoder {
 public:
  BinaryDecoder(const uint8_t* data, size_t n);
  int decode(int p1);
  // Every byte read, none wanted past the end, and the last four are the encoder's final lower
  // bound: anything else means damaged data.
  bool finished_cleanly() const { return pos_ == n_ && !overrun_ && x_ == x1_; }
  bool overrun() const { return overrun_; }

 private:
  uint8_t next_byte();
  const uint8_t* data_;
  size_t n_, pos_ = 0;
  bool overrun_ = false;
  uint32_t x1_ = 0, x2_ = 0xffffffffu, x_ = 0;
};

}  // namespace rb::cm
