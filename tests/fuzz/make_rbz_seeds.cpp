// Writes valid .rbz files (model-coded with and without context mixing, zstd, raw, image and WAV modes) made with the fuzz model,
// as the seed corpus of fuzz_rbz: usage make_rbz_seeds DIR.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "datasets/media.h"
#include "codecs/rbz.h"
#include "tests/fuzz/fuzz_model.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  rb::fuzz::FuzzModel fm;
  auto save = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), long(bytes.size()));
  };
  std::string text;
  for (int i = 0; i < 12; i++) text += "fuzzing the decoder line " + std::to_string(i) + "\n";
  const std::vector<uint8_t> t(text.begin(), text.end());
  rb::CompressOptions model_only;
  model_only.model_only = true;
  model_only.segment_bytes = 120;
  model_only.lockstep = 3;
  save("model.rbz", rb::compress_file("t.txt", t, fm.model.get(), model_only));  // context mixing on (flag bit 2)
  rb::CompressOptions unmixed = model_only;
  unmixed.mix = false;
  save("model-unmixed.rbz", rb::compress_file("t.txt", t, fm.model.get(), unmixed));
  save("stored.rbz", rb::compress_file("t.txt", t, fm.model.get(), rb::CompressOptions()));
  save("empty.rbz", rb::compress_file("e", {}, fm.model.get(), model_only));
  std::vector<uint8_t> longer;  // one lane long enough for an adaptation round
  while (longer.size() < 1200) longer.insert(longer.end(), t.begin(), t.end());
  rb::CompressOptions adapted = model_only;
  adapted.segment_bytes = 0;
  adapted.adapt = rb::AdaptSettings{1024, 1, 1, 64, 1e-3f};
  save("adapted.rbz", rb::compress_file("t.txt", longer, fm.model.get(), adapted));
  rb::Image img{5, 4, 3, std::vector<uint8_t>(60)};
  for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = uint8_t(i * 13);
  const std::string png = rb::encode_png(img, "s.png");
  const std::string png_path = dir + "/.seed.png";
  std::ofstream(png_path, std::ios::binary) << png;
  save("image.rbz", rb::compress_file(png_path, std::vector<uint8_t>(png.begin(), png.end()), fm.model.get(), model_only));
  std::remove(png_path.c_str());
  rb::Audio a{8000, 1, std::vector<int16_t>(100)};
  for (size_t i = 0; i < a.samples.size(); i++) a.samples[i] = int16_t(3000 * std::sin(0.2 * double(i)));
  const std::string wav_path = dir + "/.seed.wav";
  rb::write_wav(wav_path, a);
  std::ifstream in(wav_path, std::ios::binary);
  const std::vector<uint8_t> wav((std::istreambuf_iterator<char>(in)), {});
  save("audio.rbz", rb::compress_file(wav_path, wav, fm.model.get(), model_only));
  // The residual form: the same files coded as prediction residuals (flag bit 1 and its record).
  fm.model->media_form = rb::MediaForm::Residual;
  save("audio-residual.rbz", rb::compress_file(wav_path, wav, fm.model.get(), model_only));
  std::ofstream(png_path, std::ios::binary) << png;
  save("image-residual.rbz",
       rb::compress_file(png_path, std::vector<uint8_t>(png.begin(), png.end()), fm.model.get(), model_only));
  std::remove(png_path.c_str());
  fm.model->media_form = rb::MediaForm::Plain;
  std::remove(wav_path.c_str());
  return 0;
}
