// retbyte: the command-line front end. Library code throws rb::Error; this is the one place that
// turns an error into a one-line message and a non-zero exit.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/numerics.h"
#include "codecs/rbz.h"
#include "datasets/dataset.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cuda/cuda.h"
#include "cli/cli.h"
#include "src/common/errors.h"
#include "src/model/model.h"
#include "src/model/safetensors.h"

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
      last_flag_ = argv_[i];
      argv_.erase(argv_.begin() + long(i), argv_.begin() + long(i) + 2);
      last_pos_ = i;
      if (!repeatable_)  // "-n 5 -n 6": say so, rather than "unknown option -n" later
        for (size_t j = i; j < argv_.size(); j++)
          if (argv_[j] == name || (!alt.empty() && argv_[j] == alt))
            throw Error(last_flag_ + " given twice (" + v + " and " + (j + 1 < argv_.size() ? argv_[j + 1] : "?") + ")");
      return v;
    }
  return def;
}

std::vector<std::string> Args::values(const std::string& name, const std::string& alt) {
  repeatable_ = true;
  std::vector<std::string> out;
  for (std::string v; !(v = value(name, alt, "")).empty();) out.push_back(v);
  repeatable_ = false;
  return out;
}

int64_t Args::int_value(const std::string& name, const std::string& alt, int64_t def, int64_t lo, int64_t hi) {
  const std::string v = value(name, alt, "");
  if (v.empty()) return def;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (*end != '\0' || end == v.c_str()) throw Error(last_flag_ + ": '" + v + "' is not an integer");
  if (errno == ERANGE || x < lo || x > hi)  // name the range, not "not an integer" (a number too large is still a number)
    throw Error(last_flag_ + ": " + v + " is out of range (" + std::to_string(lo) + " to " + std::to_string(hi) + ")");
  return int64_t(x);
}

std::vector<std::string> Args::positionals() {
  for (const auto& a : argv_)
    if (a.size() > 1 && a[0] == '-') throw Error("unknown option " + a + " (see --help)");
  return argv_;
}

void Args::no_positionals() {
  const auto rest = positionals();
  if (!rest.empty()) throw Error("unexpected argument '" + rest.front() + "' (see --help)");
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

namespace {
std::atomic<bool> g_stop_requested{false};
volatile sig_atomic_t g_stop_signal = 0;
char g_stop_note[512] = "";
void on_stop_signal(int sig) {
  g_stop_signal = sig;
  g_stop_requested.store(true);
  if (g_stop_note[0]) {
    const ssize_t ignored = write(STDERR_FILENO, g_stop_note, strlen(g_stop_note));
    (void)ignored;
  }
}
}  // namespace

void install_stop_signals(const std::string& note) {
  std::snprintf(g_stop_note, sizeof g_stop_note, "%s", note.c_str());
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}
const std::atomic<bool>& stop_requested() { return g_stop_requested; }
int stop_signal() { return g_stop_signal; }

std::string gpu_summary() {
  std::string why;
  const std::vector<GpuInfo> gpus = cuda_devices(&why);
  if (gpus.empty()) return "none (" + why + ")";
  std::string out;
  for (const GpuInfo& g : gpus)
    out += (out.empty() ? "" : "; ") + std::string("cuda:") + std::to_string(g.index) + " " + g.name + ", " +
           std::to_string(g.memory_bytes >> 20) + " MiB, compute " + std::to_string(g.major) + "." + std::to_string(g.minor);
  return out;
}

double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

const char* const kDeviceHelp =
    "  --device cpu|cuda[:N]  where to compute (default: cuda when a GPU is present, else cpu)\n"
    "  --tf32                 on cuda, let cuBLAS use TF32 tensor cores (faster; products to ~1e-3)\n";

std::unique_ptr<Backend> device_backend(Args& args, int threads, const char* fallback) {
  std::string device = args.value("--device", "", "");
  const bool tf32 = args.flag("--tf32");
  if (device.empty()) device = fallback ? fallback : cuda_devices().empty() ? "cpu" : "cuda";
  if (device == "cpu") {
    if (tf32) throw Error("--tf32 applies to --device cuda only");
    return make_cpu_backend(threads);
  }
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (device.size() > 5) {
      char* end = nullptr;
      const long i = std::strtol(device.c_str() + 5, &end, 10);
      if (*end || end == device.c_str() + 5 || i < 0) throw Error("--device: '" + device + "' is not cuda:N with N a GPU index");
      index = int(i);
    }
    return make_cuda_backend(index, tf32);
  }
  throw Error("--device: '" + device + "' is not cpu, cuda or cuda:N");
}

int Args::threads() {
  const std::string v = value("--threads", "-t", "");
  if (v.empty()) return 0;
  char* end = nullptr;
  const long t = std::strtol(v.c_str(), &end, 10);
  const int most = 4 * available_cpus();
  if (*end != '\0' || end == v.c_str() || t < 1 || t > most)
    throw Error(last_flag_ + ": '" + v + "' threads is not a count from 1 to " + std::to_string(most) + " (4 x the " +
                std::to_string(available_cpus()) + " CPUs here)");
  return int(t);
}

