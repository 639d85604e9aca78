// Images and audio as the byte streams of doc/SPEC.md §2 (README "Data as bytes"): decoded pixels or
// samples behind a header that records their geometry, so the model sees content, not the
// deflate or FLAC bytes of the file. Modality comes from the content (magic bytes), never the
// file name. Every failure is an rb::Error naming the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "src/model/config.h"
#include "src/common/output_file.h"

namespace rb {

enum class Modality : uint8_t { Text = 'T', Image = 'I', Audio = 'A' };
const char* modality_name(Modality m);  // "text", "image", "audio"

// What a file holds, from its first bytes: PNG, JPEG, GIF, BMP, PNM (P2-P6) are images; RIFF/WAVE,
// FLAC, Ogg and AIFF are audio; anything else is text (raw bytes). TGA has no magic: it is raw.
Modality detect_modality(const uint8_t* head, size_t n);

// 8-bit pixels, row-major, channels interleaved (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};
// 16-bit samples, channels interleaved.
struct Audio {
  int sample_rate = 0, channels = 0;
  std::vector<int16_t> samples;
  size_t frames() const { return channels ? samples.size() / size_t(channels) : 0; }
};

// Largest decoded image accepted, checked from the file's header before any pixel is decoded.
constexpr uint64_t kMaxImageBytes = uint64_t(1) << 30;
// Largest decoded audio accepted (samples x 2 bytes), checked from the header likewise.
constexpr uint64_t kMaxAudioBytes = uint64_t(1) << 31;

// Decodes an image file (stb_image: PNG, JPEG, BMP, TGA, PNM, GIF first frame). 16-bit PNGs are
// reduced to 8 bits with a one-line notice in *notice (when given).
Image read_image(const std::string& path, std::string* notice = nullptr);
// The same from the file's bytes in memory (the codec's, which may have come from stdin); `path`
// names it in errors.
Image decode_image(const std::string& path, const std::vector<uint8_t>& file, std::string* notice = nullptr);
// Decodes an audio file (libsndfile: WAV, FLAC, OGG/Vorbis, AIFF, ...). Anything but 16-bit PCM
// is converted to 16-bit with a one-line notice in *notice. A header that promises more frames
// than the file holds is an error (a lossless tool must not silently drop samples).
Audio read_audio(const std::string& path, std::string* notice = nullptr);
Audio decode_audio(const std::string& path, const std::vector<uint8_t>& file, std::string* notice = nullptr);
// Writes atomically (temporary file, then rename); errors name the file.
void write_png(const std::string& path, const Image& image, Overwrite overwrite = Overwrite::Replace);
// The PNG file's bytes (stb_image_write); `path` names it in errors.
std::string encode_png(const Image& image, const std::string& path);
void write_wav(const std::string& path, const Audio& audio, Overwrite overwrite = Overwrite::Replace);
// A 16-bit FLAC file's bytes (libsndfile's encoder); `path` names it in errors.
std::vector<uint8_t> encode_flac(const Audio& audio, const std::string& path);

// The header patch of text (raw) streams: "RB", the modality letter, then zeros up to P bytes.
std::vector<uint8_t> make_header(Modality m, int P);

// The header: "RB", the modality letter, then (image) channels, width and height, (audio)
// channels and sample rate, as big-endian integers, zero-padded to the fewest whole patches of P
// bytes that hold its 12 bytes (2 patches at P = 8, 3 at P = 4). Text headers are one patch.
// The residual form (datasets/media_residuals.h) writes the letter in lower case: `i`, `a`.
constexpr size_t kMediaHeaderBytes = 12;
size_t media_header_size(int P);
// header, then the pixels (or their residuals)
std::vector<uint8_t> image_stream(const Image& image, int P, MediaForm form = MediaForm::Plain);
// header, then samples (or their folded residuals) MSB first
std::vector<uint8_t> audio_stream(const Audio& audio, int P, MediaForm form = MediaForm::Plain);

// A 16-bit value as streams store samples: most significant byte first.
inline uint16_t load_msb16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline void store_msb16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8), p[1] = uint8_t(v); }
// The form a media stream's header letter says ('I'/'A' plain, 'i'/'a' residual).
uint8_t media_letter(Modality m, MediaForm form);
// The inverses, of either form (from the header letter); `what` names the stream in errors.
Image image_from_stream(const uint8_t* s, size_t n, int P, const std::string& what);
Audio audio_from_stream(const uint8_t* s, size_t n, int P, const std::string& what);

}  // namespace rb
