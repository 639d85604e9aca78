// retbyte bench: speed measurements with a baseline (OpenBLAS sgemm) taken in the same run.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <tuple>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include <cblas.h>
#include <zstd.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "codecs/rbz.h"
#include "datasets/dataset.h"
#include "cli/bpb_report.h"
#include "cli/cli.h"
#include "src/common/errors.h"
#include "src/model/model.h"
#include "src/common/rng.h"
#include "trainer/trainer.h"
#include "generator/decoder.h"
#include "generator/sampler.h"

#include <unistd.h>
#include <filesystem>
#include <functional>
#include <fstream>

namespace rb::cli {

namespace {

// Read bandwidth of one thread streaming a buffer far larger than any cache (best of 3).
double memory_read_gb_per_s() {
  std::vector<float> buf(size_t(64) << 20, 1.0f);  // 256 MiB
  double best = 1e30, sink = 0;
  for (int rep = 0; rep < 3; rep++) {
    const auto t0 = std::chrono::steady_clock::now();
    float acc[16] = {};
    for (size_t i = 0; i < buf.size(); i += 16)
      for (int l = 0; l < 16; l++) acc[l] += buf[i + l];
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    for (float a : acc) sink += a;
  }
  if (sink == 42.0) std::printf(" ");  // keeps the loop
  return double(buf.size() * sizeof(float)) / best / 1e9;
}
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// sgemm GFLOP/s on the largest product shape of a training step (local MLP: M x 4D_L x D_L),
// through the backend (our AVX-512 kernel where the CPU has it) or straight through OpenBLAS.
double time_gflops(double flop_per_call, double budget_s, const std::function<void()>& run) {
  run();
  int reps = 0;
  const double t0 = now_s();
  double t = t0;
  while (t - t0 < budget_s) {
    run();
    reps++;
    t = now_s();
  }
  return flop_per_call * reps / (t - t0) / 1e9;
}

// The FMA peak of a CPU path: one thread running independent FMA chains, times `threads`.
double fma_peak_gflops(CpuPath path, int threads) {
  const CpuKernels kern = cpu_kernels(path);
  const int64_t iters = path == CpuPath::Portable ? 2000000 : 20000000;
  volatile float sink = 0.0f;
  return threads * time_gflops(double(iters) * 12 * kern.lanes * 2, 0.3, [&] { sink = sink + kern.fma_probe(iters); });
}

double measure_sgemm_gflops(Backend& be, int M, int N, int K, bool openblas) {
  std::vector<float> A(size_t(M) * K, 0.01f), B(size_t(N) * K, 0.02f), C(size_t(M) * N);
  if (openblas)
    return time_gflops(2.0 * M * N * K, 1.0, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N);
    });
  Buffer a(be, A.size()), b(be, B.size()), c(be, C.size());  // the backend's memory (a GPU's, on cuda)
  be.upload(a.data(), A.data(), A.size());
  be.upload(b.data(), B.data(), B.size());
  return time_gflops(2.0 * M * N * K, 1.0, [&] {
    be.gemm(false, true, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N);
    be.synchronize();
  });
}

