// What a file's content is for the codec (the mode from its bytes: pixels, samples or the bytes
// themselves, in plain or residual form), and how a decoded content is restored to the file.
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>

#include "codecs/rbz_internal.h"
#include "datasets/media.h"
#include "datasets/media_residuals.h"

namespace rb::rbz_detail {

namespace {
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
  if (f.size() >= 8 && !std::memcmp(f.data(), png, 8))
    return f.size() >= 33 && !std::memcmp(f.data() + 12, "IHDR", 4) && f[24] <= 8;
  if (f.size() >= 2 && f[0] == 'P') return (f[1] == '5' || f[1] == '6') && pnm_maxval(f) == 255;
  return f.size() >= 2 && f[0] == 'B' && f[1] == 'M';
}

}  // namespace

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
      img = decode_image(path, file);
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
      a = decode_audio(path, file, &notice);
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
    if (XXH64(content.data(), content.size(), 0) != hash)
      throw Error(path + ": checksum mismatch: the restored pixels are not the original ones");
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
    if (XXH64(content.data(), content.size(), 0) != hash)
      throw Error(path + ": checksum mismatch: the restored samples are not the original ones");
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
    for (size_t i = 0; i < content.size(); i += 2)
      out.push_back(content[i + 1]), out.push_back(content[i]);  // back to little-endian
    out.insert(out.end(), x + 8 + off, x + 8 + verbatim);
  }
  if (out.size() != original_size) throw Error(path + ": damaged .rbz file (restored size differs)");
  if (XXH64(out.data(), out.size(), 0) != hash) throw Error(path + ": checksum mismatch: the restored file is not the original");
  return out;
}

void to_residual_form(Content* cp) {
  Content& c = *cp;
  const int channels = c.mode == RbzMode::Image ? int(c.unit) : int(c.unit / 2);
  c.owned = c.mode == RbzMode::Image
                ? image_residual_bytes(c.body, int(le32(c.extra.data())), int(le32(c.extra.data() + 4)), channels)
                : audio_residual_bytes(c.body, c.size, channels);
  c.body = c.owned.data();
  c.residual_channels = channels;
  c.context[2] = media_letter(c.mode == RbzMode::Image ? Modality::Image : Modality::Audio, MediaForm::Residual);
}

}  // namespace rb::rbz_detail
