#include "datasets/media.h"

#include <sndfile.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>

#include "datasets/media_residuals.h"
#include "src/common/errors.h"
#include "src/common/output_file.h"

namespace rb {

namespace {

std::vector<uint8_t> read_whole_file(const std::string& path, uint64_t limit) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open");
  const std::streamoff size = in.tellg();
  if (size < 0) throw Error(path + ": cannot read its size");
  if (uint64_t(size) > limit) throw Error(path + ": " + std::to_string(size) + " bytes is too large to decode");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) throw Error(path + ": read failed");
  return bytes;
}

void put_u32_be(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24), p[1] = uint8_t(v >> 16), p[2] = uint8_t(v >> 8), p[3] = uint8_t(v);
}
uint32_t get_u32_be(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
void put_u32_le(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; i++) s += char(uint8_t(v >> (8 * i)));
}
void put_u16_le(std::string& s, uint16_t v) { s += char(uint8_t(v)), s += char(uint8_t(v >> 8)); }

bool starts_with(const uint8_t* p, size_t n, const char* magic, size_t at = 0) {
  const size_t m = std::strlen(magic);
  return n >= at + m && std::memcmp(p + at, magic, m) == 0;
}

// RIFF/WAVE: the data chunk must hold the bytes its header promises (libsndfile quietly reads a
// truncated file as a shorter one). Streaming writers' 0 and 0xFFFFFFFF sizes mean "unknown".
void check_wav_data_chunk(const std::string& path, const std::vector<uint8_t>& f) {
  const uint64_t size = f.size();
  if (size < 12 || std::memcmp(f.data(), "RIFF", 4) || std::memcmp(f.data() + 8, "WAVE", 4)) return;
  uint64_t at = 12;
  while (at + 8 <= size) {
    const uint8_t* c = f.data() + at;
    const uint32_t len = uint32_t(c[4]) | uint32_t(c[5]) << 8 | uint32_t(c[6]) << 16 | uint32_t(c[7]) << 24;
    if (std::memcmp(c, "data", 4) == 0) {
      if (len != 0 && len != 0xFFFFFFFFu && at + 8 + len > size)
        throw Error(path + ": WAV header promises " + std::to_string(len) + " bytes of samples but the file holds " +
                    std::to_string(size - at - 8) + " (truncated?)");
      return;
    }
    at += 8 + uint64_t(len) + (len & 1);
  }
}

