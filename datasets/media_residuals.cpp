#include "datasets/media_residuals.h"

#include <algorithm>
#include <array>
#include <string>

#include "datasets/media.h"
#include "src/common/errors.h"

namespace rb {

namespace {

uint16_t fold16(int error) {
  const int s = int(int16_t(uint16_t(error)));
  return uint16_t(s >= 0 ? 2 * s : -2 * s - 1);
}

// The image's planes with the green subtracted from red and blue (3 or 4 channels), mod 256.
uint8_t decorrelated(const uint8_t* pixel, int channels, int c) {
  if (channels >= 3 && (c == 0 || c == 2)) return uint8_t(pixel[c] - pixel[1]);
  return pixel[c];
}

// The prediction of element (y, x, c) of the decorrelated planes `plane` (already known above and left).
int predict_pixel(const uint8_t* plane, int width, int channels, int y, int x, int c) {
  const size_t row = size_t(width) * size_t(channels);
  const uint8_t* at = plane + size_t(y) * row + size_t(x) * size_t(channels) + size_t(c);
  if (y == 0) return x == 0 ? 0 : at[-channels];
  if (x == 0) return at[-long(row)];
  return median_edge(at[-channels], at[-long(row)], at[-long(row) - channels]);
}

// Sign-sign LMS: prediction = (w . history) >> shift; each weight moves by mu towards reducing the
// error's sign. Integer throughout, with weights and inputs clamped so nothing can overflow.
template <int N>
struct SignLms {
  int shift, mu;
  std::array<int32_t, N> w{}, h{};
  SignLms(int s, int m) : shift(s), mu(m) {}
  int predict() const {
    int64_t dot = 0;
    for (int j = 0; j < N; j++) dot += int64_t(w[j]) * h[j];
    const int64_t p = (dot + (int64_t(1) << (shift - 1))) >> shift;
    return int(std::clamp<int64_t>(p, -(1 << 20), 1 << 20));
  }
  void update(int input, int error) {
    const int se = (error > 0) - (error < 0);
    if (se)
      for (int j = 0; j < N; j++) {
        const int sh = (h[j] > 0) - (h[j] < 0);
        w[j] = std::clamp(w[j] + mu * se * sh, -(1 << 22), 1 << 22);
      }
    for (int j = N - 1; j > 0; j--) h[j] = h[j - 1];
    h[0] = std::clamp(input, -(1 << 20), 1 << 20);
  }
};

// One channel's predictor: first-order difference, then LMS filters of 256 and 16 taps in cascade.
struct ChannelPredictor {
  int previous = 0;
  SignLms<256> slow{13, 1};
  SignLms<16> fast{12, 2};
  int pa = 0, pb = 0;
  int predict() {  // the prediction of the next value; keep it for update()
    pa = slow.predict();
    pb = fast.predict();
    return previous + pa + pb;
  }
  void update(int value) {
    const int e1 = value - previous, ea = e1 - pa, eb = ea - pb;
    slow.update(e1, ea);
    fast.update(ea, eb);
    previous = value;
  }
};

}  // namespace

std::vector<uint8_t> image_residuals(const Image& img) {
  const int C = img.channels;
  if (img.pixels.size() != size_t(img.width) * size_t(img.height) * size_t(C))
    throw Error("image residuals: " + std::to_string(img.pixels.size()) + " pixel bytes do not fill " +
                std::to_string(img.width) + "x" + std::to_string(img.height) + "x" + std::to_string(C));
  std::vector<uint8_t> plane(img.pixels.size()), out(img.pixels.size());
  for (size_t i = 0; i < img.pixels.size(); i += size_t(C))
    for (int c = 0; c < C; c++) plane[i + size_t(c)] = decorrelated(img.pixels.data() + i, C, c);
  size_t i = 0;
  for (int y = 0; y < img.height; y++)
    for (int x = 0; x < img.width; x++)
      for (int c = 0; c < C; c++, i++) out[i] = fold8(plane[i] - predict_pixel(plane.data(), img.width, C, y, x, c));
  return out;
}

void pixels_from_residuals(const uint8_t* residuals, Image* img) {
  const int C = img->channels;
  const size_t n = size_t(img->width) * size_t(img->height) * size_t(C);
  std::vector<uint8_t> plane(n);
  size_t i = 0;
  for (int y = 0; y < img->height; y++)
    for (int x = 0; x < img->width; x++)
      for (int c = 0; c < C; c++, i++)
        plane[i] = uint8_t(predict_pixel(plane.data(), img->width, C, y, x, c) + unfold8(residuals[i]));
  img->pixels.resize(n);
  for (size_t p = 0; p < n; p += size_t(C))
    for (int c = 0; c < C; c++) {
      const bool recoloured = C >= 3 && (c == 0 || c == 2);
      img->pixels[p + size_t(c)] = recoloured ? uint8_t(plane[p + size_t(c)] + plane[p + 1]) : plane[p + size_t(c)];
    }
}

std::vector<uint16_t> audio_residuals(const Audio& a) {
  const size_t C = size_t(a.channels);
  std::vector<ChannelPredictor> predictors(C);
  std::vector<uint16_t> out(a.samples.size());
  for (size_t i = 0; i < a.samples.size(); i += C)
    for (size_t c = 0; c < C; c++) {
      const int base = c == 0 ? 0 : a.samples[i];  // channels after the first: their difference from it
      const int value = a.samples[i + c] - base;
      out[i + c] = fold16(a.samples[i + c] - (base + predictors[c].predict()));
      predictors[c].update(value);
    }
  return out;
}

void samples_from_residuals(const uint16_t* residuals, size_t count, Audio* a) {
  const size_t C = size_t(a->channels);
  std::vector<ChannelPredictor> predictors(C);
  a->samples.resize(count);
  for (size_t i = 0; i < count; i += C)
    for (size_t c = 0; c < C && i + c < count; c++) {
      const int base = c == 0 ? 0 : a->samples[i];
      const int16_t sample = int16_t(uint16_t(base + predictors[c].predict() + unfold16(residuals[i + c])));
      a->samples[i + c] = sample;
      predictors[c].update(sample - base);
    }
}

}  // namespace rb
