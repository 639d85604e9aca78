// The codec's promise on unusual media: if compress succeeds, decompress restores the original
// bytes, or (image mode, as `compress --help` says) a PNG with the identical 8-bit samples and
// geometry; and a file whose samples do not fit 8 bits (16-bit PNG and PNM, PNM maxvals other than
// 255) is never coded as pixels. Hundreds of generated WAVs (8/16/24/32-bit integer and float,
// 1-8 channels, partial frames, lying sizes, WAVE_FORMAT_EXTENSIBLE) and images (PNG of every colour
// type and bit depth, palette, interlaced, 1x1 and 1xN; PNM P1-P6 with several maxvals; BMP of
// several depths and row orders) go through compress_file and decompress_file with a random
// model, in both media forms.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "datasets/media.h"
#include "codecs/rbz.h"
#include "kernels/cpu/cpu_backend.h"
#include "src/common/errors.h"
#include "src/model/model.h"
#include "src/common/rng.h"
#include "tests/test_util.h"

namespace rb {
namespace {

using Bytes = std::vector<uint8_t>;

void put_be32(Bytes& b, uint32_t v) {
  for (int i = 3; i >= 0; i--) b.push_back(uint8_t(v >> (8 * i)));
}
void put_le16(Bytes& b, uint32_t v) { b.push_back(uint8_t(v)), b.push_back(uint8_t(v >> 8)); }
void put_le32(Bytes& b, uint32_t v) {
  for (int i = 0; i < 4; i++) b.push_back(uint8_t(v >> (8 * i)));
}
void put_str(Bytes& b, const char* s) { b.insert(b.end(), s, s + std::strlen(s)); }

// ---------------------------------------------------------------- PNG (our own small encoder)

struct PngCase {
  int width, height, color_type, depth;
  bool interlaced, transparency;
  std::vector<uint16_t> samples;  // width x height x samples-per-pixel, each below 2^depth
  int palette_size = 0;
};

int png_samples_per_pixel(int color_type) {
  switch (color_type) {
    case 0:
      return 1;
    case 2:
      return 3;
    case 3:
      return 1;
    case 4:
      return 2;
    default:
      return 4;
  }
}

void png_chunk(Bytes& out, const char* type, const Bytes& data) {
  put_be32(out, uint32_t(data.size()));
  Bytes body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  out.insert(out.end(), body.begin(), body.end());
  put_be32(out, uint32_t(crc32(0, body.data(), uInt(body.size()))));
}

// Rows of the pixels (x0 + i*dx, y0 + j*dy), each with filter byte 0, samples packed MSB first.
void png_rows(const PngCase& c, int x0, int y0, int dx, int dy, Bytes& raw) {
  const int spp = png_samples_per_pixel(c.color_type);
  for (int y = y0; y < c.height; y += dy) {
    raw.push_back(0);
    uint32_t acc = 0;
    int bits = 0;
    for (int x = x0; x < c.width; x += dx)
      for (int k = 0; k < spp; k++) {
        const uint16_t v = c.samples[(size_t(y) * c.width + x) * spp + k];
        if (c.depth == 16) {
          raw.push_back(uint8_t(v >> 8)), raw.push_back(uint8_t(v));
          continue;
        }
        acc = acc << c.depth | v;
        bits += c.depth;
        if (bits == 8) raw.push_back(uint8_t(acc)), acc = 0, bits = 0;
      }
    if (bits) raw.push_back(uint8_t(acc << (8 - bits)));
  }
}

Bytes png_file(const PngCase& c) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}, ihdr;
  put_be32(ihdr, uint32_t(c.width));
  put_be32(ihdr, uint32_t(c.height));
  for (int v : {c.depth, c.color_type, 0, 0, c.interlaced ? 1 : 0}) ihdr.push_back(uint8_t(v));
  png_chunk(out, "IHDR", ihdr);
  if (c.color_type == 3) {
    Bytes plte, trns;
    for (int i = 0; i < c.palette_size; i++) {
      for (int k = 0; k < 3; k++) plte.push_back(uint8_t(i * 37 + k * 91));
      trns.push_back(uint8_t(255 - i * 13));
    }
    png_chunk(out, "PLTE", plte);
    if (c.transparency) png_chunk(out, "tRNS", trns);
  }
  Bytes raw;
  if (!c.interlaced) {
    png_rows(c, 0, 0, 1, 1, raw);
  } else {
    const int pass[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
    for (const auto& p : pass)
      if (c.width > p[0] && c.height > p[1]) png_rows(c, p[0], p[1], p[2], p[3], raw);
  }
  uLongf n = compressBound(uLong(raw.size()));
  Bytes z(n);
  if (compress2(z.data(), &n, raw.data(), uLong(raw.size()), 9) != Z_OK) throw Error("zlib failed");
  z.resize(n);
  png_chunk(out, "IDAT", z);
  png_chunk(out, "IEND", {});
  return out;
}

// The 8-bit pixels a viewer shows for a PNG of at most 8 bits per sample (grey scaled up to
// 0..255, palette indices looked up, with alpha when tRNS is present).
Bytes png_expected_pixels(const PngCase& c, int* channels) {
  Bytes px;
  const size_t n = size_t(c.width) * c.height;
  if (c.color_type == 3) {
    *channels = c.transparency ? 4 : 3;
    for (size_t i = 0; i < n; i++) {
      const int idx = c.samples[i];
      for (int k = 0; k < 3; k++) px.push_back(uint8_t(idx * 37 + k * 91));
      if (c.transparency) px.push_back(uint8_t(255 - idx * 13));
    }
    return px;
  }
  *channels = png_samples_per_pixel(c.color_type);
  const int scale = c.depth == 8 ? 1 : 255 / ((1 << c.depth) - 1);
  for (uint16_t v : c.samples) px.push_back(uint8_t(v * scale));
  return px;
}

// ---------------------------------------------------------------- PNM and BMP

Bytes pnm_file(int kind, int w, int h, int maxval, Rng& rng, std::vector<int>* values) {
  const int channels = kind == 3 || kind == 6 ? 3 : 1;
  const bool bitmap = kind == 1 || kind == 4, ascii = kind <= 3;
  std::string head = "P" + std::to_string(kind) + "\n# a comment\n" + std::to_string(w) + " " + std::to_string(h) + "\n";
  if (!bitmap) head += std::to_string(maxval) + "\n";
  Bytes out(head.begin(), head.end());
  const int top = bitmap ? 1 : maxval;
  values->clear();
  for (int i = 0; i < w * h * channels; i++) values->push_back(int(rng.below(uint64_t(top) + 1)));
  if (ascii) {
    for (int v : *values) {
      const std::string s = std::to_string(v) + " ";
      out.insert(out.end(), s.begin(), s.end());
    }
  } else if (bitmap) {
    for (int y = 0; y < h; y++) {
      uint8_t acc = 0;
      for (int x = 0; x < w; x++) {
        acc = uint8_t(acc | ((*values)[size_t(y) * w + x] << (7 - x % 8)));
        if (x % 8 == 7 || x == w - 1) out.push_back(acc), acc = 0;
      }
    }
  } else {
    for (int v : *values) {
      if (maxval > 255) out.push_back(uint8_t(v >> 8));
      out.push_back(uint8_t(v));
    }
  }
  return out;
}

Bytes bmp_file(int bpp, int w, int h, bool top_down, Rng& rng) {
  const int row = (w * bpp + 31) / 32 * 4, colours = bpp <= 8 ? 1 << bpp : 0;
  Bytes out;
  put_str(out, "BM");
  const uint32_t offset = 14 + 40 + uint32_t(colours) * 4;
  put_le32(out, offset + uint32_t(row * h));
  put_le32(out, 0);
  put_le32(out, offset);
  put_le32(out, 40);
  put_le32(out, uint32_t(w));
  put_le32(out, uint32_t(top_down ? -h : h));
  put_le16(out, 1);
  put_le16(out, uint32_t(bpp));
  for (uint32_t v : {0u, uint32_t(row * h), 2835u, 2835u, uint32_t(colours), 0u}) put_le32(out, v);
  for (int i = 0; i < colours; i++)
    for (int k = 0; k < 4; k++) out.push_back(k == 3 ? 0 : uint8_t(i * 59 + k * 83));
  for (int i = 0; i < row * h; i++) out.push_back(uint8_t(rng.below(256)));
  return out;
}

// ---------------------------------------------------------------- WAV

enum class WavLie { None, DataTooLong, DataZero, DataUnknown, OddWithPad, ChunksAround };

Bytes wav_file(int format, int bits, int channels, int frames, int drop, bool extensible, WavLie lie, Rng& rng) {
  Bytes fmt;
  const int align = channels * bits / 8;
  put_le16(fmt, extensible ? 0xFFFE : uint32_t(format));
  put_le16(fmt, uint32_t(channels));
  put_le32(fmt, 8000);
  put_le32(fmt, uint32_t(8000 * align));
  put_le16(fmt, uint32_t(align));
  put_le16(fmt, uint32_t(bits));
  if (extensible) {
    put_le16(fmt, 22);
    put_le16(fmt, uint32_t(bits));
    put_le32(fmt, channels == 2 ? 3u : 0u);
    put_le16(fmt, uint32_t(format));
    const uint8_t guid_tail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};
    fmt.insert(fmt.end(), guid_tail, guid_tail + 14);
  }
  Bytes data;
  for (int i = 0; i < frames * channels; i++) {
    if (format == 3 && bits == 32) {
      const float f = float(std::sin(0.01 * i) * 0.9);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      put_le32(data, u);
    } else {
      for (int k = 0; k < bits / 8; k++) data.push_back(uint8_t(rng.below(256)));
    }
  }
  data.resize(data.size() - std::min(data.size(), size_t(drop)));  // a partial last frame
  Bytes out;
  put_str(out, "RIFF");
  put_le32(out, 0);  // fixed below
  put_str(out, "WAVE");
  put_str(out, "fmt ");
  put_le32(out, uint32_t(fmt.size()));
  out.insert(out.end(), fmt.begin(), fmt.end());
  if (lie == WavLie::ChunksAround) {
    put_str(out, "LIST");
    put_le32(out, 4);
    put_str(out, "INFO");
  }
  put_str(out, "data");
  uint32_t declared = uint32_t(data.size());
  if (lie == WavLie::DataTooLong) declared += 1000;
  if (lie == WavLie::DataZero) declared = 0;
  if (lie == WavLie::DataUnknown) declared = 0xFFFFFFFFu;
  put_le32(out, declared);
  out.insert(out.end(), data.begin(), data.end());
  if (lie == WavLie::OddWithPad && data.size() % 2) out.push_back(0);
  if (lie == WavLie::ChunksAround) {
    put_str(out, "junk");
    put_le32(out, 3);
    for (uint8_t b : {7, 8, 9, 0}) out.push_back(b);
  }
  const uint32_t riff = uint32_t(out.size() - 8);
  for (int i = 0; i < 4; i++) out[size_t(4 + i)] = uint8_t(riff >> (8 * i));
  return out;
}

