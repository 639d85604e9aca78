#include "codecs/bit_mixer.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "codecs/bit_mixer_contexts.h"
#include "datasets/media_residuals.h"
#include "src/common/errors.h"

namespace rb {

namespace {

using cm::BitHistory;

constexpr int kDirect = 2;  // orders 0 and 1, in direct tables
constexpr int kMaxModels = kDirect + cm::kMaxHashedContexts;
constexpr int kMatchModels = 2;
constexpr int kMatchMin[kMatchModels] = {12, 6};           // bytes that must repeat
constexpr int kOrderCounted = 6;                           // hashed contexts whose hits pick a weight set
constexpr int kMaxInputs = kMaxModels + kMatchModels + 2;  // + network + bias
constexpr int kMixers = 6;

// 16 bytes: a check byte and the bit histories of the 15 bit positions of one nibble.
struct Bucket {
  uint8_t check;
  uint8_t s[15];
};

int length_bits(size_t n, int lo, int hi) {
  int b = 0;
  while (b < hi && (size_t(1) << b) < n) b++;
  return std::max(lo, b);
}
int apm_bits(size_t lane) { return length_bits(lane, 8, 16) - 8; }  // 256 << this contexts

// The bytes that followed the last occurrence of the current `min` bytes: a pointer into the
// lane's history and how long the match is (verified backwards, then grown while it holds).
struct MatchModel {
  int min = 6;
  std::vector<uint32_t> table;  // hash of the last `min` bytes -> position after them
  uint32_t mask = 0;
  size_t ptr = 0;
  uint32_t len = 0;
  bool miss = false;  // the predicted byte already disagreed in this byte's bits
  bool pending = false;
  uint32_t pending_hash = 0;

  void init(int m, size_t lane) {
    min = m;
    const int bits = length_bits(lane, 10, 22);
    table.assign(size_t(1) << bits, 0);
    mask = (uint32_t(1) << bits) - 1;
  }
  // After each byte, in two halves: begin() hashes the last `min` bytes and asks for the table
  // entry and the predicted byte's cache lines; finish() does the rest, the next time a bit is
  // predicted. In decoding the network steps in between, so the lines arrive meanwhile.
  void begin_update(const std::vector<uint8_t>& h) {
    const size_t t = h.size();
    pending = t >= size_t(min);
    if (len) __builtin_prefetch(&h[ptr]);
    if (!pending) return;
    uint32_t hash = 0;
    for (size_t i = t - size_t(min); i < t; i++) hash = (hash + h[i] + 1) * 0x9E3779B1u;
    pending_hash = (hash ^ hash >> 16) & mask;
    __builtin_prefetch(&table[pending_hash]);
  }
  void finish_update(const std::vector<uint8_t>& h) {
    const size_t t = h.size();
    if (len && h[ptr] == h[t - 1])
      len = std::min<uint32_t>(len + 1, 65535), ptr++;
    else
      len = 0;
    miss = false;
    if (!pending) return;
    const uint32_t hash = pending_hash;
    if (len == 0 && table[hash]) {
      const size_t cand = table[hash];
      uint32_t n = 0;
      while (n < 400 && n < cand && h[cand - 1 - n] == h[t - 1 - n]) n++;
      if (n >= uint32_t(min)) ptr = cand, len = n;
    }
    table[hash] = uint32_t(t);
  }
  // The predicted bit at this bit position and a context for its reliability (0: no prediction).
  int context(const std::vector<uint8_t>& h, int c0, int bitpos, int* bit) const {
    if (!len || miss) return 0;
    const int expected = h[ptr] | 256;
    if ((expected >> (8 - bitpos)) != c0) return 0;
    *bit = (expected >> (7 - bitpos)) & 1;
    const int q = len < 16 ? int(len) : std::min(31, 16 + int(len - 16) / 8);
    return (q * 2 + *bit) * 2 + 1;  // odd: a prediction
  }
};

}  // namespace

// What a lane's mixer learns: context tables, maps, mixer weights and APMs. A lane owns all of it
// (mixer version 2), or shares the context tables and maps with the other lanes of its file and
// keeps its own mixers and APMs (version 3).
struct BitMixer::Statistics {
  int hashed;
  std::vector<Bucket> table;
  uint32_t table_mask;
  std::array<uint8_t, 256> order0{};
  std::vector<uint8_t> order1;
  std::vector<cm::StateMap> maps;
  std::array<cm::StateMap, kMatchModels> match_maps;
  std::vector<cm::Mixer> mixers;
  cm::Mixer final_mixer;
  cm::Apm apm_order0, apm_order1, apm_order2, apm_model, apm_kind;
  uint32_t apm_mask;  // order-1 and order-2 APM contexts, fewer for short content

