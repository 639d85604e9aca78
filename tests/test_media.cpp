// Images and audio as byte streams (doc/SPEC.md §2): file -> pixels/samples -> stream -> file round trips
// are exact, modality comes from content, and bad files are one-line errors naming the file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <zlib.h>

#include "datasets/media.h"
#include "datasets/media_residuals.h"
#include "datasets/dataset.h"
#include "src/common/errors.h"
#include "src/common/rng.h"
#include "tests/test_util.h"

namespace rb {
namespace {

std::string temp_file(const std::string& name) {
  return testing::TempDir() + "retbyte_media_" + std::to_string(getpid()) + "_" + name;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}
void spit(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

Image test_image(int w, int h, int c, uint64_t seed) {
  Image img{w, h, c, std::vector<uint8_t>(size_t(w) * h * c)};
  Rng rng(seed);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++)  // a gradient with noise: not trivially compressible
        img.pixels[(size_t(y) * w + x) * c + k] = uint8_t((x * 7 + y * 3 + k * 50 + rng.below(9)) & 255);
  return img;
}

Audio test_tone(int rate, int channels, int frames) {
  Audio a{rate, channels, std::vector<int16_t>(size_t(frames) * channels)};
  for (int t = 0; t < frames; t++)
    for (int c = 0; c < channels; c++)
      a.samples[size_t(t) * channels + c] = int16_t(std::lround(20000.0 * std::sin(0.05 * t * (c + 1)) + (t % 7) - 3));
  a.samples[0] = -32768, a.samples[1] = 32767;  // the extremes survive too
  return a;
}

TEST(Media, PngRoundTripIsPixelExactForEveryChannelCount) {
  for (int c = 1; c <= 4; c++) {
    const Image img = test_image(37, 23, c, uint64_t(c));
    const std::string path = temp_file("rt" + std::to_string(c) + ".png");
    write_png(path, img);
    const Image back = read_image(path);
    EXPECT_EQ(back.width, 37);
    EXPECT_EQ(back.height, 23);
    EXPECT_EQ(back.channels, c);
    EXPECT_EQ(back.pixels, img.pixels) << c << " channels";
    const std::string head = slurp(path).substr(0, 16);
    EXPECT_EQ(detect_modality(reinterpret_cast<const uint8_t*>(head.data()), head.size()), Modality::Image);
    std::remove(path.c_str());
  }
}

TEST(Media, WavRoundTripIsSampleExact) {
  const Audio a = test_tone(22050, 2, 5000);
  const std::string path = temp_file("rt.wav");
  write_wav(path, a);
  std::string notice;
  const Audio back = read_audio(path, &notice);
  EXPECT_TRUE(notice.empty()) << notice;
  EXPECT_EQ(back.sample_rate, 22050);
  EXPECT_EQ(back.channels, 2);
  EXPECT_EQ(back.samples, a.samples);
  const std::string head = slurp(path).substr(0, 16);
  EXPECT_EQ(detect_modality(reinterpret_cast<const uint8_t*>(head.data()), head.size()), Modality::Audio);
  std::remove(path.c_str());
}

TEST(Media, StreamsCarryGeometryInWholePatchesAndInvertExactly) {
  const Image img = test_image(5, 3, 3, 9);
  for (int P : {4, 8, 16}) {
    const auto s = image_stream(img, P);
    const size_t hs = media_header_size(P);
    EXPECT_EQ(hs % size_t(P), 0u);
    EXPECT_GE(hs, kMediaHeaderBytes);
    EXPECT_LT(hs, kMediaHeaderBytes + size_t(P));
    EXPECT_EQ(s.size(), hs + img.pixels.size());
    EXPECT_EQ(std::string(s.begin(), s.begin() + 3), "RBI");
    EXPECT_EQ(s[3], 3);
    EXPECT_EQ(s[7], 5);   // width, big-endian
    EXPECT_EQ(s[11], 3);  // height
    EXPECT_EQ(image_from_stream(s.data(), s.size(), P, "s").pixels, img.pixels);
  }
  EXPECT_EQ(media_header_size(8), 16u);
  EXPECT_EQ(media_header_size(4), 12u);

  Audio a = test_tone(8000, 1, 10);
  a.samples[2] = 0x1234;
  const auto s = audio_stream(a, 8);
  EXPECT_EQ(std::string(s.begin(), s.begin() + 3), "RBA");
  EXPECT_EQ(s[16 + 4], 0x12);  // sample 2, most significant byte first
  EXPECT_EQ(s[16 + 5], 0x34);
  EXPECT_EQ(s[16 + 0], 0x80);  // -32768
  const Audio back = audio_from_stream(s.data(), s.size(), 8, "s");
  EXPECT_EQ(back.samples, a.samples);
  EXPECT_EQ(back.sample_rate, 8000);
}

// The residual form: an exact bijection for every channel count and value, causal (a prefix of
// residuals is the residuals of the prefix), and it earns its place: smooth content becomes small bytes.
TEST(MediaResiduals, ImagesInvertExactlyForEveryChannelCountAndExtremeValues) {
  for (int c = 1; c <= 4; c++) {
    for (int pattern = 0; pattern < 3; pattern++) {
      Image img = test_image(17, 9, c, uint64_t(c * 10 + pattern));
      if (pattern == 1)  // alternating extremes: every prediction wraps around
        for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = (i / size_t(c) + i) % 2 ? 255 : 0;
      if (pattern == 2) {
        Rng rng{uint64_t(c)};
        for (auto& p : img.pixels) p = uint8_t(rng.below(256));
      }
      const std::vector<uint8_t> r = image_residuals(img);
      ASSERT_EQ(r.size(), img.pixels.size());
      Image back{img.width, img.height, img.channels, {}};
      pixels_from_residuals(r.data(), &back);
      EXPECT_EQ(back.pixels, img.pixels) << c << " channels, pattern " << pattern;
      // The first rows' residuals depend on those rows only (generate continues a prompt's rows).
      Image top{img.width, 4, c,
                std::vector<uint8_t>(img.pixels.begin(), img.pixels.begin() + long(size_t(img.width) * 4 * size_t(c)))};
      const std::vector<uint8_t> rt = image_residuals(top);
      EXPECT_TRUE(std::equal(rt.begin(), rt.end(), r.begin())) << c << " channels, pattern " << pattern;
    }
  }
  // A smooth colour gradient: residuals near zero, where the pixels spread over the whole range.
  Image smooth{64, 32, 3, std::vector<uint8_t>(64 * 32 * 3)};
  for (int y = 0; y < 32; y++)
    for (int x = 0; x < 64; x++)
      for (int k = 0; k < 3; k++) smooth.pixels[(size_t(y) * 64 + size_t(x)) * 3 + size_t(k)] = uint8_t(2 * x + 3 * y + 20 * k);
  const std::vector<uint8_t> r = image_residuals(smooth);
  size_t small = 0;
  for (size_t i = 0; i < r.size(); i++) small += r[i] <= 6;
  EXPECT_GT(small, r.size() * 95 / 100);
  EXPECT_THROW(image_residuals(Image{4, 4, 1, std::vector<uint8_t>(15)}), Error);
}

TEST(MediaResiduals, AudioInvertsExactlyForEveryChannelCountAndExtremeSamples) {
  for (int channels : {1, 2, 3}) {
    for (int pattern = 0; pattern < 3; pattern++) {
      Audio a = test_tone(16000, channels, 3000);
      if (pattern == 1)  // full-scale square wave: predictions overshoot and wrap
        for (size_t i = 0; i < a.samples.size(); i++) a.samples[i] = (i / size_t(channels) / 3) % 2 ? 32767 : -32768;
      if (pattern == 2) {
        Rng rng{uint64_t(channels)};
        for (auto& v : a.samples) v = int16_t(uint16_t(rng.below(65536)));
      }
      const std::vector<uint16_t> r = audio_residuals(a);
      ASSERT_EQ(r.size(), a.samples.size());
      Audio back{a.sample_rate, channels, {}};
      samples_from_residuals(r.data(), r.size(), &back);
      EXPECT_EQ(back.samples, a.samples) << channels << " channels, pattern " << pattern;
      Audio head{a.sample_rate, channels, std::vector<int16_t>(a.samples.begin(), a.samples.begin() + 1000 * channels)};
      const std::vector<uint16_t> rh = audio_residuals(head);
      EXPECT_TRUE(std::equal(rh.begin(), rh.end(), r.begin())) << channels << " channels, pattern " << pattern;
    }
  }
  // A tone: once the filters have adapted, residuals are a small fraction of the samples.
  Audio tone{16000, 2, std::vector<int16_t>(2 * 8000)};
  for (size_t t = 0; t < 8000; t++)
    for (size_t c = 0; c < 2; c++)
      tone.samples[2 * t + c] = int16_t(std::lround(12000 * std::sin(0.02 * double(t)) + 900 * double(c)));
  const std::vector<uint16_t> r = audio_residuals(tone);
  double residual = 0, sample = 0;
  for (size_t i = 8000; i < r.size(); i++) residual += r[i], sample += std::abs(tone.samples[i]);
  EXPECT_LT(residual, sample / 50);
}

TEST(MediaResiduals, StreamsSayTheirFormInTheHeaderLetterAndInvertToPixelsAndSamples) {
  const Image img = test_image(6, 4, 3, 5);
  const auto s = image_stream(img, 8, MediaForm::Residual);
  EXPECT_EQ(std::string(s.begin(), s.begin() + 3), "RBi");
  EXPECT_EQ(std::vector<uint8_t>(s.begin() + 16, s.end()), image_residuals(img));
  EXPECT_EQ(image_from_stream(s.data(), s.size(), 8, "s").pixels, img.pixels);
  const Audio a = test_tone(8000, 2, 50);
  const auto sa = audio_stream(a, 4, MediaForm::Residual);
  EXPECT_EQ(std::string(sa.begin(), sa.begin() + 3), "RBa");
  EXPECT_EQ(audio_from_stream(sa.data(), sa.size(), 4, "s").samples, a.samples);
  const auto plain = audio_stream(a, 4);
  EXPECT_EQ(plain.size(), sa.size());
  EXPECT_NE(std::vector<uint8_t>(sa.begin() + 12, sa.end()), std::vector<uint8_t>(plain.begin() + 12, plain.end()));
  // A plain stream read as audio is not an image, whatever its form.
  test::expect_error_containing([&] { image_from_stream(sa.data(), sa.size(), 4, "x.bin"); }, "x.bin: not an image stream");
}

TEST(Media, ModalityComesFromContentNotTheName) {
  const std::string text = "just some words";
  EXPECT_EQ(detect_modality(reinterpret_cast<const uint8_t*>(text.data()), text.size()), Modality::Text);
  const Image img = test_image(4, 4, 3, 1);
  const std::string path = temp_file("looks_like.txt");  // a PNG named .txt is still an image
  write_png(path, img);
  EXPECT_EQ(read_image(path).pixels, img.pixels);
  const std::string head = slurp(path);
  EXPECT_EQ(detect_modality(reinterpret_cast<const uint8_t*>(head.data()), head.size()), Modality::Image);
  std::remove(path.c_str());
}

TEST(Media, EightBitAudioIsConvertedWithANotice) {
  // An 8-bit unsigned PCM WAV written by hand: 128 is silence.
  std::string w = "RIFF";
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; i++) w += char(uint8_t(v >> (8 * i)));
  };
  auto u16 = [&](uint16_t v) { w += char(uint8_t(v)), w += char(uint8_t(v >> 8)); };
  u32(36 + 4);
  w += "WAVEfmt ";
  u32(16), u16(1), u16(1), u32(8000), u32(8000), u16(1), u16(8);
  w += "data";
  u32(4);
  w += std::string("\x80\xff\x00\x80", 4);
  const std::string path = temp_file("8bit.wav");
  spit(path, w);
  std::string notice;
  const Audio a = read_audio(path, &notice);
  EXPECT_NE(notice.find("converted to 16-bit"), std::string::npos);
  ASSERT_EQ(a.samples.size(), 4u);
  EXPECT_EQ(a.samples[0], 0);
  EXPECT_GT(a.samples[1], 30000);
  EXPECT_EQ(a.samples[2], -32768);
  std::remove(path.c_str());
}