// ---------------------------------------------------------------- the test

struct Case {
  std::string name;
  Bytes file;
  bool may_be_pixels = false;  // every sample fits 8 bits: image mode is allowed
  Bytes pixels;                // ... and these are the pixels it must restore (empty: the decoder's own reading)
  int channels = 0;
};

std::vector<Case> torture_cases() {
  std::vector<Case> cases;
  Rng rng(2026);
  const std::pair<int, int> sizes[] = {{1, 1}, {1, 7}, {7, 1}, {13, 5}};
  // PNG: every colour type and legal bit depth, interlaced or not.
  const std::vector<std::pair<int, std::vector<int>>> png_types = {
      {0, {1, 2, 4, 8, 16}}, {2, {8, 16}}, {3, {1, 2, 4, 8}}, {4, {8, 16}}, {6, {8, 16}}};
  for (const auto& [type, depths] : png_types)
    for (int depth : depths)
      for (bool interlaced : {false, true})
        for (const auto& [w, h] : sizes)
          for (bool trns : type == 3 ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
            PngCase c{w, h, type, depth, interlaced, trns, {}};
            c.palette_size = type == 3 ? std::min(1 << depth, 19) : 0;
            const int top = type == 3 ? c.palette_size : 1 << depth;
            for (int i = 0; i < w * h * png_samples_per_pixel(type); i++) c.samples.push_back(uint16_t(rng.below(uint64_t(top))));
            Case k;
            k.name = "png type " + std::to_string(type) + " depth " + std::to_string(depth) +
                     (interlaced ? " interlaced " : " ") + (trns ? "tRNS " : "") + std::to_string(w) + "x" + std::to_string(h);
            k.file = png_file(c);
            k.may_be_pixels = depth <= 8;
            if (k.may_be_pixels) k.pixels = png_expected_pixels(c, &k.channels);
            cases.push_back(std::move(k));
          }
  // PNM P1-P6 with several maxvals.
  for (int kind = 1; kind <= 6; kind++)
    for (int maxval : {1, 100, 255, 1000, 65535}) {
      if ((kind == 1 || kind == 4) && maxval != 1) continue;
      for (const auto& [w, h] : {std::pair<int, int>{1, 1}, {9, 4}}) {
        std::vector<int> values;
        Case k;
        k.name = "pnm P" + std::to_string(kind) + " maxval " + std::to_string(maxval) + " " + std::to_string(w) + "x" +
                 std::to_string(h);
        k.file = pnm_file(kind, w, h, maxval, rng, &values);
        k.may_be_pixels = maxval == 255 && kind != 1 && kind != 4;
        if (k.may_be_pixels) {
          k.channels = kind == 3 || kind == 6 ? 3 : 1;
          for (int v : values) k.pixels.push_back(uint8_t(v));
        }
        cases.push_back(std::move(k));
      }
    }
  // BMP: palette depths, 16, 24 and 32 bits, bottom-up and top-down, rows that need padding.
  for (int bpp : {1, 4, 8, 16, 24, 32})
    for (bool top_down : {false, true})
      for (const auto& [w, h] : {std::pair<int, int>{1, 1}, {5, 3}}) {
        Case k;
        k.name =
            "bmp " + std::to_string(bpp) + "-bit " + (top_down ? "top-down " : "") + std::to_string(w) + "x" + std::to_string(h);
        k.file = bmp_file(bpp, w, h, top_down, rng);
        k.may_be_pixels = true;  // samples of at most 8 bits; compared with the decoder's own reading
        cases.push_back(std::move(k));
      }
  // WAV: integer 8/16/24/32 and float 32, plain and extensible, 1-8 channels, partial last frames.
  for (const auto& [format, bits] : {std::pair<int, int>{1, 8}, {1, 16}, {1, 24}, {1, 32}, {3, 32}})
    for (bool extensible : {false, true})
      for (int channels : {1, 2, 3, 6, 8})
        for (int drop : {0, 1, 2, 3}) {
          if (drop >= channels * bits / 8) continue;
          Case k;
          k.name = "wav fmt " + std::to_string(format) + " " + std::to_string(bits) + "-bit " +
                   (extensible ? "extensible " : "") + std::to_string(channels) + " ch, " + std::to_string(drop) + " bytes short";
          k.file = wav_file(format, bits, channels, 37, drop, extensible, WavLie::None, rng);
          cases.push_back(std::move(k));
        }
  // 16-bit WAVs whose headers lie or carry extra chunks.
  for (int channels : {1, 2, 6})
    for (WavLie lie : {WavLie::DataTooLong, WavLie::DataZero, WavLie::DataUnknown, WavLie::OddWithPad, WavLie::ChunksAround})
      for (int drop : {0, 1}) {
        Case k;
        k.name = "wav 16-bit " + std::to_string(channels) + " ch, lie " + std::to_string(int(lie)) + ", " + std::to_string(drop) +
                 " short";
        k.file = wav_file(1, 16, channels, 29, drop, false, lie, rng);
        cases.push_back(std::move(k));
      }
  // Zero frames.
  for (int channels : {1, 2}) {
    Case k;
    k.name = "wav 16-bit empty " + std::to_string(channels) + " ch";
    k.file = wav_file(1, 16, channels, 0, 0, false, WavLie::None, rng);
    cases.push_back(std::move(k));
  }
  return cases;
}