  // hashed: the lanes' hashed contexts; length: the bytes they code together (sizes the tables).
  // Lanes that share statistics hold two: the shared one without mixers and APMs (`mixing` false)
  // and each lane's own without the context tables (`contexts` false); the unused parts are left
  // minimal.
  Statistics(int hashed_contexts, size_t length, bool contexts = true, bool mixing = true)
      : hashed(hashed_contexts),
        order1(contexts ? 65536 : 0, 0),
        final_mixer(kMixers + 1, mixing ? 8 * 3 : 1, 2, 65536 / kMixers),
        apm_order0(mixing ? 256 : 1, 7),
        apm_order1(mixing ? size_t(256) << apm_bits(length) : 1, 7),
        apm_order2(mixing ? size_t(256) << apm_bits(length) : 1, 7),
        apm_model(mixing ? 256 * 33 : 1, 7),
        apm_kind(mixing ? size_t(cm::kKindSelectors) * 256 : 1, 7) {
    apm_mask = (uint32_t(256) << apm_bits(length)) - 1;
    const int bits = contexts ? length_bits(length * 2, 12, 22) : 0;
    table.assign(size_t(1) << bits, Bucket{});
    table_mask = (uint32_t(1) << bits) - 1;
    for (int i = 0; i < kDirect + hashed; i++) {
      maps.emplace_back(256, 1023);
      for (int st = 0; st < BitHistory::count(); st++) {  // start each state at its counts' estimate
        const int n0 = BitHistory::zeros(uint8_t(st)), n1 = BitHistory::ones(uint8_t(st));
        maps.back().set(size_t(st), (n1 * 2 + 1) * 4096 / (n0 * 2 + n1 * 2 + 2));
      }
    }
    for (int m = 0; m < kMatchModels; m++) {
      match_maps[size_t(m)] = cm::StateMap(128, 1023);
      for (int q = 0; q < 32; q++)  // a prior: a longer match is likelier to go on
        for (int bit = 0; bit < 2; bit++) {
          const int miss = std::max(64, 1024 >> std::min(q, 4));
          match_maps[size_t(m)].set(size_t((q * 2 + bit) * 2 + 1), bit ? 4096 - miss : miss);
        }
    }
    if (!mixing) return;
    const int inputs = kDirect + hashed + kMatchModels + 2;
    const int32_t w0 = 1 << 13;
    mixers.emplace_back(inputs, 256, 6, w0);                        // the partial byte
    mixers.emplace_back(inputs, 17 * 17, 6, w0);                    // both match states
    mixers.emplace_back(inputs, 16 * 8, 6, w0);                     // the network's confidence
    mixers.emplace_back(inputs, 256 * 8, 6, w0);                    // the previous byte
    mixers.emplace_back(inputs, (kOrderCounted + 1) * 8, 6, w0);    // how many orders know this context
    mixers.emplace_back(inputs, cm::kKindSelectors * 8, 6, w0);     // the lane kind's own selector
    for (cm::Mixer& m : mixers) m.set_weight(inputs - 2, 1 << 16);  // the network's input: it starts trusted
  }
};

// A lane's own state: its history, contexts, match models and the bit being coded; what it
// learns lives in `stats` and `own_mixing` (the names below refer into them).
struct BitMixer::State {
  LaneShape shape;
  std::vector<uint8_t> hist;
  cm::LaneContexts contexts;
  int hashed;  // hashed contexts in use
  // Sharing lanes: this lane's own mixers and APMs (which follow each lane's local mix of sources
  // better than shared ones: measured on held-out text, bench/NOTES.md); the rest from `stats`.
  std::unique_ptr<Statistics> own_mixing;
  std::shared_ptr<Statistics> stats;
  std::vector<Bucket>& table;
  const uint32_t table_mask;
  std::array<uint8_t, 256>& order0;
  std::vector<uint8_t>& order1;
  std::vector<cm::StateMap>& maps;
  std::array<cm::StateMap, kMatchModels>& match_maps;
  std::vector<cm::Mixer>& mixers;
  cm::Mixer& final_mixer;
  cm::Apm &apm_order0, &apm_order1, &apm_order2, &apm_model, &apm_kind;
  const uint32_t apm_mask;
  std::array<Bucket*, cm::kMaxHashedContexts> bucket{};
  std::array<uint8_t*, kMaxModels> state{};  // the bit history of each model at this bit
  std::array<MatchModel, kMatchModels> match;
  std::array<int, kMatchModels> match_ctx{};
  std::array<int, kMaxInputs> x{};
  std::array<int, kMixers + 1> mixed{};
  int inputs = 0;
  int c0 = 1, bitpos = 0, nibble_node = 1;
  uint32_t c4 = 0;
  int pr = 2048, p_final = 2048;
  int apm_p[5] = {};
  // The byte's match updates and first lookups wait for its first bit (also the first byte's:
  // lanes that share statistics touch them only while coding, in the coding order).
  bool byte_pending = true;
  const int16_t* stretch = cm::logistic_tables().stretch;
  const uint8_t* next_state = BitHistory::next_table();