// A PNG made by hand (stb writes only 8-bit RGB/grey): `raw` is the filtered rows (a filter byte,
// then the row's packed samples), deflated into one IDAT; a palette when given (colour type 3).
std::string png_by_hand(int w, int h, int bit_depth, int colour_type, const std::string& raw, const std::string& palette = "") {
  auto u32 = [](std::string& s, uint32_t x) {
    for (int sh = 24; sh >= 0; sh -= 8) s += char((x >> sh) & 255);
  };
  auto chunk = [&](std::string& out, const char* type, const std::string& data) {
    u32(out, uint32_t(data.size()));
    const std::string body = type + data;
    out += body;
    u32(out, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
  };
  std::string ihdr;
  u32(ihdr, uint32_t(w));
  u32(ihdr, uint32_t(h));
  ihdr += char(bit_depth), ihdr += char(colour_type);
  ihdr += std::string(3, '\0');  // deflate, adaptive filters, no interlace
  std::string z(compressBound(uLong(raw.size())), '\0');
  uLongf zn = uLongf(z.size());
  compress2(reinterpret_cast<Bytef*>(z.data()), &zn, reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()), 9);
  z.resize(zn);
  std::string out = "\x89PNG\r\n\x1a\n";
  chunk(out, "IHDR", ihdr);
  if (!palette.empty()) chunk(out, "PLTE", palette);
  chunk(out, "IDAT", z);
  chunk(out, "IEND", "");
  return out;
}

