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

namespace {

// A parsed archive with its stored blocks restored and its model-coded blocks listed, to decode.
struct Unpacked {
  Parsed ps;
  std::vector<uint8_t> content;
  std::vector<ByteSpan> payloads, segments;  // segments: every block's bytes, for adaptation's windows
  std::vector<MutableByteSpan> outputs;
  std::vector<LaneShape> mix_shapes;
};

// The model checked against the archive (numerics contract, fingerprint) and put on the encoder's
// weight format.
void check_model_for(const std::string& path, const Parsed& ps, Model* model, Bf16Again& bf16_again) {
  const RbzHeaderInfo& info = ps.info;
  if (info.model_fingerprint.empty()) return;
  if (info.numerics_version != uint32_t(kNumericsVersion))
    throw Error(path + ": coded under numerics contract v" + std::to_string(info.numerics_version) + "; this build implements v" +
                std::to_string(kNumericsVersion) + " and cannot reproduce its probabilities");
  if (!model)
    throw Error(path + ": needs the model it was compressed with (fingerprint " + info.model_fingerprint + "); give it with -m");
  // The encoder's weights: rounded to bf16 when the header says so (the fingerprint is of those),
  // and its products: int8 over those values, or not (I8 keeps the weights and the fingerprint).
  if (info.bf16_weights) model->set_weight_format(WeightFormat::BF16);
  model->set_int8_products(info.int8_products);
  // An adapted file coded by a bf16 model ran on the fp32 kernels (compress_file).
  if (info.adapt && !info.bf16_weights && model->weight_format() == WeightFormat::BF16) bf16_again.widen(model);
  const std::string have = model_fingerprint(*model);
  if (have != info.model_fingerprint)
    throw ModelMismatchError(path,
                             path + ": compressed with model " + info.model_fingerprint + ", but the given model is " + have);
  if (ps.context.size() % size_t(model->config().P) != 0) throw Error(path + ": damaged .rbz header (context)");
}

Unpacked unpack(const std::string& path, const std::vector<uint8_t>& rbz, Parsed ps) {
  Unpacked u;
  u.ps = std::move(ps);
  const RbzHeaderInfo& info = u.ps.info;
  uint64_t content_size = 0;
  for (const Block& b : u.ps.blocks) content_size += b.length;
  try {
    u.content.resize(content_size);
  } catch (const std::bad_alloc&) {
    throw Error(path + ": not enough memory to restore its " + std::to_string(content_size) + " bytes");
  }
  size_t at = 0;
  for (size_t i = 0; i < u.ps.blocks.size(); i++) {
    const Block& b = u.ps.blocks[i];
    const uint8_t* payload = rbz.data() + u.ps.offsets[i];
    const size_t size = u.ps.offsets[i + 1] - u.ps.offsets[i];
    if (b.kind == BlockKind::Raw) {
      if (size) std::memcpy(u.content.data() + at, payload, size);
    } else if (b.kind == BlockKind::Zstd) {
      const unsigned long long declared = ZSTD_getFrameContentSize(payload, size);
      if (declared != b.length) throw Error(path + ": damaged zstd block " + std::to_string(i));
      const size_t r = ZSTD_decompress(u.content.data() + at, b.length, payload, size);
      if (ZSTD_isError(r) || r != b.length) throw Error(path + ": damaged zstd block " + std::to_string(i));
    } else {
      u.payloads.push_back({payload, size});
      u.outputs.push_back({u.content.data() + at, size_t(b.length)});
      if (info.mixed) u.mix_shapes.push_back(lane_shape(info.mode, u.ps.extra, u.ps.residual_channels, at, size_t(b.length)));
    }
    u.segments.push_back({u.content.data() + at, size_t(b.length)});
    at += size_t(b.length);
  }
  if (info.mixed && info.mixer_version == kSharedBitMixerVersion &&
      (u.payloads.size() != u.ps.blocks.size() || u.payloads.size() > kMaxSharedLanes))
    throw Error(path + ": damaged .rbz header (lanes that share mixer statistics must all be model-coded, at most " +
                std::to_string(kMaxSharedLanes) + ")");
  return u;
}

std::vector<uint8_t> restore(const std::string& path, Unpacked& u) {
  const Parsed& ps = u.ps;
  return restore_file(path, ps.info.mode, ps.extra, ps.residual_channels, ps.hash, ps.info.original_size, std::move(u.content));
}

// Whether an archive's one model-coded lane may decode beside others': one lane, no adaptation,
// and mixer statistics of its own.
bool decodes_side_by_side(const Parsed& ps) {
  return !ps.info.model_fingerprint.empty() && !ps.info.adapt && ps.blocks.size() == 1 && ps.blocks[0].kind == BlockKind::Model &&
         !(ps.info.mixed && ps.info.mixer_version == kSharedBitMixerVersion);
}

// What must agree for archives to decode in one batch (one stepper, one set of coder options).
bool same_batch(const Parsed& a, const Parsed& b) {
  return a.context.size() == b.context.size() && a.info.bf16_weights == b.info.bf16_weights &&
         a.info.int8_products == b.info.int8_products && a.info.mixed == b.info.mixed &&
         a.info.mixer_version == b.info.mixer_version && a.info.model_fingerprint == b.info.model_fingerprint;
}

}  // namespace

