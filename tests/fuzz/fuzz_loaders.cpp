// libFuzzer target: the model, decode-state, training-state and config loaders on arbitrary bytes
// (the first byte picks which). Every input must load or end in an rb::Error; a crash, a sanitizer report or an
// unbounded allocation is a bug.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "generator/decoder.h"
#include "src/model/config.h"
#include "src/common/errors.h"
#include "tests/fuzz/fuzz_model.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static rb::fuzz::FuzzModel fm;
  static const std::string dir = "/tmp/retbyte_fuzz_loaders_" + std::to_string(getpid());
  static const std::string path = rb::fuzz::prepare_run_folder(dir);  // dir/run/state.safetensors
  if (size < 1) return 0;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  try {
    switch (data[0] % 5) {
      case 0:
        rb::Model::load(path, *fm.be);
        break;
      case 1:
        rb::DecodeState::load(path, *fm.model);
        break;
      case 2:
        rb::load_model_config(path);
        break;
      case 3:
        rb::parse_train_config(path);
        break;
      default:
        rb::Trainer(rb::fuzz::fuzz_train_config(), {dir + "/data.txt"}, dir + "/run", *fm.be, true);
        break;
    }
  } catch (const rb::Error&) {}
  return 0;
}
