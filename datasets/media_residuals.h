// The residual form of images and audio (README "Data as bytes"): each pixel or sample replaced by
// its prediction error from what came before it, so a model that reads the stream left to right
// gets the row above a pixel, or the waveform's trend, folded into the byte it predicts. Both
// transforms are exact integer bijections on the whole array, causal (an element's residual
// depends only on earlier elements), so a prefix of residuals inverts to the same prefix of
// pixels or samples, and the same bits come out on any CPU.
//
// Images: colour planes R-G, G, B-G (mod 256) when there are 3 or 4 channels, then per plane the
// median edge detector of LOCO-I / JPEG-LS from the left, upper and upper-left neighbours; the
// error mod 256 is folded so small errors of either sign are small bytes (0, -1, 1, -2 ... ->
// 0, 1, 2, 3 ...).
// Audio: channels 1.. as their difference from channel 0 (stereo: left and side), then per channel
// a first-order difference followed by two sign-sign LMS filters (256 and 16 taps, integer
// weights, adapted as the stream goes, as Monkey's Audio does); the 16-bit error is folded the
// same way and stored as a sample.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rb {

struct Image;
struct Audio;

// Residual bytes of image.pixels (same size and layout) and the inverse. `residuals` must hold
// width * height * channels bytes; the inverse writes pixels of the same geometry.
std::vector<uint8_t> image_residuals(const Image& image);
// The fold: an error mod 256 as a signed byte, then 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
inline uint8_t fold8(int error) {
  const int s = int(int8_t(uint8_t(error)));
  return uint8_t(s >= 0 ? 2 * s : -2 * s - 1);
}
// The signed error an image residual byte stands for (the inverse of the fold above).
inline int unfold8(uint8_t r) { return (r & 1) ? -(int(r) + 1) / 2 : int(r) / 2; }
// The same for a 16-bit audio residual.
inline int unfold16(uint16_t r) { return (r & 1) ? -(int(r) + 1) / 2 : int(r) / 2; }
// LOCO-I's median edge detector: the left or upper neighbour across an edge, else the plane's gradient.
inline int median_edge(int left, int up, int up_left) {
  if (up_left >= (left > up ? left : up)) return left < up ? left : up;
  if (up_left <= (left < up ? left : up)) return left > up ? left : up;
  return left + up - up_left;
}
void pixels_from_residuals(const uint8_t* residuals, Image* image);  // image: geometry set, pixels filled

// Folded 16-bit residuals of audio.samples (same count, channels interleaved) and the inverse.
std::vector<uint16_t> audio_residuals(const Audio& audio);
void samples_from_residuals(const uint16_t* residuals, size_t count, Audio* audio);  // audio: channels set

}  // namespace rb