std::vector<uint8_t> decompress_file(const std::string& path, const std::vector<uint8_t>& rbz, Model* model,
                                     const std::function<void(uint64_t, uint64_t)>& progress, int lockstep, CoderTimes* times) {
  Parsed parsed = parse(path, rbz);
  Bf16Again bf16_again;
  check_model_for(path, parsed, model, bf16_again);
  Unpacked u = unpack(path, rbz, std::move(parsed));
  const RbzHeaderInfo& info = u.ps.info;
  if (!u.payloads.empty()) {
    SegmentCoderOptions so;
    so.lockstep = lockstep;
    so.progress = progress;
    so.times = times;
    so.mix_shapes = u.mix_shapes;
    so.mixer_version = info.mixer_version;
    std::optional<WeightsSnapshot> pretrained;
    std::optional<OnlineAdapter> adapter;
    if (info.adapt) {
      if (u.payloads.size() > 1024) throw Error(path + ": damaged .rbz header (too many adapted segments)");
      adapter.emplace(*model, *info.adapt, path + ": damaged .rbz header");
      pretrained.emplace(*model);
      so.round_positions = info.adapt->round_positions;
      so.after_round = [&](size_t positions) { adapter->round(coded_prefixes(u.segments, u.ps.context.size(), positions)); };
    }
    try {
      decode_segments(*model, u.ps.context, u.payloads, u.outputs, so);
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
  }
  return restore(path, u);
}

std::vector<std::vector<uint8_t>> decompress_files(const std::vector<std::string>& paths,
                                                   const std::vector<const std::vector<uint8_t>*>& rbzs, Model* model,
                                                   const std::function<void(uint64_t, uint64_t)>& progress, int lockstep,
                                                   std::vector<std::exception_ptr>* failures) {
  if (paths.size() != rbzs.size()) throw Error("decompress_files: one path per archive");
  std::vector<std::vector<uint8_t>> out(rbzs.size());
  if (failures) failures->assign(rbzs.size(), nullptr);
  // Runs f for archive k: an Error goes to failures[k] when the caller collects them.
  const auto for_archive = [&](size_t k, const auto& f) {
    if (!failures) return f();
    try {
      f();
    } catch (const Error&) {
      (*failures)[k] = std::current_exception();
    }
  };
  const auto alone = [&](size_t k) {
    for_archive(k, [&] { out[k] = decompress_file(paths[k], *rbzs[k], model, progress, lockstep); });
  };
  for (size_t i = 0; i < rbzs.size();) {
    // This archive and the next ones that decode beside it, in the given order (the model's weight
    // format follows each archive's header as decompress_file's would); their headers parsed once.
    std::optional<Parsed> first_parsed;
    try {
      first_parsed = parse(paths[i], *rbzs[i]);
    } catch (const Error&) {
      alone(i++);  // reports the damaged header
      continue;
    }
    std::vector<Parsed> batch;
    batch.reserve(std::min(rbzs.size() - i, size_t(std::max(1, lockstep))));  // `first` stays valid
    batch.push_back(std::move(*first_parsed));
    const Parsed& first = batch[0];
    size_t end = i + 1;
    uint64_t bytes = first.info.original_size;
    if (model && decodes_side_by_side(first))
      for (; end < rbzs.size() && end - i < size_t(std::max(1, lockstep)); end++) {
        std::optional<Parsed> next;
        try {
          next = parse(paths[end], *rbzs[end]);
        } catch (const Error&) {  // a damaged header: reported when its turn comes, after the files before it
          break;
        }
        if (!decodes_side_by_side(*next) || !same_batch(first, *next) || bytes + next->blocks[0].length > kSideBySideBytes) break;
        bytes += next->blocks[0].length;
        batch.push_back(std::move(*next));
      }
    if (end == i + 1) {
      alone(i++);
      continue;
    }
    // The archives that pass their checks decode as one batch; one that fails costs only itself.
    std::vector<size_t> rows;
    std::vector<Unpacked> group;
    for (size_t k = i; k < end; k++)
      for_archive(k, [&] {
        Bf16Again unused;  // no adaptation here: the weights' format only follows the header
        check_model_for(paths[k], batch[k - i], model, unused);
        group.push_back(unpack(paths[k], *rbzs[k], std::move(batch[k - i])));
        rows.push_back(k);
      });
    SegmentCoderOptions so;
    so.lockstep = lockstep;
    so.progress = progress;
    so.mixer_version = first.info.mixer_version;
    std::vector<ByteSpan> contexts, payloads;
    std::vector<MutableByteSpan> outputs;
    for (Unpacked& u : group) {
      contexts.push_back({u.ps.context.data(), u.ps.context.size()});
      payloads.push_back(u.payloads[0]);
      outputs.push_back(u.outputs[0]);
      if (u.ps.info.mixed) so.mix_shapes.push_back(u.mix_shapes[0]);
    }
    // A damaged payload stops its own row only; its checksum is each archive's own too.
    std::vector<std::string> lane_errors(group.size());
    so.lane_errors = &lane_errors;
    bool decoded = false;
    if (!group.empty()) try {
        decode_lanes(*model, contexts, payloads, outputs, so);
        decoded = true;
      } catch (const Error&) {  // refused as a whole: each alone, so that the error names its archive
        for (size_t k : rows) alone(k);
      }
    for (size_t r = 0; decoded && r < rows.size(); r++)
      for_archive(rows[r], [&] {
        if (!lane_errors[r].empty()) throw Error(paths[rows[r]] + ": " + lane_errors[r]);
        out[rows[r]] = restore(paths[rows[r]], group[r]);
      });
    i = end;
  }
  return out;
}

}  // namespace rb