// Whether `path` starts as a .rbz archive does (kRbzMagic); false for anything unreadable, which
// the safetensors reader then reports.
bool has_rbz_magic(const std::string& path) {
  unsigned char magic[4] = {};
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  const size_t got = std::fread(magic, 1, 4, f);
  std::fclose(f);
  return got == 4 && std::memcmp(magic, kRbzMagic, 4) == 0;
}

// What an archive's header says (read_rbz_header checks it whole): what it restores, how it was
// coded and which model it needs.
int rbz_info(const std::string& path) {
  const std::vector<uint8_t> rbz = read_file_bytes(path, max_held_bytes());
  const RbzHeaderInfo h = read_rbz_header(path, rbz);
  const char* what = h.mode == RbzMode::Image ? "pixel bytes" : "bytes";  // FLAC: its samples (doc/rbz_format.md)
  char bpb[32];
  std::snprintf(bpb, sizeof bpb, "%.3f", h.original_size ? 8.0 * double(rbz.size()) / double(h.original_size) : 0.0);
  std::cout << "file:   " << path << "\n"
            << "kind:   .rbz archive (" << rbz_mode_name(h.mode) << " mode), " << rbz.size() << " bytes for " << h.original_size
            << " " << what << " (" << bpb << " bits per byte)\n";
  if (h.model_fingerprint.empty()) {
    std::cout << "model:  none (every block stored)\n";
    return 0;
  }
  std::cout << "model:  fingerprint " << h.model_fingerprint << " (numerics contract v" << h.numerics_version << ")\n"
            << "weights: " << (h.bf16_weights ? "bf16" : "fp32") << " values" << (h.int8_products ? ", int8 products" : "")
            << "\n"
            << "coding: " << (h.one_context ? "each file one context" : "lanes") << "; "
            << (h.mixed ? "context mixing v" + std::to_string(h.mixer_version) : std::string("the model alone"));
  if (h.adapt)
    std::cout << "; adapted every " << h.adapt->round_positions << " positions (" << h.adapt->steps << " steps of "
              << h.adapt->windows << " x " << h.adapt->window << " bytes, lr " << h.adapt->lr << ")";
  std::cout << "\n";
  return 0;
}

int cmd_info(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte info [[-m] FILE] [-t N]\n"
                 "  a model: its config, parameter count and training summary; a training state\n"
                 "  (state.safetensors) or a decode state (--state-out): what it holds and for which model; a .rbz\n"
                 "  archive: what it restores, how it was coded (weights, mixing, lanes) and which model it needs. Without\n"
                 "  FILE: the model that commands use without -m ($RETBYTE_MODEL, installed, or the source tree's)\n";
    return 0;
  }
  std::string path = args.value("--model", "-m", "");
  const int threads = args.threads();
  auto pos = args.positionals();
  if (!path.empty()) pos.insert(pos.begin(), path);
  if (pos.empty()) pos.push_back(model_or_default(""));  // the model commands use without -m
  if (pos.size() != 1) throw Error("info: expected one FILE (see retbyte info --help)");
  path = pos[0];
  if (has_rbz_magic(path)) return rbz_info(path);
  SafetensorsReader file(path);
  const auto& meta = file.metadata();
  auto get = [&](const char* k) {
    auto it = meta.find(k);
    return it == meta.end() ? std::string() : it->second;
  };
  std::cout << "file:   " << path << "\n";
  if (get("format") == "retbyte-decode-state") {
    std::cout << "kind:   decode state (version " << get("version") << ", from generate --state-out)\n"
              << "model:  fingerprint " << get("model_fingerprint") << (get("int8_products") == "1" ? ", int8 products" : "")
              << "\n"
              << "config: " << get("config") << "\n"
              << "at:     " << get("patches_done") << " complete patches\n";
    return 0;
  }
  if (file.has("adam.m")) {
    std::cout << "kind:   training state (resume with train --resume)\n"
              << "config: " << get("config") << "\n"
              << "train:  " << get("train_config") << "\n"
              << "step:   " << get("step") << " of " << get("horizon") << "; " << get("bytes_seen") << " bytes seen\n"
              << "data:   fingerprint " << get("data") << "\n";
    return 0;
  }
  auto backend = make_cpu_backend(threads);
  auto model = Model::load(path, *backend);
  std::cout << "kind:   model\n";
  std::cout << "config: " << config_to_json(model->config()) << "\n";
  std::cout << "params: " << model->num_params() << "\n";
  std::cout << "weights: " << weight_format_name(model->weight_format()) << "\n";
  std::cout << "fingerprint: " << model_fingerprint(*model) << "\n";
  std::cout << "cpu:    " << backend->kernel_path() << " kernels (best here: " << cpu_path_name(best_cpu_path())
            << "; numerics contract v" << kNumericsVersion << ")\n";
  std::cout << "gpu:    " << gpu_summary() << "\n";
  for (const auto& [k, v] : meta)
    if (k != "config") std::cout << k << ": " << v << "\n";
  return 0;
}

