// safetensors files: 8-byte little-endian header length, JSON header, raw little-endian data.
// Reading validates everything (length, JSON, dtypes, shapes, offsets) and names the file in
// every error. Writing is atomic: a temporary file in the same folder, fsync, then rename.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace rb {

struct StTensorInfo {
  std::string dtype;  // "F32", "U8", "I32", ...
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;  // byte offsets in the data area
  size_t numel() const;
};

class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);  // throws rb::Error
  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const StTensorInfo& info(const std::string& name) const;
  const std::map<std::string, StTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Copies an F32 tensor; throws unless its shape equals `shape` exactly.
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
                       const std::map<std::string, std::string>& metadata);

// Writes `bytes` to `path` atomically (temp file in the same folder + fsync + rename), first
// removing temporaries of `path` left by processes that died mid-write.
void write_file_atomic(const std::string& path, const std::string& bytes);
void remove_stale_temporaries(const std::string& path);

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace rb
