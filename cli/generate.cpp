// retbyte generate: streaming generation with a caller-owned, saveable decoding state.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>

#include "datasets/media.h"

#include "datasets/dataset.h"
#include "generator/decoder.h"
#include "generator/sampler.h"
#include "cli/cli.h"
#include "src/common/errors.h"
#include "src/model/safetensors.h"

namespace rb::cli {

namespace {
float float_value(Args& args, const std::string& name, const std::string& alt, float def) {
  const std::string v = args.value(name, alt, "");
  if (v.empty()) return def;
  char* end = nullptr;
  const float x = std::strtof(v.c_str(), &end);
  if (*end || end == v.c_str() || !std::isfinite(x)) throw Error(name + ": '" + v + "' is not a number");
  return x;
}
// "64x48x3" -> {64, 48, 3}; "16000:1:2.5" -> {16000, 1, 2.5}.
std::vector<double> parse_dims(const std::string& s, char sep, size_t count, const std::string& flag) {
  std::vector<double> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t next = s.find(sep, at);
    const std::string part = s.substr(at, next == std::string::npos ? std::string::npos : next - at);
    char* end = nullptr;
    const double v = std::strtod(part.c_str(), &end);
    if (part.empty() || *end || !std::isfinite(v) || v <= 0) throw Error(flag + ": '" + s + "' is malformed");
    out.push_back(v);
    if (next == std::string::npos) break;
    at = next + 1;
  }
  if (out.size() != count) throw Error(flag + ": '" + s + "' is malformed");
  return out;
}
}  // namespace

// --image / --audio: the media header (and the first half of a prompt image or audio file) primes
// the model; the pixels or samples it generates become a PNG or WAV (written atomically).
int generate_media(const std::string& model_path, const std::string& image_geom, const std::string& audio_geom,
                   const std::string& prompt_file, const std::string& out_path, const SamplingParams& sp, uint64_t seed,
                   bool seed_given, Backend& backend, Overwrite overwrite, std::optional<WeightFormat> weights) {
  if (!image_geom.empty() && !audio_geom.empty()) throw Error("--image and --audio exclude each other");
  if (out_path.empty()) throw Error(std::string(image_geom.empty() ? "--audio" : "--image") + " needs -o OUT");
  Backend* be = &backend;
  auto model = Model::load(model_path, *be);
  if (weights) model->set_weight_format(*weights);
  const int P = model->config().P;
  std::vector<uint8_t> stream, body;  // header + prompt body; the body as generated
  size_t total = 0;                   // body bytes in the output
  Image img;
  Audio aud;
  if (!image_geom.empty()) {
    const auto d = parse_dims(image_geom, 'x', 3, "--image");
    img.width = int(d[0]), img.height = int(d[1]), img.channels = int(d[2]);
    if (d[0] != img.width || d[1] != img.height || d[2] != img.channels || img.channels > 4 ||
        uint64_t(img.width) * img.height * img.channels > (uint64_t(64) << 20))
      throw Error("--image: '" + image_geom + "' must be whole W x H x C with C <= 4 and at most 64 MiB of pixels");
    total = size_t(img.width) * img.height * img.channels;
    stream = image_stream(img, P, model->media_form);  // the header alone (no pixels yet)
    if (!prompt_file.empty()) {
      const Image pi = read_image(prompt_file);
      if (pi.width != img.width || pi.channels != img.channels)
        throw Error(prompt_file + ": prompt image is " + std::to_string(pi.width) + " wide with " + std::to_string(pi.channels) +
                    " channels; --image asks for " + std::to_string(img.width) + " and " + std::to_string(img.channels));
      const int rows = std::min(pi.height / 2, img.height - 1);
      // The first rows of the prompt's stream: residuals of the first rows depend on those rows only.
      const std::vector<uint8_t> ps = image_stream(pi, P, model->media_form);
      const auto first = ps.begin() + long(media_header_size(P));
      body.assign(first, first + long(size_t(rows) * img.width * img.channels));
    }
  } else {
    const auto d = parse_dims(audio_geom, ':', 3, "--audio");
    aud.sample_rate = int(d[0]), aud.channels = int(d[1]);
    if (d[0] != aud.sample_rate || d[1] != aud.channels || aud.channels > 64 || d[2] * d[0] * d[1] > double(32 << 20))
      throw Error("--audio: '" + audio_geom +
                  "' must be RATE:CHANNELS:SECONDS with whole RATE and CHANNELS (<= 64), at most 32 Mi samples");
    total = size_t(d[2] * d[0]) * size_t(aud.channels) * 2;
    stream = audio_stream(aud, P, model->media_form);
    if (!prompt_file.empty()) {
      const Audio pa = read_audio(prompt_file);
      if (pa.sample_rate != aud.sample_rate || pa.channels != aud.channels)
        throw Error(prompt_file + ": prompt audio is " + std::to_string(pa.sample_rate) + " Hz x " + std::to_string(pa.channels) +
                    "; --audio asks for " + std::to_string(aud.sample_rate) + " x " + std::to_string(aud.channels));
      const auto ps = audio_stream(pa, P, model->media_form);
      const size_t hs = media_header_size(P);
      const size_t half =
          std::min((ps.size() - hs) / 2 / (2 * size_t(aud.channels)) * 2 * size_t(aud.channels), total - 2 * aud.channels);
      body.assign(ps.begin() + long(hs), ps.begin() + long(hs + half));
    }
  }
  if (!seed_given) std::fprintf(stderr, "retbyte generate: seed %llu\n", (unsigned long long)seed);
  DecodeState st(*model);
  st.rng().reseed(seed);
  Decoder dec(*model);
  stream.insert(stream.end(), body.begin(), body.end());
  const size_t prompted = body.size();
  dec.ingest(st, stream.data(), stream.size());
  install_stop_signals();
  while (body.size() < total) {
    if (stop_requested().load()) throw Error("interrupted; " + out_path + " not written");
    const uint8_t b = sample_byte(dec.next_logits(st), sp, st.rng());
    dec.accept(st, b);
    body.push_back(b);
  }
  std::vector<uint8_t> full =
      !image_geom.empty() ? image_stream(img, P, model->media_form) : audio_stream(aud, P, model->media_form);
  full.insert(full.end(), body.begin(), body.end());
  if (!image_geom.empty())
    write_png(out_path, image_from_stream(full.data(), full.size(), P, out_path), overwrite);
  else
    write_wav(out_path, audio_from_stream(full.data(), full.size(), P, out_path), overwrite);
  std::fprintf(stderr, "retbyte generate: wrote %s (%zu bytes from the prompt, %zu generated)\n", out_path.c_str(), prompted,
               body.size() - prompted);
  return 0;
}

