// The .rbz codec's internals, shared by its parts (as zstd's lib/common): the container's
// constants and records, the header writer and parser (rbz_container.cpp), what a file's content
// is and how it is restored (rbz_content.cpp); compress_file (rbz_compress.cpp) and
// decompress_file (rbz_decompress.cpp) are built from them. Layout: doc/rbz_format.md.
#pragma once
#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "codecs/context_mixer.h"
#include "codecs/rbz.h"
#include "codecs/segment_coder.h"
#include "src/common/errors.h"

namespace rb::rbz_detail {

// Puts a bf16 model that coded an adapted file on the fp32 kernels (Model::widen_to_fp32) back on
// its bf16 ones when the file is done; its weights are the pretrained bf16 values again by then.
struct Bf16Again {
  Model* model = nullptr;
  Bf16Again() = default;
  void widen(Model* m) {
    m->widen_to_fp32();
    model = m;
  }
  Bf16Again(const Bf16Again&) = delete;
  Bf16Again& operator=(const Bf16Again&) = delete;
  ~Bf16Again() {
    try {
      if (model) model->set_weight_format(WeightFormat::BF16);
    } catch (const std::exception&) {  // out of memory: the model stays on the fp32 kernels, slower but right
    }
  }
};
enum class BlockKind : uint8_t { Model = 1, Zstd = 2, Raw = 3 };
constexpr uint8_t kWavContainer = 0, kFlacContainer = 1;  // audio mode's first extra byte
constexpr size_t kMaxContext = 4096, kMaxModelBlock = size_t(16) << 20;
constexpr uint64_t kMaxContent = uint64_t(1) << 40;
constexpr uint8_t kFlagAdapted = 1;               // an adaptation record follows the mode data
constexpr uint8_t kFlagResidual = 2;              // the content is coded in residual form; a residual record follows
constexpr uint8_t kResidualTransformVersion = 1;  // datasets/media_residuals.h as it is now
constexpr uint8_t kFlagBf16 = 8;                  // the model coded with its weights rounded to bf16 (Model::set_weight_format)
constexpr uint8_t kFlagOneContext = 16;           // each model block is a whole file (up to 16 MiB) in one context, not lanes
constexpr uint8_t kFlagInt8 = 32;  // the model's products were int8 (WeightFormat::I8) over the weights bit 3 names
constexpr uint8_t kFlagMixed = 4;  // model-coded blocks use context mixing; a mixer record (its version) follows

struct Writer {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void bytes(const uint8_t* p, size_t n) { b.insert(b.end(), p, p + n); }
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; i++) b.push_back(uint8_t(v >> (8 * i)));
  }
};

struct Reader {
  const uint8_t* p;
  size_t n, pos = 0;
  const std::string& path;
  void need(size_t k) {
    if (k > n - pos) throw Error(path + ": truncated .rbz file (header ends early)");
  }
  uint64_t get(int k) {
    need(size_t(k));
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v |= uint64_t(p[pos + size_t(i)]) << (8 * i);
    pos += size_t(k);
    return v;
  }
  std::vector<uint8_t> bytes(size_t k) {
    need(k);
    std::vector<uint8_t> v(p + pos, p + pos + k);
    pos += k;
    return v;
  }
};

struct Block {
  BlockKind kind;
  uint64_t length;  // bytes of content it restores
  std::vector<uint8_t> payload;
};

// What the model codes: the content body, the context (header patches) it is conditioned on,
// and what the mode keeps beside it.
struct Content {
  RbzMode mode = RbzMode::Raw;
  size_t unit = 1;                // bytes of one pixel or one audio frame: segments start on whole ones
  bool restores_content = false;  // image, FLAC: what comes back is the pixels or samples, not the file's bytes
  std::vector<uint8_t> context, extra, owned;
  const uint8_t* body = nullptr;
  size_t size = 0;
  int residual_channels = 0;  // > 0: owned holds the residual form of the pixels or samples (datasets/media_residuals.h)
};

inline uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }

// A parsed and checked header.
struct Parsed {
  RbzHeaderInfo info;
  uint64_t hash = 0;
  std::vector<uint8_t> context, extra;
  std::vector<Block> blocks;    // kinds and lengths (payloads stay in the file)
  std::vector<size_t> offsets;  // where each payload starts, then the end of the last
  int residual_channels = 0;    // the content is in residual form (image and audio modes)
};

// ---- rbz_container.cpp
std::vector<uint8_t> assemble(RbzMode mode, uint64_t original_size, uint64_t hash, const std::string& fingerprint,
                              const std::vector<uint8_t>& context, const std::vector<uint8_t>& extra,
                              const std::vector<Block>& blocks, const std::optional<AdaptSettings>& adapt = std::nullopt,
                              int residual_channels = 0, bool mixed = false, bool bf16 = false, bool int8 = false,
                              bool one_context = false, uint8_t mixer_version = 2);
// Parses and checks the header and block table (throws rb::Error naming `path`).
Parsed parse(const std::string& path, const std::vector<uint8_t>& rbz);

// ---- rbz_content.cpp
// The content of a file for a model of patch size P (P = 0: no model, raw).
Content analyse(const std::string& path, const std::vector<uint8_t>& file, int P, bool force_raw);
// The content in residual form, for a model that reads residuals (image and audio modes).
void to_residual_form(Content* c);
std::vector<uint8_t> zstd19(const uint8_t* p, size_t n);
uint64_t content_hash(const std::vector<uint8_t>& file, const Content& c);
// What a lane of the content holds, for the context mixer's side models. `extra` is the mode's
// record (image: width, height, channels); `residual_channels` > 0 in residual form.
LaneShape lane_shape(RbzMode mode, const std::vector<uint8_t>& extra, int residual_channels, size_t start, size_t length);
// What the lanes have coded after `positions` stream positions (context included): each segment's
// first positions - C bytes.
std::vector<ByteSpan> coded_prefixes(const std::vector<ByteSpan>& segments, size_t context, size_t positions);
// The file that the content (the blocks' bytes, in the form they were coded) restores: pixels as a
// PNG, samples inside their WAV bytes or as a FLAC, or the bytes themselves; every size and the
// checksum checked. compress_file runs it too, before anything is coded.
std::vector<uint8_t> restore_file(const std::string& path, RbzMode mode, const std::vector<uint8_t>& extra, int residual_channels,
                                  uint64_t hash, uint64_t original_size, std::vector<uint8_t> content);

}  // namespace rb::rbz_detail
