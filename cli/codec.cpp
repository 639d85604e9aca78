// retbyte compress / decompress: zstd's command-line rules (IN -> IN.rbz and back, -o, -c, -f),
// every output written to a temporary file and renamed only when complete and checked.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <map>
#include <memory>

#include "codecs/rbz.h"
#include "datasets/dataset.h"
#include "kernels/cpu/cpu_backend.h"
#include "cli/cli.h"
#include "src/common/errors.h"
#include "src/model/model.h"
#include "src/model/safetensors.h"

namespace rb::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// stdout, or a file that replaces an existing one only with -f (a device or FIFO is written into).
void write_output(const std::string& path, const std::vector<uint8_t>& bytes, bool force) {
  if (path == "-") {
    if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size()) throw Error("stdout: write failed");
    if (std::fflush(stdout) != 0) throw Error(std::string("stdout: write failed (") + std::strerror(errno) + ")");
    return;
  }
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()), force ? Overwrite::Replace : Overwrite::Refuse);
}

// A progress line on stderr for long files: refreshed in place on a terminal, every 30 s otherwise.
struct Progress {
  std::string what;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double last = 0;
  bool tty = isatty(STDERR_FILENO);
  bool shown = false;
  void operator()(uint64_t done, uint64_t total) {
    const double s = seconds_since(t0);
    if (s - last < (tty ? 0.5 : 30.0) || total == 0) return;
    last = s;
    shown = true;
    std::fprintf(stderr, "%s%s: %.0f%% of %.2f MB, %.1f kB/s%s", tty ? "\r\033[K" : "", what.c_str(),
                 100.0 * double(done) / double(total), double(total) / 1e6, double(done) / s / 1e3, tty ? "" : "\n");
  }
  void clear() {
    if (tty && shown) std::fprintf(stderr, "\r\033[K");
    shown = false;
  }
  ~Progress() { clear(); }  // also when coding throws: the error line starts on a clean line
};

}  // namespace

const char* const kAdaptHelp =
    "  --adapt: online adaptation: encoder and decoder take the same training steps on the bytes coded so\n"
    "     far every --adapt-round positions per lane (1024), --adapt-steps steps (4) of --adapt-windows windows (4)\n"
    "     of --adapt-window bytes (1024) at --adapt-lr (3e-4); ~0.3x compression and ~0.5x decompression speed\n";

const char* const kMixHelp =
    "  --no-mix: code with the model's probabilities alone, without context mixing (context models of\n"
    "     orders, words, neighbours or predictors and match models mixed with the model's; codecs/bit_mixer.h)\n";

const char* const kWeightsHelp =
    "  --weights fp32|bf16|int8: bf16 rounds every weight to bf16 and decoding streams half the bytes; a model file\n"
    "     of BF16 tensors is bf16 already. int8 multiplies int8 weights by 7-bit activations (a quarter of fp32's\n"
    "     bytes; ~0.1% more bits per byte; not with --adapt). Bit-exact on every CPU either way; .rbz files\n"
    "     record the format and decompress uses it\n";

const char* const kCodecWeightsHelp =
    "     compress codes with int8 products unless --weights says otherwise or --adapt is given (measured: archives\n"
    "     within 0.01% of bf16's size, decompressing ~1.35x faster); the archive records the choice\n";

void set_codec_weights(Model& model, const std::optional<WeightFormat>& given, bool adapt) {
  if (given)
    model.set_weight_format(*given);
  else if (!adapt && model.backend().has_gemm_i8())
    model.set_weight_format(WeightFormat::I8);
}

std::optional<WeightFormat> weights_option(Args& args) {
  const std::string w = args.value("--weights", "", "");
  if (w.empty()) return std::nullopt;
  return parse_weight_format(w, "--weights");
}

int lanes_option(Args& args) {
  const bool fast = args.flag("--fast");
  const int lanes = int(args.int_value("--lanes", "", 0, 1, 1024));  // 0: not given
  if (fast && lanes) throw Error("--fast and --lanes cannot be used together");
  return fast ? 0 : lanes ? lanes : 1;
}

