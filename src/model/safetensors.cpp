#include "src/model/safetensors.h"

#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <xxhash.h>

#include "src/common/errors.h"
#include "src/model/model.h"  // bf16_widen

namespace rb {

namespace {
size_t dtype_size(const std::string& d) {
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "U8" || d == "I8" || d == "BOOL") return 1;
  if (d == "F16" || d == "BF16" || d == "I16") return 2;
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  return 0;
}
constexpr uint64_t kMaxHeader = 100ull << 20;

// "xxh64:" and 16 hex digits over everything the file says: the metadata but the checksum (sorted
// key, value pairs), the tensor table (sorted names, dtypes, shapes, offsets) and the data area.
std::string checksum_string(const std::map<std::string, std::string>& metadata, const std::map<std::string, StTensorInfo>& table,
                            const void* data, size_t n) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  auto add = [&](const std::string& s) { XXH64_update(st, s.c_str(), s.size() + 1); };  // with its NUL: "ab","c" != "a","bc"
  for (const auto& [k, v] : metadata)
    if (k != kChecksumKey) add(k), add(v);
  for (const auto& [name, t] : table)
    add(name + " " + t.dtype + " " + shape_string(t.shape) + " " + std::to_string(t.begin) + " " + std::to_string(t.end));
  XXH64_update(st, data, n);
  const unsigned long long h = XXH64_digest(st);
  XXH64_freeState(st);
  char buf[24];
  std::snprintf(buf, sizeof buf, "xxh64:%016llx", h);
  return buf;
}
}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

size_t StTensorInfo::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    throw Error(path + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  in.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  const std::string hint = " (is this a safetensors file written by retbyte?)";
  if (size < 8) throw Error(path + ": file is " + std::to_string(size) + " bytes, too short for a safetensors header" + hint);
  uint8_t len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  if (!in) throw Error(path + ": cannot read the header length");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len_bytes[i];
  if (hlen > kMaxHeader || hlen > size - 8)
    throw Error(path + ": header length " + std::to_string(hlen) + " does not fit the file size " + std::to_string(size) + hint);
  std::string header(hlen, '\0');
  in.read(header.data(), std::streamsize(hlen));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::parse_error&) {
    throw Error(path + ": header is not valid JSON" + hint);
  }
  if (!j.is_object()) throw Error(path + ": header is not a JSON object" + hint);
  const uint64_t data_size = size - 8 - hlen;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) throw Error(path + ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) throw Error(path + ": __metadata__ value '" + m.key() + "' is not a string");
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const auto& t = *it;
    const std::string bad = path + ": tensor '" + it.key() + "': ";
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets"))
      throw Error(bad + "needs dtype, shape and data_offsets");
    StTensorInfo info;
    if (!t["dtype"].is_string()) throw Error(bad + "dtype is not a string");
    info.dtype = t["dtype"];
    const size_t esz = dtype_size(info.dtype);
    if (!esz) throw Error(bad + "unknown dtype " + info.dtype);
    if (!t["shape"].is_array()) throw Error(bad + "shape is not an array");
    size_t numel = 1;
    for (const auto& d : t["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) throw Error(bad + "shape has a bad dimension");
      info.shape.push_back(d.get<int64_t>());
      const uint64_t dim = d.get<uint64_t>();
      // Checked: a shape like [4, 2^62] must not wrap around to a small count.
      if (dim != 0 && numel > data_size / dim)
        throw Error(bad + "shape " + shape_string(info.shape) + " is larger than the file");
      numel *= size_t(dim);
    }
    const auto& off = t["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw Error(bad + "data_offsets must be two non-negative integers");
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    if (info.end < info.begin || info.end > data_size)
      throw Error(bad + "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                  ") run past the end of the file (data is " + std::to_string(data_size) + " bytes; truncated file?)");
    if (info.end - info.begin != numel * esz)
      throw Error(bad + "data_offsets span " + std::to_string(info.end - info.begin) + " bytes but shape " +
                  shape_string(info.shape) + " of " + info.dtype + " needs " + std::to_string(numel * esz));
    tensors_[it.key()] = info;
  }
  data_.resize(data_size);
  in.read(reinterpret_cast<char*>(data_.data()), std::streamsize(data_size));
  if (!in) throw Error(path + ": read failed (truncated file?)");
  // Files written since checksums were added carry one (older files and other tools' do not).
  const auto sum = metadata_.find(kChecksumKey);
  if (sum != metadata_.end() && sum->second != checksum_string(metadata_, tensors_, data_.data(), data_.size()))
    throw Error(path + ": checksum mismatch (damaged file)");
}

const StTensorInfo& SafetensorsReader::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": missing tensor '" + name + "'");
  return it->second;
}

void SafetensorsReader::read_f32(const std::string& name, const std::vector<int64_t>& shape, float* out) const {
  const StTensorInfo& t = info(name);
  if (t.dtype != "F32" && t.dtype != "BF16")
    throw Error(path_ + ": tensor '" + name + "' is " + t.dtype + ", expected F32 or BF16");
  if (t.shape != shape)
    throw Error(path_ + ": tensor '" + name + "' has shape " + shape_string(t.shape) + ", expected " + shape_string(shape) +
                " (model saved with another config?)");
  if (t.dtype == "F32") return (void)std::memcpy(out, data_.data() + t.begin, t.end - t.begin);
  for (size_t i = 0; i < t.numel(); i++)  // little-endian bf16, widened exactly
    out[i] = bf16_widen(uint16_t(data_[t.begin + 2 * i] | data_[t.begin + 2 * i + 1] << 8));
}

std::vector<float> SafetensorsReader::read_f32(const std::string& name) const {
  const StTensorInfo& t = info(name);
  std::vector<float> v(t.numel());
  read_f32(name, t.shape, v.data());
  return v;
}

std::vector<uint8_t> SafetensorsReader::read_u8(const std::string& name) const {
  const StTensorInfo& t = info(name);
  if (t.dtype != "U8") throw Error(path_ + ": tensor '" + name + "' is " + t.dtype + ", expected U8");
  return std::vector<uint8_t>(data_.begin() + long(t.begin), data_.begin() + long(t.end));
}

void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata, Overwrite overwrite) {
  std::map<std::string, StTensorInfo> table;
  std::string data;
  for (const auto& t : tensors) {
    StTensorInfo info;
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.begin = data.size();
    data.append(static_cast<const char*>(t.data), info.numel() * dtype_size(t.dtype));
    info.end = data.size();
    table[t.name] = info;
  }
  std::map<std::string, std::string> meta = metadata;
  meta[kChecksumKey] = checksum_string(meta, table, data.data(), data.size());
  nlohmann::ordered_json h;
  nlohmann::ordered_json m = nlohmann::ordered_json::object();
  for (const auto& [k, v] : meta) m[k] = v;
  h["__metadata__"] = m;
  for (const auto& t : tensors) {
    const StTensorInfo& info = table[t.name];
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {info.begin, info.end}}};
  }
  std::string header = h.dump();
  while (header.size() % 8) header += ' ';
  std::string out;
  out.reserve(8 + header.size() + data.size());
  uint64_t len = header.size();
  for (int i = 0; i < 8; i++) out += char((len >> (8 * i)) & 0xff);
  out += header;
  out += data;
  write_file_atomic(path, out, overwrite);
}

}  // namespace rb