// A 16-bit greyscale PNG: stored rows of big-endian samples.
std::string png16_gray(int w, int h, const std::vector<uint16_t>& v) {
  std::string raw;
  for (int y = 0; y < h; y++) {
    raw += '\0';
    for (int x = 0; x < w; x++) raw += char(v[size_t(y) * w + x] >> 8), raw += char(v[size_t(y) * w + x] & 255);
  }
  return png_by_hand(w, h, 16, 0, raw);
}

// Drawings: 1-bit rows deflate far past 1032 decoded bytes per file byte once each bit becomes a
// byte (or three, through a palette). Such files are legitimate and load; the header check still
// refuses a size that no IDAT of the file could hold.
TEST(Media, HighlyCompressibleOneBitPngsLoad) {
  const int w = 4096, h = 4096;
  std::string raw;  // white, with a black dot on the diagonal every 512 rows
  for (int y = 0; y < h; y++) {
    std::string row(size_t(w / 8), char(0xFF));
    if (y % 512 == 0) row[size_t(y / 8)] = char(0xFF ^ (0x80 >> (y % 8)));
    raw += '\0' + row;
  }
  const std::string path = temp_file("drawing.png");
  const std::string gray = png_by_hand(w, h, 1, 0, raw);
  ASSERT_LT(gray.size() * 1032, size_t(w) * h);  // past the plain deflate bound of the decoded bytes
  spit(path, gray);
  Image img = read_image(path);
  ASSERT_EQ(img.width, w);
  ASSERT_EQ(img.height, h);
  ASSERT_EQ(img.channels, 1);
  for (int y : {0, 1, 512, 4095}) {
    EXPECT_EQ(img.pixels[size_t(y) * w + y], y % 512 == 0 ? 0 : 255) << y;
    EXPECT_EQ(img.pixels[size_t(y) * w + (y + 1) % w], 255) << y;
  }
  // The same rows through a two-colour palette: three bytes a pixel.
  spit(path, png_by_hand(w, h, 1, 3, raw, std::string("\x10\x20\x30\xF0\xE0\xD0", 6)));
  img = read_image(path);
  ASSERT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels[0], 0x10);
  EXPECT_EQ(img.pixels[3 * (size_t(512) * w + 512) + 2], 0x30);
  EXPECT_EQ(img.pixels[3 * (size_t(512) * w + 513) + 2], 0xD0);
  // A header claiming 64 times the rows: more than the file's IDAT can hold even at 1 bit.
  std::string lie = gray;
  lie[20] = char(0), lie[21] = char(4), lie[22] = char(0), lie[23] = char(0);  // height 262144: 1 GiB
  const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(lie.data() + 12), 17));
  for (int i = 0; i < 4; i++) lie[29 + i] = char(uint8_t(crc >> (24 - 8 * i)));
  spit(path, lie);
  test::expect_error_containing([&] { read_image(path); }, "more than its");
  std::remove(path.c_str());
}

