// retbyte: the command-line front end. Library code throws rb::Error; this is the one place that
// turns an error into a one-line message and a non-zero exit.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include "kernels/backend.h"
#include "src/cli/cli.h"
#include "src/errors.h"
#include "src/model.h"
#include "src/safetensors.h"

namespace rb::cli {

bool Args::flag(const std::string& name) {
  for (size_t i = 0; i < argv_.size(); i++)
    if (argv_[i] == name) {
      argv_.erase(argv_.begin() + long(i));
      return true;
    }
  return false;
}

std::string Args::value(const std::string& name, const std::string& alt, const std::string& def) {
  for (size_t i = 0; i < argv_.size(); i++)
    if (argv_[i] == name || (!alt.empty() && argv_[i] == alt)) {
      if (i + 1 >= argv_.size()) throw Error(argv_[i] + " needs a value");
      std::string v = argv_[i + 1];
      argv_.erase(argv_.begin() + long(i), argv_.begin() + long(i) + 2);
      last_pos_ = i;
      return v;
    }
  return def;
}

int Args::int_value(const std::string& name, const std::string& alt, int def) {
  const std::string v = value(name, alt, "");
  if (v.empty()) return def;
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (*end != '\0' || end == v.c_str() || x < -(1L << 30) || x > (1L << 30))
    throw Error(name + ": '" + v + "' is not an integer");
  return int(x);
}

std::vector<std::string> Args::positionals() {
  for (const auto& a : argv_)
    if (a.size() > 1 && a[0] == '-') throw Error("unknown option " + a + " (see --help)");
  return argv_;
}

std::vector<std::string> Args::leading_positionals() {
  std::vector<std::string> out;
  while (last_pos_ < argv_.size() && !(argv_[last_pos_].size() > 1 && argv_[last_pos_][0] == '-')) {
    out.push_back(argv_[last_pos_]);
    argv_.erase(argv_.begin() + long(last_pos_));
  }
  return out;
}

std::string Args::shift() {
  if (argv_.empty()) return "";
  std::string v = argv_.front();
  argv_.erase(argv_.begin());
  return v;
}

double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

int cmd_info(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte info MODEL\n  prints the model's config, parameter count and training summary\n";
    return 0;
  }
  const auto pos = args.positionals();
  if (pos.size() != 1) throw Error("info: expected one MODEL path (see retbyte info --help)");
  auto backend = make_cpu_backend(1);
  auto model = Model::load(pos[0], *backend);
  SafetensorsReader file(pos[0]);
  std::cout << "model:  " << pos[0] << "\n";
  std::cout << "config: " << config_to_json(model->config()) << "\n";
  std::cout << "params: " << model->num_params() << "\n";
  for (const auto& [k, v] : file.metadata())
    if (k != "config") std::cout << k << ": " << v << "\n";
  return 0;
}

}  // namespace rb::cli

namespace {
const char* kUsage =
    "usage: retbyte COMMAND [options]\n"
    "commands:\n"
    "  train --config C --data PATH... --out DIR    train on raw files (--steps N, --minutes M, --resume)\n"
    "  eval -m MODEL PATH...                         bits per byte per file, beside zstd -19\n"
    "  bench fwdbwd|train --config C [-t N]          speed benchmarks (SPEC §6)\n"
    "  info MODEL                                    config, parameter count, training summary\n"
    "Run 'retbyte COMMAND --help' for the options of one command.\n";
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 1 : 0;
  }
  const std::string cmd = argv[1];
  rb::cli::Args args(std::vector<std::string>(argv + 2, argv + argc));
  try {
    if (cmd == "bench") return rb::cli::cmd_bench(args);
    if (cmd == "info") return rb::cli::cmd_info(args);
    if (cmd == "train") return rb::cli::cmd_train(args);
    if (cmd == "eval") return rb::cli::cmd_eval(args);
    std::cerr << "retbyte: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
  } catch (const rb::Error& e) {
    std::cerr << "retbyte " << cmd << ": " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "retbyte " << cmd << ": out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "retbyte " << cmd << ": " << e.what() << "\n";
    return 1;
  }
}
