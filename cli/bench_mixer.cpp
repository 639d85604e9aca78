// retbyte bench mixer: the context-mixing stage alone (no network: its input stays at 1/2), so
// its side models speak for themselves; bits per byte and speed beside zstd -19 and xz -9e.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "codecs/bit_mixer.h"
#include "codecs/rbz_internal.h"
#include "cli/cli.h"
#include "datasets/dataset.h"
#include "src/common/errors.h"

namespace rb::cli {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int bench_mixer(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte bench mixer [--modes [--residual]] FILE...\n"
                 "  codes each FILE with the bitwise context-mixing stage alone (no model), decodes it and\n"
                 "  checks the round trip: bits per byte, compress and decompress bytes/s, then a JSON line.\n"
                 "  --modes: images and audio as compress sees them (pixels, samples; --residual: their\n"
                 "  residual form), with their side models; bpb is still per byte of the file\n";
    return 0;
  }
  const bool modes = args.flag("--modes"), residual = args.flag("--residual");
  const auto files = args.positionals();
  if (files.empty()) throw Error("bench mixer: give FILEs to code");
  nlohmann::ordered_json results = nlohmann::json::array();
  std::printf("%-40s %10s %9s %14s %14s\n", "input", "bytes", "bpb", "compress B/s", "decompress B/s");
  for (const std::string& f : files) {
    const std::vector<uint8_t> file = read_file_bytes(f, max_held_bytes());
    rbz_detail::Content c = rbz_detail::analyse(f, file, 8, !modes);
    if (residual) rbz_detail::to_residual_form(&c);
    const std::vector<uint8_t> data(c.body, c.body + c.size);
    const LaneShape shape = rbz_detail::lane_shape(c.mode, c.extra, c.residual_channels, 0, data.size());
    auto t0 = std::chrono::steady_clock::now();
    cm::BinaryEncoder enc;
    {
      BitMixer mixer(shape);
      for (uint8_t b : data) mixer.encode(enc, nullptr, b);
    }
    const std::vector<uint8_t> coded = enc.finish();
    const double c_s = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    std::vector<uint8_t> back(data.size());
    {
      BitMixer mixer(shape);
      cm::BinaryDecoder dec(coded.data(), coded.size());
      for (uint8_t& b : back) b = mixer.decode(dec, nullptr);
      if (!dec.finished_cleanly()) throw Error(f + ": the mixer's decoder did not end where its encoder ended");
    }
    const double d_s = seconds_since(t0);
    if (back != data) throw Error(f + ": round trip failed");
    const double n = double(std::max<size_t>(1, file.size()));
    std::printf("%-40s %10zu %9.4f %14.0f %14.0f\n", f.c_str(), file.size(), 8.0 * double(coded.size()) / n, n / c_s, n / d_s);
    results.push_back({{"input", f},
                       {"mode", rbz_mode_name(c.mode)},
                       {"bytes", file.size()},
                       {"coded_bytes", coded.size()},
                       {"bpb", 8.0 * double(coded.size()) / n},
                       {"compress_bytes_per_s", n / c_s},
                       {"decompress_bytes_per_s", n / d_s}});
  }
  nlohmann::ordered_json j;
  j["bench"] = "mixer";
  j["mixer_version"] = kBitMixerVersion;
  j["results"] = results;
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace rb::cli
