// retbyte train / retbyte eval.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "datasets/dataset.h"
#include "src/cli/bpb_report.h"
#include "src/safetensors.h"
#include "trainer/curves.h"
#include <sys/stat.h>
#include "src/cli/cli.h"
#include "src/errors.h"
#include "src/evaluate.h"
#include "trainer/trainer.h"

namespace rb::cli {

namespace {
std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = long(s);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}
}  // namespace

int cmd_train(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout <<
        "usage: retbyte train --config C --data PATH... --out DIR [--steps N] [--minutes M] [--resume] [-t N]\n"
        "  C: tiny, small, base, or a JSON file with model keys (or \"config\": NAME) and training keys\n"
        "     (lr beta1 beta2 eps weight_decay min_lr_ratio warmup_steps steps grad_clip accum_steps seed\n"
        "      val_fraction val_every val_bytes checkpoint_every chunk)\n"
        "  PATH: files or folders (recursive). Writes DIR/model.safetensors, DIR/state.safetensors, DIR/metrics.jsonl\n"
        "  --steps N    total optimiser steps (also the schedule's horizon)\n"
        "  --minutes M  stop after M minutes (the horizon is estimated from the first steps if --steps is not given)\n"
        "  --resume     continue the run in DIR exactly where its last checkpoint left it\n"
        "  Ctrl-C / SIGTERM saves a checkpoint and stops.\n";
    return 0;
  }
  const std::string config = args.value("--config", "-c", "");
  const std::string out = args.value("--out", "-o", "");
  const int64_t steps = args.int_value("--steps", "", 0);
  const std::string minutes_s = args.value("--minutes", "", "0");
  const bool resume = args.flag("--resume");
  const int threads = args.threads();
  std::vector<std::string> data;
  args.allow_repeats(true);  // --data a --data b
  for (std::string d; !(d = args.value("--data", "", "")).empty();) {
    data.push_back(d);
    for (auto p : args.leading_positionals()) data.push_back(p);  // --data a b c
  }
  args.allow_repeats(false);
  args.no_positionals();
  if (config.empty()) throw Error("--config is required (tiny, small, base or a JSON file)");
  if (out.empty()) throw Error("--out DIR is required");
  if (data.empty()) throw Error("--data PATH... is required");
  char* end = nullptr;
  const double minutes = std::strtod(minutes_s.c_str(), &end);
  if (*end || end == minutes_s.c_str() || !std::isfinite(minutes) || minutes < 0) throw Error("--minutes: '" + minutes_s + "' is not a non-negative number");
  if (steps < 0) throw Error("--steps must be positive");

  const TrainConfig cfg = parse_train_config(config);
  check_activation_memory(cfg.model, cfg.model.B, cfg.model.T, config);  // before the run folder is made
  auto be = make_cpu_backend(threads);
  Trainer trainer(cfg, data, out, *be, resume);
  const ByteDataset& ds = trainer.data();
  for (const std::string& w : ds.warnings()) std::fprintf(stderr, "retbyte train: %s\n", w.c_str());
  std::fprintf(stderr, "retbyte train: %zu files, %.2f MB packed for training, %.2f MB validation (%s); %zu params; %d threads\n",
               ds.num_files(), ds.train_bytes() / 1e6, ds.val_file_bytes() / 1e6, ds.split_kind().c_str(),
               trainer.model().num_params(), be->threads());
  if (resume) std::fprintf(stderr, "retbyte train: resuming %s at step %lld\n", out.c_str(), (long long)trainer.step());

  install_stop_signals();  // Ctrl-C / SIGTERM: checkpoint, then stop

  const bool tty = isatty(STDERR_FILENO);
  double last_print = -1e9, smoothed = 0;
  auto progress = [&](const StepReport& r) {
    smoothed = smoothed == 0 ? r.bytes_per_s : 0.9 * smoothed + 0.1 * r.bytes_per_s;
    const bool print = tty || r.val_bpb >= 0 || r.elapsed_s - last_print >= 30 || r.skipped;
    if (!print) return;
    last_print = r.elapsed_s;
    const double per_step = r.elapsed_s / std::max<int64_t>(1, (long long)trainer.step_losses().size());
    const int64_t left = r.horizon >= r.step ? r.horizon - r.step : -1;  // -1: ETA "?"
    char val[160] = "";
    if (r.val_bpb >= 0) {
      int at = std::snprintf(val, sizeof val, " | val %.4f", r.val_bpb);
      for (const auto& [kind, bpb] : r.val_bpb_by_modality)
        if (at > 0 && size_t(at) < sizeof val) at += std::snprintf(val + at, sizeof val - size_t(at), " %s %.4f", kind.c_str(), bpb);
    }
    char of[32] = "?";  // the horizon is unknown until a --minutes run has measured its speed
    if (r.horizon >= r.step) std::snprintf(of, sizeof of, "%lld", (long long)r.horizon);
    std::fprintf(stderr, "%sstep %lld/%s | loss %.4f | bpb %.4f%s | lr %.2e | %.1fk B/s | ETA %s%s%s",
                 tty ? "\r\033[K" : "", (long long)r.step, of, r.loss, r.bpb, val, r.lr,
                 smoothed / 1e3, format_duration(per_step * double(left)).c_str(),
                 r.skipped ? " | non-finite: step skipped" : "", tty && r.val_bpb < 0 ? "" : "\n");
  };
  const auto why = trainer.run(steps, minutes, &stop_requested(), progress);
  if (tty) std::fprintf(stderr, "\n");
  // A full validation at the end (skipped when interrupted: the user wants to stop now).
  double val = trainer.last_val_bpb();
  if (why != Trainer::Stop::Interrupted) {
    val = trainer.validate(int64_t(1) << 62);
    trainer.save_checkpoint();  // records the final validation in the model's summary
  }
  char val_text[32] = "n/a";  // no validation yet: "n/a" on screen, null in JSON, never -1
  if (val >= 0) std::snprintf(val_text, sizeof val_text, "%.4f", val);
  std::fprintf(stderr, "retbyte train: %s at step %lld; val bpb %s; checkpoint in %s\n",
               why == Trainer::Stop::Interrupted ? "interrupted" : why == Trainer::Stop::TimeUp ? "time is up" : "done",
               (long long)trainer.step(), val_text, out.c_str());
  nlohmann::ordered_json j;
  j["step"] = trainer.step();
  j["val_bpb"] = val >= 0 ? nlohmann::ordered_json(val) : nlohmann::ordered_json(nullptr);
  for (const auto& [kind, bpb] : trainer.last_val_bpb_by_modality()) j["val_bpb_" + kind] = bpb;
  j["out"] = out;
  std::cout << j.dump() << std::endl;
  if (why == Trainer::Stop::Interrupted) return 128 + stop_signal();
  return 0;
}

