// Online adaptation (NNCP's idea on top of a pretrained prior): while a file is coded, encoder and
// decoder both stop every `round_positions` positions of the lanes and take the same AdamW steps on
// windows of the bytes coded so far, so the model learns the file as it goes. The steps are
// deterministic (the numerics contract; windows drawn from a fixed-seed RNG), so the decoder
// reproduces the encoder's weights bit for bit on any CPU path and thread count.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codecs/segment_coder.h"
#include "src/model/model.h"
#include "src/common/rng.h"
#include "trainer/adamw.h"

namespace rb {

struct AdaptSettings {
  // Defaults measured on held-out English with the 30-minute text recipe (README): 3.1% fewer bits than
  // without adaptation, at about 0.3x the compression and 0.5x the decompression speed.
  uint32_t round_positions = 1024;  // stream positions of every lane between rounds (a multiple of 1024)
  uint32_t steps = 4;               // optimiser steps per round
  uint32_t windows = 4;             // windows per step
  uint32_t window = 1024;           // bytes per window (a multiple of P)
  float lr = 3e-4f;                 // constant; AdamW without weight decay (the prior is not pulled to 0)
  bool operator==(const AdaptSettings&) const = default;
};

// Throws rb::Error("<what>: ...") for settings a decoder must refuse (also bounds the work a
// damaged or hostile header can ask for).
void check_adapt_settings(const AdaptSettings& s, int P, const std::string& what);

// Keeps a model's weights and restores them when destroyed: adaptation edits the caller's model,
// which must be the pretrained one again for the next file.
class WeightsSnapshot {
 public:
  explicit WeightsSnapshot(Model& model);
  ~WeightsSnapshot();
  WeightsSnapshot(const WeightsSnapshot&) = delete;
  WeightsSnapshot& operator=(const WeightsSnapshot&) = delete;

 private:
  Model& model_;
  std::vector<float> saved_;
};

class OnlineAdapter {
 public:
  // Checks the settings against the model (patch size, activation memory); errors start with `what`.
  OnlineAdapter(Model& model, const AdaptSettings& settings, const std::string& what);
  // One round: `steps` AdamW steps on windows drawn uniformly from the lanes' coded prefixes
  // (patch-aligned, each inside one prefix). Does nothing while no prefix holds a whole window.
  void round(const std::vector<ByteSpan>& coded);
  uint64_t bytes_trained() const { return bytes_trained_; }

 private:
  Model& model_;
  AdaptSettings s_;
  AdamW opt_;
  Rng rng_;
  std::vector<uint8_t> batch_;
  uint64_t bytes_trained_ = 0;
};

}  // namespace rb