uint32_t get_u32_le(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// The most decoded bytes an image file of this size and format can really hold, so that a header
// declaring a huge image in a small file is refused before anything is allocated (and before a
// decoder spends minutes on it). Deflate expands at most 1032:1, GIF's LZW about 2731:1 (a 12-bit
// code for 4096 pixels), a JPEG 8x8 block needs at least a bit; BMP and binary PNM store their
// pixels as they are.
uint64_t most_pixel_bytes_held(const std::vector<uint8_t>& f) {
  const uint64_t n = f.size();
  if (n >= 8 && !std::memcmp(f.data(), "\x89PNG", 4)) {
    uint64_t idat = 0;
    for (uint64_t at = 8; at + 12 <= n;) {
      const uint64_t len = get_u32_be(f.data() + at);
      if (!std::memcmp(f.data() + at + 4, "IDAT", 4)) idat += std::min(len, n - at - 8);
      at += 12 + len;
    }
    // Rows of 1-, 2- or 4-bit samples (drawings, palettes) hold up to 8 pixels a byte, and each
    // pixel becomes up to 4 bytes (a palette entry with alpha): bound by the header's bits per pixel.
    static const int kSamples[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type (0, 2, 3, 4, 6 are valid)
    int bits_per_pixel = 1;
    if (n >= 26 && f[25] < 7 && kSamples[f[25]] > 0 && f[24] > 0) bits_per_pixel = kSamples[f[25]] * f[24];
    return idat * 1032 * 8 / uint64_t(bits_per_pixel) * 4 + 4096;
  }
  if (n >= 6 && !std::memcmp(f.data(), "GIF8", 4)) return n * 2731 + 4096;
  if (n >= 3 && f[0] == 0xff && f[1] == 0xd8) return n * 2048 + 4096;  // progressive: 1 bit per block and scan, 4:2:0
  if (n >= 2 && f[0] == 'B' && f[1] == 'M') {
    if (n >= 34 && get_u32_le(f.data() + 30) != 0 && get_u32_le(f.data() + 30) != 3) return n * 256 * 4 + 4096;  // RLE
    return n * 8 * 4 + 4096;  // 1-bit rows can hold 8 pixels per byte, of up to 4 channels
  }
  if (n >= 2 && f[0] == 'P') return n * 8 * 4 + 4096;
  return n * 1032 + 4096;
}

}  // namespace

const char* modality_name(Modality m) {
  switch (m) {
    case Modality::Image:
      return "image";
    case Modality::Audio:
      return "audio";
    default:
      return "text";
  }
}

Modality detect_modality(const uint8_t* p, size_t n) {
  if (starts_with(p, n, "\x89PNG\r\n\x1a\n") || starts_with(p, n, "\xff\xd8\xff") || starts_with(p, n, "GIF87a") ||
      starts_with(p, n, "GIF89a"))
    return Modality::Image;
  // "BM" alone could start a text file: require a known DIB header size at offset 14.
  if (starts_with(p, n, "BM") && n >= 18) {
    const uint32_t dib = uint32_t(p[14]) | uint32_t(p[15]) << 8 | uint32_t(p[16]) << 16 | uint32_t(p[17]) << 24;
    if (dib == 12 || dib == 40 || dib == 52 || dib == 56 || dib == 64 || dib == 108 || dib == 124) return Modality::Image;
  }
  // PNM: "P2".."P6", whitespace, then a digit (or a comment line).
  auto space = [](uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  if (n >= 4 && p[0] == 'P' && p[1] >= '2' && p[1] <= '6' && space(p[2])) {
    size_t i = 2;
    while (i < n && space(p[i])) i++;
    if (i < n && ((p[i] >= '0' && p[i] <= '9') || p[i] == '#')) return Modality::Image;
  }
  if ((starts_with(p, n, "RIFF") && starts_with(p, n, "WAVE", 8)) || starts_with(p, n, "fLaC") || starts_with(p, n, "OggS") ||
      (starts_with(p, n, "FORM") && (starts_with(p, n, "AIFF", 8) || starts_with(p, n, "AIFC", 8))))
    return Modality::Audio;
  return Modality::Text;
}

Image read_image(const std::string& path, std::string* notice) {
  return decode_image(path, read_whole_file(path, uint64_t(INT_MAX)), notice);
}

Image decode_image(const std::string& path, const std::vector<uint8_t>& file, std::string* notice) {
  if (file.size() > uint64_t(INT_MAX)) throw Error(path + ": " + std::to_string(file.size()) + " bytes is too large to decode");
  const int len = int(file.size());
  int w = 0, h = 0, c = 0;
  // The header first: nothing is allocated for an image we would refuse.
  if (!stbi_info_from_memory(file.data(), len, &w, &h, &c))
    throw Error(path + ": not a decodable image (" +
                std::string(stbi_failure_reason() ? stbi_failure_reason() : "unknown format") + ")");
  if (w <= 0 || h <= 0) throw Error(path + ": image has no pixels (" + std::to_string(w) + "x" + std::to_string(h) + ")");
  if (c < 1 || c > 4) throw Error(path + ": unsupported channel count " + std::to_string(c));
  const uint64_t pixel_bytes = uint64_t(w) * uint64_t(h) * uint64_t(c);
  if (pixel_bytes > kMaxImageBytes)
    throw Error(path + ": " + std::to_string(w) + "x" + std::to_string(h) + "x" + std::to_string(c) +
                " image exceeds the limit of " + std::to_string(kMaxImageBytes >> 20) + " MiB of pixels");
  // 8-bit samples: a 16-bit image's 2 bytes per sample hold at least as much in the file.
  if (pixel_bytes > most_pixel_bytes_held(file))
    throw Error(path + ": header declares a " + std::to_string(w) + "x" + std::to_string(h) + " image, more than its " +
                std::to_string(file.size()) + " bytes can hold (damaged or hostile file)");
  if (notice && stbi_is_16_bit_from_memory(file.data(), len)) *notice = path + ": 16-bit image reduced to 8 bits per channel";
  int w2 = 0, h2 = 0, c2 = 0;
  stbi_uc* px = stbi_load_from_memory(file.data(), len, &w2, &h2, &c2, 0);
  if (!px)
    throw Error(path + ": damaged image (" + std::string(stbi_failure_reason() ? stbi_failure_reason() : "decode failed") + ")");
  Image img;
  img.width = w2, img.height = h2, img.channels = c2;
  img.pixels.assign(px, px + size_t(w2) * h2 * c2);
  stbi_image_free(px);
  if (w2 != w || h2 != h || c2 != c) throw Error(path + ": image header and pixel data disagree");
  return img;
}

std::string encode_png(const Image& img, const std::string& path) {
  if (img.width <= 0 || img.height <= 0 || img.channels < 1 || img.channels > 4 ||
      img.pixels.size() != size_t(img.width) * img.height * img.channels)
    throw Error(path + ": cannot write an image of " + std::to_string(img.width) + "x" + std::to_string(img.height) + "x" +
                std::to_string(img.channels) + " from " + std::to_string(img.pixels.size()) + " bytes");
  std::string out;
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size_t(size));
  };
  if (!stbi_write_png_to_func(sink, &out, img.width, img.height, img.channels, img.pixels.data(), img.width * img.channels))
    throw Error(path + ": PNG encoding failed");
  return out;
}

