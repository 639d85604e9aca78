#include "codecs/rbz.h"

#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <numeric>
#include <optional>

#include "codecs/media.h"
#include "codecs/media_residuals.h"
#include "codecs/segment_coder.h"
#include "kernels/numerics.h"
#include "src/errors.h"

namespace rb {

namespace {

constexpr uint8_t kMagic[4] = {'R', 'B', 'Z', 0x1a};
enum class BlockKind : uint8_t { Model = 1, Zstd = 2, Raw = 3 };
constexpr uint8_t kWavContainer = 0, kFlacContainer = 1;  // audio mode's first extra byte
constexpr size_t kMaxContext = 4096, kMaxModelBlock = size_t(16) << 20;
constexpr uint64_t kMaxContent = uint64_t(1) << 40;

struct Writer {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void bytes(const uint8_t* p, size_t n) { b.insert(b.end(), p, p + n); }
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; i++) b.push_back(uint8_t(v >> (8 * i)));
  }
};

struct Reader {
  const uint8_t* p;
  size_t n, pos = 0;
  const std::string& path;
  void need(size_t k) {
    if (k > n - pos) throw Error(path + ": truncated .rbz file (header ends early)");
  }
  uint64_t get(int k) {
    need(size_t(k));
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v |= uint64_t(p[pos + size_t(i)]) << (8 * i);
    pos += size_t(k);
    return v;
  }
  std::vector<uint8_t> bytes(size_t k) {
    need(k);
    std::vector<uint8_t> v(p + pos, p + pos + k);
    pos += k;
    return v;
  }
};

struct Block {
  BlockKind kind;
  uint64_t length;  // bytes of content it restores
  std::vector<uint8_t> payload;
};

// What the model codes: the content body, the context (header patches) it is conditioned on,
// and what the mode keeps beside it.
struct Content {
  RbzMode mode = RbzMode::Raw;
  size_t unit = 1;  // bytes of one pixel or one audio frame: segments start on whole ones
  bool restores_content = false;  // image, FLAC: what comes back is the pixels or samples, not the file's bytes
  std::vector<uint8_t> context, extra, owned;
  const uint8_t* body = nullptr;
  size_t size = 0;
  int residual_channels = 0;  // > 0: owned holds the residual form of the pixels or samples (codecs/media_residuals.h)
};

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }

// A 16-bit PCM WAV: where its sample bytes are, in whole frames (a trailing partial frame stays
// with the verbatim bytes after the samples). Anything unusual (another sample format, a data
// chunk that claims more than the file holds) is left to raw mode.
bool find_wav16_samples(const std::vector<uint8_t>& f, size_t* off, size_t* len, int* channels, int* rate) {
  if (f.size() < 12 || std::memcmp(f.data(), "RIFF", 4) || std::memcmp(f.data() + 8, "WAVE", 4)) return false;
  bool fmt_ok = false;
  for (size_t pos = 12; pos + 8 <= f.size();) {
    const uint32_t size = le32(f.data() + pos + 4);
    const uint8_t* body = f.data() + pos + 8;
    if (size > f.size() - pos - 8) return false;
    if (!std::memcmp(f.data() + pos, "fmt ", 4)) {
      if (size < 16) return false;
      const uint16_t tag = le16(body), ch = le16(body + 2), align = le16(body + 12), bits = le16(body + 14);
      const bool pcm = tag == 1 || (tag == 0xFFFE && size >= 40 && le16(body + 24) == 1);
      if (!pcm || bits != 16 || ch < 1 || ch > 255 || align != 2 * ch) return false;
      *channels = ch;
      *rate = int(le32(body + 4));
      fmt_ok = *rate > 0;
    } else if (!std::memcmp(f.data() + pos, "data", 4)) {
      if (!fmt_ok) return false;
      *off = pos + 8;
      *len = size - size % (2 * uint32_t(*channels));
      return true;
    }
    pos += 8 + size_t(size) + (size & 1);
  }
  return false;
}

