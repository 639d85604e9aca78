#include "cli/bpb_report.h"

#include "src/common/errors.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cmath>
#include <map>

#include "codecs/baselines.h"
#include "codecs/media_baselines.h"
#include "datasets/dataset.h"
#include "src/model/evaluate.h"

namespace rb::cli {

namespace {

// Compressed size per baseline name, and the bytes it covers (a baseline missing for some files
// of a modality, e.g. an uninstalled tool, is totalled only over the files it ran on).
struct Sizes {
  size_t compressed = 0;
  uint64_t bytes = 0;
};

struct Row {
  std::string path, kind;
  EvalResult r;
  std::vector<std::pair<std::string, size_t>> baselines;  // in column order of first appearance
};

std::string fmt_bpb(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", b);
  return buf;
}

}  // namespace

nlohmann::ordered_json bpb_report(Model& model, const std::vector<std::string>& paths, const BpbReportOptions& options) {
  const int P = model.config().P;
  const std::vector<FoundFile> found = collect_files(paths);  // every input exists before any work
  const bool tty = isatty(STDERR_FILENO);
  std::vector<Row> rows;
  std::vector<std::string> columns = {"zstd -19", "xz -9", "gzip -9"};
  for (size_t fi = 0; fi < found.size(); fi++) {
    const std::string& f = found[fi].path;
    std::string notice;
    const FileStream stream(f, P, options.raw, &notice, model.media_form);
    if (!notice.empty()) std::fprintf(stderr, "retbyte %s: %s\n", options.command.c_str(), notice.c_str());
    const std::vector<uint8_t> header = options.raw ? std::vector<uint8_t>() : stream.header();
    const uint64_t n = stream.body_size();
    // Progress on long inputs: a line per file, refreshed in place on a terminal.
    const auto started = std::chrono::steady_clock::now();
    double last_shown = 0;
    auto progress = [&](uint64_t done, uint64_t total) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (s - last_shown < (tty ? 0.5 : 30.0)) return;
      last_shown = s;
      std::fprintf(stderr, "%sretbyte %s: [%zu/%zu] %s %.0f%% (%.1f MB, %.0f kB/s)%s", tty ? "\r\033[K" : "",
                   options.command.c_str(), fi + 1, found.size(), f.c_str(), 100.0 * double(done) / double(total),
                   double(total) / 1e6, double(done) / s / 1e3, tty ? "" : "\n");
    };
    Row row;
    row.path = f;
    row.kind = modality_name(stream.modality());
    row.r = evaluate_stream(model, header, stream.body(), n, 0, progress);
    if (tty && last_shown > 0) std::fprintf(stderr, "\r\033[K");
    // The codecs people use on the same decoded pixels or samples (those installed), and the
    // general-purpose compressors on the pixels or samples themselves, whatever form the model reads.
    std::vector<std::pair<std::string, size_t>> media_baselines;
    std::vector<uint8_t> plain;
    const uint8_t* bytes = stream.body();
    if (!options.raw && stream.modality() != Modality::Text) {
      std::vector<uint8_t> full(stream.header());
      full.insert(full.end(), stream.body(), stream.body() + n);
      if (stream.modality() == Modality::Image) {
        const Image img = image_from_stream(full.data(), full.size(), P, f);
        media_baselines = image_baselines(img);
        if (model.media_form != MediaForm::Plain) plain = img.pixels;
      } else {
        const Audio a = audio_from_stream(full.data(), full.size(), P, f);
        media_baselines = audio_baselines(a);
        if (model.media_form != MediaForm::Plain) {
          plain = audio_stream(a, P);
          plain.erase(plain.begin(), plain.begin() + long(media_header_size(P)));
        }
      }
      if (!plain.empty()) bytes = plain.data();
    }
    row.baselines = {{"zstd -19", n ? zstd_compressed_size(bytes, n, 19) : 0},
                     {"xz -9", n ? xz_compressed_size(bytes, n, 9) : 0},
                     {"gzip -9", n ? gzip_compressed_size(bytes, n, 9) : 0}};
    for (const auto& b : media_baselines) {
      row.baselines.push_back(b);
      bool known = false;
      for (const auto& c : columns) known |= c == b.first;
      if (!known) columns.push_back(b.first);
    }
    rows.push_back(std::move(row));
  }

  // Totals per modality and overall.
  struct Totals {
    EvalResult r;
    std::map<std::string, Sizes> baselines;
  };
  std::map<std::string, Totals> by_kind;
  Totals all;
  for (const Row& row : rows)
    for (Totals* t : {&all, &by_kind[row.kind]}) {
      t->r.nats += row.r.nats;
      t->r.bytes += row.r.bytes;
      for (const auto& [name, size] : row.baselines) {
        t->baselines[name].compressed += size;
        t->baselines[name].bytes += row.r.bytes;
      }
    }

