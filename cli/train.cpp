// retbyte train / retbyte eval.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "datasets/dataset.h"
#include "codecs/rbz.h"
#include "cli/bpb_report.h"
#include "src/model/safetensors.h"
#include "trainer/curves.h"
#include <sys/stat.h>
#include "cli/cli.h"
#include "src/common/errors.h"
#include "src/model/evaluate.h"
#include "kernels/cpu/cpu_backend.h"
#include "trainer/communicator.h"
#include "trainer/trainer.h"

namespace rb::cli {

namespace {
std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = long(s);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}
}  // namespace

namespace {
int train_ranks(Args& args, Communicator& comm);
void print_train_help();
}  // namespace

// Under mpirun every rank runs this; rank 0 alone prints progress and results. An error on one
// rank takes the whole job down (the others would wait for it forever); a refusal that every
// rank reaches together (ranks given different data) ends the job normally.
int cmd_train(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    print_train_help();
    return 0;
  }
  auto comm = launched_by_mpirun() ? make_mpi_communicator() : make_single_process_communicator();
  try {
    return train_ranks(args, *comm);
  } catch (const std::exception& e) {
    if (comm->size() == 1) throw;
    const bool agreed = dynamic_cast<const RanksDisagree*>(&e) != nullptr;
    if (comm->rank() == 0)
      std::fprintf(stderr, "retbyte train: %s\n", e.what());
    else if (!agreed)
      std::fprintf(stderr, "retbyte train: rank %d: %s\n", comm->rank(), e.what());
    std::fflush(stderr);
    if (!agreed) comm->abort(1);
    return 1;
  }
}