  State(const LaneShape& s, std::shared_ptr<Statistics> shared)
      : shape(s),
        contexts(s),
        hashed(contexts.count()),
        own_mixing(shared ? std::make_unique<Statistics>(hashed, s.length, false, true) : nullptr),
        stats(shared ? std::move(shared) : std::make_shared<Statistics>(hashed, s.length)),
        table(stats->table),
        table_mask(stats->table_mask),
        order0(stats->order0),
        order1(stats->order1),
        maps(stats->maps),
        match_maps(stats->match_maps),
        mixers(own_mixing ? own_mixing->mixers : stats->mixers),
        final_mixer(own_mixing ? own_mixing->final_mixer : stats->final_mixer),
        apm_order0(own_mixing ? own_mixing->apm_order0 : stats->apm_order0),
        apm_order1(own_mixing ? own_mixing->apm_order1 : stats->apm_order1),
        apm_order2(own_mixing ? own_mixing->apm_order2 : stats->apm_order2),
        apm_model(own_mixing ? own_mixing->apm_model : stats->apm_model),
        apm_kind(own_mixing ? own_mixing->apm_kind : stats->apm_kind),
        apm_mask(own_mixing ? own_mixing->apm_mask : stats->apm_mask) {
    if (stats->hashed != hashed) throw Error("internal: lanes sharing mixer statistics differ in kind");
    for (int m = 0; m < kMatchModels; m++) match[size_t(m)].init(kMatchMin[m], s.length);
    inputs = kDirect + hashed + kMatchModels + 2;
  }

  Bucket* find(uint32_t h) {
    const uint8_t check = uint8_t(h >> 24);
    const uint32_t i = h & table_mask;
    Bucket* victim = nullptr;
    int lowest = 1 << 30;
    for (uint32_t k = 0; k < 3; k++) {
      Bucket* b = &table[(i ^ k) & table_mask];
      if (b->check == check && b->s[0]) return b;
      const int priority = b->s[0] ? BitHistory::zeros(b->s[0]) + BitHistory::ones(b->s[0]) : -1;
      if (priority < lowest) lowest = priority, victim = b;
    }
    *victim = Bucket{};
    victim->check = check;
    return victim;
  }

  // The cache lines find() probes for `key` (at, at ^ 1 and at ^ 2).
  void prefetch_bucket(uint32_t key) const {
    const uint32_t at = key & table_mask;
    __builtin_prefetch(&table[at & ~3u]);
    __builtin_prefetch(&table[at | 3u]);
  }
  // The order-2 APM's context for partial byte `partial` (c0).
  uint32_t order2_context(uint32_t partial) const { return ((c4 & 0xffff) * 0x9E3779B1u >> 24 << 8 | partial) & apm_mask; }
  // The APM points and partial-byte weights that predicting with partial byte `partial` reads.
  void prefetch_bit(uint32_t partial) const {
    const uint32_t c1 = c4 & 0xff;
    apm_order0.prefetch(partial);
    apm_order1.prefetch((c1 << 8 | partial) & apm_mask);
    apm_order2.prefetch(order2_context(partial));
    apm_kind.prefetch(size_t(contexts.selector()) * 256 + partial);
    mixers[0].prefetch(int(partial), 1);
  }

  // The next byte's first-nibble buckets and match entries, asked for now and looked up at its
  // first bit (see MatchModel::begin_update).
  void begin_byte() {
    const uint32_t* h = contexts.hashes();
    for (int i = 0; i < hashed; i++) prefetch_bucket(h[i]);
    for (MatchModel& m : match) m.begin_update(hist);
    // What the byte's bits read for certain: its order-1 row, the weight sets picked by the
    // previous byte and by the lane's selector, and the first bit's APM points.
    const uint32_t c1 = c4 & 0xff;
    for (int b = 0; b < 256; b += 64) __builtin_prefetch(&order1[c1 << 8 | uint32_t(b)]);
    mixers[3].prefetch(int(c1) * 8, 8);
    mixers[5].prefetch(contexts.selector() * 8, 8);
    prefetch_bit(1);
    byte_pending = true;
  }
  void finish_byte() {
    for (MatchModel& m : match) m.finish_update(hist);
    next_nibble();
    byte_pending = false;
  }

