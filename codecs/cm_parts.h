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
  void update(int bit);

 private:
  std::vector<uint32_t> t_;  // probability in the high 22 bits, count in the low 10
  size_t last_ = 0;
  int limit_ = 255;
};

// Adaptive probability map (secondary estimation): refines a probability in a context by
// interpolating between 33 learned points along its stretched value.
class Apm {
 public:
  Apm(size_t contexts, int rate);
  int refine(int p, size_t context);
  void update(int bit);

 private:
  std::vector<uint16_t> t_;  // 16-bit probabilities
  size_t index_ = 0;         // the point nearer the last input
  int rate_;
};

// A gated linear mixer in the logistic domain: p = squash(sum_i w_i x_i) with one weight vector
// per selector value, trained online to lower the code length (w += lr * x * (bit - p)).
class Mixer {
 public:
  Mixer(int inputs, int sets, int learning_rate, int32_t initial_weight);
  void set_weight(int input, int32_t w);  // that input's weight in every set
  int mix(const int* x, int set);         // returns p; remembers x and the set for update()
  void update(int bit);
  int inputs() const { return n_; }

 private:
  int n_, lr_;
  std::vector<int32_t> w_;  // 16.16 fixed point
  const int* x_ = nullptr;
  size_t set_ = 0;
  int p_ = 2048;
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
