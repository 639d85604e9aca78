// Model-coded segments: each segment is coded from a fresh model state, conditioned on a context
// (the stream header of its mode), so segments decode independently and many decode together in
// lockstep (each step one matrix product of many rows). The encoder knows every byte and runs the
// batched recurrent forward (teacher forcing); the decoder steps byte by byte. Their logits are
// bitwise equal by the numerics contract (batch invariance), hence so are the frequency tables
// the rANS coder sees.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "codecs/context_mixer.h"
#include "src/model/model.h"

namespace rb {

struct ByteSpan {
  const uint8_t* data;
  size_t size;
};
struct MutableByteSpan {
  uint8_t* data;
  size_t size;
};

struct SegmentCoderOptions {
  int lockstep = 32;  // segments coded together (rows of each matrix product)
  int window = 1024;  // encoder: bytes per forward per segment (a multiple of P)
  // progress(bytes done, bytes total) after each step of work
  std::function<void(uint64_t, uint64_t)> progress;
  // Online adaptation: all segments in one lockstep group, and after every `round_positions` stream
  // positions (context included, a multiple of `window`) while positions remain,
  // after_round(positions done). It may change the weights; the lanes carry their states on.
  size_t round_positions = 0;
  std::function<void(size_t)> after_round;
  // Encoder: if set, gets each segment's ideal code length in bits under the frequency tables.
  std::vector<double>* segment_bits = nullptr;
  // Context mixing: empty, or one shape per segment (payload); each lane then codes with a mixer
  // on top of the model: version 2 (kBitMixerVersion, codecs/bit_mixer.h) bit by bit with a
  // binary arithmetic coder, version 1 (codecs/context_mixer.h) byte by byte with rANS.
  std::vector<LaneShape> mix_shapes;
  uint8_t mixer_version = 2;
  // If set, seconds spent stepping the model (`model_s`) and in the codec's own per-byte work:
  // frequency tables, the mixer and rANS (`side_s`). Added to, not reset.
  struct Times {
    double model_s = 0, side_s = 0;
  }* times = nullptr;
  // Decoder, lanes that do not share statistics (files side by side): if set (one entry per
  // payload), a lane whose payload is damaged gets the reason here and decodes nothing more,
  // while the other lanes go on (each row of the batch is independent); otherwise it throws.
  std::vector<std::string>* lane_errors = nullptr;
};
using CoderTimes = SegmentCoderOptions::Times;

// One rANS payload per segment. context.size() must be a multiple of the model's P. The model
// must have a retention global (the attention baseline has no recurrent form).
std::vector<std::vector<uint8_t>> encode_segments(Model& model, const std::vector<uint8_t>& context,
                                                  const std::vector<ByteSpan>& segments, const SegmentCoderOptions& options = {});

// As encode_segments, each segment with its own context (several files coded side by side, each
// file one lane after its own stream header); the contexts must all have one length.
std::vector<std::vector<uint8_t>> encode_lanes(Model& model, const std::vector<ByteSpan>& contexts,
                                               const std::vector<ByteSpan>& segments, const SegmentCoderOptions& options = {});

// Decodes payloads[i] into outputs[i] (whose sizes are the segments' lengths). Throws rb::Error
// ("damaged") when a payload does not decode cleanly.
void decode_segments(Model& model, const std::vector<uint8_t>& context, const std::vector<ByteSpan>& payloads,
                     const std::vector<MutableByteSpan>& outputs, const SegmentCoderOptions& options = {});
// As decode_segments, each payload after its own context (encode_lanes).
void decode_lanes(Model& model, const std::vector<ByteSpan>& contexts, const std::vector<ByteSpan>& payloads,
                  const std::vector<MutableByteSpan>& outputs, const SegmentCoderOptions& options = {});

}  // namespace rb
