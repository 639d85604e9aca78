// bpb per file and per modality beside the compressors people use, shared by `retbyte eval` and
// `retbyte bench bpb`: an aligned table on stdout, progress on stderr, the figures as JSON.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "src/model/model.h"

namespace rb::cli {

struct BpbReportOptions {
  bool raw = false;     // every file as plain bytes, no header (--raw)
  std::string command;  // "eval", "bench bpb": names the progress and notice lines
};

// Scores every file under `paths` (inputs are all found before anything is printed), then prints
// the table. Returns {"files": [...], "modalities": {...}, "bpb", "zstd19_bpb"}.
nlohmann::ordered_json bpb_report(Model& model, const std::vector<std::string>& paths, const BpbReportOptions& options);

}  // namespace rb::cli
