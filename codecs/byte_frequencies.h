// The model's next-byte distribution as integer frequencies for the entropy coder. Encoder and
// decoder call this on bitwise-equal logits (the numerics contract), and it is plain IEEE float
// and double arithmetic in a fixed order (no libm, the build has -ffp-contract=off), so both
// sides get the same table on every CPU.
#pragma once
#include <cstdint>

#include "codecs/rans.h"

namespace rb {

// cum[0] = 0 <= cum[1] < ... : symbol s occupies [cum[s], cum[s + 1]), cum[256] = kFreqTotal,
// every symbol at least 1 wide.
void logits_to_cumulative(const float* logits, uint32_t cum[257]);

// The symbol whose range holds slot (slot < kFreqTotal).
inline int symbol_at(const uint32_t cum[257], uint32_t slot) {
  int lo = 0, hi = 256;  // cum[lo] <= slot < cum[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (cum[mid] <= slot)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace rb
