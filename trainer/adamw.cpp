#include "trainer/adamw.h"

#include <algorithm>
#include <cmath>

#include "src/common/dmath.h"

namespace rb {

AdamW::AdamW(Backend& be, const std::vector<TensorEntry>& table, size_t num_params)
    : be_(be), m_(be, num_params), v_(be, num_params), decay_mask_(be, num_params) {
  std::vector<float> mask(num_params, 0.0f);
  for (const TensorEntry& e : table)
    if (e.weight_decay)
      for (size_t i = 0; i < e.count; i++) mask[e.offset + i] = 1.0f;
  be.upload(decay_mask_.data(), mask.data(), num_params);
}

std::vector<float> AdamW::download_m() const {
  std::vector<float> h(m_.size());
  be_.download(h.data(), m_.data(), h.size());
  return h;
}

std::vector<float> AdamW::download_v() const {
  std::vector<float> h(v_.size());
  be_.download(h.data(), v_.data(), h.size());
  return h;
}

void AdamW::upload_moments(const float* m, const float* v) {
  be_.upload(m_.data(), m, m_.size());
  be_.upload(v_.data(), v, v_.size());
}

void AdamW::step(Backend& be, float* p, const float* g, float lr, const AdamWConfig& c, float grad_scale) {
  t_++;
  // beta^t with the project's own exp/log: glibc's pow may differ by CPU in the last bit.
  const float bc1 = 1.0f - float(dmath::exp(double(t_) * dmath::log(double(c.beta1))));
  const float bc2 = 1.0f - float(dmath::exp(double(t_) * dmath::log(double(c.beta2))));
  be.adamw_step(p, g, m_.data(), v_.data(), decay_mask_.data(), m_.size(),
                AdamWStep{lr, c.beta1, c.beta2, c.eps, c.weight_decay, bc1, bc2, grad_scale});
}

double global_norm(Backend& be, const float* g, size_t n) { return std::sqrt(be.sum_squares(g, n)); }

}  // namespace rb
