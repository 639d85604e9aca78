// Seeds for fuzz_loaders: a model file, a decode state, a model config and a training config, each
// behind the selector byte fuzz_loaders reads first. usage: make_loaders_seeds DIR
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "generator/decoder.h"
#include "trainer/trainer.h"
#include "tests/fuzz/fuzz_model.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  rb::fuzz::FuzzModel fm;
  auto seed = [&](const std::string& name, char selector, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << selector << bytes;
  };
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  const std::string tmp = dir + "/.tmp";
  fm.model->save(tmp);
  seed("model", 0, slurp(tmp));
  rb::DecodeState st(*fm.model);
  rb::Decoder dec(*fm.model);
  const uint8_t prompt[] = "RBT\0seed";
  dec.ingest(st, prompt, sizeof prompt - 1);
  st.save(tmp);
  seed("state", 1, slurp(tmp));
  std::remove(tmp.c_str());
  {  // a real training state, two steps into the fuzz run
    const std::string run_dir = dir + "/.run";
    rb::fuzz::prepare_run_folder(run_dir);
    rb::Trainer t(rb::fuzz::fuzz_train_config(), {run_dir + "/data.txt"}, run_dir + "/run", *fm.be, false);
    t.run(2, 0, nullptr, nullptr);
    t.save_checkpoint();
    seed("train_state", 4, slurp(run_dir + "/run/state.safetensors"));
    std::filesystem::remove_all(run_dir);
  }
  seed("config", 2, R"({"config": "tiny", "T": 256, "global": "retention"})");
  seed("train", 3, R"({"config": "tiny", "lr": 0.003, "warmup_steps": 10, "steps": 100, "accum_steps": 2})");
  return 0;
}
