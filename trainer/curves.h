// The picture of a training run: train bpb (raw and smoothed) and validation bpb (overall and per
// modality) against the step, as an SVG drawn from metrics.jsonl. `train` refreshes
// DIR/curves.svg at each validation; `retbyte plot` draws one for any metrics.jsonl.
#pragma once
#include <string>

namespace rb {

// Reads metrics.jsonl (one JSON object per line) and returns the SVG document. Throws rb::Error
// naming the file when it cannot be read or holds no steps.
std::string training_curves_svg(const std::string& metrics_path, const std::string& title);

}  // namespace rb
