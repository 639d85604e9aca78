// The .rbz container (doc/SPEC.md §4): a checked header, then blocks, each model-coded (rANS over the
// model's probabilities), stored with zstd -19, or stored raw, whichever is smallest; and the
// whole file falls back to one zstd or raw block when that is smaller, so a .rbz is never more
// than its header larger than `zstd -19` would make the file.
//
// Modes: raw (the file's bytes), image (lossless PNG, BMP, PNM: the pixels; decompresses to a PNG
// with identical pixels), audio (16-bit PCM WAV: the samples; every other byte of the file is
// kept verbatim, so it decompresses to the identical file). Layout: README "The .rbz format".
#pragma once
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "codecs/adaptation.h"
#include "src/common/errors.h"
#include "src/model/model.h"

namespace rb {

enum class RbzMode : uint8_t { Raw = 0, Image = 1, Audio = 2 };
const char* rbz_mode_name(RbzMode m);  // "raw", "image", "audio"

constexpr uint16_t kRbzVersion = 1;
constexpr uint8_t kRbzMagic[4] = {'R', 'B', 'Z', 0x1a};  // every .rbz file's first bytes

struct CompressOptions {
  bool force_raw = false;    // --raw: the file's bytes even for images and audio
  size_t segment_bytes = 0;  // 0: from `lanes` (see segment_bytes_for)
  // How the content is cut into lanes, each coded from a fresh state: 1 (the default) = the whole
  // file as one context, so its end is coded with its beginning in the state (lanes of 16 MiB
  // past that); N > 1 = N equal lanes of at least 64 KiB (--lanes N); 0 = --fast: enough lanes to
  // fill the lockstep batch (choose_segment_bytes), the fastest to decode.
  int lanes = 1;
  int lockstep = 32;                   // segments coded together
  bool model_only = false;             // tests and benchmarks: model-code every block, no fallbacks
  bool whole_file_fallback = true;     // tests: keep the per-block choice even when zstd of the file is smaller
  std::optional<AdaptSettings> adapt;  // --adapt: learn the file while coding it (codecs/adaptation.h)
  bool mix = true;                     // context mixing on top of the model (codecs/bit_mixer.h); --no-mix turns it off
  // 3: bitwise (codecs/bit_mixer.h), the lanes of a file sharing what the mixer learns (a file in
  // one lane is written as version 2, which codes it the same); 2: bitwise, each lane on its own;
  // 1: the earlier byte-wise mixer. 2 and 1 for comparisons.
  uint8_t mixer_version = 3;
  std::function<void(uint64_t, uint64_t)> progress;  // (bytes done, bytes total)
  CoderTimes* times = nullptr;                       // bench codec: the model's share and the codec's own
};

struct CompressStats {
  RbzMode mode = RbzMode::Raw;
  uint64_t content_bytes = 0;  // bytes the model saw (pixels, samples or the file)
  size_t blocks = 0, model_blocks = 0, zstd_blocks = 0, raw_blocks = 0;
  bool whole_file_fallback = false;
  uint64_t model_payload_bytes = 0;  // coded bytes of the model-coded blocks
  double model_bits = 0;             // ideal code length of all the content under the model (bits)
  bool adapted = false;              // the file was coded with online adaptation
  bool mixed = false;                // ... and with context mixing
  uint64_t adapt_bytes_trained = 0;  // bytes of the adaptation's training windows
};

// Segment length for a body of n bytes: enough segments to fill the lockstep batch, none shorter
// than 64 KiB (each starts from a fresh state and fresh context-mixing statistics) nor longer than
// 1 MiB.
size_t choose_segment_bytes(uint64_t n, int lockstep);
// Segment length for CompressOptions::lanes (before rounding to whole patches and samples).
size_t segment_bytes_for(uint64_t n, int lanes, int lockstep);

// Compresses the file at `path` (its bytes in `file`). `model` may be null: then every block is
// stored (zstd or raw). Errors name the path.
std::vector<uint8_t> compress_file(const std::string& path, const std::vector<uint8_t>& file, Model* model,
                                   const CompressOptions& options, CompressStats* stats = nullptr);

// Several files, each compressed as compress_file would (the same archives, byte for byte), the
// files coded as one context each stepping side by side as the rows of one batch: decoding and
// coding many files costs fewer passes over the weights. Files cut into several lanes, and all
// files under --adapt (it changes the weights file by file), are coded one at a time. A group of
// files side by side holds at most `lockstep` files and kSideBySideBytes of content (the context
// mixers' tables are sized to their files). `stats` (if set) gets one entry per file.
constexpr uint64_t kSideBySideBytes = uint64_t(64) << 20;
constexpr int kSideBySideFiles = 32;  // the command line's groups (the lockstep width)
// Whether a caller's group of `files` files of `bytes` bytes in all takes one more file (the
// command line reads and writes group by group; compress_files / decompress_files may cut a group
// further, where files differ in kind).
inline bool side_by_side_group_has_room(size_t files, uint64_t bytes) {
  return files == 0 || (files < size_t(kSideBySideFiles) && bytes < kSideBySideBytes);
}
std::vector<std::vector<uint8_t>> compress_files(const std::vector<std::string>& paths,
                                                 const std::vector<const std::vector<uint8_t>*>& files, Model* model,
                                                 const CompressOptions& options, std::vector<CompressStats>* stats = nullptr);

struct RbzHeaderInfo {
  RbzMode mode = RbzMode::Raw;
  uint64_t original_size = 0;
  std::string model_fingerprint;  // "" when no block is model-coded
  uint32_t numerics_version = 0;
  std::optional<AdaptSettings> adapt;  // set when coded with online adaptation
  bool mixed = false;                  // model-coded blocks use context mixing
  uint8_t mixer_version = 0;           // ... of this version (1: byte-wise, 2: bitwise, 3: bitwise with shared lanes)
  bool bf16_weights = false;           // ... by the model with its weights rounded to bf16
  bool int8_products = false;          // ... with int8 products over those weights (WeightFormat::I8)
  bool one_context = false;            // each file (up to 16 MiB) coded as one context (the default)
};
// Parses and checks the header (throws rb::Error naming `path`).
RbzHeaderInfo read_rbz_header(const std::string& path, const std::vector<uint8_t>& rbz);

// decompress_file's error when the archive names another model than the one given (a subclass
// of Error, so callers that only report errors need not know it): the CLI then says which model
// to give when the default model stood in for a missing -m.
class ModelMismatchError : public Error {
 public:
  ModelMismatchError(std::string path, const std::string& what) : Error(what), path_(std::move(path)) {}
  const std::string& path() const { return path_; }  // the archive that names another model