// Pixels (row-major, interleaved) or MSB-first samples as their residual form, and back.
std::vector<uint8_t> image_residual_bytes(const uint8_t* pixels, int width, int height, int channels) {
  Image img{width, height, channels, std::vector<uint8_t>(pixels, pixels + size_t(width) * size_t(height) * size_t(channels))};
  return image_residuals(img);
}
std::vector<uint8_t> audio_residual_bytes(const uint8_t* msb_first, size_t n, int channels) {
  Audio a{1, channels, std::vector<int16_t>(n / 2)};
  for (size_t i = 0; i < a.samples.size(); i++) a.samples[i] = int16_t(load_msb16(msb_first + 2 * i));
  std::vector<uint8_t> out(n);
  const std::vector<uint16_t> r = audio_residuals(a);
  for (size_t i = 0; i < r.size(); i++) store_msb16(out.data() + 2 * i, r[i]);
  return out;
}
void restore_from_residuals(std::vector<uint8_t>* content, RbzMode mode, const std::vector<uint8_t>& extra, int channels,
                            const std::string& path) {
  if (mode == RbzMode::Image) {
    if (extra.size() != 12) throw Error(path + ": damaged .rbz header (image geometry)");
    Image img{int(le32(extra.data())), int(le32(extra.data() + 4)), int(le32(extra.data() + 8)), {}};
    if (img.width <= 0 || img.height <= 0 || img.channels != channels ||
        uint64_t(img.width) * uint64_t(img.height) * uint64_t(img.channels) != content->size())
      throw Error(path + ": damaged .rbz header (image geometry)");
    pixels_from_residuals(content->data(), &img);
    *content = std::move(img.pixels);
  } else if (mode == RbzMode::Audio) {
    if (content->size() % (2 * size_t(channels))) throw Error(path + ": damaged .rbz header (audio layout)");
    std::vector<uint16_t> r(content->size() / 2);
    for (size_t i = 0; i < r.size(); i++) r[i] = load_msb16(content->data() + 2 * i);
    Audio a{1, channels, {}};
    samples_from_residuals(r.data(), r.size(), &a);
    for (size_t i = 0; i < a.samples.size(); i++) store_msb16(content->data() + 2 * i, uint16_t(a.samples[i]));
  } else {
    throw Error(path + ": damaged .rbz header (residual form in raw mode)");
  }
}

// PNM's header fields after the magic: width, height and (P2, P3, P5, P6) maxval, skipping
// whitespace and comments; 0 where malformed.
int pnm_maxval(const std::vector<uint8_t>& f) {
  if (f.size() < 3 || f[0] != 'P' || f[1] < '1' || f[1] > '6') return 0;
  if (f[1] == '1' || f[1] == '4') return 1;  // bitmaps
  size_t i = 2;
  long fields[3] = {0, 0, 0};
  for (long& v : fields) {
    for (;;) {
      while (i < f.size() && std::isspace(f[i])) i++;
      if (i < f.size() && f[i] == '#') {
        while (i < f.size() && f[i] != '\n' && f[i] != '\r') i++;
        continue;
      }
      break;
    }
    if (i >= f.size() || !std::isdigit(f[i])) return 0;
    while (i < f.size() && std::isdigit(f[i]) && v < 1000000) v = v * 10 + (f[i++] - '0');
  }
  return int(std::min<long>(fields[2], 1 << 20));
}

// Image mode keeps pixels as 8-bit samples: only files whose every sample is exactly one such
// (PNG of at most 8 bits per sample, PNM with maxval 255, BMP) are coded as pixels. 16-bit PNGs and
// PNMs, and PNMs whose maxval gives the values another meaning, are coded as the file's bytes.
bool pixels_are_the_whole_image(const std::vector<uint8_t>& f) {
  static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (f.size() >= 8 && !std::memcmp(f.data(), png, 8)) return f.size() >= 33 && !std::memcmp(f.data() + 12, "IHDR", 4) && f[24] <= 8;
  if (f.size() >= 2 && f[0] == 'P') return (f[1] == '5' || f[1] == '6') && pnm_maxval(f) == 255;
  return f.size() >= 2 && f[0] == 'B' && f[1] == 'M';
}

