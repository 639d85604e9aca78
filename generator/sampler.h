// Choosing the next byte from logits: temperature, top-k, top-p (nucleus), greedy at temperature
// 0. Deterministic for a given Rng state.
#pragma once
#include <cstdint>

#include "src/common/rng.h"

namespace rb {

struct SamplingParams {
  float temperature = 0.8f;  // 0: greedy (argmax, lowest byte on ties)
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
};

uint8_t sample_byte(const float* logits, const SamplingParams& p, Rng& rng);

}  // namespace rb
