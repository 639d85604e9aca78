#include "codecs/byte_frequencies.h"

#include <cstring>

namespace rb {

namespace {
// e^x for x <= 0 in float: 2^(x log2 e) as 2^n * 2^f with a degree-6 polynomial for 2^f, f in
// [0, 1) (relative error ~2e-7; determinism matters here, not the last bit of accuracy).
// Truncation, selects and integer conversion only, written without branches so that the loops
// below run in vector lanes, and every lane computes what the scalar code would.
inline float exp_nonpositive(float x) {
  float t = x * 1.44269504f;
  t = t >= -126.0f ? t : -126.0f;  // below (or NaN): contributes nothing after quantisation
  int n = int(t);                  // toward zero; t <= 0 so floor is n or n - 1
  n -= float(n) > t ? 1 : 0;
  const float f = t - float(n);
  float p = 1.5316e-4f;
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const uint32_t bits = uint32_t(n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
}  // namespace

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void logits_to_cumulative(const float* logits, uint32_t cum[257]) {
  // The largest logit, in 16 interleaved running maxima that start from logits[0] (so a NaN there
  // makes every one NaN, and a NaN elsewhere is skipped, as in one pass). Equal maxima differ at
  // most in the sign of zero, which changes no difference below.
  constexpr int kLanes = 16;
  float lane_max[kLanes];
  for (int j = 0; j < kLanes; j++) lane_max[j] = logits[0];
  for (int i = 0; i < 256; i += kLanes)
    for (int j = 0; j < kLanes; j++) lane_max[j] = logits[i + j] > lane_max[j] ? logits[i + j] : lane_max[j];
  float mx = lane_max[0];
  for (int j = 1; j < kLanes; j++) mx = lane_max[j] > mx ? lane_max[j] : mx;
  float e[256];
  for (int i = 0; i < 256; i++) e[i] = exp_nonpositive(logits[i] - mx);
  double sum = 0.0;
  for (int i = 0; i < 256; i++) sum += double(e[i]);  // one fixed order
  // Every symbol gets 1, the remaining 2^24 - 256 are shared in proportion (rounded down); what
  // rounding leaves over goes to the most likely symbol (the first of equals).
  if (!(sum >= 1.0 && sum <= 256.0)) {  // non-finite logits: a uniform table, the same on both sides
    for (int i = 0; i <= 256; i++) cum[i] = uint32_t(i) << (kFreqBits - 8);
    return;
  }
  const double scale = double(kFreqTotal - 256) / sum;
  uint32_t freq[256], total = 0;
  float e_max = e[0];
  for (int i = 0; i < 256; i++) {
    freq[i] = 1 + uint32_t(int32_t(double(e[i]) * scale));  // under 2^24: the same as converting to unsigned
    total += freq[i];
    e_max = e[i] > e_max ? e[i] : e_max;
  }
  int best = 0;
  while (e[best] != e_max) best++;
  // Each share was rounded down, so total <= kFreqTotal but for double rounding at the margin;
  // the most likely symbol (at least 1/256 of the mass) absorbs the difference either way.
  freq[best] = uint32_t(int64_t(freq[best]) + int64_t(kFreqTotal) - int64_t(total));
  cum[0] = 0;
  for (int i = 0; i < 256; i++) cum[i + 1] = cum[i] + freq[i];
}

}  // namespace rb