std::string write_temp(const std::string& name, const Bytes& bytes) {
  const std::string path = testing::TempDir() + "retbyte_torture_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), long(bytes.size()));
  return path;
}

TEST(MediaTorture, WhatCompressWritesDecompressRestoresAndNoSampleIsCutToEightBits) {
  auto be = make_cpu_backend(2);
  Model model(named_config("tiny"), *be);
  model.init_random(5);
  const std::vector<Case> cases = torture_cases();
  int runs = 0, pixel_runs = 0, audio_runs = 0;
  for (MediaForm form : {MediaForm::Plain, MediaForm::Residual}) {
    model.media_form = form;
    for (size_t i = 0; i < cases.size(); i++) {
      const Case& c = cases[i];
      SCOPED_TRACE(c.name + " (" + media_form_name(form) + ")");
      const std::string path = write_temp(std::to_string(i), c.file);
      CompressOptions o;
      o.model_only = true;  // code the content with the model even where zstd would be smaller: every mode is exercised
      o.mix = i % 2 == 0;
      CompressStats st;
      Bytes rbz;
      ASSERT_NO_THROW(rbz = compress_file(path, c.file, &model, o, &st));
      runs++;
      // What `compress --verify` does: decode and compare (image mode: decoding checks the pixels' checksum).
      Bytes back;
      bool verified = true;
      try {
        back = decompress_file(path + ".rbz", rbz, &model);
        verified = st.mode == RbzMode::Image || back == c.file;
      } catch (const Error&) {
        verified = false;
      }
      Bytes again;
      ASSERT_NO_THROW(again = decompress_file(path + ".rbz", rbz, &model))
          << "compress wrote an archive that does not decompress";
      EXPECT_TRUE(verified) << "--verify would disagree with decompress";
      EXPECT_EQ(again, back);
      if (st.mode == RbzMode::Image) {
        pixel_runs++;
        ASSERT_TRUE(c.may_be_pixels) << "coded as 8-bit pixels though its samples do not fit 8 bits";
        const std::string restored = write_temp(std::to_string(i) + ".png", again);
        const Image img = read_image(restored);
        const Image orig = read_image(path);
        EXPECT_EQ(img.width, orig.width);
        EXPECT_EQ(img.height, orig.height);
        EXPECT_EQ(img.channels, orig.channels);
        EXPECT_EQ(img.pixels, orig.pixels);
        if (!c.pixels.empty()) {
          EXPECT_EQ(img.channels, c.channels);
          EXPECT_EQ(img.pixels, c.pixels) << "not the samples the file holds";
        }
        std::remove(restored.c_str());
      } else {
        if (st.mode == RbzMode::Audio) audio_runs++;
        EXPECT_EQ(again, c.file) << "not the original bytes (" << rbz_mode_name(st.mode) << " mode)";
      }
      std::remove(path.c_str());
    }
  }
  std::printf("[ TORTURE  ] %d cases (%zu files x 2 media forms): %d coded as pixels, %d as audio samples, the rest as bytes\n",
              runs, cases.size(), pixel_runs, audio_runs);
  EXPECT_GT(pixel_runs, 50);  // the modes themselves were exercised, not only raw fallbacks
  EXPECT_GT(audio_runs, 20);
}

}  // namespace
}  // namespace rb