int cmd_generate(Args& args) {
  if (args.flag("--help") || args.flag("-h")) {
    std::cout << "usage: retbyte generate [-m MODEL] [-p TEXT] [--prompt-file F] [-n BYTES] [--temp T] [--top-k K]\n"
                 "                        [--top-p P] [-s SEED] [-o OUT] [--state-in F] [--state-out F] [--raw] [-t N]\n"
                 "                        [--device cpu|cuda[:N]] [--tf32]\n"
                 "  streams N generated bytes (default 256) to stdout, or to OUT (written atomically at the end)\n"
                 "  --temp 0 is greedy; the default seed is random and printed on stderr\n"
                 "  --state-out F saves the decoding state after the last byte; --state-in F continues from one\n"
                 "  (its sampler position included, so -s is ignored); a fresh stream starts with the text\n"
                 "  header patch unless --raw\n"
                 "  --image WxHxC -o OUT.png: an image of that geometry (C = 1..4), primed by the image header;\n"
                 "  --audio RATE:CHANNELS:SECONDS -o OUT.wav: 16-bit audio likewise. With --prompt-file, an image\n"
                 "  of the same width and channels (or audio of the same rate and channels) has its first half\n"
                 "  continued. -f/--force overwrites an existing OUT or --state-out (as in every command).\n"
              << kModelHelp << kWeightsHelp << kDeviceHelp;
    return 0;
  }
  const std::string model_arg = args.value("--model", "-m", "");
  const std::string prompt_text = args.value("--prompt", "-p", "");
  const std::string prompt_file = args.value("--prompt-file", "", "");
  const int n = int(args.int_value("--n-predict", "-n", 256, 0, 1 << 30));
  SamplingParams sp;
  sp.temperature = float_value(args, "--temp", "", 0.8f);
  sp.top_k = int(args.int_value("--top-k", "", 0, 0, 1 << 30));
  sp.top_p = float_value(args, "--top-p", "", 1.0f);
  const std::string seed_s = args.value("--seed", "-s", "");
  const std::string out_path = args.value("--output", "-o", "");
  const std::string state_in = args.value("--state-in", "", "");
  const std::string state_out = args.value("--state-out", "", "");
  const bool raw = args.flag("--raw");
  const std::optional<WeightFormat> weights = weights_option(args);
  const std::string image_geom = args.value("--image", "", "");
  const std::string audio_geom = args.value("--audio", "", "");
  const bool force = args.flag("--force") || args.flag("-f");  // doc/SPEC.md §3: -f overwrites, in every command
  const int threads = args.threads();
  auto be = device_backend(args, threads);
  args.no_positionals();
  const std::string model_path = model_or_default(model_arg);
  if (!prompt_text.empty() && !prompt_file.empty()) throw Error("-p and --prompt-file cannot be used together");
  if (n < 0) throw Error("-n must be >= 0");
  if (sp.temperature < 0 || sp.top_k < 0 || sp.top_p <= 0 || sp.top_p > 1)
    throw Error("sampling: need --temp >= 0, --top-k >= 0 and 0 < --top-p <= 1");
  uint64_t seed = std::random_device{}();
  if (!seed_s.empty()) {
    char* end = nullptr;
    seed = std::strtoull(seed_s.c_str(), &end, 10);
    if (*end || end == seed_s.c_str()) throw Error("-s: '" + seed_s + "' is not a number");
  }
  const bool media = !image_geom.empty() || !audio_geom.empty();
  check_outputs({out_path, state_out}, {model_path, prompt_file, state_in}, force, "-f");
  if (media)
    return generate_media(model_path, image_geom, audio_geom, prompt_file, out_path, sp, seed, !seed_s.empty(), *be,
                          force ? Overwrite::Replace : Overwrite::Refuse, weights);
  std::vector<uint8_t> prompt(prompt_text.begin(), prompt_text.end());
  if (!prompt_file.empty()) {
    const std::vector<uint8_t> f = read_file_bytes(prompt_file, max_held_bytes());
    prompt.insert(prompt.end(), f.begin(), f.end());
  }

  auto model = Model::load(model_path, *be);
  if (weights) model->set_weight_format(*weights);
  std::unique_ptr<DecodeState> st;
  if (!state_in.empty()) {
    st = DecodeState::load(state_in, *model);
    if (weights && *weights != model->weight_format() &&
        (*weights == WeightFormat::I8 || model->weight_format() == WeightFormat::I8))
      throw Error(state_in + ": decoded with " + (model->weight_format() == WeightFormat::I8 ? "int8" : "fp32 or bf16") +
                  " products; --weights " + weight_format_name(*weights) + " would continue it with others (drop --weights)");
    if (!seed_s.empty())
      std::fprintf(stderr, "retbyte generate: -s ignored: %s carries its sampler position\n", state_in.c_str());
  } else {
    st = std::make_unique<DecodeState>(*model);
    st->rng().reseed(seed);
    if (seed_s.empty()) std::fprintf(stderr, "retbyte generate: seed %llu\n", (unsigned long long)seed);
    if (!raw) {
      const auto header = make_header(Modality::Text, model->config().P);
      prompt.insert(prompt.begin(), header.begin(), header.end());
    }
  }
  Decoder dec(*model);
  dec.ingest(*st, prompt.data(), prompt.size());

  const Overwrite overwrite = force ? Overwrite::Replace : Overwrite::Refuse;
  std::optional<OutputFile> file;  // -o: a temporary file until the last byte (or a device, written into)
  if (!out_path.empty()) file.emplace(out_path, overwrite);
  install_stop_signals();  // Ctrl-C: stop cleanly, never leave a half-written -o file
  const int P = model->config().P;
  std::string pending;  // bytes of the patch in progress: streamed as patches complete
  auto flush = [&] {
    if (file)
      file->write(pending.data(), pending.size());
    else if ((!pending.empty() && std::fwrite(pending.data(), 1, pending.size(), stdout) != pending.size()) ||
             std::fflush(stdout) != 0)
      throw Error("stdout: write failed (" + std::string(std::strerror(errno)) + ")");
    pending.clear();
  };
  for (int i = 0; i < n; i++) {
    if (stop_requested().load())
      throw Error("interrupted; " + (out_path.empty() ? std::string("output so far was streamed") : out_path + " not written"));
    const uint8_t b = sample_byte(dec.next_logits(*st), sp, st->rng());
    dec.accept(*st, b);
    pending += char(b);
    if (st->bytes_consumed() % P == 0) flush();
  }
  flush();
  if (file) file->commit();
  if (!state_out.empty()) st->save(state_out, overwrite);
  return 0;
}

}  // namespace rb::cli