int bench_fwdbwd(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte bench fwdbwd [--config small] [--global retention|attention] [-t N] [--steps 5] [--chunk 64]\n"
                 "                            [--device cpu|cuda[:N]] [--tf32]\n"
                 "  times forward+backward of one training step (B x T bytes) and prints a JSON line\n"
              << kDeviceHelp;
    return 0;
  }
  ModelConfig cfg = load_model_config(args.value("--config", "", "small"));
  const std::string global = args.value("--global", "", "");
  if (!global.empty()) {
    if (global != "retention" && global != "attention") throw Error("--global must be retention or attention");
    cfg.global = global == "retention" ? GlobalKind::Retention : GlobalKind::Attention;
  }
  const int threads = args.threads();
  const int steps = int(args.int_value("--steps", "", 5, 1, 1 << 20));
  const int chunk = int(args.int_value("--chunk", "", 64, 1, 1 << 20));
  auto be = device_backend(args, threads);
  args.no_positionals();
  if (steps <= 0) throw Error("--steps must be positive");

  Model model(cfg, *be);
  model.retention_chunk = chunk;
  model.init_random(1);
  Rng rng(7);
  std::vector<uint8_t> x(size_t(cfg.B) * cfg.T);
  for (auto& b : x) b = uint8_t(rng.below(256));

  model.zero_grad();
  model.forward(x.data(), cfg.B, cfg.T, Model::Mode::Train);  // warm-up (allocates activations)
  model.backward();
  double fwd_s = 0, bwd_s = 0, loss = 0;
  for (int s = 0; s < steps; s++) {
    const double t0 = now_s();
    loss = model.forward(x.data(), cfg.B, cfg.T, Model::Mode::Train);
    be->synchronize();
    const double t1 = now_s();
    model.backward();
    be->synchronize();
    const double t2 = now_s();
    fwd_s += t1 - t0;
    bwd_s += t2 - t1;
  }
  const double bytes = double(cfg.B) * cfg.T * steps;
  const double total = fwd_s + bwd_s;
  const double flops = 3.0 * model.forward_flops(cfg.B, cfg.T) * steps;  // backward ~ 2x forward
  const double sgemm = measure_sgemm_gflops(*be, cfg.B * cfg.T, 4 * cfg.D_L, cfg.D_L, false);
  const double openblas = measure_sgemm_gflops(*be, cfg.B * cfg.T, 4 * cfg.D_L, cfg.D_L, true);

  std::printf("config        %s  (%zu params, B=%d T=%d, %d threads, chunk %d, %s kernels)\n", config_to_json(cfg).c_str(),
              model.num_params(), cfg.B, cfg.T, be->threads(), chunk, be->kernel_path().c_str());
  std::printf("forward       %8.1f ms/step\n", 1e3 * fwd_s / steps);
  std::printf("backward      %8.1f ms/step\n", 1e3 * bwd_s / steps);
  std::printf("fwd+bwd       %8.0f bytes/s\n", bytes / total);
  std::printf("model         %8.1f GFLOP/s\n", flops / total / 1e9);
  std::printf("sgemm         %8.1f GFLOP/s retbyte, %.1f GFLOP/s OpenBLAS  (%d x %d x %d, this run)\n", sgemm, openblas,
              cfg.B * cfg.T, 4 * cfg.D_L, cfg.D_L);
  std::printf("peak RSS      %8.1f MB   loss %.4f\n", peak_rss_mb(), loss);
  nlohmann::ordered_json j;
  j["bench"] = "fwdbwd";
  j["config"] = nlohmann::json::parse(config_to_json(cfg));
  j["threads"] = be->threads();
  j["cpu_path"] = be->kernel_path();
  j["steps"] = steps;
  j["bytes_per_s"] = bytes / total;
  j["forward_ms"] = 1e3 * fwd_s / steps;
  j["backward_ms"] = 1e3 * bwd_s / steps;
  j["model_gflops"] = flops / total / 1e9;
  j["sgemm_gflops"] = sgemm;
  j["openblas_sgemm_gflops"] = openblas;
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}
}  // namespace

// The real training loop (data sampling, forward, backward, clipping, AdamW) on a temporary file
// of random bytes; checkpoints and validation are off so only the steps are timed.
int bench_train(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte bench train [--config small] [-t N] [--steps 6] [--device cpu|cuda[:N]] [--tf32]\n"
                 "  times optimiser steps of the training loop (AdamW included) and prints a JSON line\n"
              << kDeviceHelp;
    return 0;
  }
  TrainConfig cfg = parse_train_config(args.value("--config", "", "small"));
  const int threads = args.threads();
  const int steps = int(args.int_value("--steps", "", 6, 2, 1 << 20));
  auto be = device_backend(args, threads);
  args.no_positionals();
  if (steps < 2) throw Error("--steps must be at least 2 (the first step is a warm-up)");
  cfg.val_every = 0;
  cfg.checkpoint_every = 0;
  cfg.val_fraction = 0;
  const std::string dir = std::filesystem::temp_directory_path().string() + "/retbyte-bench-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};
  {
    Rng rng(3);
    std::string bytes(size_t(4) << 20, '\0');
    for (auto& b : bytes) b = char(rng.below(256));
    std::ofstream(dir + "/data.bin", std::ios::binary) << bytes;
  }
  Trainer trainer(cfg, {dir + "/data.bin"}, dir + "/out", *be, false);
  double timed_s = 0, timed_bytes = 0;
  trainer.run(steps, 0, nullptr, [&](const StepReport& r) {
    if (r.step == 1) return;  // warm-up: allocations, first touches
    timed_bytes += double(cfg.model.B) * cfg.model.T * cfg.accum_steps;
    timed_s += double(cfg.model.B) * cfg.model.T * cfg.accum_steps / r.bytes_per_s;
  });
  const double bps = timed_bytes / timed_s;
  std::printf("config        %s  (%zu params, %d threads, %s kernels)\n", config_to_json(cfg.model).c_str(),
              trainer.model().num_params(), be->threads(), be->kernel_path().c_str());
  std::printf("train step    %8.1f ms  (forward + backward + clip + AdamW, %d timed steps)\n", 1e3 * timed_s / (steps - 1),
              steps - 1);
  std::printf("train         %8.0f bytes/s\n", bps);
  std::printf("peak RSS      %8.1f MB\n", peak_rss_mb());
  nlohmann::ordered_json j;
  j["bench"] = "train";
  j["config"] = nlohmann::json::parse(config_to_json(cfg.model));
  j["threads"] = be->threads();
  j["cpu_path"] = be->kernel_path();
  j["steps"] = steps - 1;
  j["bytes_per_s"] = bps;
  j["step_ms"] = 1e3 * timed_s / (steps - 1);
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}

