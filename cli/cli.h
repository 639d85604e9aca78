// Shared pieces of the command-line front end: argument access and the subcommand entry points.
#pragma once
#include <atomic>
#include <memory>
#include <optional>
#include <cstdint>
#include <string>
#include <vector>

namespace rb {
enum class WeightFormat;
struct AdaptSettings;
class Backend;
class Model;
}  // namespace rb

namespace rb::cli {

// Simple flag reader: flags may appear in any order; values follow their flag.
class Args {
 public:
  Args(std::vector<std::string> argv) : argv_(std::move(argv)) {}
  bool flag(const std::string& name);  // consumes a boolean flag
  std::string value(const std::string& name, const std::string& alt = "", const std::string& def = "");
  // An integer option: def when absent; anything that is not an integer, or outside lo..hi, is an
  // error that names the option and (for a number) the allowed range.
  int64_t int_value(const std::string& name, const std::string& alt, int64_t def, int64_t lo, int64_t hi);
  // Every value of an option that may repeat; value() refuses a repeated option.
  std::vector<std::string> values(const std::string& name, const std::string& alt = "");
  void allow_repeats(bool on) { repeatable_ = on; }  // around a loop of value() calls
  // -t/--threads: 0 (every core) when absent, else 1 .. 4 x the cores this process may use.
  int threads();
  std::vector<std::string> positionals();
  void no_positionals();  // errors on anything left over (a stray word or an unknown option)
  std::string shift();    // removes and returns the first argument ("" if none)
  // Removes and returns the arguments that follow a just-consumed flag up to the next flag
  // (for "--data a b c"); call right after value().
  std::vector<std::string> leading_positionals();  // whatever is left (errors on unknown flags)
 private:
  std::vector<std::string> argv_;
  size_t last_pos_ = 0;      // where value() last removed a flag
  std::string last_flag_;    // the spelling the user typed, for error messages
  bool repeatable_ = false;  // inside values()
};

// SIGINT/SIGTERM set a flag that long-running commands poll, so they can finish cleanly
// (checkpoint, remove temporary files); a second signal kills at once. A `note` is written to
// stderr the moment a signal arrives (a process that may be killed before it can say more).
void install_stop_signals(const std::string& note = "");
const std::atomic<bool>& stop_requested();
int stop_signal();

// zstd's rules for files, checked before any work starts: no output overwrites an existing file
// without force (the error names force_flag), none is one of the inputs or a folder, no two are
// the same file. "" and "-" (stdout) are skipped.
void check_outputs(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs, bool force,
                   const std::string& force_flag);
// All of standard input (compress - and decompress -), at most `limit` bytes; refuses a terminal.
std::vector<uint8_t> read_stdin_bytes(uint64_t limit);
// The two halves of check_outputs. Between files: no output is an input or another output (a
// mistake in the command: nothing is done). Of one output: not a folder, not an existing file
// without force (compress and decompress skip that file, say why, and go on with the others).
void check_output_conflicts(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs);
void check_output_free(const std::string& out, bool force, const std::string& force_flag);
bool same_file(const std::string& a, const std::string& b);  // both exist and are one file

// -m MODEL when given, else the default model: $RETBYTE_MODEL, then PREFIX/share/retbyte beside
// the installed binary, then the source tree's models/ folder. Throws an rb::Error naming the
// places it looked when none holds one.
std::string model_or_default(const std::string& given);
// A model that was the default before, kept beside the default as retbyte-FINGERPRINT.safetensors
// so that archives made with it still decompress without -m; empty when there is none.
std::string earlier_default_model(const std::string& default_path, const std::string& fingerprint);

int cmd_bench(Args& args);
int bench_mixer(Args& args);  // cli/bench_mixer.cpp
int cmd_info(Args& args);
int cmd_convert(Args& args);  // cli/main.cpp: a model with its weights in another format
int cmd_train(Args& args);
int cmd_eval(Args& args);
int cmd_plot(Args& args);
int cmd_generate(Args& args);
int cmd_compress(Args& args);
int cmd_decompress(Args& args);
double peak_rss_mb();
// --device cpu|cuda[:N] and --tf32 (consumed): the backend to compute on; without --device,
// `fallback` if given, else cuda when a GPU is present. An rb::Error names what is wrong (no GPU,
// not built with CUDA, a bad index).
std::unique_ptr<Backend> device_backend(Args& args, int threads, const char* fallback = nullptr);
extern const char* const kDeviceHelp;
std::string gpu_summary();  // the GPUs this process sees, or why none
// --adapt and its tuning options (--adapt-steps N, --adapt-lr X, --adapt-round N, --adapt-windows N,
// --adapt-window N); nullopt without --adapt. The tuning options alone are an error.
std::optional<AdaptSettings> adapt_options(Args& args);
// --lanes N | --fast (consumed) as CompressOptions::lanes: 1 (one context per file) when absent,
// N, or 0 for --fast; both together are an error.
int lanes_option(Args& args);
// --weights fp32|bf16|int8 (consumed): nullopt when absent.
std::optional<WeightFormat> weights_option(Args& args);
// The products compress (and bench codec) code with: --weights when given, else int8, except with
// --adapt (which trains fp32 weights): then the model's own format.
void set_codec_weights(Model& model, const std::optional<WeightFormat>& given, bool adapt);
extern const char* const kCodecWeightsHelp;
extern const char* const kWeightsHelp;
extern const char* const kModelHelp;  // where a command finds its model without -m
extern const char* const kAdaptHelp;
extern const char* const kMixHelp;

}  // namespace rb::cli
