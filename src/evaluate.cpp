#include "src/evaluate.h"

#include <cmath>

#include "src/errors.h"

namespace rb {

double EvalResult::bpb() const { return bytes ? nats / double(bytes) / std::log(2.0) : 0.0; }

EvalResult evaluate_stream(Model& model, const std::vector<uint8_t>& stream, size_t score_from,
                           int window) {
  const ModelConfig& c = model.config();
  if (window <= 0) window = c.T;
  if (window % c.P != 0) throw Error("eval window " + std::to_string(window) + " is not a multiple of P");
  const bool carry = c.global == GlobalKind::Retention;
  auto stream_state = carry ? model.new_stream(1) : nullptr;
  EvalResult r;
  std::vector<uint8_t> buf(static_cast<size_t>(window), 0);
  std::vector<float> losses(static_cast<size_t>(window));
  for (size_t start = 0; start < stream.size(); start += size_t(window)) {
    // The last window is zero-padded; padding comes after every scored byte, so (being causal)
    // it changes nothing that is scored.
    const size_t n = std::min(stream.size() - start, size_t(window));
    std::fill(buf.begin(), buf.end(), 0);
    std::copy(stream.begin() + long(start), stream.begin() + long(start + n), buf.begin());
    model.forward(buf.data(), 1, window, Model::Mode::Eval, stream_state.get());
    model.backend().download(losses.data(), model.byte_losses(), size_t(window));
    for (size_t i = 0; i < n; i++)
      if (start + i >= score_from) {
        r.nats += losses[i];
        r.bytes++;
      }
  }
  return r;
}

}  // namespace rb