// Decoding speed and memory after a context of BYTES: the retention global ingests the context
// for real (chunkwise); the attention baseline does too up to 64 KiB, beyond that its KV cache is
// filled with random keys/values of the right size (its quadratic ingestion would take hours).
int bench_decode(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout
        << "usage: retbyte bench decode [--config small] [--global retention|attention] [--context BYTES] [-n BYTES] [-t N]\n"
           "                            [--device cpu|cuda[:N]]\n"
           "  bytes/s and peak RSS of batch-1 decoding after a context of BYTES (default 1024)\n"
        << kDeviceHelp;
    return 0;
  }
  ModelConfig cfg = load_model_config(args.value("--config", "", "small"));
  const std::string global = args.value("--global", "", "retention");
  if (global != "retention" && global != "attention") throw Error("--global must be retention or attention");
  cfg.global = global == "retention" ? GlobalKind::Retention : GlobalKind::Attention;
  const int64_t context = args.int_value("--context", "", 1024, 0, int64_t(1) << 40);
  const int n = int(args.int_value("--n-predict", "-n", 4096, 1, 1 << 30));
  const std::optional<WeightFormat> weights = weights_option(args);
  const int threads = args.threads();
  auto be = device_backend(args, threads);
  args.no_positionals();
  if (context < 0 || n <= 0) throw Error("--context must be >= 0 and -n > 0");
  Model model(cfg, *be);
  model.init_random(1);
  if (weights) model.set_weight_format(*weights);
  Decoder dec(model);
  DecodeState st(model);
  st.rng().reseed(1);
  Rng rng(2);
  const bool synthetic = cfg.global == GlobalKind::Attention && context > 65536;
  double ingest_s = 0;
  if (synthetic) {
    dec.fill_synthetic_context(st, context / cfg.P, (n + 2 * cfg.P) / cfg.P + 2, 3);
  } else {
    std::vector<uint8_t> ctx(static_cast<size_t>(context));
    for (auto& b : ctx) b = uint8_t(rng.below(256));
    const double t0 = now_s();
    dec.ingest(st, ctx.data(), ctx.size());
    ingest_s = now_s() - t0;
  }
  const SamplingParams sp{1.0f, 0, 1.0f};
  for (int i = 0; i < 2 * cfg.P; i++) dec.accept(st, sample_byte(dec.next_logits(st), sp, st.rng()));  // warm-up
  const double t0 = now_s();
  for (int i = 0; i < n; i++) dec.accept(st, sample_byte(dec.next_logits(st), sp, st.rng()));
  const double s = now_s() - t0;
  std::printf("config        %s  (%d threads, %s kernels)\n", config_to_json(cfg).c_str(), be->threads(),
              be->kernel_path().c_str());
  std::printf("context       %lld bytes (%s)%s\n", (long long)context, synthetic ? "synthetic KV cache" : "ingested",
              synthetic || context == 0 ? "" : (", " + std::to_string(int64_t(context / ingest_s)) + " bytes/s").c_str());
  std::printf("decode        %8.0f bytes/s  (%d bytes, batch 1)\n", n / s, n);
  const double rss = peak_rss_mb();  // before the bandwidth probe's buffer
  std::printf("peak RSS      %8.1f MB\n", rss);
  // The ceiling of batch-1 stepping: every weight is read once per patch (global) or per byte
  // (local), so bytes/s <= memory bandwidth / weight bytes per byte (caches aside).
  const double wbytes = model.weight_format() == WeightFormat::BF16 ? 2.0 : model.weight_format() == WeightFormat::I8 ? 1.0 : 4.0;
  const double DG = cfg.D_G(), DL = cfg.D_L;
  const double global_per_patch =
      cfg.L_G * (cfg.global == GlobalKind::Retention ? 6 * DG * DG + 2 * DG * DG : 4 * DG * DG) + cfg.L_G * 4 * DG * DG;
  const double local_per_byte = cfg.L_L * (3 * DL * DL + DL * DL + 8 * DL * DL) + cfg.D_E * DL + DL * 256;
  const double per_byte = wbytes * (global_per_patch / cfg.P + local_per_byte);
  const double read_gbs = memory_read_gb_per_s();
  std::printf("weights       %s, %.2f MB read per byte; memory read %.1f GB/s (1 thread) -> ceiling %.0f bytes/s\n",
              weight_format_name(model.weight_format()), per_byte / 1e6, read_gbs, read_gbs * 1e9 / per_byte);
  // The other ceiling: one multiply-add per weight per step at the CPU's measured FMA rate (the
  // same independent-chain probe as bench gemm's peak, times the threads). It binds where the
  // weights live in the caches, as a bf16 `small` does.
  double fma_peak = 0, fma_ceiling = 0;
  const double macs_per_byte = global_per_patch / cfg.P + local_per_byte;
  if (be->kernel_path() == cpu_path_name(selected_cpu_path())) {
    fma_peak = fma_peak_gflops(selected_cpu_path(), be->threads());
    fma_ceiling = fma_peak * 1e9 / (2 * macs_per_byte);
    std::printf("compute       %.2f M multiply-adds per byte; FMA peak %.1f GFLOP/s (%d threads) -> ceiling %.0f bytes/s\n",
                macs_per_byte / 1e6, fma_peak, be->threads(), fma_ceiling);
  }
  nlohmann::ordered_json j;
  j["bench"] = "decode";
  j["weights"] = weight_format_name(model.weight_format());
  j["weight_bytes_per_byte"] = per_byte;
  j["memory_read_gb_per_s"] = read_gbs;
  j["ceiling_bytes_per_s"] = read_gbs * 1e9 / per_byte;
  j["multiply_adds_per_byte"] = macs_per_byte;
  if (fma_peak > 0) {
    j["fma_peak_gflops"] = fma_peak;
    j["fma_ceiling_bytes_per_s"] = fma_ceiling;
  }
  j["global"] = global;
  j["context"] = context;
  j["context_fill"] = synthetic ? "synthetic" : "ingested";
  if (!synthetic && context > 0) j["ingest_bytes_per_s"] = context / ingest_s;
  j["threads"] = be->threads();
  j["cpu_path"] = be->kernel_path();
  j["bytes"] = n;
  j["bytes_per_s"] = n / s;
  j["peak_rss_mb"] = rss;
  std::cout << j.dump() << std::endl;
  return 0;
}