void write_png(const std::string& path, const Image& img, Overwrite overwrite) {
  write_file_atomic(path, encode_png(img, path), overwrite);
}

namespace {
// libsndfile reading and writing memory (virtual I/O): a file decoded from the bytes the caller
// holds, and an encoded file checked before it is written anywhere.
struct MemoryFile {
  const std::vector<uint8_t>* source = nullptr;  // reading: the caller's bytes, not a copy
  std::vector<uint8_t> bytes;                    // writing
  sf_count_t pos = 0;
  const std::vector<uint8_t>& data() const { return source ? *source : bytes; }
};
sf_count_t vio_length(void* u) { return sf_count_t(static_cast<MemoryFile*>(u)->data().size()); }
sf_count_t vio_seek(sf_count_t offset, int whence, void* u) {
  auto* m = static_cast<MemoryFile*>(u);
  const sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : sf_count_t(m->data().size());
  m->pos = std::max<sf_count_t>(0, base + offset);
  return m->pos;
}
sf_count_t vio_read(void* ptr, sf_count_t count, void* u) {
  auto* m = static_cast<MemoryFile*>(u);
  const std::vector<uint8_t>& d = m->data();
  const sf_count_t n = std::max<sf_count_t>(0, std::min<sf_count_t>(count, sf_count_t(d.size()) - m->pos));
  if (n > 0) std::memcpy(ptr, d.data() + m->pos, size_t(n));
  m->pos += n;
  return n;
}
sf_count_t vio_write(const void* ptr, sf_count_t count, void* u) {
  auto* m = static_cast<MemoryFile*>(u);
  if (size_t(m->pos + count) > m->bytes.size()) m->bytes.resize(size_t(m->pos + count));
  std::memcpy(m->bytes.data() + m->pos, ptr, size_t(count));
  m->pos += count;
  return count;
}
sf_count_t vio_tell(void* u) { return static_cast<MemoryFile*>(u)->pos; }
}  // namespace

Audio read_audio(const std::string& path, std::string* notice) {
  return decode_audio(path, read_whole_file(path, uint64_t(1) << 40), notice);
}

