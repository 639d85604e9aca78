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

namespace {

// A file on its way through compress: its content, how it is cut into lanes, and what they were
// coded to.
struct Job {
  const std::string* path = nullptr;
  const std::vector<uint8_t>* file = nullptr;
  Content c;
  uint64_t hash = 0;
  std::vector<ByteSpan> segments;  // empty: nothing model-coded
  bool one_context = false;
  SegmentCoderOptions so;  // mixing shapes and version
  std::vector<std::vector<uint8_t>> coded;
  std::vector<double> bits;
  uint64_t adapt_bytes_trained = 0;
};

// Everything before the model: the content, and its lanes when a model codes it.
Job prepare(const std::string& path, const std::vector<uint8_t>& file, Model* model, const CompressOptions& options) {
  if (options.segment_bytes > kMaxModelBlock) throw Error("segment size over the limit of 16 MiB");
  Job job;
  job.path = &path;
  job.file = &file;
  Content& c = job.c;
  c = analyse(path, file, model ? model->config().P : 0, options.force_raw);
  job.hash = content_hash(file, c);  // of the pixels or samples themselves, in either form
  // The model reads residuals: code those, and tell the decoder to turn them back.
  if (model && model->media_form == MediaForm::Residual && c.mode != RbzMode::Raw && c.size > 0) to_residual_form(&c);
  if (c.mode != RbzMode::Raw) {
    // What decompress will do with this content, done now: a file whose pixels or samples would
    // not come back exactly (any layout the mode does not foresee) is coded as its bytes instead.
    // An archive that compress writes always decompresses.
    bool restores = false;
    try {
      const std::vector<uint8_t> back =
          restore_file(path, c.mode, c.extra, c.residual_channels, job.hash, c.restores_content ? c.size : file.size(),
                       std::vector<uint8_t>(c.body, c.body + c.size));
      restores = c.restores_content || back == file;
    } catch (const Error&) {}
    if (!restores) {
      c = analyse(path, file, model ? model->config().P : 0, true);
      job.hash = content_hash(file, c);
    }
  }
  job.so.mixer_version = options.mixer_version;
  if (!model || c.size == 0) return job;
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
  job.one_context = seg >= c.size;
  for (size_t at = 0; at < c.size; at += seg) job.segments.push_back({c.body + at, std::min(seg, c.size - at)});
  if (options.adapt && job.segments.size() > size_t(options.lockstep))
    throw Error(path + ": --adapt needs every segment in one lockstep group (" + std::to_string(job.segments.size()) +
                " segments)");
  SegmentCoderOptions& so = job.so;
  so.lockstep = options.lockstep;
  so.progress = options.progress;
  so.times = options.times;
  // Lanes that share mixer statistics: version 3, all of them model-coded and stepped in one
  // group (so at most kMaxSharedLanes); one lane codes the same as version 2 and is written so.
  const bool share = options.mix && options.mixer_version == kSharedBitMixerVersion;
  if (share && (job.segments.size() == 1 || job.segments.size() > kMaxSharedLanes)) so.mixer_version = kBitMixerVersion;
  if (options.mix)
    for (const ByteSpan& s : job.segments)
      so.mix_shapes.push_back(lane_shape(c.mode, c.extra, c.residual_channels, size_t(s.data - c.body), s.size));
  return job;
}

// Codes a file's lanes on their own (every file with adaptation or several lanes).
void code_alone(Job& job, Model& model, const CompressOptions& options) {
  SegmentCoderOptions so = job.so;
  so.segment_bits = &job.bits;
  std::optional<WeightsSnapshot> pretrained;
  std::optional<OnlineAdapter> adapter;
  if (options.adapt) {
    const size_t P = size_t(model.config().P);
    adapter.emplace(model, *options.adapt, *job.path);
    pretrained.emplace(model);
    so.round_positions = options.adapt->round_positions;
    // Encoder windows must end on every round: the longest multiple of P up to 1024 dividing it.
    so.window = int(P);
    for (size_t w = 1024 / P * P; w >= P; w -= P)
      if (options.adapt->round_positions % w == 0) {
        so.window = int(w);
        break;
      }
    so.after_round = [&](size_t positions) { adapter->round(coded_prefixes(job.segments, job.c.context.size(), positions)); };
  }
  job.coded = encode_segments(model, job.c.context, job.segments, so);
  if (adapter) job.adapt_bytes_trained = adapter->bytes_trained();
}

// Codes several one-lane files together, each its own row of every step: the payloads are those
// that coding each alone gives (batch invariance, doc/SPEC.md §7). Same context length for all.
void code_side_by_side(const std::vector<Job*>& jobs, Model& model, const CompressOptions& options) {
  std::vector<ByteSpan> contexts, segments;
  SegmentCoderOptions so = jobs[0]->so;
  so.mix_shapes.clear();
  std::vector<double> bits;
  so.segment_bits = &bits;
  for (Job* j : jobs) {
    contexts.push_back({j->c.context.data(), j->c.context.size()});
    segments.push_back(j->segments[0]);
    if (options.mix) so.mix_shapes.push_back(j->so.mix_shapes[0]);
  }
  std::vector<std::vector<uint8_t>> coded = encode_lanes(model, contexts, segments, so);
  for (size_t i = 0; i < jobs.size(); i++) {
    jobs[i]->coded = {std::move(coded[i])};
    jobs[i]->bits = {bits[i]};
  }
}

// Each lane kept as the smallest of model-coded, zstd and raw, and the whole file as one zstd block
// when that is smaller.
std::vector<uint8_t> finish(Job& job, Model* model, const std::string& model_id, const CompressOptions& options,
                            CompressStats* stats) {
  const Content& c = job.c;
  const std::vector<uint8_t>& file = *job.file;
  CompressStats st;
  st.adapt_bytes_trained = job.adapt_bytes_trained;
  for (double b : job.bits) st.model_bits += b;
  std::vector<Block> blocks;
  std::string fingerprint;
  const uint8_t written_mixer_version = job.so.mixer_version;
  for (size_t i = 0; i < job.segments.size(); i++) {
    const ByteSpan& s = job.segments[i];
    std::vector<uint8_t> z = zstd19(s.data, s.size);
    Block b{BlockKind::Raw, s.size, std::vector<uint8_t>(s.data, s.data + s.size)};
    if (z.size() < b.payload.size()) b = {BlockKind::Zstd, s.size, std::move(z)};
    // Shared statistics need every lane decoded through the mixer: none is stored on its own.
    if (job.coded[i].size() < b.payload.size() || options.model_only || written_mixer_version == kSharedBitMixerVersion)
      b = {BlockKind::Model, s.size, std::move(job.coded[i])};
    if (b.kind == BlockKind::Model) fingerprint = model_id;
    blocks.push_back(std::move(b));
  }
  // Adaptation and mixing only matter to model-coded blocks.
  const bool adapted = options.adapt && !fingerprint.empty(), mixed = options.mix && !fingerprint.empty();
  std::vector<uint8_t> out;
  if (!blocks.empty()) {
    const uint64_t original = c.restores_content ? c.size : file.size();
    out = assemble(c.mode, original, job.hash, fingerprint, fingerprint.empty() ? std::vector<uint8_t>() : c.context, c.extra,
                   blocks, adapted ? options.adapt : std::nullopt, c.residual_channels, mixed,
                   !fingerprint.empty() && model->weight_values() == WeightFormat::BF16,
                   !fingerprint.empty() && model->weight_format() == WeightFormat::I8, job.one_context && !fingerprint.empty(),
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

// Adaptation trains the weights in fp32 after every round; int8 copies of them would have to be
// quantized again each time, and the header forbids the pair.
void refuse_int8_adaptation(const std::string& path, const Model* model, const CompressOptions& options) {
  if (options.adapt && model && model->weight_format() == WeightFormat::I8)
    throw Error(path + ": --adapt cannot be used with int8 weights (use --weights bf16 or fp32)");
}

}  // namespace

std::vector<uint8_t> compress_file(const std::string& path, const std::vector<uint8_t>& file, Model* model,
                                   const CompressOptions& options, CompressStats* stats) {
  // Adaptation trains the weights in fp32 (they stop being bf16 values after its first step): a
  // bf16 model codes such a file on the fp32 kernels with its values as they are (the same bits
  // until then; the archive records fp32 weights of the same fingerprint), and is bf16 again after.
  refuse_int8_adaptation(path, model, options);
  Bf16Again bf16_again;
  if (options.adapt && model && model->weight_format() == WeightFormat::BF16) bf16_again.widen(model);
  Job job = prepare(path, file, model, options);
  std::string model_id;
  if (!job.segments.empty()) {
    model_id = model_fingerprint(*model);  // of the pretrained weights; hashes every weight once
    code_alone(job, *model, options);
  }
  return finish(job, model, model_id, options, stats);
}

std::vector<std::vector<uint8_t>> compress_files(const std::vector<std::string>& paths,
                                                 const std::vector<const std::vector<uint8_t>*>& files, Model* model,
                                                 const CompressOptions& options, std::vector<CompressStats>* stats) {
  if (paths.size() != files.size()) throw Error("compress_files: one path per file");
  if (!paths.empty()) refuse_int8_adaptation(paths[0], model, options);
  if (options.adapt || !model) {  // adaptation changes the weights as each file goes: one file at a time
    std::vector<std::vector<uint8_t>> out;
    if (stats) stats->assign(files.size(), {});
    for (size_t i = 0; i < files.size(); i++)
      out.push_back(compress_file(paths[i], *files[i], model, options, stats ? &(*stats)[i] : nullptr));
    return out;
  }
  std::vector<Job> jobs;
  for (size_t i = 0; i < files.size(); i++) jobs.push_back(prepare(paths[i], *files[i], model, options));
  const std::string model_id = model_fingerprint(*model);
  // One-lane files side by side, grouped by context length, the longest together (rows that end
  // early idle); groups bounded by the lockstep width and by kSideBySideBytes (the mixers' tables).
  std::vector<Job*> side;
  for (Job& j : jobs) {
    if (j.segments.size() == 1)
      side.push_back(&j);
    else if (!j.segments.empty())
      code_alone(j, *model, options);
  }
  std::stable_sort(side.begin(), side.end(), [](const Job* a, const Job* b) {
    return a->c.context.size() != b->c.context.size() ? a->c.context.size() < b->c.context.size()
                                                      : a->segments[0].size > b->segments[0].size;
  });
  for (size_t i = 0; i < side.size();) {
    std::vector<Job*> group{side[i]};
    uint64_t bytes = side[i]->segments[0].size;
    for (i++; i < side.size() && group.size() < size_t(std::max(1, options.lockstep)) &&
              side[i]->c.context.size() == group[0]->c.context.size() && bytes + side[i]->segments[0].size <= kSideBySideBytes;
         i++) {
      group.push_back(side[i]);
      bytes += side[i]->segments[0].size;
    }
    code_side_by_side(group, *model, options);
  }
  std::vector<std::vector<uint8_t>> out;
  if (stats) stats->assign(files.size(), {});
  for (size_t i = 0; i < jobs.size(); i++)
    out.push_back(finish(jobs[i], model, model_id, options, stats ? &(*stats)[i] : nullptr));
  return out;
}

}  // namespace rb
