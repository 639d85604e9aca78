// compress_file: a file's content coded by the model in lanes, each lane kept as the smallest of
// model-coded, zstd and raw, and the whole file as one zstd block when that is smaller.
#include <xxhash.h>

#include <algorithm>
#include <numeric>

#include "codecs/bit_mixer.h"
#include "codecs/rbz_internal.h"

namespace rb {

using namespace rbz_detail;

const char* rbz_mode_name(RbzMode m) { return m == RbzMode::Image ? "image" : m == RbzMode::Audio ? "audio" : "raw"; }

size_t choose_segment_bytes(uint64_t n, int lockstep) {
  const uint64_t per = (n + uint64_t(std::max(1, lockstep)) - 1) / uint64_t(std::max(1, lockstep));
  return size_t(std::clamp<uint64_t>(per, uint64_t(64) << 10, uint64_t(1) << 20));
}

size_t segment_bytes_for(uint64_t n, int lanes, int lockstep) {
  if (lanes <= 0) return choose_segment_bytes(n, lockstep);
  const uint64_t per = (n + uint64_t(lanes) - 1) / uint64_t(lanes);
  return size_t(std::clamp<uint64_t>(per, lanes == 1 ? 1 : uint64_t(64) << 10, kMaxModelBlock));
}

std::vector<uint8_t> compress_file(const std::string& path, const std::vector<uint8_t>& file, Model* model,
                                   const CompressOptions& options, CompressStats* stats) {
  if (options.segment_bytes > kMaxModelBlock) throw Error("segment size over the limit of 16 MiB");
  // Adaptation trains the weights in fp32 (they stop being bf16 values after its first step): a
  // bf16 model codes such a file on the fp32 kernels with its values as they are (the same bits
  // until then; the archive records fp32 weights of the same fingerprint), and is bf16 again after.
  Bf16Again bf16_again;
  if (options.adapt && model && model->weight_format() == WeightFormat::BF16) bf16_again.widen(model);
  CompressStats st;
  Content c = analyse(path, file, model ? model->config().P : 0, options.force_raw);
  uint64_t hash = content_hash(file, c);  // of the pixels or samples themselves, in either form
  // The model reads residuals: code those, and tell the decoder to turn them back.
  if (model && model->media_form == MediaForm::Residual && c.mode != RbzMode::Raw && c.size > 0) to_residual_form(&c);
  if (c.mode != RbzMode::Raw) {
    // What decompress will do with this content, done now: a file whose pixels or samples would
    // not come back exactly (any layout the mode does not foresee) is coded as its bytes instead.
    // An archive that compress writes always decompresses.
    bool restores = false;
    try {
      const std::vector<uint8_t> back =
          restore_file(path, c.mode, c.extra, c.residual_channels, hash, c.restores_content ? c.size : file.size(),
                       std::vector<uint8_t>(c.body, c.body + c.size));
      restores = c.restores_content || back == file;
    } catch (const Error&) {}
    if (!restores) {
      c = analyse(path, file, model ? model->config().P : 0, true);
      hash = content_hash(file, c);
    }
  }
  std::vector<Block> blocks;
  std::string fingerprint;
  uint8_t written_mixer_version = options.mixer_version;
  bool one_context = false;
  if (model && c.size > 0) {
    // Segments start where the model expects a stream to: on a patch boundary and on a whole pixel
    // or audio frame (a segment that began mid-sample would see every sample's bytes swapped).
    const size_t P = size_t(model->config().P), unit = std::lcm(P, c.unit);
    size_t seg = options.segment_bytes ? options.segment_bytes : segment_bytes_for(c.size, options.lanes, options.lockstep);
    const uint64_t lanes = uint64_t(std::max(1, options.lockstep));
    if (options.adapt && !options.segment_bytes)  // one lockstep group: rounds fall alike for every lane
      seg = std::max(seg, size_t((c.size + lanes - 1) / lanes));
    seg = (seg + unit - 1) / unit * unit;
    if (!options.segment_bytes && seg > kMaxModelBlock) seg = kMaxModelBlock / unit * unit;
    if (seg > kMaxModelBlock)
      throw Error(path + (options.adapt ? ": too large for --adapt (at most " + std::to_string(lanes) + " segments of 16 MiB)"
                                        : ": segments of " + std::to_string(seg) + " bytes exceed the 16 MiB limit"));
    one_context = seg >= c.size;
    std::vector<ByteSpan> segments;
    for (size_t at = 0; at < c.size; at += seg) segments.push_back({c.body + at, std::min(seg, c.size - at)});
    if (options.adapt && segments.size() > size_t(options.lockstep))
      throw Error(path + ": --adapt needs every segment in one lockstep group (" + std::to_string(segments.size()) +
                  " segments)");
    const std::string model_id = model_fingerprint(*model);  // of the pretrained weights; hashes every weight once
    SegmentCoderOptions so;
    so.lockstep = options.lockstep;
    so.progress = options.progress;
    so.times = options.times;
    std::vector<double> bits;
    so.segment_bits = &bits;
    // Lanes that share mixer statistics: version 3, all of them model-coded and stepped in one
    // group (so at most kMaxSharedLanes); one lane codes the same as version 2 and is written so.
    const bool share = options.mix && options.mixer_version == kSharedBitMixerVersion;
    const uint8_t mixer_version =
        share && (segments.size() == 1 || segments.size() > kMaxSharedLanes) ? kBitMixerVersion : options.mixer_version;
    so.mixer_version = written_mixer_version = mixer_version;
    if (options.mix)
      for (const ByteSpan& s : segments)
        so.mix_shapes.push_back(lane_shape(c.mode, c.extra, c.residual_channels, size_t(s.data - c.body), s.size));
    std::optional<WeightsSnapshot> pretrained;
    std::optional<OnlineAdapter> adapter;
    if (options.adapt) {
      adapter.emplace(*model, *options.adapt, path);
      pretrained.emplace(*model);
      so.round_positions = options.adapt->round_positions;
      // Encoder windows must end on every round: the longest multiple of P up to 1024 dividing it.
      so.window = int(P);
      for (size_t w = 1024 / P * P; w >= P; w -= P)
        if (options.adapt->round_positions % w == 0) {
          so.window = int(w);
          break;
        }
      so.after_round = [&](size_t positions) { adapter->round(coded_prefixes(segments, c.context.size(), positions)); };
    }
    std::vector<std::vector<uint8_t>> coded = encode_segments(*model, c.context, segments, so);
    if (adapter) st.adapt_bytes_trained = adapter->bytes_trained();
    for (double b : bits) st.model_bits += b;
    // Each segment as whichever of model-coded, zstd and raw is smallest.
    for (size_t i = 0; i < segments.size(); i++) {
      std::vector<uint8_t> z = zstd19(segments[i].data, segments[i].size);
      Block b{BlockKind::Raw, segments[i].size, std::vector<uint8_t>(segments[i].data, segments[i].data + segments[i].size)};
      if (z.size() < b.payload.size()) b = {BlockKind::Zstd, segments[i].size, std::move(z)};
      // Shared statistics need every lane decoded through the mixer: none is stored on its own.
      if (coded[i].size() < b.payload.size() || options.model_only || written_mixer_version == kSharedBitMixerVersion)
        b = {BlockKind::Model, segments[i].size, std::move(coded[i])};
      if (b.kind == BlockKind::Model) fingerprint = model_id;
      blocks.push_back(std::move(b));
    }
  }
  // Adaptation and mixing only matter to model-coded blocks.
  const bool adapted = options.adapt && !fingerprint.empty(), mixed = options.mix && !fingerprint.empty();
  std::vector<uint8_t> out;
  if (!blocks.empty()) {
    const uint64_t original = c.restores_content ? c.size : file.size();
    out = assemble(c.mode, original, hash, fingerprint, fingerprint.empty() ? std::vector<uint8_t>() : c.context, c.extra, blocks,
                   adapted ? options.adapt : std::nullopt, c.residual_channels, mixed,
                   !fingerprint.empty() && model->weight_format() == WeightFormat::BF16, one_context && !fingerprint.empty(),
                   written_mixer_version);
  }
  // The whole file in one stored block (raw mode) when that is smaller: never worse than zstd -19.
  std::vector<uint8_t> z = zstd19(file.data(), file.size());
  Block whole{BlockKind::Raw, file.size(), file};
  if (z.size() < file.size()) whole = {BlockKind::Zstd, file.size(), std::move(z)};
  std::vector<uint8_t> single = assemble(RbzMode::Raw, file.size(), XXH64(file.data(), file.size(), 0), "", {}, {}, {whole});
  if (out.empty() || (single.size() <= out.size() && !options.model_only && options.whole_file_fallback)) {
    out = std::move(single);
    st.mode = RbzMode::Raw;
    st.whole_file_fallback = !blocks.empty();
    st.blocks = 1;
    (whole.kind == BlockKind::Zstd ? st.zstd_blocks : st.raw_blocks) = 1;
  } else {
    st.mode = c.mode;
    st.adapted = adapted;
    st.mixed = mixed;
    st.blocks = blocks.size();
    for (const Block& b : blocks) {
      (b.kind == BlockKind::Model ? st.model_blocks : b.kind == BlockKind::Zstd ? st.zstd_blocks : st.raw_blocks)++;
      if (b.kind == BlockKind::Model) st.model_payload_bytes += b.payload.size();
    }
  }
  st.content_bytes = c.size;
  if (stats) *stats = st;
  return out;
}

}  // namespace rb