Content analyse(const std::string& path, const std::vector<uint8_t>& file, int P, bool force_raw) {
  Content c;
  c.body = file.data();
  c.size = file.size();
  if (P > 0) c.context = make_header(Modality::Text, P);
  if (force_raw || P <= 0) return c;
  const Modality m = detect_modality(file.data(), file.size());
  auto starts = [&](const char* s) { return file.size() >= std::strlen(s) && !std::memcmp(file.data(), s, std::strlen(s)); };
  // Lossless image formats only: a JPEG's pixels are not what the file stores.
  const bool lossless_image = pixels_are_the_whole_image(file);
  if (m == Modality::Image && lossless_image) {
    Image img;
    try {
      img = read_image(path);
    } catch (const Error&) {
      return c;  // not decodable as an image: its bytes are still a file to compress
    }
    const std::vector<uint8_t> s = image_stream(img, P);
    const size_t h = media_header_size(P);
    c.mode = RbzMode::Image;
    c.context.assign(s.begin(), s.begin() + long(h));
    c.owned.assign(s.begin() + long(h), s.end());
    Writer x;
    x.u32(uint32_t(img.width));
    x.u32(uint32_t(img.height));
    x.u32(uint32_t(img.channels));
    c.extra = x.b;
    c.unit = size_t(img.channels);
    c.restores_content = true;
  } else if (m == Modality::Audio && starts("fLaC")) {
    // FLAC: its 16-bit samples, restored as a FLAC file with identical samples.
    Audio a;
    std::string notice;
    try {
      a = read_audio(path, &notice);
    } catch (const Error&) {
      return c;
    }
    if (!notice.empty() || a.channels < 1 || a.channels > 8) return c;  // not 16-bit: raw keeps it exact
    c.mode = RbzMode::Audio;
    c.context = audio_stream(Audio{a.sample_rate, a.channels, {}}, P);
    c.owned.resize(a.samples.size() * 2);
    for (size_t i = 0; i < a.samples.size(); i++) store_msb16(c.owned.data() + 2 * i, uint16_t(a.samples[i]));
    Writer x;
    x.u8(kFlacContainer);
    x.u32(uint32_t(a.sample_rate));
    x.u32(uint32_t(a.channels));
    c.extra = x.b;
    c.unit = size_t(2 * a.channels);
    c.restores_content = true;
  } else if (m == Modality::Audio) {
    size_t off = 0, len = 0;
    int channels = 0, rate = 0;
    if (!find_wav16_samples(file, &off, &len, &channels, &rate)) return c;
    Audio header_only{rate, channels, {}};
    c.mode = RbzMode::Audio;
    c.context = audio_stream(header_only, P);
    c.owned.resize(len);
    for (size_t i = 0; i < len; i += 2) c.owned[i] = file[off + i + 1], c.owned[i + 1] = file[off + i];  // MSB first
    Writer x;
    x.u8(kWavContainer);
    x.u64(off);
    x.bytes(file.data(), off);                                  // everything before the samples
    x.bytes(file.data() + off + len, file.size() - off - len);  // and after them, verbatim
    c.extra = x.b;
    c.unit = size_t(2 * channels);
  } else {
    return c;
  }
  c.body = c.owned.data();
  c.size = c.owned.size();
  return c;
}

std::vector<uint8_t> zstd19(const uint8_t* p, size_t n) {
  std::vector<uint8_t> out(ZSTD_compressBound(n));
  const size_t r = ZSTD_compress(out.data(), out.size(), p, n, 19);
  if (ZSTD_isError(r)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(r));
  out.resize(r);
  return out;
}

uint64_t content_hash(const std::vector<uint8_t>& file, const Content& c) {
  // Image and FLAC modes restore pixels or samples, not the file's bytes: their checksum covers those.
  return c.restores_content ? XXH64(c.body, c.size, 0) : XXH64(file.data(), file.size(), 0);
}

constexpr uint8_t kFlagAdapted = 1;   // an adaptation record follows the mode data
constexpr uint8_t kFlagResidual = 2;  // the content is coded in residual form; a residual record follows
constexpr uint8_t kResidualTransformVersion = 1;  // codecs/media_residuals.h as it is now
constexpr uint8_t kFlagMixed = 4;     // model-coded blocks use context mixing; a mixer record (its version) follows

// What a lane of the content holds, for the context mixer's side models. `extra` is the mode's
// record (image: width, height, channels); `residual_channels` > 0 in residual form.
LaneShape lane_shape(RbzMode mode, const std::vector<uint8_t>& extra, int residual_channels, size_t start, size_t length) {
  LaneShape s;
  s.start = start;
  s.length = length;
  if (mode == RbzMode::Image && extra.size() == 12) {
    s.kind = residual_channels ? LaneShape::Kind::ImageResiduals : LaneShape::Kind::ImagePixels;
    s.channels = int(le32(extra.data() + 8));
    s.row_bytes = size_t(le32(extra.data())) * size_t(s.channels);
  } else if (mode == RbzMode::Audio) {
    s.kind = residual_channels ? LaneShape::Kind::AudioResiduals : LaneShape::Kind::AudioSamples;
    s.channels = std::max(1, residual_channels);
  }
  return s;
}