// GFLOP/s of the GEMM on every CPU path this machine has, at the shapes training and decoding
// use, beside OpenBLAS and the nominal peak (cores x 2 FMA units x lanes x 2 flops x clock).

double cpu_mhz() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("cpu MHz", 0) == 0) return std::atof(line.substr(line.find(':') + 1).c_str());
  return 0.0;
}

int bench_kernels(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte bench kernels [-t N]\n"
                 "  GEMM GFLOP/s per CPU path (training and decoding shapes) beside OpenBLAS and the peak\n";
    return 0;
  }
  const int threads_arg = args.threads();
  args.no_positionals();
  nlohmann::ordered_json results = nlohmann::json::array();
  const double mhz = cpu_mhz();
  struct Shape {
    const char* what;
    int M, N, K;
    bool tb;
  };
  const Shape shapes[] = {{"train: local MLP x W1^T", 16384, 512, 128, true},
                          {"train: dW = dy^T x", 512, 128, 16384, false},
                          {"decode: 1 row x W^T (global q|k|v|g)", 1, 1536, 256, false},
                          {"decode: 1 row x W^T (local MLP)", 1, 512, 128, false}};
  std::printf("%-10s %-52s %8s %s\n", "path", "product (M x N x K)", "GFLOP/s", "of measured FMA peak");
  for (CpuPath path : {CpuPath::Avx512, CpuPath::Avx2, CpuPath::Portable}) {
    if (!cpu_path_supported(path)) {
      std::printf("%-10s (this CPU lacks it)\n", cpu_path_name(path));
      continue;
    }
    auto be = make_cpu_backend(threads_arg, path);
    const double peak = fma_peak_gflops(path, be->threads());
    for (const Shape& sh : shapes) {
      const int M = path == CpuPath::Portable && sh.M > 1 ? std::max(1, sh.M / 16) : sh.M;
      const int K = path == CpuPath::Portable && sh.K > 1024 ? sh.K / 16 : sh.K;
      std::vector<float> A(size_t(M) * K, 0.01f), B(size_t(sh.N) * K, 0.02f), C(size_t(M) * sh.N);
      const bool ta = sh.K == 16384;  // dW: A is dy stored [K, M]
      const double g = time_gflops(2.0 * M * sh.N * K, path == CpuPath::Portable ? 0.3 : 0.6, [&] {
        be->gemm(ta, sh.tb, M, sh.N, K, 1.0f, A.data(), ta ? M : K, B.data(), sh.tb ? K : sh.N, 0.0f, C.data(), sh.N);
      });
      char name[96];
      std::snprintf(name, sizeof name, "%s (%d x %d x %d)", sh.what, M, sh.N, K);
      std::printf("%-10s %-52s %8.1f %7.0f%% of %.0f\n", cpu_path_name(path), name, g, 100.0 * g / peak, peak);
      nlohmann::ordered_json r;
      r["cpu_path"] = cpu_path_name(path);
      r["product"] = sh.what;
      r["M"] = M, r["N"] = sh.N, r["K"] = K;
      r["threads"] = be->threads();
      r["gflops"] = g;
      r["peak_gflops"] = peak;
      results.push_back(r);
    }
    // bf16 weights (decoding): one stream, then streams in lockstep (the codec's lanes and files side
    // by side), which share each load of the weights.
    for (int M : {1, 2, 4, 8}) {
      const int N = 512, K = 128;
      std::vector<float> A(size_t(M) * K, 0.01f), C(size_t(M) * N);
      std::vector<uint16_t> B(size_t(K) * N, bf16_round(0.02f)), panels(B.size());
      pack_bf16_panels(B.data(), K, N, N, panels.data());
      const double g = time_gflops(2.0 * M * N * K, path == CpuPath::Portable ? 0.3 : 0.6,
                                   [&] { be->gemm_bf16(M, N, K, 1.0f, A.data(), K, panels.data(), 0.0f, C.data(), N); });
      char name[96];
      std::snprintf(name, sizeof name, "decode: %d row%s x bf16 W (local MLP) (%d x %d x %d)", M, M > 1 ? "s" : "", M, N, K);
      std::printf("%-10s %-52s %8.1f %7.0f%% of %.0f\n", cpu_path_name(path), name, g, 100.0 * g / peak, peak);
      nlohmann::ordered_json r;
      r["cpu_path"] = cpu_path_name(path);
      r["product"] = "decode: rows x bf16 W (local MLP)";
      r["M"] = M, r["N"] = N, r["K"] = K;
      r["threads"] = be->threads();
      r["gflops"] = g;
      r["peak_gflops"] = peak;
      results.push_back(r);
    }
    // One stream's global step: 16 products over 6.3 MB of bf16 weights (L3, not L2), against the
    // same shapes in int8 (3.1 MB) with the activations quantized to 7 bits first, as decoding would.
    {
      const int shapes_kn[4][2] = {{256, 1536}, {512, 256}, {256, 512}, {512, 256}}, layers = 4;
      double flops = 0;
      std::vector<std::unique_ptr<uint16_t[], decltype(&std::free)>> bf16;
      std::vector<std::unique_ptr<int8_t[], decltype(&std::free)>> i8;
      std::vector<std::vector<float>> scales;
      std::vector<std::vector<int32_t>> sums;
      for (int l = 0; l < layers; l++)
        for (const auto& [K, N] : shapes_kn) {
          flops += 2.0 * N * K;
          std::vector<uint16_t> B(size_t(K) * N, bf16_round(0.02f));
          // 64-byte aligned, as the model's buffers: the kernels' loads never split a cache line
          bf16.emplace_back(static_cast<uint16_t*>(std::aligned_alloc(64, (B.size() * 2 + 63) / 64 * 64)), &std::free);
          pack_bf16_panels(B.data(), K, N, N, bf16.back().get());
          std::vector<float> W(size_t(N) * K, 0.02f);
          i8.emplace_back(static_cast<int8_t*>(std::aligned_alloc(64, (i8_panel_bytes(N, K) + 63) / 64 * 64)), &std::free);
          scales.emplace_back(size_t(N));
          sums.emplace_back(size_t(N));
          pack_i8_panels(W.data(), N, K, i8.back().get(), scales.back().data(), sums.back().data());
        }
      std::vector<float> A(512, 0.01f), C(1536), a_scale(1);
      std::vector<uint8_t> Aq(512);
      const double g16 = time_gflops(flops, path == CpuPath::Portable ? 0.3 : 0.6, [&] {
        for (size_t i = 0; i < bf16.size(); i++) {
          const int K = shapes_kn[i % 4][0], N = shapes_kn[i % 4][1];
          be->gemm_bf16(1, N, K, 1.0f, A.data(), K, bf16[i].get(), 0.0f, C.data(), N);
        }
      });
      const double g8 = time_gflops(flops, path == CpuPath::Portable ? 0.3 : 0.6, [&] {
        for (size_t i = 0; i < i8.size(); i++) {
          const int K = shapes_kn[i % 4][0], N = shapes_kn[i % 4][1];
          be->quantize_rows_u7(A.data(), 1, K, K, Aq.data(), K, a_scale.data());
          be->gemm_i8(1, N, K, Aq.data(), K, a_scale.data(), i8[i].get(), scales[i].data(), sums[i].data(), 0.0f, C.data(), N);
        }
      });
      for (const auto& [g, what, is_fma] :
           {std::tuple{g16, "bf16 W, 6.3MB", true}, std::tuple{g8, "int8 W x 7-bit x, 3.1MB", false}}) {
        char name[96];
        std::snprintf(name, sizeof name, "decode: global step's 16 products, %s", what);
        if (is_fma)
          std::printf("%-10s %-52s %8.1f %7.0f%% of %.0f\n", cpu_path_name(path), name, g, 100.0 * g / peak, peak);
        else  // integer multiply-adds: the FMA peak does not bound them
          std::printf("%-10s %-52s %8.1f (2 x integer multiply-adds/s)\n", cpu_path_name(path), name, g);
        nlohmann::ordered_json r;
        r["cpu_path"] = cpu_path_name(path);
        r["product"] = std::string("decode: global step's 16 products, ") + what;
        r["threads"] = be->threads();
        r["gflops"] = g;
        r["peak_gflops"] = peak;
        results.push_back(r);
      }
    }
  }
  {
    auto be = make_cpu_backend(threads_arg);
    const double g = measure_sgemm_gflops(*be, 16384, 512, 128, true);
    std::printf("%-10s %-52s %8.1f\n", "OpenBLAS", "train: local MLP x W1^T (16384 x 512 x 128)", g);
    nlohmann::ordered_json r;
    r["cpu_path"] = "openblas";
    r["product"] = "train: local MLP x W1^T";
    r["gflops"] = g;
    results.push_back(r);
  }
  nlohmann::ordered_json j;
  j["bench"] = "kernels";
  j["cpu_mhz"] = mhz;
  j["best_cpu_path"] = cpu_path_name(best_cpu_path());
  j["results"] = results;
  std::cout << j.dump() << std::endl;
  return 0;
}

