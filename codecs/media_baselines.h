// The codecs people already use for images and audio, as baselines beside the model's bpb: each
// compresses the same decoded pixels or samples (written as PNG or WAV to a temporary file) with
// the installed command-line tool. A tool that is not installed is left out, never an error.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "datasets/media.h"

namespace rb {

// (name, compressed bytes): "png (optipng -o5)", "webp-lossless (cwebp -z 9)", "jpeg-xl (cjxl -d 0 -e 9)".
std::vector<std::pair<std::string, size_t>> image_baselines(const Image& image);
// (name, compressed bytes): "flac -8".
std::vector<std::pair<std::string, size_t>> audio_baselines(const Audio& audio);

}  // namespace rb
