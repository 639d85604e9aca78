// Files and folders as byte streams (doc/SPEC.md §2): every stream starts with a header patch, then the
// file's bytes. Files are read into memory once (a file changed later does not affect a run);
// training windows of T bytes are drawn from the packed
// training streams (each stream zero-padded to whole patches, so headers sit on patch starts),
// and a deterministic validation split is held out by file, or by the tail of each file when a
// split by file is not possible.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "datasets/media.h"
#include "src/common/rng.h"

namespace rb {

// A regular file's bytes, read whole (a FIFO or device is refused without blocking); errors name
// the file: one larger than `limit`, or one that shrinks while being read.
std::vector<uint8_t> read_file_bytes(const std::string& path, uint64_t limit);
// What files and decoded media may occupy in memory, in all: half of this machine's memory.
uint64_t max_held_bytes();

// Regular files under `paths` (folders recursively, in sorted order). Errors name the path: one
// that does not exist, a folder with no files, a file that cannot be read.
struct FoundFile {
  std::string path;    // as opened
  std::string name;    // relative to the folder it was found in (the file name for a file given
                       // directly): independent of how the folder was spelled on the command line
  bool named = false;  // given directly on the command line (not found in a folder)
};
std::vector<FoundFile> collect_files(const std::vector<std::string>& paths);

// One file as the model sees it (doc/SPEC.md §2): its modality from the content, its header (one patch
// for text, datasets/media.h for images and audio) and its body: the file's bytes
// or its decoded pixels / big-endian samples. raw: every file is text.
class FileStream {
 public:
  // Decode failures throw rb::Error naming the file; a conversion leaves a line in *notice.
  // form: images and audio as pixels and samples, or as their residuals.
  FileStream(const std::string& path, int P, bool raw = false, std::string* notice = nullptr, MediaForm form = MediaForm::Plain);
  Modality modality() const { return modality_; }
  const std::vector<uint8_t>& header() const { return header_; }
  const uint8_t* body() const { return decoded_.data(); }
  uint64_t body_size() const { return decoded_.size(); }

 private:
  Modality modality_ = Modality::Text;
  std::vector<uint8_t> header_, decoded_;  // decoded_: the file's bytes (text) or its pixels / samples
};

// One stream: the header patch, then bytes [begin, end) of a file.
struct StreamSpan {
  int file = 0;
  uint64_t begin = 0, end = 0;
};

class ByteDataset {
 public:
  ByteDataset(const std::vector<std::string>& paths, int P, double val_fraction, MediaForm form = MediaForm::Plain);

  int patch_size() const { return P_; }
  size_t num_files() const { return files_.size(); }
  // Files in folders that failed to decode were skipped: one line each (for the caller to print),
  // and conversions made (e.g. 24-bit audio to 16-bit).
  const std::vector<std::string>& warnings() const { return warnings_; }
  Modality modality(const StreamSpan& s) const { return files_[s.file]->modality(); }
  const std::vector<StreamSpan>& val_streams() const { return val_; }
  uint64_t train_bytes() const { return packed_size_; }  // packed, with headers and padding
  uint64_t val_file_bytes() const;                       // file bytes held out
  // "by file", "by tail of each file" or "none"
  const std::string& split_kind() const { return split_kind_; }
  // 16 hex digits identifying the files (names and sizes) and the split: a resumed run must see
  // the same data.
  const std::string& fingerprint() const { return fingerprint_; }

  // T bytes of the packed training streams starting at patch `start_patch` (wraps around).
  void read_window(uint64_t start_patch, int T, uint8_t* out) const;
  // A uniformly random patch-aligned window; advances rng.
  void sample_window(Rng& rng, int T, uint8_t* out) const;
  uint64_t train_patches() const { return packed_size_ / P_; }
  // The training streams one by one (carried-state training walks them window by window): how many,
  // the one holding packed patch `patch`, a stream's length in bytes (header and padding to whole
  // patches included), and T bytes of stream s from byte `offset` (a multiple of P), zeros past
  // its end (returning the bytes of data: T, or fewer where the stream ends inside the window).
  size_t train_streams() const { return train_.size(); }
  size_t train_stream_at(uint64_t patch) const;
  uint64_t train_stream_bytes(size_t s) const;
  uint64_t train_stream_start(size_t s) const { return packed_start_.at(s); }  // in the packed sequence
  int read_stream_window(size_t s, uint64_t offset, int T, uint8_t* out) const;
  // A stream as the model sees it: its file's header, then the span's body bytes.
  const std::vector<uint8_t>& header(const StreamSpan& s) const { return files_[s.file]->header(); }
  const uint8_t* span_data(const StreamSpan& s) const { return files_[s.file]->body() + s.begin; }

 private:
  int P_;
  std::vector<std::unique_ptr<FileStream>> files_;
  std::vector<StreamSpan> train_, val_;
  std::vector<uint64_t> packed_start_;  // start of each training stream in the packed sequence
  uint64_t packed_size_ = 0;
  std::string split_kind_, fingerprint_;
  std::vector<std::string> warnings_;
  std::vector<std::string> names_;
};

}  // namespace rb
