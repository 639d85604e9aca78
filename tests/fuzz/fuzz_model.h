// The fixed model the .rbz fuzz target and its seed maker share: `tiny` with T = 64 and weights
// from seed 1, so the seeds' fingerprint matches and mutated payloads reach the decoder.
#pragma once
#include <memory>

#include "kernels/cpu/cpu_backend.h"
#include "src/model.h"

namespace rb::fuzz {

struct FuzzModel {
  std::unique_ptr<Backend> be = make_cpu_backend(1);
  std::unique_ptr<Model> model;
  FuzzModel() {
    ModelConfig c = named_config("tiny");
    c.T = 64;
    model = std::make_unique<Model>(c, *be);
    model->init_random(1);
  }
};

}  // namespace rb::fuzz