std::vector<uint8_t> assemble(RbzMode mode, uint64_t original_size, uint64_t hash, const std::string& fingerprint,
                              const std::vector<uint8_t>& context, const std::vector<uint8_t>& extra,
                              const std::vector<Block>& blocks, const std::optional<AdaptSettings>& adapt = std::nullopt,
                              int residual_channels = 0, bool mixed = false) {
  Writer w;
  w.bytes(kMagic, 4);
  w.u16(kRbzVersion);
  w.u8(uint8_t(mode));
  w.u8(uint8_t((adapt ? kFlagAdapted : 0) | (residual_channels ? kFlagResidual : 0) | (mixed ? kFlagMixed : 0)));
  w.u32(uint32_t(kNumericsVersion));
  w.u64(original_size);
  w.u64(hash);
  w.u64(fingerprint.empty() ? 0 : std::stoull(fingerprint, nullptr, 16));
  w.u32(uint32_t(context.size()));
  w.u32(uint32_t(extra.size()));
  w.u32(uint32_t(blocks.size()));
  w.bytes(context.data(), context.size());
  w.bytes(extra.data(), extra.size());
  if (adapt) {
    uint32_t lr_bits;
    std::memcpy(&lr_bits, &adapt->lr, 4);
    for (uint32_t v : {adapt->round_positions, adapt->steps, adapt->windows, adapt->window, lr_bits}) w.u32(v);
  }
  if (residual_channels) {
    w.u8(kResidualTransformVersion);
    w.u8(uint8_t(residual_channels));
  }
  if (mixed) w.u8(kMixerVersion);
  for (const Block& b : blocks) {
    w.u8(uint8_t(b.kind));
    w.u64(b.length);
    w.u64(b.payload.size());
  }
  w.u64(XXH64(w.b.data(), w.b.size(), 0));  // the header's own checksum
  for (const Block& b : blocks) w.bytes(b.payload.data(), b.payload.size());
  return w.b;
}

// What the lanes have coded after `positions` stream positions (context included): each segment's
// first positions - C bytes.
std::vector<ByteSpan> coded_prefixes(const std::vector<ByteSpan>& segments, size_t context, size_t positions) {
  std::vector<ByteSpan> out;
  const size_t body = positions > context ? positions - context : 0;
  for (const ByteSpan& s : segments) out.push_back({s.data, std::min(s.size, body)});
  return out;
}

// The file that the content (the blocks' bytes, in the form they were coded) restores: pixels as a
// PNG, samples inside their WAV bytes or as a FLAC, or the bytes themselves; every size and the
// checksum checked. compress_file runs it too, before anything is coded.
std::vector<uint8_t> restore_file(const std::string& path, RbzMode mode, const std::vector<uint8_t>& extra, int residual_channels,
                                  uint64_t hash, uint64_t original_size, std::vector<uint8_t> content) {
  if (residual_channels) restore_from_residuals(&content, mode, extra, residual_channels, path);
  std::vector<uint8_t> out;
  if (mode == RbzMode::Raw) {
    out = std::move(content);
  } else if (mode == RbzMode::Image) {
    if (extra.size() != 12) throw Error(path + ": damaged .rbz header (image geometry)");
    Image img;
    img.width = int(le32(extra.data())), img.height = int(le32(extra.data() + 4)), img.channels = int(le32(extra.data() + 8));
    if (img.width <= 0 || img.height <= 0 || img.channels < 1 || img.channels > 4 ||
        uint64_t(img.width) * uint64_t(img.height) * uint64_t(img.channels) != content.size())
      throw Error(path + ": damaged .rbz header (image geometry)");
    if (XXH64(content.data(), content.size(), 0) != hash) throw Error(path + ": checksum mismatch: the restored pixels are not the original ones");
    img.pixels = std::move(content);
    const std::string png = encode_png(img, path);
    return std::vector<uint8_t>(png.begin(), png.end());
  } else if (!extra.empty() && extra[0] == kFlacContainer) {
    if (extra.size() != 9 || content.size() % 2) throw Error(path + ": damaged .rbz header (audio layout)");
    Audio a;
    a.sample_rate = int(le32(extra.data() + 1));
    a.channels = int(le32(extra.data() + 5));
    if (a.sample_rate <= 0 || a.channels < 1 || a.channels > 8 || content.size() % size_t(2 * a.channels))
      throw Error(path + ": damaged .rbz header (audio layout)");
    if (content.size() != original_size) throw Error(path + ": damaged .rbz file (restored size differs)");
    if (XXH64(content.data(), content.size(), 0) != hash) throw Error(path + ": checksum mismatch: the restored samples are not the original ones");
    a.samples.resize(content.size() / 2);
    for (size_t i = 0; i < a.samples.size(); i++) a.samples[i] = int16_t(load_msb16(content.data() + 2 * i));
    return encode_flac(a, path);
  } else {
    if (extra.size() < 9 || extra[0] != kWavContainer) throw Error(path + ": damaged .rbz header (audio layout)");
    const uint8_t* x = extra.data() + 1;
    const size_t verbatim = extra.size() - 9;
    const uint64_t off = le32(x) | uint64_t(le32(x + 4)) << 32;
    if (off > verbatim || content.size() % 2) throw Error(path + ": damaged .rbz header (audio layout)");
    out.reserve(verbatim + content.size());
    out.insert(out.end(), x + 8, x + 8 + off);
    for (size_t i = 0; i < content.size(); i += 2) out.push_back(content[i + 1]), out.push_back(content[i]);  // back to little-endian
    out.insert(out.end(), x + 8 + off, x + 8 + verbatim);
  }
  if (out.size() != original_size) throw Error(path + ": damaged .rbz file (restored size differs)");
  if (XXH64(out.data(), out.size(), 0) != hash) throw Error(path + ": checksum mismatch: the restored file is not the original");
  return out;
}

}  // namespace

