#include "src/model/evaluate.h"

#include <cmath>

#include "src/common/errors.h"

namespace rb {

double EvalResult::bpb() const { return bytes ? nats / double(bytes) / std::log(2.0) : 0.0; }

PositionBuckets PositionBuckets::standard() {
  PositionBuckets b;
  b.edges = {0, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20};
  b.nats.assign(b.edges.size(), 0.0);
  b.bytes.assign(b.edges.size(), 0);
  return b;
}

void PositionBuckets::add(uint64_t position, double nats_of_byte) {
  size_t i = edges.size() - 1;
  while (i > 0 && position < edges[i]) i--;
  nats[i] += nats_of_byte;
  bytes[i]++;
}

EvalResult evaluate_stream(Model& model, const std::vector<uint8_t>& context, const uint8_t* body, size_t n, int window,
                           const std::function<void(uint64_t, uint64_t)>& progress, size_t reset_every,
                           PositionBuckets* by_position) {
  const ModelConfig& c = model.config();
  if (window <= 0) window = c.T;
  if (window % c.P != 0) throw Error("eval window " + std::to_string(window) + " is not a multiple of P");
  if (reset_every % size_t(window) != 0) throw Error("eval: the state can only be reset at window boundaries");
  const bool carry = c.global == GlobalKind::Retention;
  auto stream_state = carry ? model.new_stream(1) : nullptr;
  const size_t total = context.size() + n, from = context.size();
  EvalResult r;
  std::vector<uint8_t> buf(static_cast<size_t>(window), 0);
  std::vector<float> losses(static_cast<size_t>(window));
  for (size_t start = 0; start < total; start += size_t(window)) {
    // The last window is zero-padded; padding comes after every scored byte, so (being causal)
    // it changes nothing that is scored.
    const size_t len = std::min(total - start, size_t(window));
    std::fill(buf.begin(), buf.end(), 0);
    for (size_t i = 0; i < len; i++) {
      const size_t at = start + i;
      buf[i] = at < from ? context[at] : body[at - from];
    }
    if (reset_every && stream_state && start > 0 && start % reset_every == 0) stream_state->reset();
    model.forward(buf.data(), 1, window, Model::Mode::Eval, stream_state.get());
    model.backend().download(losses.data(), model.byte_losses(), size_t(window));
    for (size_t i = 0; i < len; i++)
      if (start + i >= from) {
        r.nats += losses[i];
        r.bytes++;
        if (by_position) by_position->add(start + i - from, losses[i]);
      }
    if (progress) progress(start + len, total);
  }
  return r;
}

}  // namespace rb