  // The table: one column per baseline, "n/a" where a baseline does not apply.
  size_t path_width = 4;
  for (const Row& row : rows) path_width = std::max(path_width, row.path.size());
  for (const auto& [kind, t] : by_kind) path_width = std::max(path_width, kind.size() + 8);
  std::vector<size_t> widths;
  std::printf("%-*s %-6s %12s %8s", int(path_width), "file", "kind", "bytes", "model");
  for (const auto& c : columns) {
    const std::string label = c.substr(0, c.find(" ("));  // "png (optipng -o5)" -> "png"; the JSON has it all
    widths.push_back(std::max<size_t>(8, label.size()));
    std::printf("  %*s", int(widths.back()), label.c_str());
  }
  std::printf("   (bits per byte)\n");
  auto print_line = [&](const std::string& name, const std::string& kind, const EvalResult& r,
                        const std::map<std::string, double>& bpbs) {
    std::printf("%-*s %-6s %12llu %8s", int(path_width), name.c_str(), kind.c_str(), (unsigned long long)r.bytes,
                fmt_bpb(r.bpb()).c_str());
    for (size_t i = 0; i < columns.size(); i++) {
      const auto it = bpbs.find(columns[i]);
      std::printf("  %*s", int(widths[i]), it == bpbs.end() ? "n/a" : fmt_bpb(it->second).c_str());
    }
    std::printf("\n");
  };

  nlohmann::ordered_json files = nlohmann::json::array();
  for (const Row& row : rows) {
    std::map<std::string, double> bpbs;
    nlohmann::ordered_json base = nlohmann::json::object();
    for (const auto& [name, size] : row.baselines) {
      bpbs[name] = bits_per_byte(size, row.r.bytes);
      base[name] = bpbs[name];
    }
    print_line(row.path, row.kind, row.r, bpbs);
    files.push_back({{"path", row.path},
                     {"modality", row.kind},
                     {"bytes", row.r.bytes},
                     {"bpb", row.r.bpb()},
                     {"zstd19_bpb", bpbs["zstd -19"]},
                     {"baselines_bpb", base}});
  }
  auto totals_json = [&](const Totals& t) {
    std::map<std::string, double> bpbs;
    nlohmann::ordered_json base = nlohmann::json::object();
    for (const auto& [name, s] : t.baselines) {
      if (s.bytes != t.r.bytes) continue;  // e.g. FLAC in a total over audio and text: not comparable
      bpbs[name] = bits_per_byte(s.compressed, s.bytes);
      base[name] = bpbs[name];
    }
    nlohmann::ordered_json j = {
        {"bytes", t.r.bytes}, {"bpb", t.r.bpb()}, {"zstd19_bpb", bpbs["zstd -19"]}, {"baselines_bpb", base}};
    return std::make_pair(j, bpbs);
  };
  nlohmann::ordered_json mods = nlohmann::json::object();
  for (const auto& [kind, t] : by_kind) {
    auto [j, bpbs] = totals_json(t);
    print_line("total (" + kind + ")", kind, t.r, bpbs);
    mods[kind] = j;
  }
  nlohmann::ordered_json out;
  out["files"] = files;
  out["modalities"] = mods;
  auto [j_all, bpbs_all] = totals_json(all);
  if (by_kind.size() > 1) print_line("total", "all", all.r, bpbs_all);
  out["bpb"] = all.r.bpb();
  out["zstd19_bpb"] = j_all["zstd19_bpb"];
  out["baselines_bpb"] = j_all["baselines_bpb"];
  return out;
}

}  // namespace rb::cli

