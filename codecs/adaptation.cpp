#include "codecs/adaptation.h"

#include <cmath>
#include <string>

#include "src/common/errors.h"

namespace rb {

namespace {
constexpr uint64_t kSeed = 0x61646170746976ull;  // "adaptiv": both sides draw the same windows
}

void check_adapt_settings(const AdaptSettings& s, int P, const std::string& what) {
  if (s.round_positions == 0 || s.round_positions % 1024 != 0 || s.round_positions > (1u << 24))
    throw Error(what + ": adaptation round of " + std::to_string(s.round_positions) +
                " positions (a multiple of 1024 up to 16 Mi)");
  if (P > 0 && s.round_positions % uint32_t(P) != 0)
    throw Error(what + ": adaptation round of " + std::to_string(s.round_positions) +
                " positions is not a whole number of patches (P = " + std::to_string(P) + ")");
  if (s.steps < 1 || s.steps > 64 || s.windows < 1 || s.windows > 64)
    throw Error(what + ": adaptation of " + std::to_string(s.steps) + " steps x " + std::to_string(s.windows) +
                " windows (1 to 64 each)");
  if (s.window < uint32_t(P) || s.window % uint32_t(P) != 0 || s.window > 8192)
    throw Error(what + ": adaptation window of " + std::to_string(s.window) + " bytes (a multiple of P = " + std::to_string(P) +
                " up to 8192)");
  // At most 16 training bytes per coded position of a lane: a header cannot ask for days of work.
  if (uint64_t(s.steps) * s.windows * s.window > uint64_t(16) * s.round_positions)
    throw Error(what + ": adaptation of " + std::to_string(uint64_t(s.steps) * s.windows * s.window) +
                " training bytes per round of " + std::to_string(s.round_positions) + " positions (at most 16 per position)");
  if (!std::isfinite(s.lr) || s.lr <= 0 || s.lr > 0.1f)
    throw Error(what + ": adaptation learning rate " + std::to_string(s.lr) + " (0 to 0.1)");
}

WeightsSnapshot::WeightsSnapshot(Model& model) : model_(model), saved_(model.num_params()) {
  model.backend().download(saved_.data(), model.params(), saved_.size());
}

WeightsSnapshot::~WeightsSnapshot() { model_.backend().upload(model_.params(), saved_.data(), saved_.size()); }

OnlineAdapter::OnlineAdapter(Model& model, const AdaptSettings& settings, const std::string& what)
    : model_(model), s_(settings), opt_(model.backend(), model.table(), model.num_params()), rng_(kSeed) {
  check_adapt_settings(s_, model.config().P, what);
  // Training activations for windows x window must fit: refused before any work, on both sides.
  check_activation_memory(model.config(), int(s_.windows), int(s_.window), what + " (adaptation)");
  batch_.resize(size_t(s_.windows) * s_.window);
}

void OnlineAdapter::round(const std::vector<ByteSpan>& coded) {
  const uint64_t P = uint64_t(model_.config().P), T = s_.window;
  // Window starts: every patch-aligned offset whose window lies inside one prefix.
  std::vector<uint64_t> starts_before(coded.size() + 1, 0);
  for (size_t i = 0; i < coded.size(); i++)
    starts_before[i + 1] = starts_before[i] + (coded[i].size >= T ? (coded[i].size - T) / P + 1 : 0);
  const uint64_t total = starts_before.back();
  if (total == 0) return;
  const AdamWConfig cfg{s_.lr, 0.9f, 0.95f, 1e-8f, 0.0f};
  for (uint32_t step = 0; step < s_.steps; step++) {
    for (uint32_t w = 0; w < s_.windows; w++) {
      const uint64_t pick = rng_.next() % total;
      size_t lane = 0;
      while (starts_before[lane + 1] <= pick) lane++;
      const uint8_t* from = coded[lane].data + (pick - starts_before[lane]) * P;
      std::copy(from, from + T, batch_.begin() + long(w) * long(T));
    }
    model_.zero_grad();
    const double loss = model_.forward(batch_.data(), int(s_.windows), int(T), Model::Mode::Train);
    model_.backward();
    const double norm = global_norm(model_.backend(), model_.grads(), model_.num_params());
    if (!std::isfinite(loss) || !std::isfinite(norm)) continue;  // both sides skip it alike
    const float scale = norm > 1.0 ? float(1.0 / norm) : 1.0f;   // global-norm clipping at 1
    opt_.step(model_.backend(), model_.params(), model_.grads(), s_.lr, cfg, scale);
    bytes_trained_ += uint64_t(s_.windows) * T;
  }
}

}  // namespace rb