// compress/decompress bytes/s of the .rbz codec beside zstd -19 on the same bytes (doc/SPEC.md §6).
int bench_codec(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte bench codec [--config small | -m MODEL] [--bytes N] [--lockstep 32] [--lanes N | --fast] "
                 "[--adapt ...] "
                 "[--no-mix | --mixer-version 1|2] [--modes] [-t N] [FILE...]\n"
                 "  times compress and decompress (every block model-coded) of each FILE, or of N bytes of\n"
                 "  random data (default 262144), beside zstd -19 on the same bytes; checks the round trip.\n"
                 "  Lanes as compress cuts them: one context per input by default; --lanes N, --fast.\n"
                 "  With several FILEs, also all of them in one run side by side (as compress and decompress\n"
                 "  code the files they are given), beside the same inputs one at a time.\n"
                 "  --adapt: each input also with online adaptation (its cost in bytes/s and its bpb)\n"
                 "  --mixer-version 1|2: the earlier byte-wise mixer (rANS), or the bitwise one with each lane on\n"
                 "      its own statistics, to compare with the default (3: a file's lanes share them)\n"
                 "  --modes: images and audio in their modes (pixels, samples) as compress codes them; bpb is\n"
                 "  then of the file's bytes (the default codes every input's bytes as given)\n"
              << kAdaptHelp << kMixHelp;
    return 0;
  }
  const std::string model_path = args.value("--model", "-m", "");
  const std::string config = args.value("--config", "", "small");
  const int64_t nbytes = args.int_value("--bytes", "", 262144, 1, int64_t(1) << 40);
  const int lockstep = int(args.int_value("--lockstep", "", 32, 1, 1024));
  const int lanes = lanes_option(args);
  const std::optional<AdaptSettings> adapt = adapt_options(args);
  const bool mix = !args.flag("--no-mix");
  const bool modes = args.flag("--modes");
  const int mixer_version = int(args.int_value("--mixer-version", "", 3, 1, 3));
  const std::optional<WeightFormat> weights = weights_option(args);
  const int threads = args.threads();
  const auto files = args.positionals();
  if (nbytes <= 0 || lockstep < 1 || lockstep > 1024) throw Error("--bytes must be positive and --lockstep 1..1024");
  auto be = make_cpu_backend(threads);
  std::unique_ptr<Model> model;
  if (!model_path.empty()) {
    model = Model::load(model_path, *be);
  } else {
    model = std::make_unique<Model>(load_model_config(config), *be);
    model->init_random(1);
  }
  set_codec_weights(*model, weights, adapt.has_value());
  std::vector<std::pair<std::string, std::vector<uint8_t>>> inputs;
  for (const std::string& f : files) inputs.push_back({f, read_file_bytes(f, max_held_bytes())});
  if (inputs.empty()) {
    Rng rng(5);
    std::vector<uint8_t> v(static_cast<size_t>(nbytes));
    for (auto& b : v) b = uint8_t(rng.below(256));
    inputs.push_back({"random", std::move(v)});
  }
  nlohmann::ordered_json results = nlohmann::json::array();
  std::printf("%-40s %10s %14s %14s %14s %14s %9s %9s\n", "input", "bytes", "compress B/s", "decompress B/s", "zstd-19 c B/s",
              "zstd-19 d B/s", "rbz bpb", "zstd bpb");
  std::vector<std::optional<AdaptSettings>> variants = {std::nullopt};
  if (adapt) variants.push_back(adapt);
  double one_by_one_c_s = 0, one_by_one_d_s = 0;  // the inputs' times one at a time (without adaptation)
  for (const auto& [input, data] : inputs) {
    for (const auto& variant : variants) {
      const std::string name = input + (variant ? " (adapt)" : "");
      CompressOptions o;
      o.model_only = true;   // time the model coder, not the fallbacks
      o.force_raw = !modes;  // the bytes as given (media modes time pixel/sample decoding too)
      o.lockstep = lockstep;
      o.lanes = lanes;
      o.adapt = variant;
      o.mix = mix;
      o.mixer_version = uint8_t(mixer_version);
      CoderTimes ctimes, dtimes;  // the model's share and the codec's own (tables, mixer, rANS)
      o.times = &ctimes;
      double t0 = now_s();
      CompressStats st;
      const std::vector<uint8_t> rbz = compress_file(input, data, model.get(), o, &st);
      const double c_s = now_s() - t0;
      t0 = now_s();
      const std::vector<uint8_t> back = decompress_file(input, rbz, model.get(), nullptr, lockstep, &dtimes);
      const double d_s = now_s() - t0;
      if (!variant) one_by_one_c_s += c_s, one_by_one_d_s += d_s;
      // Image mode restores a PNG of the same pixels (the codec checks their hash), not the file's bytes.
      if (back != data && st.mode != RbzMode::Image) throw Error(input + ": round trip failed");
      std::vector<uint8_t> z(ZSTD_compressBound(data.size()));
      t0 = now_s();
      const size_t zn = ZSTD_compress(z.data(), z.size(), data.data(), data.size(), 19);
      const double zc_s = now_s() - t0;
      std::vector<uint8_t> zback(data.size());
      t0 = now_s();
      ZSTD_decompress(zback.data(), zback.size(), z.data(), zn);
      const double zd_s = now_s() - t0;
      const double n = double(data.size());
      std::printf("%-40s %10zu %14.0f %14.0f %14.0f %14.0f %9.4f %9.4f\n", name.c_str(), data.size(), n / c_s, n / d_s, n / zc_s,
                  n / zd_s, 8.0 * double(rbz.size()) / n, 8.0 * double(zn) / n);
      std::printf("%-40s   of decompress: model %.0f%%, tables + mixer + rANS %.0f%%; of compress: model %.0f%%, codec %.0f%%\n",
                  "", 100 * dtimes.model_s / d_s, 100 * dtimes.side_s / d_s, 100 * ctimes.model_s / c_s,
                  100 * ctimes.side_s / c_s);
      results.push_back({{"input", name},
                         {"bytes", data.size()},
                         {"segments", st.blocks},
                         {"adapted", st.adapted},
                         {"adapt_bytes_trained", st.adapt_bytes_trained},
                         {"compress_bytes_per_s", n / c_s},
                         {"decompress_bytes_per_s", n / d_s},
                         {"decompress_model_s", dtimes.model_s},
                         {"decompress_codec_s", dtimes.side_s},
                         {"compress_model_s", ctimes.model_s},
                         {"compress_codec_s", ctimes.side_s},
                         {"zstd19_compress_bytes_per_s", n / zc_s},
                         {"zstd19_decompress_bytes_per_s", n / zd_s},
                         {"rbz_bpb", 8.0 * double(rbz.size()) / n},
                         {"zstd19_bpb", 8.0 * double(zn) / n}});
    }
  }
  // Every input in one run, side by side (compress_files / decompress_files: each a row of one
  // batch), beside the sum of their times one at a time above.
  if (inputs.size() > 1) {
    CompressOptions o;
    o.model_only = true;
    o.force_raw = !modes;
    o.lockstep = lockstep;
    o.lanes = lanes;
    o.mix = mix;
    o.mixer_version = uint8_t(mixer_version);
    std::vector<std::string> names;
    std::vector<const std::vector<uint8_t>*> views;
    double n = 0;
    for (const auto& [input, data] : inputs) names.push_back(input), views.push_back(&data), n += double(data.size());
    double t0 = now_s();
    const std::vector<std::vector<uint8_t>> rbzs = compress_files(names, views, model.get(), o);
    const double c_s = now_s() - t0;
    std::vector<const std::vector<uint8_t>*> rbz_views;
    for (const auto& r : rbzs) rbz_views.push_back(&r);
    t0 = now_s();
    const std::vector<std::vector<uint8_t>> back = decompress_files(names, rbz_views, model.get(), nullptr, lockstep);
    const double d_s = now_s() - t0;
    for (size_t i = 0; i < inputs.size(); i++)
      if (back[i] != inputs[i].second && read_rbz_header(names[i], rbzs[i]).mode != RbzMode::Image)
        throw Error(names[i] + ": round trip side by side failed");
    const std::string name = "all " + std::to_string(inputs.size()) + " side by side";
    std::printf("%-40s %10.0f %14.0f %14.0f   (one at a time: %.0f / %.0f B/s)\n", name.c_str(), n, n / c_s, n / d_s,
                n / one_by_one_c_s, n / one_by_one_d_s);
    results.push_back({{"input", name},
                       {"bytes", n},
                       {"compress_bytes_per_s", n / c_s},
                       {"decompress_bytes_per_s", n / d_s},
                       {"one_at_a_time_compress_bytes_per_s", n / one_by_one_c_s},
                       {"one_at_a_time_decompress_bytes_per_s", n / one_by_one_d_s}});
  }
  nlohmann::ordered_json j;
  j["bench"] = "codec";
  j["cpu_path"] = be->kernel_path();
  j["threads"] = be->threads();
  j["model"] = model_path.empty() ? config + " (random weights)" : model_path;
  j["weights"] = weight_format_name(model->weight_format());
  j["lockstep"] = lockstep;
  j["lanes"] = lanes == 0 ? "fast" : std::to_string(lanes);
  j["mixed"] = mix;
  j["mixer_version"] = mix ? mixer_version : 0;
  j["results"] = results;
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}