namespace {
void print_train_help() {
  std::cout << "usage: retbyte train --config C --data PATH... --out DIR [--steps N] [--minutes M] [--resume] [-t N]\n"
               "       retbyte train --init MODEL [--config C] --data PATH... --out DIR ...   (fine-tuning)\n"
               "                     [--device cpu|cuda[:N]] [--tf32]\n"
               "  C: tiny, small, base, or a JSON file with model keys (or \"config\": NAME) and training keys\n"
               "     (lr beta1 beta2 eps weight_decay min_lr_ratio warmup_steps steps grad_clip accum_steps seed\n"
               "      val_fraction val_every val_bytes checkpoint_every chunk)\n"
               "  PATH: files or folders (recursive). Writes DIR/model.safetensors, DIR/state.safetensors, DIR/metrics.jsonl\n"
               "  --steps N    total optimiser steps (also the schedule's horizon)\n"
               "  --minutes M  stop after M minutes (the horizon is estimated from the first steps if --steps is not given)\n"
               "  --resume     continue the run in DIR exactly where its last checkpoint left it\n"
               "  --init MODEL start from MODEL's weights instead of random ones (fine-tuning); without --config the run\n"
               "               takes MODEL's shape and media form and the default training settings; with it, the\n"
               "               shapes must match (T and B may differ). --resume continues such a run as any other\n"
               "  Ctrl-C / SIGTERM saves a checkpoint and stops.\n"
               "  mpirun -np N retbyte train ...: data-parallel over N ranks, bitwise the weights of one process; each\n"
               "     rank computes accum_steps/N of every step's micro-batches (accum_steps >= N). -t is per rank\n"
               "     (default: this machine's cores / its ranks). mpirun kills ranks 1 s after Ctrl-C, often before the\n"
               "     checkpoint: add --mca odls_base_sigkill_timeout 60, or signal rank 0 alone. See the README,\n"
               "     \"Training on many machines\".\n"
            << kDeviceHelp;
}

int train_ranks(Args& args, Communicator& comm) {
  const std::string config = args.value("--config", "-c", "");
  const std::string out = args.value("--out", "-o", "");
  const int64_t steps = args.int_value("--steps", "", 0, 0, int64_t(1) << 40);
  const std::string minutes_s = args.value("--minutes", "", "0");
  const bool resume = args.flag("--resume");
  const std::string init = args.value("--init", "", "");
  int threads = args.threads();
  if (threads == 0 && comm.local_size() > 1) threads = std::max(1, available_cpus() / comm.local_size());
  auto be = device_backend(args, threads);
  std::vector<std::string> data;
  args.allow_repeats(true);  // --data a --data b
  for (std::string d; !(d = args.value("--data", "", "")).empty();) {
    data.push_back(d);
    for (auto p : args.leading_positionals()) data.push_back(p);  // --data a b c
  }
  args.allow_repeats(false);
  args.no_positionals();
  if (config.empty() && init.empty()) throw Error("--config is required (tiny, small, base or a JSON file), or --init MODEL");
  if (out.empty()) throw Error("--out DIR is required");
  if (data.empty()) throw Error("--data PATH... is required");
  char* end = nullptr;
  const double minutes = std::strtod(minutes_s.c_str(), &end);
  if (*end || end == minutes_s.c_str() || !std::isfinite(minutes) || minutes < 0)
    throw Error("--minutes: '" + minutes_s + "' is not a non-negative number");
  if (steps < 0) throw Error("--steps must be positive");

  TrainConfig cfg;
  if (!config.empty()) {
    cfg = parse_train_config(config);
  } else {  // fine-tuning with the model's own shape and media form, default training settings
    const auto src = Model::load(init, *be);
    cfg.model = src->config();
    cfg.media = src->media_form;
  }
  check_activation_memory(cfg.model, cfg.model.B, cfg.model.T, config);  // before the run folder is made
  Trainer trainer(cfg, data, out, *be, resume, &comm, init);
  const bool leader = comm.rank() == 0;
  const ByteDataset& ds = trainer.data();
  if (leader) {
    for (const std::string& w : ds.warnings()) std::fprintf(stderr, "retbyte train: %s\n", w.c_str());
    // A GPU's threads are not ours to count: name the device instead.
    const std::string where = be->name() == "cpu" ? std::to_string(be->threads()) + " threads" : "on " + be->name();
    std::fprintf(stderr, "retbyte train: %zu files, %.2f MB packed for training, %.2f MB validation (%s); %zu params; %s%s\n",
                 ds.num_files(), ds.train_bytes() / 1e6, ds.val_file_bytes() / 1e6, ds.split_kind().c_str(),
                 trainer.model().num_params(), where.c_str(),
                 comm.size() > 1 ? (" per rank x " + std::to_string(comm.size()) + " ranks (MPI)").c_str() : "");
    if (cfg.carry_state)
      std::fprintf(stderr, "retbyte train: state carried across windows (%d rows, each walking ~%lld bytes of a stream)\n",
                   cfg.model.B * cfg.accum_steps, (long long)cfg.carry_bytes);
    if (resume)
      std::fprintf(stderr, "retbyte train: resuming %s at step %lld\n", out.c_str(), (long long)trainer.step());
    else if (!init.empty())
      std::fprintf(stderr, "retbyte train: starting from the weights of %s%s\n", init.c_str(),
                   trainer.init_note().empty() ? "" : ("; " + trainer.init_note()).c_str());
  }

  // Ctrl-C / SIGTERM: checkpoint, then stop. Under mpirun a signal may also mean that another rank
  // failed (mpirun then stops every rank, and kills them 1 s later): say so at once.
  install_stop_signals(comm.size() > 1 && leader
                           ? "retbyte train: rank 0 got a stop signal (from mpirun if a rank failed: see its message); " + out +
                                 " keeps its last checkpoint\n"
                           : std::string());

  const bool tty = isatty(STDERR_FILENO);
  double last_print = -1e9, smoothed = 0, reduce_s = 0;
  auto progress = [&](const StepReport& r) {
    reduce_s += r.reduce_s;
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
        if (at > 0 && size_t(at) < sizeof val)
          at += std::snprintf(val + at, sizeof val - size_t(at), " %s %.4f", kind.c_str(), bpb);
    }
    char of[32] = "?";  // the horizon is unknown until a --minutes run has measured its speed
    if (r.horizon >= r.step) std::snprintf(of, sizeof of, "%lld", (long long)r.horizon);
    std::fprintf(stderr, "%sstep %lld/%s | loss %.4f | bpb %.4f%s | lr %.2e | %.1fk B/s | ETA %s%s%s", tty ? "\r\033[K" : "",
                 (long long)r.step, of, r.loss, r.bpb, val, r.lr, smoothed / 1e3,
                 format_duration(per_step * double(left)).c_str(), r.skipped ? " | non-finite: step skipped" : "",
                 tty && r.val_bpb < 0 ? "" : "\n");
  };
  const uint64_t sent_before = comm.bytes_sent();
  const int64_t first_step = trainer.step();
  const auto why = trainer.run(steps, minutes, &stop_requested(), leader ? progress : std::function<void(const StepReport&)>());
  // Rank 0 validates and saves at the end while the others wait (polling, not spinning) for it.
  auto release_the_others = [&] {
    char done = 1;
    comm.broadcast(&done, 1, 0);
  };
  if (comm.size() > 1) {  // the volume of the gradient reduction, for the README's scaling arithmetic
    uint64_t sent = comm.bytes_sent() - sent_before;
    std::vector<uint64_t> all(size_t(leader ? comm.size() : 1));
    comm.gather(&sent, sizeof sent, all.data(), 0);
    if (!leader) {
      release_the_others();
      return 0;  // rank 0's exit status tells how the run ended
    }
    uint64_t total = 0;
    for (uint64_t b : all) total += b;
    const int64_t steps_run = std::max<int64_t>(1, trainer.step() - first_step);
    if (tty) std::fprintf(stderr, "\n");
    std::fprintf(stderr,
                 "retbyte train: %d ranks sent %.2f MB per step in all (%.2f MB per rank; %zu params); "
                 "rank 0 spent %.1f ms per step in the reduction, waits for slower ranks included\n",
                 comm.size(), double(total) / double(steps_run) / 1e6, double(total) / double(steps_run) / 1e6 / comm.size(),
                 trainer.model().num_params(), 1e3 * reduce_s / double(steps_run));
  } else if (tty) {
    std::fprintf(stderr, "\n");
  }
  // A full validation at the end (skipped when interrupted: the user wants to stop now).
  double val = trainer.last_val_bpb();
  if (why != Trainer::Stop::Interrupted) {
    val = trainer.validate(int64_t(1) << 62);
    trainer.save_checkpoint();  // records the final validation in the model's summary
  }
  char val_text[32] = "n/a";  // no validation yet: "n/a" on screen, null in JSON, never -1
  if (val >= 0) std::snprintf(val_text, sizeof val_text, "%.4f", val);
  std::fprintf(stderr, "retbyte train: %s at step %lld; val bpb %s; checkpoint in %s\n",
               why == Trainer::Stop::Interrupted ? "interrupted"
               : why == Trainer::Stop::TimeUp    ? "time is up"
                                                 : "done",
               (long long)trainer.step(), val_text, out.c_str());
  nlohmann::ordered_json j;
  j["step"] = trainer.step();
  j["val_bpb"] = val >= 0 ? nlohmann::ordered_json(val) : nlohmann::ordered_json(nullptr);
  for (const auto& [kind, bpb] : trainer.last_val_bpb_by_modality()) j["val_bpb_" + kind] = bpb;
  j["out"] = out;
  std::cout << j.dump() << std::endl;
  if (comm.size() > 1) release_the_others();
  if (why == Trainer::Stop::Interrupted) return 128 + stop_signal();
  return 0;
}

}  // namespace

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
  write_file_atomic(out, training_curves_svg(metrics, "retbyte: " + metrics), force ? Overwrite::Replace : Overwrite::Refuse);
  std::cerr << "retbyte plot: wrote " << out << "\n";
  return 0;
}

