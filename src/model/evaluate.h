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

// Nats and bytes of a stream's body by position: bucket i holds positions [edges[i], edges[i+1]).
struct PositionBuckets {
  std::vector<uint64_t> edges;  // increasing, from 0; the last bucket runs to the end
  std::vector<double> nats;
  std::vector<uint64_t> bytes;
  // 0-4K, 4-16K, 16-64K, 64-256K, 256K-1M, 1M-4M, 4M and on.
  static PositionBuckets standard();
  void add(uint64_t position, double nats_of_byte);
};

// Scores the stream `context` + `body` (body[0..n)), counting only the body's bytes: the
// context (a header patch, or nothing for --raw) conditions them. Neither is copied whole: the
// body may be a file of any size. `window` is the number of bytes per forward (a
// multiple of P; 0 = the model's training T). progress(done, total), if given, after each window.
// reset_every > 0 (a multiple of the window) restarts the retention state every that many
// stream bytes, as a model with no memory past it would see them; `by_position` (if given)
// receives every scored byte by its position in the body.
EvalResult evaluate_stream(Model& model, const std::vector<uint8_t>& context, const uint8_t* body, size_t n, int window = 0,
                           const std::function<void(uint64_t, uint64_t)>& progress = nullptr, size_t reset_every = 0,
                           PositionBuckets* by_position = nullptr);

}  // namespace rb
