// A training run's configuration: the model (a named config or explicit keys) plus optimiser,
// schedule and data keys, from one JSON object. Unknown keys are an error.
#pragma once
#include <cstdint>
#include <string>

#include "src/model/config.h"
#include "trainer/adamw.h"

namespace rb {

struct TrainConfig {
  ModelConfig model;
  AdamWConfig adamw;          // keys lr, beta1, beta2, eps, weight_decay
  float min_lr_ratio = 0.1f;  // cosine floor, as a fraction of lr
  int64_t warmup_steps = 100;
  int64_t steps = 0;       // schedule horizon; 0 = from --steps, or estimated for --minutes
  float grad_clip = 1.0f;  // global-norm clipping; 0 disables
  int accum_steps = 1;     // micro-batches of B windows per optimiser step
  uint64_t seed = 1;
  double val_fraction = 0.05;
  int64_t val_every = 250;     // steps between validations (0 = only at the end)
  int64_t val_bytes = 262144;  // bytes scored by periodic validations (the final one scores all)
  int64_t checkpoint_every = 500;
  int chunk = 64;                      // retention chunk size
  MediaForm media = MediaForm::Plain;  // images and audio as pixels and samples, or their residuals
  // Carried-state training (truncated backpropagation through time): each batch row walks one
  // training stream window by window from its start, the retention state of one window entering
  // the next (detached); false: independent random windows, each from a zero state.
  bool carry_state = false;
  int64_t carry_bytes = 262144;  // the mean bytes a row walks before starting elsewhere (carried_rows.h)

  // Learning rate at optimiser step `step` (0-based): linear warm-up, then cosine to the floor.
  float lr_at(int64_t step, int64_t horizon) const;
};

TrainConfig parse_train_config(const std::string& name_or_path);  // a named config or a JSON file
std::string train_config_to_json(const TrainConfig& c);

}  // namespace rb
