#include "trainer/adamw.h"

#include <algorithm>
#include <cmath>

#include "kernels/dmath.h"

namespace rb {

AdamW::AdamW(const std::vector<TensorEntry>& table, size_t num_params)
    : m_(num_params, 0.0f), v_(num_params, 0.0f), decay_mask_(num_params, 0.0f) {
  for (const TensorEntry& e : table)
    if (e.weight_decay)
      for (size_t i = 0; i < e.count; i++) decay_mask_[e.offset + i] = 1.0f;
}

void AdamW::step(float* p, const float* g_raw, float lr, const AdamWConfig& c, float grad_scale) {
  t_++;
  // beta^t with the project's own exp/log: glibc's pow may differ by CPU in the last bit.
  const float bc1 = 1.0f - float(dmath::exp(double(t_) * dmath::log(double(c.beta1))));
  const float bc2 = 1.0f - float(dmath::exp(double(t_) * dmath::log(double(c.beta2))));
  const long long n = (long long)m_.size();
  float* m = m_.data();
  float* v = v_.data();
  const float* mask = decay_mask_.data();
  for (long long i = 0; i < n; i++) {
    const float g = g_raw[i] * grad_scale;
    m[i] = c.beta1 * m[i] + (1.0f - c.beta1) * g;
    v[i] = c.beta2 * v[i] + (1.0f - c.beta2) * g * g;
    const float update = (m[i] / bc1) / (std::sqrt(v[i] / bc2) + c.eps);
    p[i] -= lr * (update + c.weight_decay * mask[i] * p[i]);
  }
}

double global_norm(const float* g, size_t n) {
  // Fixed blocks summed in order: the same result for any thread count.
  const size_t block = 4096, nblocks = (n + block - 1) / block;
  std::vector<double> partial(nblocks, 0.0);
  for (size_t b = 0; b < nblocks; b++) {
    double s = 0.0;
    for (size_t i = b * block; i < std::min(n, (b + 1) * block); i++) s += double(g[i]) * g[i];
    partial[b] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

}  // namespace rb