std::optional<AdaptSettings> adapt_options(Args& args) {
  const bool on = args.flag("--adapt");
  AdaptSettings s;
  const int steps = int(args.int_value("--adapt-steps", "", s.steps, 1, 1 << 20));
  const int round = int(args.int_value("--adapt-round", "", s.round_positions, 1, 1 << 30));
  const int windows = int(args.int_value("--adapt-windows", "", s.windows, 1, 1 << 20));
  const int window = int(args.int_value("--adapt-window", "", s.window, 1, 1 << 30));
  const std::string lr = args.value("--adapt-lr", "", "");
  const bool tuned = steps != int(s.steps) || round != int(s.round_positions) || windows != int(s.windows) ||
                     window != int(s.window) || !lr.empty();
  if (!on) {
    if (tuned) throw Error("--adapt-steps, --adapt-lr, --adapt-round, --adapt-windows and --adapt-window need --adapt");
    return std::nullopt;
  }
  if (steps < 1 || round < 1 || windows < 1 || window < 1) throw Error("--adapt-*: counts must be positive");
  s.steps = uint32_t(steps), s.round_positions = uint32_t(round), s.windows = uint32_t(windows), s.window = uint32_t(window);
  if (!lr.empty()) {
    char* end = nullptr;
    s.lr = std::strtof(lr.c_str(), &end);
    if (*end || end == lr.c_str()) throw Error("--adapt-lr: '" + lr + "' is not a number");
  }
  check_adapt_settings(s, 1, "--adapt");  // P is checked again against the model
  return s;
}

namespace {

// "-" is standard input: the only input of its command, named "stdin" in messages.
void check_stdin_input(const std::vector<std::string>& inputs) {
  if (inputs.size() > 1 && std::find(inputs.begin(), inputs.end(), "-") != inputs.end())
    throw Error("-: standard input can only be the single input");
}
std::string input_name(const std::string& in) { return in == "-" ? "stdin" : in; }
std::vector<uint8_t> read_input_bytes(const std::string& in) {
  return in == "-" ? read_stdin_bytes(max_held_bytes()) : read_file_bytes(in, max_held_bytes());
}

// Commands over many files go on past a bad one (zstd's and gzip's rule): its one line is printed
// and counted, and the exit status is 1 at the end.
struct SkippedFiles {
  const char* command;
  int count = 0;
  void report(const Error& e) {
    std::fprintf(stderr, "retbyte %s: %s\n", command, e.what());
    count++;
  }
};

// Runs a group of files side by side; when that throws, runs them one at a time, so that one bad
// file (refused while the group is prepared, damaged mid-stream) costs only itself.
template <class T, class Run>
void group_or_one_by_one(const std::vector<T>& group, const Run& run, SkippedFiles& skipped) {
  try {
    run(group);
  } catch (const Error& e) {
    if (group.size() == 1) return skipped.report(e);
    for (const T& one : group) {
      try {
        run(std::vector<T>{one});
      } catch (const Error& e1) {
        skipped.report(e1);
      }
    }
  }
}

}  // namespace