TEST(Media, SixteenBitPngIsReducedToEightBitsWithANotice) {
  const int w = 5, h = 3;
  std::vector<uint16_t> v(size_t(w) * h);
  for (size_t i = 0; i < v.size(); i++) v[i] = uint16_t(i * 4099 + 17);
  const std::string path = temp_file("gray16.png");
  spit(path, png16_gray(w, h, v));
  std::string notice;
  const Image img = read_image(path, &notice);
  EXPECT_NE(notice.find(path), std::string::npos);
  EXPECT_NE(notice.find("16-bit image reduced to 8 bits"), std::string::npos) << notice;
  ASSERT_EQ(img.width, w);
  ASSERT_EQ(img.height, h);
  ASSERT_EQ(img.channels, 1);
  for (size_t i = 0; i < v.size(); i++) EXPECT_EQ(img.pixels[i], v[i] >> 8) << i;  // the high byte of each sample
  std::remove(path.c_str());
}

TEST(Media, BadFilesAreOneLineErrorsNamingTheFile) {
  const std::string png = temp_file("bad.png");
  write_png(png, test_image(64, 64, 3, 2));
  const std::string good = slurp(png);

  spit(png, good.substr(0, good.size() / 2));  // truncated
  test::expect_error_containing([&] { read_image(png); }, png);

  // An IHDR claiming 100000 x 100000 RGB: refused from the header, before allocating.
  std::string huge = good.substr(0, 33);
  auto set_be = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) huge[at + i] = char(uint8_t(v >> (24 - 8 * i)));
  };
  set_be(16, 100000), set_be(20, 100000);
  spit(png, huge + good.substr(33));
  test::expect_error_containing([&] { read_image(png); }, png);

  set_be(16, 0);  // 0 x 100000
  spit(png, huge + good.substr(33));
  test::expect_error_containing([&] { read_image(png); }, png);

  spit(png, "not an image at all");
  test::expect_error_containing([&] { read_image(png); }, png + ": not a decodable image");
  std::remove(png.c_str());

  const std::string wav = temp_file("bad.wav");
  write_wav(wav, test_tone(8000, 1, 4000));
  const std::string w = slurp(wav);
  spit(wav, w.substr(0, w.size() - 3000));  // the header still promises 4000 frames
  test::expect_error_containing([&] { read_audio(wav); }, wav);
  spit(wav, "RIFF....WAVEjunk");
  test::expect_error_containing([&] { read_audio(wav); }, wav);
  std::remove(wav.c_str());

  test::expect_error_containing([&] { read_image(temp_file("missing.png")); }, "missing.png");
  test::expect_error_containing([&] { write_png(temp_file("x.png"), Image{0, 0, 3, {}}); }, "x.png");
  const std::vector<uint8_t> junk = {'R', 'B', 'I', 9, 0, 0, 0, 1, 0, 0, 0, 1};
  test::expect_error_containing([&] { image_from_stream(junk.data(), junk.size(), 4, "gen"); }, "gen");
}

