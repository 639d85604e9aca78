#include "generator/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "src/common/dmath.h"

namespace rb {

namespace {
// exp((logit - mx) / temperature) of the 256 logits, taken in `order` (byte order when null);
// returns their sum, added in that order.
double unnormalised(const float* logits, const int* order, double mx, float temperature, std::array<double, 256>& prob) {
  for (int i = 0; i < 256; i++) prob[size_t(i)] = (double(logits[order ? order[i] : i]) - mx) / temperature;
  dmath::exp_many(prob.data(), prob.data(), 256);
  double sum = 0;
  for (int i = 0; i < 256; i++) sum += prob[size_t(i)];
  return sum;
}
}  // namespace

uint8_t sample_byte(const float* logits, const SamplingParams& sp, Rng& rng) {
  if (sp.temperature <= 0.0f) return uint8_t(std::max_element(logits, logits + 256) - logits);
  if (sp.top_k == 0 && sp.top_p >= 1.0f) {  // plain sampling: no ordering needed
    const double mx = *std::max_element(logits, logits + 256);
    std::array<double, 256> prob;
    const double sum = unnormalised(logits, nullptr, mx, sp.temperature, prob);
    const double u = rng.uniform() * sum;
    double cum = 0;
    for (int i = 0; i < 256; i++)
      if (u < (cum += prob[i])) return uint8_t(i);
    return 255;
  }
  // Bytes by decreasing logit (stable: ties keep byte order), probabilities in double.
  std::array<int, 256> order;
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const double mx = logits[order[0]];
  std::array<double, 256> prob;
  const double sum = unnormalised(logits, order.data(), mx, sp.temperature, prob);
  int keep = 256;
  if (sp.top_k > 0) keep = std::min(keep, sp.top_k);
  if (sp.top_p < 1.0f) {
    double cum = 0;
    for (int i = 0; i < keep; i++) {
      cum += prob[i] / sum;
      if (cum >= sp.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (int i = 0; i < keep; i++) kept += prob[i];
  const double u = rng.uniform() * kept;
  double cum = 0;
  for (int i = 0; i < keep; i++) {
    cum += prob[i];
    if (u < cum) return uint8_t(order[i]);
  }
  return uint8_t(order[keep - 1]);
}

}  // namespace rb