namespace rb::cli {

namespace {
std::string bucket_name(uint64_t from, uint64_t to) {
  auto size = [](uint64_t b) {
    return b >= (1 << 20) ? std::to_string(b >> 20) + "M" : b >= 1024 ? std::to_string(b >> 10) + "K" : std::to_string(b);
  };
  return to ? size(from) + "-" + size(to) : size(from) + "+";
}
double bucket_bpb(const PositionBuckets& b, size_t i) {
  return b.bytes[i] ? b.nats[i] / double(b.bytes[i]) / std::log(2.0) : 0.0;
}

// bpb against position, carried and reset, as a small SVG line chart.
std::string position_svg(const PositionBuckets& carried, const PositionBuckets& reset, const std::vector<size_t>& shown,
                         size_t reset_every) {
  double lo = 1e9, hi = 0;
  for (size_t i : shown)
    for (double v : {bucket_bpb(carried, i), bucket_bpb(reset, i)}) lo = std::min(lo, v), hi = std::max(hi, v);
  if (hi <= lo) hi = lo + 1;
  const double W = 640, H = 360, L = 60, R = 20, T = 30, B = 50;
  auto x = [&](size_t k) { return L + (shown.size() > 1 ? double(k) / double(shown.size() - 1) : 0.5) * (W - L - R); };
  auto y = [&](double v) { return T + (hi - v) / (hi - lo) * (H - T - B); };
  char buf[256];
  std::string s =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"360\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"640\" height=\"360\" fill=\"white\"/>\n";
  std::snprintf(buf, sizeof buf,
                "<text x=\"%g\" y=\"18\">bits per byte by position: state carried (blue), reset every %zu bytes (red)</text>\n",
                L, reset_every);
  s += buf;
  for (const auto* b : {&carried, &reset}) {
    s += std::string("<polyline fill=\"none\" stroke-width=\"2\" stroke=\"") + (b == &carried ? "#1f5fbf" : "#c0392b") +
         "\" points=\"";
    for (size_t k = 0; k < shown.size(); k++) {
      std::snprintf(buf, sizeof buf, "%s%.1f,%.1f", k ? " " : "", x(k), y(bucket_bpb(*b, shown[k])));
      s += buf;
    }
    s += "\"/>\n";
  }
  for (size_t k = 0; k < shown.size(); k++) {
    const size_t i = shown[k];
    const uint64_t to = i + 1 < carried.edges.size() ? carried.edges[i + 1] : 0;
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", x(k), H - B + 20,
                  bucket_name(carried.edges[i], to).c_str());
    s += buf;
  }
  for (double v : {lo, hi}) {
    std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", L - 6, y(v) + 4, v);
    s += buf;
  }
  return s + "</svg>\n";
}
}  // namespace

nlohmann::ordered_json position_report(Model& model, const std::vector<std::string>& paths, bool raw, const std::string& svg_path,
                                       bool force, size_t reset_every) {
  const int P = model.config().P;
  if (reset_every == 0) reset_every = size_t(model.config().T);
  if (reset_every % size_t(P) != 0)
    throw Error("--reset-every " + std::to_string(reset_every) + " is not a multiple of the model's patch size " +
                std::to_string(P));
  // Windows of the model's T when they tile the reset interval, else windows of the interval.
  const int window = reset_every % size_t(model.config().T) == 0 ? model.config().T : int(reset_every);
  const std::vector<FoundFile> found = collect_files(paths);
  PositionBuckets carried = PositionBuckets::standard(), reset = PositionBuckets::standard();
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const FoundFile& f : found) {
    std::string notice;
    const FileStream stream(f.path, P, raw, &notice, model.media_form);
    if (!notice.empty()) std::fprintf(stderr, "retbyte eval: %s\n", notice.c_str());
    const std::vector<uint8_t> header = raw ? std::vector<uint8_t>() : stream.header();
    PositionBuckets fc = PositionBuckets::standard(), fr = PositionBuckets::standard();
    const EvalResult c = evaluate_stream(model, header, stream.body(), stream.body_size(), window, nullptr, 0, &fc);
    const EvalResult r = evaluate_stream(model, header, stream.body(), stream.body_size(), window, nullptr, reset_every, &fr);
    for (size_t i = 0; i < fc.edges.size(); i++) {
      carried.nats[i] += fc.nats[i], carried.bytes[i] += fc.bytes[i];
      reset.nats[i] += fr.nats[i], reset.bytes[i] += fr.bytes[i];
    }
    files.push_back({{"path", f.path}, {"bytes", c.bytes}, {"bpb_carried", c.bpb()}, {"bpb_reset", r.bpb()}});
  }
  std::printf("bits per byte by position in each file (%zu files), state carried vs reset every %zu bytes\n", found.size(),
              reset_every);
  std::printf("%-10s %12s %10s %10s %8s\n", "position", "bytes", "carried", "reset", "gain");
  nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
  std::vector<size_t> shown;
  for (size_t i = 0; i < carried.edges.size(); i++) {
    if (!carried.bytes[i]) continue;
    shown.push_back(i);
    const uint64_t to = i + 1 < carried.edges.size() ? carried.edges[i + 1] : 0;
    const double bc = bucket_bpb(carried, i), br = bucket_bpb(reset, i);
    std::printf("%-10s %12llu %10.4f %10.4f %7.2f%%\n", bucket_name(carried.edges[i], to).c_str(),
                (unsigned long long)carried.bytes[i], bc, br, br > 0 ? 100.0 * (br - bc) / br : 0.0);
    buckets.push_back(
        {{"from", carried.edges[i]}, {"to", to}, {"bytes", carried.bytes[i]}, {"bpb_carried", bc}, {"bpb_reset", br}});
  }
  if (!svg_path.empty()) {
    write_file_atomic(svg_path, position_svg(carried, reset, shown, reset_every), force ? Overwrite::Replace : Overwrite::Refuse);
    std::fprintf(stderr, "retbyte eval: wrote %s\n", svg_path.c_str());
  }
  return {{"reset_every", reset_every}, {"buckets", buckets}, {"files", files}};
}

}  // namespace rb::cli