 private:
  std::string path_;
};

// The restored file's bytes (for image mode, a PNG). `model` may be null when no block is
// model-coded; otherwise its fingerprint must match. Everything is checked (header checksum,
// block table, each block's decoder, the content's xxhash64) before anything is returned.
std::vector<uint8_t> decompress_file(const std::string& path, const std::vector<uint8_t>& rbz, Model* model,
                                     const std::function<void(uint64_t, uint64_t)>& progress = nullptr, int lockstep = 32,
                                     CoderTimes* times = nullptr);

// Several archives, each restored as decompress_file would: consecutive archives of one lane each
// (the default for files up to 16 MiB) coded alike decode side by side as the rows of one batch,
// at most `lockstep` of them and kSideBySideBytes of content at a time; the others one by one.
// Without `failures` the first archive that fails throws its rb::Error; with it, each archive's
// error (a ModelMismatchError where that is the cause) lands in (*failures)[k] with an empty
// output, and the others are restored, each decoded once (a damaged payload stops its own row of
// the batch only).
std::vector<std::vector<uint8_t>> decompress_files(const std::vector<std::string>& paths,
                                                   const std::vector<const std::vector<uint8_t>*>& rbzs, Model* model,
                                                   const std::function<void(uint64_t, uint64_t)>& progress = nullptr,
                                                   int lockstep = kSideBySideFiles,
                                                   std::vector<std::exception_ptr>* failures = nullptr);

}  // namespace rb