TEST(Media, MixedFolderStreamsDecodedMediaAndSkipsBrokenFilesWithAWarning) {
  const std::string dir = temp_file("mixed");
  std::filesystem::create_directories(dir);
  const Image img = test_image(16, 8, 3, 5);
  const Audio tone = test_tone(8000, 1, 300);
  write_png(dir + "/a.png", img);
  write_wav(dir + "/b.wav", tone);
  spit(dir + "/c.txt", std::string(500, 'x'));
  spit(dir + "/d.png", slurp(dir + "/a.png").substr(0, 40));  // broken: skipped, not fatal
  const int P = 8;
  ByteDataset ds({dir}, P, 0.0);
  EXPECT_EQ(ds.num_files(), 3u);
  ASSERT_EQ(ds.warnings().size(), 1u);
  EXPECT_NE(ds.warnings()[0].find("d.png"), std::string::npos);
  EXPECT_NE(ds.warnings()[0].find("skipped"), std::string::npos);
  // The packed training streams: the image's 16-byte header and pixels come first (sorted names).
  std::vector<uint8_t> w(size_t(ds.train_patches()) * P);
  ds.read_window(0, int(w.size()), w.data());
  const auto expect_img = image_stream(img, P);
  EXPECT_TRUE(std::equal(expect_img.begin(), expect_img.end(), w.begin()));
  const size_t audio_at = (expect_img.size() + P - 1) / P * P;
  const auto expect_audio = audio_stream(tone, P);
  EXPECT_TRUE(std::equal(expect_audio.begin(), expect_audio.end(), w.begin() + long(audio_at)));
  // A broken file named on the command line is an error, not a skip.
  test::expect_error_containing([&] { ByteDataset({dir + "/d.png"}, P, 0.0); }, dir + "/d.png");
  // The same bytes read as media or as raw text are different data: another fingerprint.
  EXPECT_NE(ByteDataset({dir + "/a.png"}, P, 0.0).fingerprint(), ByteDataset({dir + "/c.txt"}, P, 0.0).fingerprint());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rb