int cmd_compress(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte compress [-m MODEL] IN... [-o OUT] [-c] [-f] [--raw] [--verify] [--adapt] [--no-mix] [--weights "
                 "fp32|bf16|int8] [--lanes N | --fast] "
                 "[--segment BYTES] [-t N]\n"
                 "  lossless; writes IN.rbz (or OUT, or stdout with -c; IN - reads stdin and writes stdout unless -o).\n"
                 "  PNG/BMP/PNM images are coded as pixels and 16-bit PCM WAV as samples (decompressing gives a PNG\n"
                 "  with identical pixels / the identical WAV);\n"
                 "  anything else as bytes. --raw: bytes always. --verify: decode what was written before success.\n"
                 "  Decodes bit-exactly on any x86-64 CPU and thread count. -f overwrites existing outputs.\n"
                 "  Each file is coded as one context (its end with its whole beginning in the model's state;\n"
                 "  files over 16 MiB in lanes of 16 MiB). --lanes N: N lanes of at least 64 KiB, each from a fresh\n"
                 "  state (faster to decode, larger); --fast: as many lanes as decoding batches well (64 KiB-1 MiB).\n"
                 "  Several files are coded side by side, each its own context (the same archives as one by one);\n"
                 "  a file that cannot be compressed gets one line and is skipped, the others are done (exit 1).\n"
              << kModelHelp << kAdaptHelp << kMixHelp << kWeightsHelp << kCodecWeightsHelp;
    return 0;
  }
  const std::string model_arg = args.value("--model", "-m", "");
  const std::optional<AdaptSettings> adapt = adapt_options(args);
  const std::optional<WeightFormat> weights = weights_option(args);
  const bool mix = !args.flag("--no-mix");
  std::string out_path = args.value("--output", "-o", "");
  const bool stdout_flag = args.flag("--stdout") || args.flag("-c");
  const bool force = args.flag("--force") || args.flag("-f");
  const bool raw = args.flag("--raw");
  const bool verify = args.flag("--verify");
  const bool model_only = args.flag("--model-only");                         // benchmarks and tests: no stored fallbacks
  const int segment = int(args.int_value("--segment", "", 0, 0, 16 << 20));  // 0: automatic
  const int lanes = lanes_option(args);
  const int threads = args.threads();
  const auto inputs = args.positionals();
  if (inputs.empty()) throw Error("give at least one file to compress (- reads standard input)");
  check_stdin_input(inputs);
  // Standard input goes to standard output unless -o names a file, as with zstd.
  const bool to_stdout = stdout_flag || (inputs[0] == "-" && out_path.empty());
  const std::string model_path = model_or_default(model_arg);
  if ((to_stdout || !out_path.empty()) && inputs.size() > 1) throw Error("-o and -c take a single input file");
  if (to_stdout && !out_path.empty()) throw Error("-o and -c cannot be used together");
  if (to_stdout && isatty(STDOUT_FILENO)) throw Error("stdout is a terminal: refusing to write compressed data there (use -o)");
  std::vector<std::pair<std::string, std::string>> plan;
  std::vector<std::string> outs, ins = inputs;
  for (const std::string& in : inputs) plan.push_back({in, to_stdout ? "-" : !out_path.empty() ? out_path : in + ".rbz"});
  for (const auto& io : plan) outs.push_back(io.second);
  ins.push_back(model_path);
  check_output_conflicts(outs, ins);
  // A file that cannot be compressed (missing, unreadable, refused by its loader, its output in the
  // way) gets its one line and is skipped; the others are compressed; the exit status says so.
  SkippedFiles skipped{"compress"};
  std::vector<std::pair<std::string, std::string>> todo;
  for (const auto& [in, out] : plan) {
    try {
      struct stat st;
      if (in != "-" && ::stat(in.c_str(), &st) != 0) throw Error(in + ": " + std::strerror(errno));
      if (in != "-" && !S_ISREG(st.st_mode)) throw Error(in + ": not a regular file");
      check_output_free(out, force, "-f");
      todo.push_back({in, out});
    } catch (const Error& e) {
      skipped.report(e);
    }
  }
  if (todo.empty()) return 1;
  auto be = make_cpu_backend(threads);
  auto model = Model::load(model_path, *be);
  set_codec_weights(*model, weights, adapt.has_value());
  CompressOptions options;
  options.force_raw = raw;
  options.segment_bytes = size_t(segment);
  options.lanes = lanes;
  options.model_only = model_only;
  options.adapt = adapt;
  options.mix = mix;
  // Verifies (with --verify), writes and reports one archive.
  const auto finish = [&](const std::string& in, const std::string& out, const std::vector<uint8_t>& file,
                          const std::vector<uint8_t>& rbz, const CompressStats& st, double secs, size_t side_by_side,
                          uint64_t group_bytes) {
    if (verify) {
      const std::vector<uint8_t> back = decompress_file(in + " (verifying)", rbz, model.get());
      if (st.mode != RbzMode::Image && back != file)
        throw Error(in + ": verification failed: decoding does not give the file back");
    }
    write_output(out, rbz, force);
    std::string when = side_by_side == 1 ? "" : " (" + std::to_string(side_by_side) + " files side by side)";
    std::fprintf(stderr,
                 "%s: %llu -> %llu bytes (%.3f bits per byte; %s mode, %zu blocks: %zu model, %zu zstd, %zu raw%s%s%s) in %.1f "
                 "s%s, %.1f kB/s%s\n",
                 in.c_str(), (unsigned long long)file.size(), (unsigned long long)rbz.size(),
                 file.empty() ? 0.0 : 8.0 * double(rbz.size()) / double(file.size()), rbz_mode_name(st.mode), st.blocks,
                 st.model_blocks, st.zstd_blocks, st.raw_blocks,
                 st.whole_file_fallback ? "; zstd of the whole file was smaller" : "", st.adapted ? "; adapted" : "",
                 st.mixed ? "; mixed" : "", secs, when.c_str(), double(group_bytes) / std::max(secs, 1e-9) / 1e3,
                 verify ? "; verified" : "");
  };
  // Files are read and coded in groups: each file one context, a group's files side by side
  // (compress_files), each archive written as soon as its group is done.
  for (size_t next = 0; next < todo.size();) {
    std::vector<std::vector<uint8_t>> held;
    std::vector<std::string> paths, outs_of;
    uint64_t bytes = 0;
    for (; next < todo.size() && side_by_side_group_has_room(held.size(), bytes); next++) {
      try {
        held.push_back(read_input_bytes(todo[next].first));
      } catch (const Error& e) {
        skipped.report(e);
        continue;
      }
      paths.push_back(input_name(todo[next].first));
      outs_of.push_back(todo[next].second);
      bytes += held.back().size();
    }
    if (paths.empty()) continue;
    const auto code = [&](const std::vector<size_t>& which) {
      std::vector<std::string> names;
      std::vector<const std::vector<uint8_t>*> files;
      uint64_t group_bytes = 0;
      for (size_t k : which) names.push_back(paths[k]), files.push_back(&held[k]), group_bytes += held[k].size();
      Progress progress{"retbyte compress: " + (names.size() == 1 ? names[0] : std::to_string(names.size()) + " files")};
      options.progress = std::ref(progress);
      std::vector<CompressStats> stats;
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<std::vector<uint8_t>> rbzs = compress_files(names, files, model.get(), options, &stats);
      const double secs = seconds_since(t0);
      progress.clear();
      for (size_t i = 0; i < which.size(); i++) {
        try {
          finish(names[i], outs_of[which[i]], held[which[i]], rbzs[i], stats[i], secs, which.size(), group_bytes);
        } catch (const Error& e) {
          skipped.report(e);
        }
      }
    };
    std::vector<size_t> all(paths.size());
    for (size_t k = 0; k < all.size(); k++) all[k] = k;
    group_or_one_by_one(all, code, skipped);
  }
  return skipped.count ? 1 : 0;
}

