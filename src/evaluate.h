// Scoring byte streams with a model: the chunkwise forward of training, window by window over a
// stream of any length, carrying the retention state (attention globals restart each window,
// as they were trained).
#pragma once
#include <cstdint>
#include <vector>

#include "src/model.h"

namespace rb {

struct EvalResult {
  double nats = 0.0;
  uint64_t bytes = 0;
  double bpb() const;
};

// Scores stream[score_from ..] given everything before it. `window` is the number of bytes per
// forward (a multiple of P; 0 = the model's training T).
EvalResult evaluate_stream(Model& model, const std::vector<uint8_t>& stream, size_t score_from,
                           int window = 0);

}  // namespace rb
