// The .rbz container: the header and block table written and parsed (doc/rbz_format.md).
#include <xxhash.h>

#include "codecs/bit_mixer.h"
#include "codecs/rbz_internal.h"
#include "kernels/numerics.h"

namespace rb::rbz_detail {

std::vector<uint8_t> assemble(RbzMode mode, uint64_t original_size, uint64_t hash, const std::string& fingerprint,
                              const std::vector<uint8_t>& context, const std::vector<uint8_t>& extra,
                              const std::vector<Block>& blocks, const std::optional<AdaptSettings>& adapt, int residual_channels,
                              bool mixed, bool bf16, bool int8, bool one_context, uint8_t mixer_version) {
  Writer w;
  w.bytes(kRbzMagic, 4);
  w.u16(kRbzVersion);
  w.u8(uint8_t(mode));
  w.u8(uint8_t((adapt ? kFlagAdapted : 0) | (residual_channels ? kFlagResidual : 0) | (mixed ? kFlagMixed : 0) |
               (bf16 ? kFlagBf16 : 0) | (int8 ? kFlagInt8 : 0) | (one_context ? kFlagOneContext : 0)));
  w.u32(uint32_t(kNumericsVersion));
  w.u64(original_size);
  w.u64(hash);
  w.u64(fingerprint.empty() ? 0 : std::stoull(fingerprint, nullptr, 16));
  w.u32(uint32_t(context.size()));
  w.u32(uint32_t(extra.size()));
  w.u32(uint32_t(blocks.size()));
  w.bytes(context.data(), context.size());
  w.bytes(extra.data(), extra.size());
  if (adapt) {
    uint32_t lr_bits;
    std::memcpy(&lr_bits, &adapt->lr, 4);
    for (uint32_t v : {adapt->round_positions, adapt->steps, adapt->windows, adapt->window, lr_bits}) w.u32(v);
  }
  if (residual_channels) {
    w.u8(kResidualTransformVersion);
    w.u8(uint8_t(residual_channels));
  }
  if (mixed) w.u8(mixer_version);
  for (const Block& b : blocks) {
    w.u8(uint8_t(b.kind));
    w.u64(b.length);
    w.u64(b.payload.size());
  }
  w.u64(XXH64(w.b.data(), w.b.size(), 0));  // the header's own checksum
  for (const Block& b : blocks) w.bytes(b.payload.data(), b.payload.size());
  return w.b;
}

Parsed parse(const std::string& path, const std::vector<uint8_t>& rbz) {
  Parsed ps;
  Reader r{rbz.data(), rbz.size(), 0, path};
  if (rbz.size() < 4 || std::memcmp(rbz.data(), kRbzMagic, 4)) throw Error(path + ": not a .rbz file (bad magic)");
  r.pos = 4;
  const uint16_t version = uint16_t(r.get(2));
  if (version != kRbzVersion)
    throw Error(path + ": .rbz format version " + std::to_string(version) + " is not supported (this build reads version " +
                std::to_string(kRbzVersion) + ")");
  const uint8_t mode = uint8_t(r.get(1));
  const uint8_t flags = uint8_t(r.get(1));
  ps.info.numerics_version = uint32_t(r.get(4));
  ps.info.original_size = r.get(8);
  ps.hash = r.get(8);
  const uint64_t fp = r.get(8);
  const uint32_t nctx = uint32_t(r.get(4)), nextra = uint32_t(r.get(4)), nblocks = uint32_t(r.get(4));
  if (mode > 2 || (flags & ~(kFlagAdapted | kFlagResidual | kFlagMixed | kFlagBf16 | kFlagInt8 | kFlagOneContext)) != 0)
    throw Error(path + ": damaged .rbz header (unknown mode or flags)");
  ps.info.mode = RbzMode(mode);
  if (nctx > kMaxContext || nextra > rbz.size() || nblocks > rbz.size() / 17) throw Error(path + ": damaged .rbz header (sizes)");
  ps.context = r.bytes(nctx);
  ps.extra = r.bytes(nextra);
  if (flags & kFlagAdapted) {
    AdaptSettings a;
    a.round_positions = uint32_t(r.get(4)), a.steps = uint32_t(r.get(4)), a.windows = uint32_t(r.get(4)),
    a.window = uint32_t(r.get(4));
    const uint32_t lr_bits = uint32_t(r.get(4));
    std::memcpy(&a.lr, &lr_bits, 4);
    check_adapt_settings(a, 1, path + ": damaged .rbz header");
    ps.info.adapt = a;
  }
  if (flags & kFlagResidual) {
    const uint8_t version = uint8_t(r.get(1));
    ps.residual_channels = int(r.get(1));
    if (version != kResidualTransformVersion)
      throw Error(path + ": residual transform version " + std::to_string(version) +
                  " is not supported (this build has version " + std::to_string(kResidualTransformVersion) + ")");
    if (ps.residual_channels < 1 || mode == uint8_t(RbzMode::Raw)) throw Error(path + ": damaged .rbz header (residual record)");
  }
  if (flags & kFlagMixed) {
    const uint8_t version = uint8_t(r.get(1));
    if (version != kMixerVersion && version != kBitMixerVersion && version != kSharedBitMixerVersion)
      throw Error(path + ": context mixer version " + std::to_string(version) + " is not supported (this build has versions " +
                  std::to_string(kMixerVersion) + " to " + std::to_string(kSharedBitMixerVersion) + ")");
    ps.info.mixed = true;
    ps.info.mixer_version = version;
  }
  ps.info.bf16_weights = (flags & kFlagBf16) != 0;
  ps.info.int8_products = (flags & kFlagInt8) != 0;
  ps.info.one_context = (flags & kFlagOneContext) != 0;
  if (ps.info.bf16_weights && ps.info.adapt) throw Error(path + ": damaged .rbz header (adaptation with bf16 weights)");
  if (ps.info.int8_products && ps.info.adapt) throw Error(path + ": damaged .rbz header (adaptation with int8 products)");
  uint64_t content = 0, stored = 0;
  bool any_model = false;
  for (uint32_t i = 0; i < nblocks; i++) {
    Block b;
    const uint8_t kind = uint8_t(r.get(1));
    b.length = r.get(8);
    const uint64_t size = r.get(8);
    if (kind < 1 || kind > 3 || b.length > kMaxContent || size > rbz.size()) throw Error(path + ": damaged .rbz block table");
    b.kind = BlockKind(kind);
    if (b.kind == BlockKind::Model && (b.length > kMaxModelBlock || nctx == 0)) throw Error(path + ": damaged .rbz block table");
    if (b.kind == BlockKind::Raw && size != b.length) throw Error(path + ": damaged .rbz block table");
    // No block restores more than its kind can: zstd expands at most ~43,000x (RLE blocks).
    if (b.kind == BlockKind::Zstd && b.length / 65536 > size) throw Error(path + ": damaged .rbz block table");
    any_model |= b.kind == BlockKind::Model;
    content += b.length;
    ps.offsets.push_back(size_t(stored));  // relative to the payload area until it is known
    stored += size;
    ps.blocks.push_back(std::move(b));
  }
  const size_t header_end = r.pos;
  const uint64_t header_hash = r.get(8);
  if (XXH64(rbz.data(), header_end, 0) != header_hash) throw Error(path + ": damaged .rbz header (checksum mismatch)");
  if (content > kMaxContent) throw Error(path + ": damaged .rbz block table");
  if (ps.info.adapt && !any_model) throw Error(path + ": damaged .rbz header (adaptation without model-coded blocks)");
  if (ps.info.mixed && !any_model) throw Error(path + ": damaged .rbz header (context mixing without model-coded blocks)");
  if (stored != rbz.size() - r.pos)
    throw Error(path + ": " + (stored > rbz.size() - r.pos ? "truncated .rbz file" : "damaged .rbz file (trailing bytes)") +
                " (" + std::to_string(rbz.size()) + " bytes, the header describes " + std::to_string(r.pos + stored) + ")");
  for (size_t& o : ps.offsets) o += r.pos;
  ps.offsets.push_back(r.pos + size_t(stored));
  if (any_model) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fp);
    ps.info.model_fingerprint = buf;
  }
  // Raw and image content is the original size; audio adds the verbatim bytes (checked later).
  if (ps.info.mode != RbzMode::Audio && content != ps.info.original_size)
    throw Error(path + ": damaged .rbz header (sizes disagree)");
  return ps;
}

}  // namespace rb::rbz_detail