// A model file with its weights in another format (bf16: half the bytes, the weights rounded),
// keeping the training summary; the fingerprint changes with the weights.
int cmd_convert(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte convert [-m] MODEL --weights bf16 -o OUT [-f]\n"
                 "  writes MODEL with its weights rounded to bf16 (half the file; what --weights bf16 computes\n"
                 "  with), keeping its config, media form and training summary\n";
    return 0;
  }
  std::string path = args.value("--model", "-m", "");
  const std::optional<WeightFormat> weights = weights_option(args);
  const std::string out = args.value("--output", "-o", "");
  const bool force = args.flag("--force") || args.flag("-f");
  auto pos = args.positionals();
  if (!path.empty()) pos.insert(pos.begin(), path);
  if (pos.size() != 1) throw Error("convert: expected one MODEL (see retbyte convert --help)");
  if (!weights) throw Error("convert: --weights FORMAT is required");
  if (*weights == WeightFormat::I8) throw Error("convert: --weights int8 is for computing (a model file holds fp32 or bf16)");
  if (out.empty()) throw Error("convert: -o OUT is required");
  path = pos[0];
  check_outputs({out}, {path}, force, "-f");
  auto be = make_cpu_backend(1);
  auto model = Model::load(path, *be);
  model->set_weight_format(*weights);
  std::map<std::string, std::string> keep;
  const SafetensorsReader file(path);
  for (const auto& [k, v] : file.metadata())
    if (k != "config" && k != "media" && k != "checksum") keep[k] = v;
  model->save(out, keep);
  std::fprintf(stderr, "%s: %s weights, fingerprint %s\n", out.c_str(), weight_format_name(*weights),
               model_fingerprint(*model).c_str());
  return 0;
}

}  // namespace rb::cli

namespace {
const char* kUsage =
    "usage: retbyte COMMAND [options]\n"
    "commands:\n"
    "  train --config C --data PATH... --out DIR    train on raw files (--steps N, --minutes M, --resume)\n"
    "  eval [-m MODEL] PATH...                       bits per byte per file and modality, beside zstd, xz, gzip\n"
    "  generate [-m MODEL] [-p TEXT] [-n BYTES] ...   stream generated bytes (constant-size state)\n"
    "  compress [-m MODEL] IN... [-o OUT] [-f]         lossless: IN.rbz, bit-exact on any CPU and thread count\n"
    "  decompress [-m MODEL] IN.rbz... [-o OUT] [-f]  restores the original (images: a PNG with identical pixels)\n"
    "  bench fwdbwd|train|decode|kernels|bpb ...      benchmarks (doc/SPEC.md §6; bench --help lists them)\n"
    "  plot RUN_DIR [-o OUT.svg]                      the loss curves as an SVG (train writes DIR/curves.svg)\n"
    "  info [MODEL]                                  config, parameter count, training summary\n"
    "  convert MODEL --weights bf16 -o OUT           the model with bf16 weights (half the file)\n"
    "Without -m, commands use $RETBYTE_MODEL, the installed default model or the source tree's models/.\n"
    "Run 'retbyte COMMAND --help' for the options of one command; retbyte --version.\n";
}

int main(int argc, char** argv) {
  if (argc >= 2 && (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "-V"))) {
    std::string here;
    for (rb::CpuPath p : {rb::CpuPath::Portable, rb::CpuPath::Avx2, rb::CpuPath::Avx512})
      if (rb::cpu_path_supported(p)) here += std::string(here.empty() ? "" : " ") + rb::cpu_path_name(p);
    std::cout << "retbyte " << RETBYTE_VERSION << "\n"
              << "cpu paths: " << RETBYTE_CPU_PATHS << " built in; this CPU runs " << here
              << " (best: " << rb::cpu_path_name(rb::best_cpu_path()) << ")\n"
              << "numerics contract v" << rb::kNumericsVersion << ", .rbz format v" << rb::kRbzVersion << "\n"
              << "gpu: " << (rb::cuda_built() ? "CUDA backend built in; " : "") << rb::cli::gpu_summary() << "\n";
    return 0;
  }
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 1 : 0;
  }
  const std::string cmd = argv[1];
  rb::cli::Args args(std::vector<std::string>(argv + 2, argv + argc));
  try {
    if (cmd == "bench") return rb::cli::cmd_bench(args);
    if (cmd == "info") return rb::cli::cmd_info(args);
    if (cmd == "convert") return rb::cli::cmd_convert(args);
    if (cmd == "train") return rb::cli::cmd_train(args);
    if (cmd == "eval") return rb::cli::cmd_eval(args);
    if (cmd == "plot") return rb::cli::cmd_plot(args);
    if (cmd == "generate") return rb::cli::cmd_generate(args);
    if (cmd == "compress") return rb::cli::cmd_compress(args);
    if (cmd == "decompress") return rb::cli::cmd_decompress(args);
    std::cerr << "retbyte: unknown command '" << cmd << "' (see retbyte --help)\n";
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
