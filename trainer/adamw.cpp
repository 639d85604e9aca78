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