int cmd_decompress(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte decompress [-m MODEL] IN.rbz... [-o OUT] [-c] [-f] [-t N]\n"
                 "  restores IN (the name without .rbz; image mode writes a PNG; IN - reads stdin and writes stdout\n"
                 "  unless -o). -m is needed when a block is model-coded (the error names the model's fingerprint).\n"
                 "  -f overwrites existing outputs.\n"
                 "  Several archives of one context each decode side by side (faster than one by one); a damaged\n"
                 "  archive gets one line and is skipped, the others are restored (exit 1).\n";
    return 0;
  }
  const std::string model_path = args.value("--model", "-m", "");
  const std::string out_path = args.value("--output", "-o", "");
  const bool stdout_flag = args.flag("--stdout") || args.flag("-c");
  const bool force = args.flag("--force") || args.flag("-f");
  const int threads = args.threads();
  const auto inputs = args.positionals();
  if (inputs.empty()) throw Error("give at least one .rbz file to decompress (- reads standard input)");
  check_stdin_input(inputs);
  const bool to_stdout = stdout_flag || (inputs[0] == "-" && out_path.empty());
  if ((to_stdout || !out_path.empty()) && inputs.size() > 1) throw Error("-o and -c take a single input file");
  if (to_stdout && !out_path.empty()) throw Error("-o and -c cannot be used together");
  // A damaged or unreadable archive, one whose output is in the way or whose model is missing gets
  // its one line and is skipped; the others are restored; the exit status says so.
  SkippedFiles skipped{"decompress"};
  // Output names need each header (image mode restores a PNG): read and check them all first.
  struct Archive {
    std::string in, out;
    std::vector<uint8_t> bytes;
    RbzHeaderInfo info;
  };
  std::vector<Archive> archives;
  for (const std::string& in : inputs) {
    try {
      Archive a;
      a.in = input_name(in);
      a.bytes = read_input_bytes(in);
      a.info = read_rbz_header(a.in, a.bytes);
      a.out = to_stdout ? "-" : out_path;
      if (a.out.empty()) {
        if (!ends_with(in, ".rbz")) throw Error(in + ": does not end in .rbz; name the output with -o");
        a.out = in.substr(0, in.size() - 4);
        if (a.info.mode == RbzMode::Image && !ends_with(a.out, ".png")) a.out += ".png";
      }
      archives.push_back(std::move(a));
    } catch (const Error& e) {
      skipped.report(e);
    }
  }
  std::vector<std::string> outs, ins = inputs;
  for (const Archive& a : archives) outs.push_back(a.out);
  ins.push_back(model_path);
  check_output_conflicts(outs, ins);
  std::vector<Archive*> todo;
  for (Archive& a : archives) {
    try {
      check_output_free(a.out, force, "-f");
      todo.push_back(&a);
    } catch (const Error& e) {
      skipped.report(e);
    }
  }
  std::unique_ptr<Backend> be;
  std::map<std::string, std::unique_ptr<Model>> loaded;  // by path
  std::map<const Model*, std::string> fingerprints;      // computed when first asked for (-m needs none)
  const auto fingerprint_of = [&](const Model* m) -> const std::string& {
    std::string& f = fingerprints[m];
    if (f.empty()) f = model_fingerprint(*m);
    return f;
  };
  std::string default_path;
  bool no_default = false;  // none was given and none was found: archives that need one are skipped
  const auto load = [&](const std::string& path) {
    std::unique_ptr<Model>& m = loaded[path];
    if (!m) {
      if (!be) be = make_cpu_backend(threads);
      m = Model::load(path, *be);
    }
    return m.get();
  };
  // The model an archive needs: -m, else the default, else an earlier default kept beside it under
  // the archive's fingerprint (so that archives outlive a new default). nullptr: it needs none;
  // false: none was found (reported, the archive is skipped).
  const auto model_for = [&](const Archive& a, Model*& model) {
    model = nullptr;
    if (a.info.model_fingerprint.empty()) return true;
    if (model_path.empty() && default_path.empty() && !no_default) {
      try {
        default_path = model_or_default("");
      } catch (const Error&) {
        no_default = true;
      }
    }
    if (model_path.empty() && no_default) {
      skipped.report(Error(a.in + ": needs the model it was compressed with (fingerprint " + a.info.model_fingerprint +
                           "); give it with -m (no default model was found)"));
      return false;
    }
    model = load(model_path.empty() ? default_path : model_path);
    if (model_path.empty() && fingerprint_of(model) != a.info.model_fingerprint)
      if (const std::string earlier = earlier_default_model(default_path, a.info.model_fingerprint); !earlier.empty())
        model = load(earlier);
    return true;
  };
  // Archives are restored in groups (one-context archives of one model side by side,
  // decompress_files), each output written as soon as its group is done.
  for (size_t next = 0; next < todo.size();) {
    std::vector<Archive*> group;
    Model* model = nullptr;
    uint64_t bytes = 0;
    for (; next < todo.size() && side_by_side_group_has_room(group.size(), bytes); next++) {
      Archive& a = *todo[next];
      Model* needs = nullptr;
      if (!model_for(a, needs)) continue;
      if (needs && model && needs != model) break;  // another model: the next group starts here
      if (needs) model = needs;
      group.push_back(&a);
      bytes += a.info.original_size;
    }
    if (group.empty()) continue;
    const auto restore = [&](const std::vector<Archive*>& which) {
      std::vector<std::string> paths;
      std::vector<const std::vector<uint8_t>*> files;
      uint64_t group_bytes = 0;
      for (Archive* a : which) paths.push_back(a->in), files.push_back(&a->bytes), group_bytes += a->info.original_size;
      Progress progress{"retbyte decompress: " + (paths.size() == 1 ? paths[0] : std::to_string(paths.size()) + " files")};
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<std::exception_ptr> failures;
      const std::vector<std::vector<uint8_t>> restored =
          decompress_files(paths, files, model, std::ref(progress), kSideBySideFiles, &failures);
      const double secs = seconds_since(t0);
      progress.clear();
      for (size_t k = 0; k < which.size(); k++) {
        const Archive& a = *which[k];
        try {
          if (failures[k]) std::rethrow_exception(failures[k]);
          write_output(a.out, restored[k], force);
        } catch (const ModelMismatchError& e) {  // the default model stood in for a missing -m: say which model is needed
          if (!model_path.empty())
            skipped.report(e);
          else
            skipped.report(Error(a.in + ": needs the model it was compressed with (fingerprint " + a.info.model_fingerprint +
                                 "), not the default model (" + fingerprint_of(model) + "); give it with -m"));
          continue;
        } catch (const Error& e) {
          skipped.report(e);
          continue;
        }
        std::string when = which.size() == 1 ? "" : " (" + std::to_string(which.size()) + " files side by side)";
        if (a.out != "-")
          std::fprintf(stderr, "%s: %llu bytes -> %s (%s mode) in %.1f s%s, %.1f kB/s\n", a.in.c_str(),
                       (unsigned long long)restored[k].size(), a.out.c_str(), rbz_mode_name(a.info.mode), secs, when.c_str(),
                       double(group_bytes) / std::max(secs, 1e-9) / 1e3);
      }
    };
    restore(group);  // each archive's failure is reported by itself
  }
  return skipped.count ? 1 : 0;
}

}  // namespace rb::cli
