// decompress_file: the header checked, each block restored (model-coded lanes stepped in
// lockstep), the content turned back into the file and checked against its checksum.
#include <xxhash.h>
#include <zstd.h>

#include "codecs/bit_mixer.h"
#include "codecs/rbz_internal.h"
#include "kernels/numerics.h"

namespace rb {

using namespace rbz_detail;

RbzHeaderInfo read_rbz_header(const std::string& path, const std::vector<uint8_t>& rbz) { return parse(path, rbz).info; }

std::vector<uint8_t> decompress_file(const std::string& path, const std::vector<uint8_t>& rbz, Model* model,
                                     const std::function<void(uint64_t, uint64_t)>& progress, int lockstep, CoderTimes* times) {
  const Parsed ps = parse(path, rbz);
  const RbzHeaderInfo& info = ps.info;
  Bf16Again bf16_again;
  if (!info.model_fingerprint.empty()) {
    if (info.numerics_version != uint32_t(kNumericsVersion))
      throw Error(path + ": coded under numerics contract v" + std::to_string(info.numerics_version) +
                  "; this build implements v" + std::to_string(kNumericsVersion) + " and cannot reproduce its probabilities");
    if (!model)
      throw Error(path + ": needs the model it was compressed with (fingerprint " + info.model_fingerprint +
                  "); give it with -m");
    // The encoder's weights: rounded to bf16 when the header says so (the fingerprint is of those).
    if (info.bf16_weights) model->set_weight_format(WeightFormat::BF16);
    // An adapted file coded by a bf16 model ran on the fp32 kernels (compress_file).
    if (info.adapt && !info.bf16_weights && model->weight_format() == WeightFormat::BF16) bf16_again.widen(model);
    const std::string have = model_fingerprint(*model);
    if (have != info.model_fingerprint)
      throw ModelMismatchError(path + ": compressed with model " + info.model_fingerprint + ", but the given model is " + have);
    if (ps.context.size() % size_t(model->config().P) != 0) throw Error(path + ": damaged .rbz header (context)");
  }
  uint64_t content_size = 0;
  for (const Block& b : ps.blocks) content_size += b.length;
  std::vector<uint8_t> content;
  try {
    content.resize(content_size);
  } catch (const std::bad_alloc&) {
    throw Error(path + ": not enough memory to restore its " + std::to_string(content_size) + " bytes");
  }
  std::vector<ByteSpan> payloads, segments;  // segments: every block's bytes, for adaptation's windows
  std::vector<MutableByteSpan> outputs;
  std::vector<LaneShape> mix_shapes;
  size_t at = 0;
  for (size_t i = 0; i < ps.blocks.size(); i++) {
    const Block& b = ps.blocks[i];
    const uint8_t* payload = rbz.data() + ps.offsets[i];
    const size_t size = ps.offsets[i + 1] - ps.offsets[i];
    if (b.kind == BlockKind::Raw) {
      if (size) std::memcpy(content.data() + at, payload, size);
    } else if (b.kind == BlockKind::Zstd) {
      const unsigned long long declared = ZSTD_getFrameContentSize(payload, size);
      if (declared != b.length) throw Error(path + ": damaged zstd block " + std::to_string(i));
      const size_t r = ZSTD_decompress(content.data() + at, b.length, payload, size);
      if (ZSTD_isError(r) || r != b.length) throw Error(path + ": damaged zstd block " + std::to_string(i));
    } else {
      payloads.push_back({payload, size});
      outputs.push_back({content.data() + at, size_t(b.length)});
      if (info.mixed) mix_shapes.push_back(lane_shape(info.mode, ps.extra, ps.residual_channels, at, size_t(b.length)));
    }
    segments.push_back({content.data() + at, size_t(b.length)});
    at += size_t(b.length);
  }
  if (info.mixed && info.mixer_version == kSharedBitMixerVersion &&
      (payloads.size() != ps.blocks.size() || payloads.size() > kMaxSharedLanes))
    throw Error(path + ": damaged .rbz header (lanes that share mixer statistics must all be model-coded, at most " +
                std::to_string(kMaxSharedLanes) + ")");
  if (!payloads.empty()) {
    SegmentCoderOptions so;
    so.lockstep = lockstep;
    so.progress = progress;
    so.times = times;
    so.mix_shapes = std::move(mix_shapes);
    so.mixer_version = info.mixer_version;
    std::optional<WeightsSnapshot> pretrained;
    std::optional<OnlineAdapter> adapter;
    if (info.adapt) {
      if (payloads.size() > 1024) throw Error(path + ": damaged .rbz header (too many adapted segments)");
      adapter.emplace(*model, *info.adapt, path + ": damaged .rbz header");
      pretrained.emplace(*model);
      so.round_positions = info.adapt->round_positions;
      so.after_round = [&](size_t positions) { adapter->round(coded_prefixes(segments, ps.context.size(), positions)); };
    }
    try {
      decode_segments(*model, ps.context, payloads, outputs, so);
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
  }
  return restore_file(path, info.mode, ps.extra, ps.residual_channels, ps.hash, info.original_size, std::move(content));
}

}  // namespace rb
