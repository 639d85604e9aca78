// Scoring byte streams with a model: the chunkwise forward of training, window by window over a
// stream of any length, carrying the retention state (attention globals restart each window,
// as they were trained).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "src/model/model.h"

namespace rb {

struct EvalResult {
  double nats = 0.0;
  uint64_t bytes = 0;
  double bpb() const;
};

// Scores the stream `context` + `body` (body[0..n)), counting only the body's bytes: the
// context (a header patch, or nothing for --raw) conditions them. Neither is copied whole: the
// body may be a file of any size. `window` is the number of bytes per forward (a
// multiple of P; 0 = the model's training T). progress(done, total), if given, after each window.
EvalResult evaluate_stream(Model& model, const std::vector<uint8_t>& context, const uint8_t* body, size_t n, int window = 0,
                           const std::function<void(uint64_t, uint64_t)>& progress = nullptr);

}  // namespace rb
