// AdamW (decoupled weight decay) over the model's flat parameter buffer. Decay applies only to
// tensors the parameter table marks (matrices), never to norms, biases or embeddings.
#pragma once
#include <cstddef>
#include <vector>

#include "kernels/backend.h"
#include "src/model/params.h"

namespace rb {

struct AdamWConfig {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
};

// The moments and the decay mask live on the backend (device memory on a GPU): the trainer never
// touches them from the host except to save, load or broadcast them.
class AdamW {
 public:
  AdamW(Backend& be, const std::vector<TensorEntry>& table, size_t num_params);
  // One update with learning rate `lr` (the schedule lives with the caller) on the gradient
  // grads * grad_scale (clipping and accumulation folded into one factor).
  void step(Backend& be, float* params, const float* grads, float lr, const AdamWConfig& cfg, float grad_scale = 1.0f);
  long long steps_taken() const { return t_; }
  void set_steps_taken(long long t) { t_ = t; }
  size_t size() const { return m_.size(); }
  // Host copies of the first and second moments, and their replacement (each num_params floats).
  std::vector<float> download_m() const;
  std::vector<float> download_v() const;
  void upload_moments(const float* m, const float* v);

 private:
  Backend& be_;
  Buffer m_, v_, decay_mask_;
  long long t_ = 0;
};

// Global L2 norm of a gradient buffer, summed in a fixed order (double accumulators).
double global_norm(Backend& be, const float* g, size_t n);

}  // namespace rb
