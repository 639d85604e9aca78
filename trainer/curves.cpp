#include "trainer/curves.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "src/common/errors.h"

namespace rb {

namespace {

struct Series {
  std::string name, color;
  double width;
  std::vector<std::pair<double, double>> points;  // (step, bpb)
};

std::string fmt(double v, const char* f = "%.1f") {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return out;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about n ticks over span.
double tick_step(double span, int n) {
  const double raw = span / n, p = std::pow(10.0, std::floor(std::log10(raw))), r = raw / p;
  return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * p;
}

}  // namespace

std::string training_curves_svg(const std::string& metrics_path, const std::string& title) {
  std::ifstream in(metrics_path);
  if (!in) throw Error(metrics_path + ": cannot open");
  Series raw{"train bpb", "#c6d4e8", 1.0, {}}, smooth{"train bpb (smoothed)", "#1f5fbf", 2.0, {}},
      val{"validation bpb", "#d62728", 2.0, {}};
  std::map<std::string, Series> per_kind;
  const char* kind_colors[] = {"#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    line_no++;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error(metrics_path + ": line " + std::to_string(line_no) + " is not JSON");
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;
    const double step = j["step"].get<double>();
    if (j.contains("bpb") && j["bpb"].is_number() && std::isfinite(j["bpb"].get<double>()))
      raw.points.push_back({step, j["bpb"].get<double>()});
    if (j.contains("val_bpb") && j["val_bpb"].is_number()) val.points.push_back({step, j["val_bpb"].get<double>()});
    for (const auto& [key, v] : j.items())
      if (key.rfind("val_bpb_", 0) == 0 && v.is_number()) {
        Series& s = per_kind[key.substr(8)];
        if (s.name.empty()) s = {"validation bpb (" + key.substr(8) + ")", kind_colors[per_kind.size() % 4], 1.5, {}};
        s.points.push_back({step, v.get<double>()});
      }
  }
  if (raw.points.empty()) throw Error(metrics_path + ": no training steps to draw");
  // Smoothed: a centred moving average (no lag behind the raw curve), narrower at the ends.
  const long n = long(raw.points.size()), half = std::max(2L, n / 80);
  for (long i = 0; i < n; i++) {
    const long a = std::max(0L, i - half), b = std::min(n - 1, i + half), w = std::min(i - a, b - i);
    double sum = 0;
    for (long k = i - w; k <= i + w; k++) sum += raw.points[size_t(k)].second;
    smooth.points.push_back({raw.points[size_t(i)].first, sum / double(2 * w + 1)});
  }
  std::vector<const Series*> all = {&raw, &smooth};
  if (per_kind.size() > 1)
    for (const auto& [k, s] : per_kind) all.push_back(&s);
  all.push_back(&val);
  // Axes: steps from 0; bpb from the lowest point to the 98th percentile of the raw curve (the
  // first steps at ~8 bpb would flatten everything else).
  double x_max = 1, y_min = 1e30;
  std::vector<double> ys;
  for (const Series* s : all)
    for (const auto& [x, y] : s->points) {
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      ys.push_back(y);
    }
  std::sort(ys.begin(), ys.end());
  double y_max = ys[std::min(ys.size() - 1, size_t(double(ys.size()) * 0.98))];
  for (const Series* s : {&smooth, &val})
    for (const auto& p : s->points) y_max = std::max(y_max, std::min(p.second, 8.5));
  y_min = std::max(0.0, std::floor(y_min * 2) / 2);
  if (y_max <= y_min) y_max = y_min + 1;
  const double W = 860, H = 440, L = 60, R = 20, T = 40, B = 50, pw = W - L - R, ph = H - T - B;
  auto X = [&](double x) { return L + pw * x / x_max; };
  auto Y = [&](double y) { return T + ph * (1 - (std::min(y, y_max) - y_min) / (y_max - y_min)); };
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W, "%.0f") + "\" height=\"" + fmt(H, "%.0f") +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + fmt(L) + "\" y=\"24\" font-size=\"15\">" + escape(title) + "</text>\n";
  const double xs = tick_step(x_max, 8), yst = tick_step(y_max - y_min, 6);
  for (double x = 0; x <= x_max + 1e-9; x += xs)
    svg += "<line x1=\"" + fmt(X(x)) + "\" y1=\"" + fmt(T) + "\" x2=\"" + fmt(X(x)) + "\" y2=\"" + fmt(T + ph) +
           "\" stroke=\"#eee\"/><text x=\"" + fmt(X(x)) + "\" y=\"" + fmt(T + ph + 16) + "\" text-anchor=\"middle\">" +
           fmt(x, "%.0f") + "</text>\n";
  for (double y = std::ceil(y_min / yst) * yst; y <= y_max + 1e-9; y += yst)
    svg += "<line x1=\"" + fmt(L) + "\" y1=\"" + fmt(Y(y)) + "\" x2=\"" + fmt(L + pw) + "\" y2=\"" + fmt(Y(y)) +
           "\" stroke=\"#eee\"/><text x=\"" + fmt(L - 6) + "\" y=\"" + fmt(Y(y) + 4) + "\" text-anchor=\"end\">" +
           fmt(y, "%.2f") + "</text>\n";
  svg += "<rect x=\"" + fmt(L) + "\" y=\"" + fmt(T) + "\" width=\"" + fmt(pw) + "\" height=\"" + fmt(ph) +
         "\" fill=\"none\" stroke=\"#888\"/>\n";
  svg += "<text x=\"" + fmt(L + pw / 2) + "\" y=\"" + fmt(H - 10) + "\" text-anchor=\"middle\">step</text>\n";
  svg += "<text transform=\"translate(16," + fmt(T + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">bits per byte</text>\n";
  double legend_y = T + 16;
  for (const Series* s : all) {
    if (s->points.empty()) continue;
    svg += "<polyline fill=\"none\" stroke=\"" + s->color + "\" stroke-width=\"" + fmt(s->width) + "\" points=\"";
    for (const auto& [x, y] : s->points) svg += fmt(X(x)) + "," + fmt(Y(y)) + " ";
    svg += "\"/>\n";
    if (s == &val || s->name.rfind("validation", 0) == 0)
      for (const auto& [x, y] : s->points)
        svg += "<circle cx=\"" + fmt(X(x)) + "\" cy=\"" + fmt(Y(y)) + "\" r=\"3\" fill=\"" + s->color + "\"/>\n";
    svg += "<line x1=\"" + fmt(L + pw - 200) + "\" y1=\"" + fmt(legend_y - 4) + "\" x2=\"" + fmt(L + pw - 180) + "\" y2=\"" +
           fmt(legend_y - 4) + "\" stroke=\"" + s->color + "\" stroke-width=\"3\"/><text x=\"" + fmt(L + pw - 174) + "\" y=\"" +
           fmt(legend_y) + "\">" + escape(s->name) + "</text>\n";
    legend_y += 16;
  }
  if (!val.points.empty())
    svg += "<text x=\"" + fmt(L + 8) + "\" y=\"" + fmt(T + ph - 8) +
           "\">last validation: " + fmt(val.points.back().second, "%.4f") + " bpb at step " +
           fmt(val.points.back().first, "%.0f") + "</text>\n";
  svg += "</svg>\n";
  return svg;
}

}  // namespace rb
