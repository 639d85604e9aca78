#include "codecs/segment_coder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "codecs/bit_mixer.h"
#include "codecs/byte_frequencies.h"
#include "codecs/rans.h"
#include "src/common/errors.h"
#include "src/model/stepper.h"

namespace rb {

namespace {

// Adds the seconds between its construction and destruction to *acc (nothing when acc is null).
struct Stopwatch {
  double* acc;
  std::chrono::steady_clock::time_point t0;  // read only when timing: decoding calls this per byte
  explicit Stopwatch(double* a) : acc(a) {
    if (acc) t0 = std::chrono::steady_clock::now();
  }
  ~Stopwatch() { stop(); }
  void stop() {
    if (acc) *acc += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    acc = nullptr;
  }
};

void check_mixer_version(const SegmentCoderOptions& o) {
  if (!o.mix_shapes.empty() && o.mixer_version != kMixerVersion && o.mixer_version != kBitMixerVersion &&
      o.mixer_version != kSharedBitMixerVersion)
    throw Error("context mixer version " + std::to_string(o.mixer_version) + " is not supported");
}

// The lanes' common context length, checked: a whole number of patches, one length for all (rows
// of one batch step together from their first position).
size_t check_model(const Model& model, const std::vector<ByteSpan>& contexts, size_t lanes) {
  const ModelConfig& c = model.config();
  if (c.global != GlobalKind::Retention)
    throw Error("model-coded compression needs a retention-global model (the attention baseline has no recurrent form)");
  if (contexts.size() != lanes) throw Error("codec: one context per lane");
  const size_t C = contexts.empty() ? 0 : contexts[0].size;
  for (const ByteSpan& x : contexts) {
    if (x.size % size_t(c.P) != 0) throw Error("codec context is not a whole number of patches");
    if (x.size != C) throw Error("codec: lanes coded together need contexts of one length");
  }
  return C;
}

std::vector<ByteSpan> same_context(const std::vector<uint8_t>& context, size_t lanes) {
  return std::vector<ByteSpan>(lanes, ByteSpan{context.data(), context.size()});
}

bool bitwise_mixing(const SegmentCoderOptions& o) {
  return !o.mix_shapes.empty() && (o.mixer_version == kBitMixerVersion || o.mixer_version == kSharedBitMixerVersion);
}
bool shared_mixing(const SegmentCoderOptions& o) { return !o.mix_shapes.empty() && o.mixer_version == kSharedBitMixerVersion; }

// One mixer per lane of a group, sharing one set of statistics sized for all lanes (version 3)
// or each with its own.
std::vector<BitMixer> bit_mixers_for(const std::vector<LaneShape>& shapes, size_t first, int count, bool shared) {
  std::shared_ptr<BitMixer::Statistics> stats;
  if (shared) {
    LaneShape whole = shapes[first];
    whole.start = 0;
    whole.length = 0;
    for (const LaneShape& s : shapes) whole.length += s.length;
    stats = BitMixer::shared_statistics(whole);
  }
  std::vector<BitMixer> mixers;
  for (int b = 0; b < count; b++) mixers.emplace_back(shapes[first + size_t(b)], stats);
  return mixers;
}

}  // namespace

std::vector<std::vector<uint8_t>> encode_segments(Model& model, const std::vector<uint8_t>& context,
                                                  const std::vector<ByteSpan>& segments, const SegmentCoderOptions& options) {
  return encode_lanes(model, same_context(context, segments.size()), segments, options);
}

std::vector<std::vector<uint8_t>> encode_lanes(Model& model, const std::vector<ByteSpan>& contexts,
                                               const std::vector<ByteSpan>& segments, const SegmentCoderOptions& options) {
  const size_t C = check_model(model, contexts, segments.size());
  if (!options.mix_shapes.empty() && options.mix_shapes.size() != segments.size())
    throw Error("encode_segments: one mixing shape per segment");
  check_mixer_version(options);
  const bool bitwise = bitwise_mixing(options), shared = shared_mixing(options);
  // Lanes that share statistics are coded in one group, position by position (the decoder's order).
  const int lockstep = shared ? std::max(1, int(segments.size())) : options.lockstep;
  const int P = model.config().P;
  const int W = std::max(P, options.window / P * P);
  const size_t round = options.round_positions;
  if (round && (round % size_t(W) != 0 || segments.size() > size_t(lockstep)))
    throw Error("adaptation needs rounds of whole windows and every segment in one lockstep group");
  if (options.segment_bits) options.segment_bits->assign(segments.size(), 0.0);
  uint64_t total = 0, done = 0;
  for (const ByteSpan& s : segments) total += s.size;
  Stepper stepper(model, std::min(lockstep, std::max(1, int(segments.size()))));
  std::vector<std::vector<uint8_t>> out(segments.size());
  std::vector<uint8_t> x;
  // (start, freq) of every byte of the group's segments, for the reverse pass of rANS.
  std::vector<std::vector<uint32_t>> ranges;
  uint32_t model_cum[257], mixed_cum[257];
  std::vector<LaneMixer> mixers;
  std::vector<BitMixer> bit_mixers;
  std::vector<cm::BinaryEncoder> bit_coders;
  for (size_t g0 = 0; g0 < segments.size(); g0 += size_t(lockstep)) {
    const int B = int(std::min(segments.size() - g0, size_t(lockstep)));
    size_t longest = 0;
    for (int b = 0; b < B; b++) longest = std::max(longest, segments[g0 + b].size);
    if (longest == 0) continue;  // empty segments code to nothing
    mixers.clear();
    bit_mixers.clear();
    bit_coders.assign(bitwise ? size_t(B) : 0, cm::BinaryEncoder{});
    if (bitwise)
      bit_mixers = bit_mixers_for(options.mix_shapes, g0, B, shared);
    else if (!options.mix_shapes.empty())
      for (int b = 0; b < B; b++) mixers.emplace_back(options.mix_shapes[g0 + size_t(b)]);
    StreamState state(model, B);
    ranges.assign(size_t(B), {});
    if (!bitwise)
      for (int b = 0; b < B; b++) ranges[size_t(b)].reserve(2 * segments[g0 + b].size);
    x.assign(size_t(B) * W, 0);
    const size_t length = C + longest;  // positions of the longest stream
    for (size_t w0 = 0; w0 < length; w0 += size_t(W)) {
      // Row b: positions [w0, w0 + W) of context + segment b, zeros past its end (causal: padding
      // after every scored byte changes nothing that is scored).
      for (int b = 0; b < B; b++) {
        const ByteSpan &seg = segments[g0 + b], &context = contexts[g0 + b];
        uint8_t* row = x.data() + size_t(b) * W;
        for (int i = 0; i < W; i++) {
          const size_t at = w0 + size_t(i);
          row[i] = at < C ? context.data[at] : at - C < seg.size ? seg.data[at - C] : 0;
        }
      }
      const float* logits;
      {
        Stopwatch sw(options.times ? &options.times->model_s : nullptr);
        logits = stepper.score(state, x.data(), W);  // teacher forcing, bitwise what the decoder's steps give
      }
      Stopwatch side(options.times ? &options.times->side_s : nullptr);
      // Position i of lane b through its own coder and mixer (uses the arrays given).
      auto code = [&](int b, int i, uint32_t* model_cum, uint32_t* mixed_cum) {
        const ByteSpan& seg = segments[g0 + b];
        const size_t at = w0 + size_t(i);
        if (at < C || at - C >= seg.size) return;
        logits_to_cumulative(logits + (size_t(b) * W + size_t(i)) * 256, model_cum);
        const uint8_t byte = seg.data[at - C];
        if (bitwise) {
          const double bits = bit_mixers[size_t(b)].encode(bit_coders[size_t(b)], model_cum, byte);
          if (options.segment_bits) (*options.segment_bits)[g0 + size_t(b)] += bits;
          return;
        }
        const uint32_t* cum = model_cum;
        if (!mixers.empty()) {
          mixers[size_t(b)].mix(model_cum, mixed_cum);
          mixers[size_t(b)].update(byte);
          cum = mixed_cum;
        }
        ranges[size_t(b)].push_back(cum[byte]);
        ranges[size_t(b)].push_back(cum[byte + 1] - cum[byte]);
        if (options.segment_bits)
          (*options.segment_bits)[g0 + size_t(b)] += double(kFreqBits) - std::log2(double(cum[byte + 1] - cum[byte]));
      };
      if (shared) {  // position by position, as the decoder goes
        for (int i = 0; i < W; i++)
          for (int b = 0; b < B; b++) code(b, i, model_cum, mixed_cum);
      } else {  // lanes of their own: across the host threads
        model.backend().host_parallel_for(B, [&](int64_t b0, int64_t b1) {
          uint32_t own_model_cum[257], own_mixed_cum[257];
          for (int64_t b = b0; b < b1; b++)
            for (int i = 0; i < W; i++) code(int(b), i, own_model_cum, own_mixed_cum);
        });
      }
      for (int b = 0; b < B; b++) {  // positions of the window inside lane b's segment
        const size_t first = std::max(w0, C), last = std::min(w0 + size_t(W), C + segments[g0 + b].size);
        done += last > first ? last - first : 0;
      }
      if (options.progress) options.progress(done, total);
      if (round && (w0 + size_t(W)) % round == 0 && w0 + size_t(W) < length) options.after_round(w0 + size_t(W));
    }
    Stopwatch side(options.times ? &options.times->side_s : nullptr);
    for (int b = 0; b < B; b++) {
      if (bitwise) {
        if (segments[g0 + size_t(b)].size) out[g0 + size_t(b)] = bit_coders[size_t(b)].finish();
        continue;
      }
      RansEncoder enc;
      const std::vector<uint32_t>& r = ranges[size_t(b)];
      for (size_t i = r.size(); i >= 2; i -= 2) enc.put(r[i - 2], r[i - 1]);
      if (!r.empty()) out[g0 + size_t(b)] = enc.finish();
    }
  }
  return out;
}

void decode_segments(Model& model, const std::vector<uint8_t>& context, const std::vector<ByteSpan>& payloads,
                     const std::vector<MutableByteSpan>& outputs, const SegmentCoderOptions& options) {
  decode_lanes(model, same_context(context, payloads.size()), payloads, outputs, options);
}

void decode_lanes(Model& model, const std::vector<ByteSpan>& contexts, const std::vector<ByteSpan>& payloads,
                  const std::vector<MutableByteSpan>& outputs, const SegmentCoderOptions& options) {
  const size_t C = check_model(model, contexts, payloads.size());
  if (payloads.size() != outputs.size()) throw Error("decode_segments: payload and output counts differ");
  if (!options.mix_shapes.empty() && options.mix_shapes.size() != payloads.size())
    throw Error("decode_segments: one mixing shape per payload");
  check_mixer_version(options);
  const bool bitwise = bitwise_mixing(options), shared = shared_mixing(options);
  const int P = model.config().P;
  uint64_t total = 0, done = 0;
  for (const MutableByteSpan& o : outputs) total += o.size;
  const size_t round = options.round_positions;
  // With adaptation every lane steps in one group, so rounds fall at the same positions for all;
  // lanes that share mixer statistics too, so that they are coded in the encoder's order.
  const int width = std::max(1, round || shared ? int(payloads.size()) : std::min(options.lockstep, int(payloads.size())));
  std::vector<std::string>* lane_errors = shared ? nullptr : options.lane_errors;  // shared lanes fail together
  if (lane_errors && lane_errors->size() != payloads.size()) throw Error("decode_segments: one lane error per payload");
  // A lane that failed (with lane_errors): the reason is recorded once and the lane decodes zeros.
  const auto fail = [&](size_t lane, const std::string& why) {
    if (!lane_errors) throw Error(why);
    if ((*lane_errors)[lane].empty()) (*lane_errors)[lane] = why;
  };
  const auto failed = [&](size_t lane) { return lane_errors && !(*lane_errors)[lane].empty(); };
  Stepper stepper(model, width);
  std::vector<uint8_t> context_rows, bytes(static_cast<size_t>(width)), lane_ok;
  uint32_t model_cum[257], mixed_cum[257];
  std::vector<LaneMixer> mixers;
  std::vector<BitMixer> bit_mixers;
  for (size_t g0 = 0; g0 < payloads.size(); g0 += size_t(width)) {
    const int B = int(std::min(payloads.size() - g0, size_t(width)));
    mixers.clear();
    bit_mixers.clear();
    if (bitwise)
      bit_mixers = bit_mixers_for(options.mix_shapes, g0, B, shared);
    else if (!options.mix_shapes.empty())
      for (int b = 0; b < B; b++) mixers.emplace_back(options.mix_shapes[g0 + size_t(b)]);
    size_t longest = 0;
    std::vector<std::optional<RansDecoder>> dec(static_cast<size_t>(B));
    std::vector<std::optional<cm::BinaryDecoder>> bit_dec(static_cast<size_t>(B));
    for (int b = 0; b < B; b++) {
      const size_t n = outputs[g0 + b].size;
      longest = std::max(longest, n);
      try {
        if (n == 0 && payloads[g0 + b].size != 0) throw Error("damaged model-coded block (data for an empty segment)");
        if (n && bitwise) bit_dec[size_t(b)].emplace(payloads[g0 + b].data, payloads[g0 + b].size);
        if (n && !bitwise) dec[size_t(b)].emplace(payloads[g0 + b].data, payloads[g0 + b].size);
      } catch (const Error& e) {
        fail(g0 + size_t(b), e.what());
      }
    }
    if (longest == 0) continue;
    StreamState state(model, B);
    context_rows.clear();  // every lane reads its context first
    for (int b = 0; b < B; b++) context_rows.insert(context_rows.end(), contexts[g0 + b].data, contexts[g0 + b].data + C);
    stepper.ingest(state, context_rows.data(), C);
    // Lanes past their end decode nothing: the encoder padded them with zeros.
    double* model_s = options.times ? &options.times->model_s : nullptr;
    double* side_s = options.times ? &options.times->side_s : nullptr;
    for (size_t at = 0; at < longest; at++) {
      const float* logits;
      {
        Stopwatch sw(model_s);
        logits = stepper.next_logits(state);
      }
      Stopwatch side(side_s);
      // Each lane's byte from its own coder and mixer; false: its data ends early (damaged).
      const auto decode_lane = [&](int b, uint32_t* model_cum, uint32_t* mixed_cum) {
        const MutableByteSpan& out = outputs[g0 + b];
        bytes[size_t(b)] = 0;  // lanes past their end: the encoder's zero padding
        if (at >= out.size || failed(g0 + size_t(b))) return true;
        logits_to_cumulative(logits + size_t(b) * 256, model_cum);
        if (bitwise) {
          cm::BinaryDecoder& d = *bit_dec[size_t(b)];
          out.data[at] = bytes[size_t(b)] = bit_mixers[size_t(b)].decode(d, model_cum);
          return !d.overrun();
        }
        const uint32_t* cum = model_cum;
        if (!mixers.empty()) {
          mixers[size_t(b)].mix(model_cum, mixed_cum);
          cum = mixed_cum;
        }
        RansDecoder& d = *dec[size_t(b)];
        const int sym = symbol_at(cum, d.slot());
        if (!d.advance(cum[sym], cum[sym + 1] - cum[sym])) return false;
        if (!mixers.empty()) mixers[size_t(b)].update(uint8_t(sym));
        out.data[at] = bytes[size_t(b)] = uint8_t(sym);
        return true;
      };
      lane_ok.assign(size_t(B), 1);
      if (shared || B == 1) {  // shared statistics: lanes in index order, as the encoder went
        for (int b = 0; b < B; b++)
          if (!(lane_ok[size_t(b)] = decode_lane(b, model_cum, mixed_cum))) break;
      } else {  // lanes of their own: across the host threads
        model.backend().host_parallel_for(B, [&](int64_t b0, int64_t b1) {
          uint32_t own_model_cum[257], own_mixed_cum[257];
          for (int64_t b = b0; b < b1; b++) lane_ok[size_t(b)] = decode_lane(int(b), own_model_cum, own_mixed_cum);
        });
      }
      for (int b = 0; b < B; b++)
        if (!lane_ok[size_t(b)]) fail(g0 + size_t(b), "damaged model-coded block (its data ends early)");
      for (int b = 0; b < B; b++) done += at < outputs[g0 + b].size ? 1 : 0;
      side.stop();
      stepper.accept(state, bytes.data());
      const size_t end = C + at + 1;  // stream positions done
      if (end % size_t(P) == 0) {
        if (round && end % round == 0 && at + 1 < longest) {
          options.after_round(end);
          stepper.weights_changed();  // fresh transposed copies of the changed weights
        }
        if (options.progress && (end / size_t(P)) % 64 == 0) options.progress(done, total);
      }
    }
    for (int b = 0; b < B; b++)
      if (outputs[g0 + b].size && !failed(g0 + size_t(b)) &&
          !(bitwise ? bit_dec[size_t(b)]->finished_cleanly() : dec[size_t(b)]->finished_cleanly()))
        fail(g0 + size_t(b), "damaged model-coded block (it does not end where its encoder ended)");
  }
  if (options.progress) options.progress(done, total);
}

}  // namespace rb