  void next_nibble() {
    const uint32_t* h = contexts.hashes();
    const uint32_t salt = bitpos == 0 ? 0 : uint32_t(c0) * 0x3C6EF372u;
    // Every bucket asked for first, then looked up: the cache misses overlap.
    uint32_t keys[cm::kMaxHashedContexts];
    for (int i = 0; i < hashed; i++) {
      keys[i] = bitpos == 0 ? h[i] : cm::context_hash(h[i], salt, 99);
      prefetch_bucket(keys[i]);
    }
    for (int i = 0; i < hashed; i++) bucket[size_t(i)] = find(keys[i]);
    nibble_node = 1;
  }

  // P(next bit = 1), 12 bits.
  int predict(const uint32_t* model_cum) {
    if (byte_pending) finish_byte();
    const int c1 = int(c4 & 0xff);
    state[0] = &order0[size_t(c0)];
    state[1] = &order1[size_t(c1 << 8 | c0)];
    for (int i = 0; i < hashed; i++) state[size_t(kDirect + i)] = &bucket[size_t(i)]->s[nibble_node - 1];
    int k = 0, known = 0;
    for (int i = 0; i < kDirect + hashed; i++) {
      const uint8_t st = *state[size_t(i)];
      x[size_t(k++)] = stretch[maps[size_t(i)].p(st)];
      if (i >= kDirect && i < kDirect + kOrderCounted && st) known++;
    }
    int match_sel = 0;
    for (int m = 0; m < kMatchModels; m++) {
      int bit = 0;
      const int ctx = match[size_t(m)].context(hist, c0, bitpos, &bit);
      match_ctx[size_t(m)] = ctx;
      x[size_t(k++)] = ctx ? stretch[match_maps[size_t(m)].p(size_t(ctx))] : 0;
      match_sel = match_sel * 17 + (ctx ? 1 + std::min(7, (ctx >> 2) / 2) * 2 + bit : 0);
    }
    // The network: the share of the consistent symbols' probability mass with a 1 here.
    // Its stretch is ln(P(1) / P(0)) from the two halves' masses (Q16 log2 tables, exact on every
    // CPU), finer than stretching a 12-bit probability where the network is confident.
    int st_model = 0;
    if (model_cum) {
      const int width = 256 >> bitpos, base = (c0 - (1 << bitpos)) * width;
      const uint32_t lo = model_cum[base], mid = model_cum[base + width / 2], hi = model_cum[base + width];
      const int64_t log_ratio = int64_t(log2_q16(hi - mid)) - log2_q16(mid - lo);      // each half holds >= 1
      st_model = int(std::clamp<int64_t>((log_ratio * 11629080) >> 32, -2047, 2047));  // x ln 2 x 256
    }
    x[size_t(k++)] = st_model;
    x[size_t(k++)] = 256;
    const int confidence = std::min(15, std::abs(st_model) >> 7);
    mixed[0] = stretch[mixers[0].mix(x.data(), c0)];
    mixed[1] = stretch[mixers[1].mix(x.data(), match_sel)];
    mixed[2] = stretch[mixers[2].mix(x.data(), confidence * 8 + bitpos)];
    mixed[3] = stretch[mixers[3].mix(x.data(), c1 * 8 + bitpos)];
    mixed[4] = stretch[mixers[4].mix(x.data(), known * 8 + bitpos)];
    mixed[5] = stretch[mixers[5].mix(x.data(), contexts.selector() * 8 + bitpos)];
    mixed[kMixers] = 256;
    pr = final_mixer.mix(mixed.data(), bitpos * 3 + (match_ctx[0] ? 2 : match_ctx[1] ? 1 : 0));
    // Secondary estimation: the mixed probability refined by the partial byte, by one and two
    // previous bytes, and by the network's own stretched probability.
    apm_p[0] = apm_order0.refine(pr, size_t(c0));
    apm_p[1] = apm_order1.refine(pr, size_t(uint32_t(c1 << 8 | c0) & apm_mask));
    apm_p[2] = apm_order2.refine(pr, size_t(order2_context(uint32_t(c0))));
    apm_p[3] = apm_model.refine(pr, size_t(c0) * 33 + size_t((st_model + 2048) >> 7));
    apm_p[4] = apm_kind.refine(pr, size_t(contexts.selector()) * 256 + size_t(c0));
    p_final = std::clamp((pr + apm_p[0] + 2 * apm_p[1] + 2 * apm_p[2] + apm_p[3] + apm_p[4] + 4) >> 3, 1, 4095);
    return p_final;
  }