const char* rbz_mode_name(RbzMode m) {
  return m == RbzMode::Image ? "image" : m == RbzMode::Audio ? "audio" : "raw";
}

size_t choose_segment_bytes(uint64_t n, int lockstep) {
  const uint64_t per = (n + uint64_t(std::max(1, lockstep)) - 1) / uint64_t(std::max(1, lockstep));
  return size_t(std::clamp<uint64_t>(per, uint64_t(64) << 10, uint64_t(1) << 20));
}

std::vector<uint8_t> compress_file(const std::string& path, const std::vector<uint8_t>& file, Model* model,
                                   const CompressOptions& options, CompressStats* stats) {
  if (options.segment_bytes > kMaxModelBlock) throw Error("segment size over the limit of 16 MiB");
  CompressStats st;
  Content c = analyse(path, file, model ? model->config().P : 0, options.force_raw);
  uint64_t hash = content_hash(file, c);  // of the pixels or samples themselves, in either form
  if (model && model->media_form == MediaForm::Residual && c.mode != RbzMode::Raw && c.size > 0) {
    // The model reads residuals: code those, and tell the decoder to turn them back.
    const int channels = c.mode == RbzMode::Image ? int(c.unit) : int(c.unit / 2);
    c.owned = c.mode == RbzMode::Image ? image_residual_bytes(c.body, int(le32(c.extra.data())), int(le32(c.extra.data() + 4)), channels)
                                       : audio_residual_bytes(c.body, c.size, channels);
    c.body = c.owned.data();
    c.residual_channels = channels;
    c.context[2] = media_letter(c.mode == RbzMode::Image ? Modality::Image : Modality::Audio, MediaForm::Residual);
  }
  if (c.mode != RbzMode::Raw) {
    // What decompress will do with this content, done now: a file whose pixels or samples would
    // not come back exactly (any layout the mode does not foresee) is coded as its bytes instead.
    // An archive that compress writes always decompresses.
    bool restores = false;
    try {
      const std::vector<uint8_t> back = restore_file(path, c.mode, c.extra, c.residual_channels, hash,
                                                     c.restores_content ? c.size : file.size(), std::vector<uint8_t>(c.body, c.body + c.size));
      restores = c.restores_content || back == file;
    } catch (const Error&) {
    }
    if (!restores) {
      c = analyse(path, file, model ? model->config().P : 0, true);
      hash = content_hash(file, c);
    }
  }
  std::vector<Block> blocks;
  std::string fingerprint;
  if (model && c.size > 0) {
    // Segments start where the model expects a stream to: on a patch boundary and on a whole pixel
    // or audio frame (a segment that began mid-sample would see every sample's bytes swapped).
    const size_t P = size_t(model->config().P), unit = std::lcm(P, c.unit);
    size_t seg = options.segment_bytes ? options.segment_bytes : choose_segment_bytes(c.size, options.lockstep);
    const uint64_t lanes = uint64_t(std::max(1, options.lockstep));
    if (options.adapt && !options.segment_bytes)  // one lockstep group: rounds fall alike for every lane
      seg = std::max(seg, size_t((c.size + lanes - 1) / lanes));
    seg = (seg + unit - 1) / unit * unit;
    if (seg > kMaxModelBlock)
      throw Error(path + (options.adapt ? ": too large for --adapt (at most " + std::to_string(lanes) + " segments of 16 MiB)"
                                        : ": segments of " + std::to_string(seg) + " bytes exceed the 16 MiB limit"));
    std::vector<ByteSpan> segments;
    for (size_t at = 0; at < c.size; at += seg) segments.push_back({c.body + at, std::min(seg, c.size - at)});
    if (options.adapt && segments.size() > size_t(options.lockstep))
      throw Error(path + ": --adapt needs every segment in one lockstep group (" + std::to_string(segments.size()) + " segments)");
    const std::string model_id = model_fingerprint(*model);  // of the pretrained weights; hashes every weight once
    SegmentCoderOptions so;
    so.lockstep = options.lockstep;
    so.progress = options.progress;
    std::vector<double> bits;
    so.segment_bits = &bits;
    if (options.mix)
      for (const ByteSpan& s : segments) so.mix_shapes.push_back(lane_shape(c.mode, c.extra, c.residual_channels, size_t(s.data - c.body), s.size));
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
      if (coded[i].size() < b.payload.size() || options.model_only) b = {BlockKind::Model, segments[i].size, std::move(coded[i])};
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
                   adapted ? options.adapt : std::nullopt, c.residual_channels, mixed);
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

namespace {

struct Parsed {
  RbzHeaderInfo info;
  uint64_t hash = 0;
  std::vector<uint8_t> context, extra;
  std::vector<Block> blocks;   // kinds and lengths (payloads stay in the file)
  std::vector<size_t> offsets;  // where each payload starts, then the end of the last
  int residual_channels = 0;    // the content is in residual form (image and audio modes)
};

Parsed parse(const std::string& path, const std::vector<uint8_t>& rbz) {
  Parsed ps;
  Reader r{rbz.data(), rbz.size(), 0, path};
  if (rbz.size() < 4 || std::memcmp(rbz.data(), kMagic, 4)) throw Error(path + ": not a .rbz file (bad magic)");
  r.pos = 4;
  const uint16_t version = uint16_t(r.get(2));
  if (version != kRbzVersion)
    throw Error(path + ": .rbz format version " + std::to_string(version) + " is not supported (this build reads version " +
                std::to_string(kRbzVersion) + ")");
  const uint8_t mode = uint8_t(r.get(1));
  const uint8_t flags = uint8_t(r.get(1));
  ps.info.numerics_version = uint32_t(r.get(4));
  ps.info.original_size = r.get(8);
  ps.hash = r.get(8);
  const uint64_t fp = r.get(8);
  const uint32_t nctx = uint32_t(r.get(4)), nextra = uint32_t(r.get(4)), nblocks = uint32_t(r.get(4));
  if (mode > 2 || (flags & ~(kFlagAdapted | kFlagResidual | kFlagMixed)) != 0) throw Error(path + ": damaged .rbz header (unknown mode or flags)");
  ps.info.mode = RbzMode(mode);
  if (nctx > kMaxContext || nextra > rbz.size() || nblocks > rbz.size() / 17) throw Error(path + ": damaged .rbz header (sizes)");
  ps.context = r.bytes(nctx);
  ps.extra = r.bytes(nextra);
  if (flags & kFlagAdapted) {
    AdaptSettings a;
    a.round_positions = uint32_t(r.get(4)), a.steps = uint32_t(r.get(4)), a.windows = uint32_t(r.get(4)), a.window = uint32_t(r.get(4));
    const uint32_t lr_bits = uint32_t(r.get(4));
    std::memcpy(&a.lr, &lr_bits, 4);
    check_adapt_settings(a, 1, path + ": damaged .rbz header");
    ps.info.adapt = a;
  }
  if (flags & kFlagResidual) {
    const uint8_t version = uint8_t(r.get(1));
    ps.residual_channels = int(r.get(1));
    if (version != kResidualTransformVersion)
      throw Error(path + ": residual transform version " + std::to_string(version) + " is not supported (this build has version " +
                  std::to_string(kResidualTransformVersion) + ")");
    if (ps.residual_channels < 1 || mode == uint8_t(RbzMode::Raw)) throw Error(path + ": damaged .rbz header (residual record)");
  }
  if (flags & kFlagMixed) {
    const uint8_t version = uint8_t(r.get(1));
    if (version != kMixerVersion)
      throw Error(path + ": context mixer version " + std::to_string(version) + " is not supported (this build has version " +
                  std::to_string(kMixerVersion) + ")");
    ps.info.mixed = true;
  }
  uint64_t content = 0, stored = 0;
  bool any_model = false;
  for (uint32_t i = 0; i < nblocks; i++) {
    Block b;
    const uint8_t kind = uint8_t(r.get(1));
    b.length = r.get(8);
    const uint64_t size = r.get(8);
    if (kind < 1 || kind > 3 || b.length > kMaxContent || size > rbz.size()) throw Error(path + ": damaged .rbz block table");
    b.kind = BlockKind(kind);
    if (b.kind == BlockKind::Model && (b.length > kMaxModelBlock || nctx == 0)) throw Error(path + ": damaged .rbz block table");
    if (b.kind == BlockKind::Raw && size != b.length) throw Error(path + ": damaged .rbz block table");
    // No block restores more than its kind can: zstd expands at most ~43,000x (RLE blocks).
    if (b.kind == BlockKind::Zstd && b.length / 65536 > size) throw Error(path + ": damaged .rbz block table");
    any_model |= b.kind == BlockKind::Model;
    content += b.length;
    ps.offsets.push_back(size_t(stored));  // relative to the payload area until it is known
    stored += size;
    ps.blocks.push_back(std::move(b));
  }
  const size_t header_end = r.pos;
  const uint64_t header_hash = r.get(8);
  if (XXH64(rbz.data(), header_end, 0) != header_hash) throw Error(path + ": damaged .rbz header (checksum mismatch)");
  if (content > kMaxContent) throw Error(path + ": damaged .rbz block table");
  if (ps.info.adapt && !any_model) throw Error(path + ": damaged .rbz header (adaptation without model-coded blocks)");
  if (ps.info.mixed && !any_model) throw Error(path + ": damaged .rbz header (context mixing without model-coded blocks)");
  if (stored != rbz.size() - r.pos)
    throw Error(path + ": " + (stored > rbz.size() - r.pos ? "truncated .rbz file" : "damaged .rbz file (trailing bytes)") + " (" +
                std::to_string(rbz.size()) + " bytes, the header describes " + std::to_string(r.pos + stored) + ")");
  for (size_t& o : ps.offsets) o += r.pos;
  ps.offsets.push_back(r.pos + size_t(stored));
  if (any_model) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fp);
    ps.info.model_fingerprint = buf;
  }
  // Raw and image content is the original size; audio adds the verbatim bytes (checked later).
  if (ps.info.mode != RbzMode::Audio && content != ps.info.original_size) throw Error(path + ": damaged .rbz header (sizes disagree)");
  return ps;
}

}  // namespace

RbzHeaderInfo read_rbz_header(const std::string& path, const std::vector<uint8_t>& rbz) { return parse(path, rbz).info; }

std::vector<uint8_t> decompress_file(const std::string& path, const std::vector<uint8_t>& rbz, Model* model,
                                     const std::function<void(uint64_t, uint64_t)>& progress, int lockstep) {
  const Parsed ps = parse(path, rbz);
  const RbzHeaderInfo& info = ps.info;
  if (!info.model_fingerprint.empty()) {
    if (info.numerics_version != uint32_t(kNumericsVersion))
      throw Error(path + ": coded under numerics contract v" + std::to_string(info.numerics_version) + "; this build implements v" +
                  std::to_string(kNumericsVersion) + " and cannot reproduce its probabilities");
    if (!model) throw Error(path + ": needs the model it was compressed with (fingerprint " + info.model_fingerprint + "); give it with -m");
    const std::string have = model_fingerprint(*model);
    if (have != info.model_fingerprint)
      throw Error(path + ": compressed with model " + info.model_fingerprint + ", but the given model is " + have);
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
  if (!payloads.empty()) {
    SegmentCoderOptions so;
    so.lockstep = lockstep;
    so.progress = progress;
    so.mix_shapes = std::move(mix_shapes);
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