Audio decode_audio(const std::string& path, const std::vector<uint8_t>& file, std::string* notice) {
  check_wav_data_chunk(path, file);
  SF_INFO info{};
  SF_VIRTUAL_IO io = {vio_length, vio_seek, vio_read, vio_write, vio_tell};
  MemoryFile memory{&file, {}, 0};
  SNDFILE* f = sf_open_virtual(&io, SFM_READ, &info, &memory);
  if (!f) throw Error(path + ": not a readable audio file (" + std::string(sf_strerror(nullptr)) + ")");
  struct Closer {
    SNDFILE* f;
    ~Closer() { sf_close(f); }
  } closer{f};
  if (info.channels < 1 || info.channels > 64) throw Error(path + ": unsupported channel count " + std::to_string(info.channels));
  if (info.samplerate <= 0) throw Error(path + ": bad sample rate " + std::to_string(info.samplerate));
  if (info.frames < 0 || uint64_t(info.frames) * uint64_t(info.channels) * 2 > kMaxAudioBytes)
    throw Error(path + ": " + std::to_string(info.frames) + " frames exceed the limit of " +
                std::to_string(kMaxAudioBytes >> 20) + " MiB of samples");
  const int sub = info.format & SF_FORMAT_SUBMASK;
  if (sub != SF_FORMAT_PCM_16) {
    if (sub == SF_FORMAT_FLOAT || sub == SF_FORMAT_DOUBLE) sf_command(f, SFC_SET_SCALE_FLOAT_INT_READ, nullptr, SF_TRUE);
    if (notice) *notice = path + ": samples converted to 16-bit PCM";
  }
  Audio a;
  a.sample_rate = info.samplerate;
  a.channels = info.channels;
  // Read in pieces, so memory follows the samples the file really holds, not what its header
  // declares (a small FLAC can promise billions of frames).
  const sf_count_t piece = 1 << 16;
  sf_count_t got = 0;
  while (got < info.frames) {
    const sf_count_t want = std::min(piece, info.frames - got);
    a.samples.resize(size_t(got + want) * size_t(info.channels));
    const sf_count_t r = sf_readf_short(f, a.samples.data() + size_t(got) * size_t(info.channels), want);
    got += std::max<sf_count_t>(r, 0);
    if (r < want) break;
  }
  a.samples.resize(size_t(got) * size_t(info.channels));
  if (got != info.frames)
    throw Error(path + ": header promises " + std::to_string(info.frames) + " frames but the file holds " + std::to_string(got) +
                " (truncated?)");
  return a;
}

void write_wav(const std::string& path, const Audio& a, Overwrite overwrite) {
  if (a.channels < 1 || a.channels > 64 || a.sample_rate <= 0 || a.samples.size() % size_t(a.channels) != 0)
    throw Error(path + ": cannot write audio with " + std::to_string(a.channels) + " channels at " +
                std::to_string(a.sample_rate) + " Hz");
  const uint64_t data_bytes = uint64_t(a.samples.size()) * 2;
  if (data_bytes > 0xFFFFFFFFull - 36) throw Error(path + ": too long for a WAV file");
  std::string out = "RIFF";
  put_u32_le(out, uint32_t(36 + data_bytes));
  out += "WAVEfmt ";
  put_u32_le(out, 16);
  put_u16_le(out, 1);  // PCM
  put_u16_le(out, uint16_t(a.channels));
  put_u32_le(out, uint32_t(a.sample_rate));
  put_u32_le(out, uint32_t(a.sample_rate) * uint32_t(a.channels) * 2);
  put_u16_le(out, uint16_t(a.channels * 2));
  put_u16_le(out, 16);
  out += "data";
  put_u32_le(out, uint32_t(data_bytes));
  for (int16_t s : a.samples) put_u16_le(out, uint16_t(s));
  write_file_atomic(path, out, overwrite);
}

std::vector<uint8_t> encode_flac(const Audio& a, const std::string& path) {
  if (a.channels < 1 || a.channels > 8 || a.sample_rate <= 0 || a.samples.size() % size_t(a.channels) != 0)
    throw Error(path + ": cannot write FLAC with " + std::to_string(a.channels) + " channels at " +
                std::to_string(a.sample_rate) + " Hz");
  SF_VIRTUAL_IO io = {vio_length, vio_seek, vio_read, vio_write, vio_tell};
  MemoryFile mem;
  SF_INFO info{};
  info.samplerate = a.sample_rate;
  info.channels = a.channels;
  info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open_virtual(&io, SFM_WRITE, &info, &mem);
  if (!f) throw Error(path + ": FLAC encoding failed (" + std::string(sf_strerror(nullptr)) + ")");
  const sf_count_t frames = sf_count_t(a.frames());
  const sf_count_t wrote = frames ? sf_writef_short(f, a.samples.data(), frames) : 0;
  const int closed = sf_close(f);
  if (wrote != frames || closed != 0) throw Error(path + ": FLAC encoding failed");
  return mem.bytes;
}

size_t media_header_size(int P) {
  if (P <= 0) throw Error("patch size must be positive");
  return (kMediaHeaderBytes + size_t(P) - 1) / size_t(P) * size_t(P);
}

uint8_t media_letter(Modality m, MediaForm form) {
  const uint8_t letter = uint8_t(m);
  return form == MediaForm::Residual ? uint8_t(letter - 'A' + 'a') : letter;
}