// bpb per file and per modality on a folder, beside gzip, xz, zstd and the media codecs (doc/SPEC.md §6).
int bench_bpb(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte bench bpb [-m MODEL] [--raw] [-t N] DIR...\n"
                 "  bits per byte per file and per modality beside gzip -9, xz -9, zstd -19, and PNG, WebP,\n"
                 "  JPEG-XL or FLAC on the same pixels or samples where installed: a table, then a JSON line\n";
    return 0;
  }
  const std::string model_arg = args.value("--model", "-m", "");
  const bool raw = args.flag("--raw");
  const int threads = args.threads();
  const auto paths = args.positionals();
  if (paths.empty()) throw Error("bench bpb: give a DIR (or files) to score");
  const std::string model_path = model_or_default(model_arg);
  auto be = make_cpu_backend(threads);
  auto model = Model::load(model_path, *be);
  const double t0 = now_s();
  nlohmann::ordered_json j;
  j["bench"] = "bpb";
  j["cpu_path"] = be->kernel_path();
  j["threads"] = be->threads();
  j["model"] = model_path;
  const auto report = bpb_report(*model, paths, {raw, "bench bpb"});
  for (const auto& [k, v] : report.items()) j[k] = v;
  j["seconds"] = now_s() - t0;
  std::cout << j.dump() << std::endl;
  return 0;
}