namespace {
// eval --adapt: each file through the codec's lanes without and with online adaptation (every
// block model-coded), in bits per content byte of the ideal code length, and the .rbz sizes.
nlohmann::ordered_json adapt_report(Model& model, const std::vector<std::string>& paths, bool raw, const AdaptSettings& adapt,
                                    bool mix) {
  nlohmann::ordered_json files = nlohmann::json::array();
  double bits[2] = {0, 0};
  uint64_t content = 0;
  std::printf("%-40s %12s %12s %12s %9s %14s %14s\n", "file", "content", "codec bpb", "adapted bpb", "change", "rbz bytes",
              "adapted rbz");
  for (const std::string& path : paths) {
    const std::vector<uint8_t> file = read_file_bytes(path, max_held_bytes());
    CompressStats st[2];
    size_t size[2];
    for (int a = 0; a < 2; a++) {
      CompressOptions o;
      o.force_raw = raw;
      o.model_only = true;
      o.mix = mix;
      if (a) o.adapt = adapt;
      size[a] = compress_file(path, file, &model, o, &st[a]).size();
    }
    const double n = double(std::max<uint64_t>(1, st[0].content_bytes));
    const double bpb[2] = {st[0].model_bits / n, st[1].model_bits / n};
    std::printf("%-40s %12llu %12.4f %12.4f %8.2f%% %14zu %14zu\n", path.c_str(), (unsigned long long)st[0].content_bytes, bpb[0],
                bpb[1], 100.0 * (bpb[1] / std::max(bpb[0], 1e-12) - 1), size[0], size[1]);
    files.push_back({{"file", path},
                     {"mode", rbz_mode_name(st[0].mode)},
                     {"content_bytes", st[0].content_bytes},
                     {"codec_bpb", bpb[0]},
                     {"adapted_bpb", bpb[1]},
                     {"rbz_bytes", size[0]},
                     {"adapted_rbz_bytes", size[1]}});
    bits[0] += st[0].model_bits, bits[1] += st[1].model_bits;
    content += st[0].content_bytes;
  }
  nlohmann::ordered_json j;
  j["codec_bpb"] = content ? bits[0] / double(content) : 0.0;
  j["adapted_bpb"] = content ? bits[1] / double(content) : 0.0;
  j["mixed"] = mix;
  j["adapt"] = {{"round", adapt.round_positions},
                {"steps", adapt.steps},
                {"windows", adapt.windows},
                {"window", adapt.window},
                {"lr", adapt.lr}};
  j["files"] = files;
  return j;
}
}  // namespace