int cmd_plot(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte plot RUN_DIR|metrics.jsonl [-o OUT.svg] [-f]\n"
                 "  draws train and validation bpb against the step as an SVG (default: curves.svg beside the metrics;\n"
                 "  train refreshes RUN_DIR/curves.svg at each validation)\n";
    return 0;
  }
  std::string out = args.value("--output", "-o", "");
  const bool force = args.flag("--force") || args.flag("-f");
  const auto pos = args.positionals();
  if (pos.size() != 1) throw Error("plot: expected one RUN_DIR or metrics.jsonl (see retbyte plot --help)");
  std::string metrics = pos[0];
  struct stat st;
  if (::stat(metrics.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) metrics += "/metrics.jsonl";
  if (out.empty()) {
    const size_t slash = metrics.rfind('/');
    out = (slash == std::string::npos ? std::string() : metrics.substr(0, slash + 1)) + "curves.svg";
  }
  check_outputs({out}, {metrics}, force, "-f");
  write_file_atomic(out, training_curves_svg(metrics, "retbyte: " + metrics));
  std::cerr << "retbyte plot: wrote " << out << "\n";
  return 0;
}

int cmd_eval(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte eval -m MODEL [--raw] [-t N] PATH...\n"
                 "  bits per byte of each file, per modality and in total, beside zstd -19, xz -9 and gzip -9 on the\n"
                 "  same bytes (and PNG, WebP, JPEG-XL or FLAC where installed). Images and audio (from\n"
                 "  content) are scored on their decoded pixels or 16-bit samples; the header is context and\n"
                 "  not scored. --raw: the file's bytes, no header.\n";
    return 0;
  }
  const std::string model_path = args.value("--model", "-m", "");
  const bool raw = args.flag("--raw");
  const int threads = args.threads();
  const auto paths = args.positionals();
  if (model_path.empty()) throw Error("-m MODEL is required");
  if (paths.empty()) throw Error("give at least one PATH to evaluate");
  auto be = make_cpu_backend(threads);
  auto model = Model::load(model_path, *be);
  std::cout << bpb_report(*model, paths, {raw, "eval"}).dump() << std::endl;
  return 0;
}

}  // namespace rb::cli
