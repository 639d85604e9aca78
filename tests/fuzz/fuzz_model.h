// The fixed model the .rbz fuzz target and its seed maker share: `tiny` with T = 64 and weights
// from seed 1, so the seeds' fingerprint matches and mutated payloads reach the decoder.
#pragma once
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "kernels/cpu/cpu_backend.h"
#include "src/model/model.h"
#include "trainer/train_config.h"

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

// The training run whose state the training-state loader reads: `tiny` at T = 64 on a small text.
inline TrainConfig fuzz_train_config() {
  TrainConfig c;
  c.model = named_config("tiny");
  c.model.T = 64;
  c.model.B = 2;
  c.val_every = 0;
  c.checkpoint_every = 0;
  return c;
}

// Makes dir/data.txt and dir/run/ (fresh); returns dir/run/state.safetensors.
inline std::string prepare_run_folder(const std::string& dir) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/run");
  std::ofstream(dir + "/data.txt") << std::string(2000, 'x') << "fuzzing the training state loader\n";
  return dir + "/run/state.safetensors";
}

}  // namespace rb::fuzz