int cmd_eval(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout
        << "usage: retbyte eval [-m MODEL] [--raw] [--adapt ... [--no-mix]] [--by-position [--reset-every B] [--svg OUT.svg] "
           "[-f]]\n"
           "                    [--weights bf16] [-t N] [--device cpu|cuda[:N]] PATH...\n"
           "  --by-position: bpb per position bucket (0-4K, 4-16K, 16-64K, 64-256K, 256K-1M, 1M-4M, 4M+) with the\n"
           "     retention state carried through each file and reset every B bytes (default 4096); --svg draws it\n"
           "  bits per byte of each file, per modality and in total, beside zstd -19, xz -9 and gzip -9 on the\n"
           "  same bytes (and PNG, WebP, JPEG-XL or FLAC where installed). Images and audio (from\n"
           "  content) are scored on their decoded pixels or 16-bit samples; the header is context and\n"
           "  not scored. --raw: the file's bytes, no header.\n"
           "  --adapt: instead, each file through compress's lanes without and with online adaptation (the\n"
           "  ideal code length in bits per content byte, and the .rbz sizes)\n"
        << kModelHelp << kAdaptHelp << kMixHelp << kDeviceHelp
        << "  (--adapt runs the codec, which is CPU-only: it needs bit-exact logits)\n";
    return 0;
  }
  const std::string model_arg = args.value("--model", "-m", "");
  const bool raw = args.flag("--raw");
  const std::optional<AdaptSettings> adapt = adapt_options(args);
  const bool mix = !args.flag("--no-mix");
  const std::optional<WeightFormat> weights = weights_option(args);
  const bool by_position = args.flag("--by-position");
  const std::string svg = args.value("--svg", "", "");
  const bool force = args.flag("--force") || args.flag("-f");
  const int64_t reset_every = args.int_value("--reset-every", "", 4096, 1, int64_t(1) << 40);
  if (!mix && !adapt) throw Error("--no-mix needs --adapt (plain eval scores the model alone)");
  if (by_position && adapt) throw Error("--by-position and --adapt are separate reports");
  if (!svg.empty() && !by_position) throw Error("--svg needs --by-position");
  const int threads = args.threads();
  auto be = device_backend(args, threads, adapt ? "cpu" : nullptr);  // the codec is CPU-only
  const auto paths = args.positionals();
  const std::string model_path = model_or_default(model_arg);
  if (paths.empty()) throw Error("give at least one PATH to evaluate");
  if (adapt && be->name() != "cpu")
    throw Error("eval --adapt runs the codec, which is CPU-only (bit-exact logits): add --device cpu");
  auto model = Model::load(model_path, *be);
  if (weights) model->set_weight_format(*weights);
  if (by_position) {
    if (model->config().global != GlobalKind::Retention)
      throw Error("--by-position needs a retention model (the state it measures)");
    if (!svg.empty()) check_outputs({svg}, paths, force, "-f");
    std::cout << position_report(*model, paths, raw, svg, force, size_t(reset_every)).dump() << std::endl;
    return 0;
  }
  if (adapt) {
    std::cout << adapt_report(*model, paths, raw, *adapt, mix).dump() << std::endl;
    return 0;
  }
  std::cout << bpb_report(*model, paths, {raw, "eval"}).dump() << std::endl;
  return 0;
}

}  // namespace rb::cli