std::vector<uint8_t> image_stream(const Image& img, int P, MediaForm form) {
  std::vector<uint8_t> s(media_header_size(P), 0);
  s[0] = 'R', s[1] = 'B', s[2] = media_letter(Modality::Image, form), s[3] = uint8_t(img.channels);
  put_u32_be(s.data() + 4, uint32_t(img.width));
  put_u32_be(s.data() + 8, uint32_t(img.height));
  if (form == MediaForm::Residual && !img.pixels.empty()) {
    const std::vector<uint8_t> r = image_residuals(img);
    s.insert(s.end(), r.begin(), r.end());
  } else {
    s.insert(s.end(), img.pixels.begin(), img.pixels.end());
  }
  return s;
}

std::vector<uint8_t> make_header(Modality m, int P) {
  std::vector<uint8_t> h(size_t(P), 0);
  const uint8_t tag[3] = {'R', 'B', uint8_t(m)};
  for (int i = 0; i < std::min(P, 3); i++) h[i] = tag[i];
  return h;
}

std::vector<uint8_t> audio_stream(const Audio& a, int P, MediaForm form) {
  std::vector<uint8_t> s(media_header_size(P), 0);
  s[0] = 'R', s[1] = 'B', s[2] = media_letter(Modality::Audio, form), s[3] = uint8_t(a.channels);
  put_u32_be(s.data() + 4, uint32_t(a.sample_rate));
  s.reserve(s.size() + a.samples.size() * 2);
  auto put = [&](uint16_t u) {
    s.resize(s.size() + 2);
    store_msb16(s.data() + s.size() - 2, u);
  };
  if (form == MediaForm::Residual) {
    for (uint16_t u : audio_residuals(a)) put(u);
  } else {
    for (int16_t v : a.samples) put(uint16_t(v));
  }
  return s;
}

namespace {
// The header's size at P, after checking that the stream starts with "RB" and a letter of m
// (either form); *form: which.
size_t checked_header(const uint8_t* s, size_t n, int P, Modality m, const std::string& what, MediaForm* form) {
  const size_t hs = media_header_size(P);
  if (n < hs || s[0] != 'R' || s[1] != 'B' ||
      (s[2] != media_letter(m, MediaForm::Plain) && s[2] != media_letter(m, MediaForm::Residual)))
    throw Error(what + ": not an " + modality_name(m) + " stream");
  *form = s[2] == media_letter(m, MediaForm::Residual) ? MediaForm::Residual : MediaForm::Plain;
  return hs;
}
}  // namespace

Image image_from_stream(const uint8_t* s, size_t n, int P, const std::string& what) {
  MediaForm form;
  const size_t hs = checked_header(s, n, P, Modality::Image, what, &form);
  Image img;
  img.channels = s[3];
  img.width = int(get_u32_be(s + 4) & 0x7fffffff);
  img.height = int(get_u32_be(s + 8) & 0x7fffffff);
  if (img.channels < 1 || img.channels > 4 || img.width <= 0 || img.height <= 0 ||
      uint64_t(img.width) * uint64_t(img.height) * uint64_t(img.channels) > kMaxImageBytes)
    throw Error(what + ": image stream header has impossible geometry");
  const size_t need = size_t(img.width) * img.height * img.channels;
  if (n - hs < need)
    throw Error(what + ": image stream holds " + std::to_string(n - hs) + " of " + std::to_string(need) + " pixel bytes");
  if (form == MediaForm::Residual)
    pixels_from_residuals(s + hs, &img);
  else
    img.pixels.assign(s + hs, s + hs + need);
  return img;
}

Audio audio_from_stream(const uint8_t* s, size_t n, int P, const std::string& what) {
  MediaForm form;
  const size_t hs = checked_header(s, n, P, Modality::Audio, what, &form);
  Audio a;
  a.channels = s[3];
  a.sample_rate = int(get_u32_be(s + 4) & 0x7fffffff);
  if (a.channels < 1 || a.channels > 64 || a.sample_rate <= 0) throw Error(what + ": audio stream header is impossible");
  const size_t frames = (n - hs) / (2 * size_t(a.channels));
  a.samples.resize(frames * size_t(a.channels));
  for (size_t i = 0; i < a.samples.size(); i++) a.samples[i] = int16_t(load_msb16(s + hs + 2 * i));
  if (form == MediaForm::Residual) {
    const std::vector<uint16_t> residuals(a.samples.begin(), a.samples.end());
    samples_from_residuals(residuals.data(), residuals.size(), &a);
  }
  return a;
}

}  // namespace rb