int cmd_bench(Args& args) {
  const std::string which = args.shift();
  if (which == "fwdbwd") return bench_fwdbwd(args);
  if (which == "train") return bench_train(args);
  if (which == "decode") return bench_decode(args);
  if (which == "kernels") return bench_kernels(args);
  if (which == "bpb") return bench_bpb(args);
  if (which == "codec") return bench_codec(args);
  if (which == "mixer") return bench_mixer(args);
  static const char* kList =
      "usage: retbyte bench BENCHMARK [options]   (retbyte bench BENCHMARK --help for its options)\n"
      "  fwdbwd   forward+backward of one training step, bytes/s (beside OpenBLAS sgemm)\n"
      "  train    training steps/s and bytes/s with peak memory\n"
      "  decode   generation bytes/s and memory at 1 KiB, 64 KiB, 1 MiB context, retention vs attention\n"
      "  kernels  GEMM GFLOP/s per CPU path beside the measured FMA peak and OpenBLAS\n"
      "  codec    compress and decompress bytes/s of the .rbz codec beside zstd -19\n"
      "  mixer    bits per byte and bytes/s of the context-mixing stage alone (no model)\n"
      "  bpb      bits per byte per file and modality beside gzip, xz, zstd, PNG/WebP/JPEG-XL, FLAC\n";
  if (which.empty() || which == "--help" || which == "-h") {
    std::cout << kList;
    return which.empty() ? 1 : 0;
  }
  throw Error("unknown benchmark '" + which + "' (available: fwdbwd, train, decode, kernels, codec, mixer, bpb)");
}

}  // namespace rb::cli
