// safetensors files: 8-byte little-endian header length, JSON header, raw little-endian data.
// Reading validates everything (length, JSON, dtypes, shapes, offsets) and names the file in
// every error. Writing is atomic: a temporary file in the same folder, fsync, then rename.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/common/output_file.h"  // write_file_atomic

namespace rb {

struct StTensorInfo {
  std::string dtype;  // "F32", "U8", "I32", ...
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;  // byte offsets in the data area
  size_t numel() const;
};

// __metadata__ key of the checksum every file written here carries; a reader checks it when present.
constexpr const char* kChecksumKey = "checksum";

class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);  // throws rb::Error
  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const StTensorInfo& info(const std::string& name) const;
  const std::map<std::string, StTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has_checksum() const { return metadata_.count(kChecksumKey) != 0; }
  // Copies an F32 tensor, or widens a BF16 one; throws unless its shape equals `shape` exactly.
  bool is_bf16(const std::string& name) const { return info(name).dtype == "BF16"; }
  void read_f32(const std::string& name, const std::vector<int64_t>& shape, float* out) const;
  std::vector<float> read_f32(const std::string& name) const;
  std::vector<uint8_t> read_u8(const std::string& name) const;

 private:
  std::string path_;
  std::vector<uint8_t> data_;  // the data area
  std::map<std::string, StTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct StTensorOut {
  std::string name;
  std::string dtype;  // "F32" or "U8"
  std::vector<int64_t> shape;
  const void* data;
};

void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata, Overwrite overwrite = Overwrite::Replace);

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace rb
