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

// eval --by-position: bits per byte by position bucket (0-4K, 4-16K, ... 4M+) over every file,
// with the retention state carried through each file and reset every `reset_every` bytes (0 = the
// model's T; a multiple of P), as a table on stdout and (svg_path) a chart. Returns
// {"reset_every", "buckets": [...], "files": [...]}.
nlohmann::ordered_json position_report(Model& model, const std::vector<std::string>& paths, bool raw, const std::string& svg_path,
                                       bool force, size_t reset_every = 0);

}  // namespace rb::cli
