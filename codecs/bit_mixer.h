// Context mixing version 2 (README "Compression"): each lane of a model-coded block is coded bit
// by bit with a binary arithmetic coder, each bit's probability mixed from
// - the network: P(bit | the byte's bits so far) from its 256-way distribution (as cmix does);
// - context models keyed by hashed contexts (codecs/bit_mixer_contexts.cpp): for text and other
//   bytes, orders 0-6 and 8, words, word pairs, sparse (skipping) contexts and columns of
//   line-structured data; for images, neighbours and gradients; for audio, linear predictions.
//   Each context keeps a bit history per bit position (cm::BitHistory) that an adaptive map turns
//   into a probability;
// - two match models over the whole lane (the last occurrences of the current 6- and 12-byte
//   strings), whose predicted bit's reliability is learned per match length;
// then several mixers, each with weights selected by a different small context (the partial
// byte, the match state, the network's confidence, the previous byte, how many orders have seen
// this context), a final mixer over their outputs, and APM stages. All integer and in a fixed
// order: bit-exact on every CPU path (cm_parts.h).
#pragma once
#include <memory>

#include "codecs/cm_parts.h"
#include "codecs/context_mixer.h"

namespace rb {

// The mixer version of .rbz files coded bit by bit (version 1 is LaneMixer's byte-wise mixing).
constexpr uint8_t kBitMixerVersion = 2;
// Version 3: the same, with the lanes of one file sharing what their context models learn.
constexpr uint8_t kSharedBitMixerVersion = 3;
// Lanes that share statistics are alive and step together: more than this many (as many as a
// lockstep group of lanes on their own statistics, so memory stays what it was) are coded as
// version 2.
constexpr size_t kMaxSharedLanes = 32;

class BitMixer {
 public:
  explicit BitMixer(const LaneShape& shape);
  // Lanes of one file may share what their context models learn (the hashed context table, the
  // order-0 and order-1 tables and the state maps; version 3), each keeping its own history,
  // contexts, match models, mixers and APMs, so that every lane codes with the statistics of all
  // lanes so far. They must then be coded in one order on both sides, each byte whole: position by
  // position, lanes in index order. `whole`: the file's content as one lane (sizes the tables).
  struct Statistics;
  static std::shared_ptr<Statistics> shared_statistics(const LaneShape& whole);
  BitMixer(const LaneShape& shape, std::shared_ptr<Statistics> shared);
  ~BitMixer();
  BitMixer(BitMixer&&) noexcept;
  BitMixer& operator=(BitMixer&&) noexcept;

  // Codes one byte given the model's cumulative table for it (same contract as
  // logits_to_cumulative; nullptr: no model, as in the side models' own benchmark). Returns its
  // ideal code length in bits (encoder statistics).
  double encode(cm::BinaryEncoder& enc, const uint32_t* model_cum, uint8_t byte);
  uint8_t decode(cm::BinaryDecoder& dec, const uint32_t* model_cum);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace rb
