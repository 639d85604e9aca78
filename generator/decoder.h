// Generation's view of the stepping engine (src/model/stepper.h): one stream, with the sampler's
// RNG beside it, that can be saved and continued.
//
// A DecodeState is owned by the caller: sized and zero-initialised for one model, cloneable, and
// saved/restored as a versioned file (with a checksum) that records the model's fingerprint. The
// Decoder turns it forward: next_logits() gives the distribution of the next byte, accept(b)
// consumes a byte (sampled, or teacher-forced), ingest() consumes many known bytes fast (whole
// patches through the global model only). Stepping, ingesting and the codec's batched passes give
// bitwise the same logits (the Stepper's contract).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "src/common/output_file.h"
#include "src/common/rng.h"
#include "src/model/model.h"
#include "src/model/stepper.h"

namespace rb {

class DecodeState {
 public:
  explicit DecodeState(Model& model) : state_(model, 1) {}
  std::unique_ptr<DecodeState> clone() const { return std::unique_ptr<DecodeState>(new DecodeState(*this)); }
  // Atomic write; load checks magic, version, checksum, sizes and that `model` is the one it was made with,
  // and puts `model` on the products the state was decoded with (int8 or not: the state records it),
  // so that continuing gives the bytes one uninterrupted run would.
  void save(const std::string& path, Overwrite overwrite = Overwrite::Replace) const;
  static std::unique_ptr<DecodeState> load(const std::string& path, Model& model);

  int64_t bytes_consumed() const { return state_.bytes_consumed(); }
  Rng& rng() { return rng_; }
  StreamState& stream() { return state_; }

 private:
  DecodeState(const DecodeState& other) = default;
  StreamState state_;
  Rng rng_;
};

class Decoder {
 public:
  explicit Decoder(Model& model) : stepper_(model, 1) {}
  // Logits [256] (host memory, valid until the next call) for the next byte.
  const float* next_logits(DecodeState& st) { return stepper_.next_logits(st.stream()); }
  void accept(DecodeState& st, uint8_t byte) { stepper_.accept(st.stream(), &byte); }
  // Consumes known bytes (a prompt): whole patches through the global model only.
  void ingest(DecodeState& st, const uint8_t* bytes, size_t n) { stepper_.ingest(st.stream(), bytes, n); }
  // Benchmarks only: see Stepper::fill_synthetic_context.
  void fill_synthetic_context(DecodeState& st, int64_t patches, int64_t extra, uint64_t seed) {
    stepper_.fill_synthetic_context(st.stream(), patches, extra, seed);
  }

 private:
  Stepper stepper_;
};

}  // namespace rb