  void update(int bit) {
    if (bitpos < 7) prefetch_bit(uint32_t(c0 * 2 + bit));  // the next bit's rows, asked for before the updates below
    for (int i = 0; i < kDirect + hashed; i++) {
      maps[size_t(i)].update(bit);
      *state[size_t(i)] = next_state[*state[size_t(i)] * 2 + bit];
    }
    for (int m = 0; m < kMatchModels; m++) {
      if (match_ctx[size_t(m)]) {
        match_maps[size_t(m)].update(bit);
        if (((match_ctx[size_t(m)] >> 1) & 1) != bit) match[size_t(m)].miss = true;
      }
    }
    for (cm::Mixer& m : mixers) m.update(bit);
    final_mixer.update(bit);
    apm_order0.update(bit);
    apm_order1.update(bit);
    apm_order2.update(bit);
    apm_model.update(bit);
    apm_kind.update(bit);
    c0 = c0 * 2 + bit;
    bitpos++;
    nibble_node = nibble_node * 2 + bit;
    if (bitpos == 8) {
      const uint8_t byte = uint8_t(c0);
      hist.push_back(byte);
      c4 = c4 << 8 | byte;
      contexts.update(hist);
      c0 = 1, bitpos = 0;
      begin_byte();
    } else if (bitpos == 4) {
      next_nibble();
    }
  }
};

BitMixer::BitMixer(const LaneShape& shape) : s_(std::make_unique<State>(shape, nullptr)) {}
BitMixer::BitMixer(const LaneShape& shape, std::shared_ptr<Statistics> shared)
    : s_(std::make_unique<State>(shape, std::move(shared))) {}
std::shared_ptr<BitMixer::Statistics> BitMixer::shared_statistics(const LaneShape& whole) {
  return std::make_shared<Statistics>(cm::LaneContexts(whole).count(), whole.length, true, false);
}
BitMixer::~BitMixer() = default;
BitMixer::BitMixer(BitMixer&&) noexcept = default;
BitMixer& BitMixer::operator=(BitMixer&&) noexcept = default;

namespace {
// Images in residual form are coded as the plane values the residuals stand for (value =
// prediction + residual), whose bits the pixel contexts predict better than a folded residual's
// (whose last bit is its sign). The network's table is permuted to match.
const uint32_t* values_table(const uint32_t* residual_cum, int prediction, uint32_t* cum) {
  if (!residual_cum) return nullptr;
  cum[0] = 0;
  for (int v = 0; v < 256; v++) {
    const uint8_t r = fold8(v - prediction);
    cum[v + 1] = cum[v] + (residual_cum[r + 1] - residual_cum[r]);
  }
  return cum;
}
}  // namespace

double BitMixer::encode(cm::BinaryEncoder& enc, const uint32_t* model_cum, uint8_t byte) {
  uint32_t cum[257];  // outlives the loop below, which reads it through model_cum
  if (s_->shape.kind == LaneShape::Kind::ImageResiduals) {
    const int pred = s_->contexts.prediction();
    model_cum = values_table(model_cum, pred, cum);
    byte = uint8_t(pred + unfold8(byte));
  }
  double bits = 0;
  for (int i = 7; i >= 0; i--) {
    const int bit = (byte >> i) & 1;
    const int p = s_->predict(model_cum);
    enc.encode(bit, p);
    bits -= std::log2(double(bit ? p : 4096 - p) / 4096.0);
    s_->update(bit);
  }
  return bits;
}

uint8_t BitMixer::decode(cm::BinaryDecoder& dec, const uint32_t* model_cum) {
  const bool values = s_->shape.kind == LaneShape::Kind::ImageResiduals;
  const int pred = values ? s_->contexts.prediction() : 0;
  uint32_t cum[257];
  if (values) model_cum = values_table(model_cum, pred, cum);
  for (int i = 0; i < 8; i++) s_->update(dec.decode(s_->predict(model_cum)));
  return values ? fold8(s_->hist.back() - pred) : s_->hist.back();
}

}  // namespace rb
