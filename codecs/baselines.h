// Compressed sizes from general-purpose compressors, the baselines every bpb is printed beside.
#pragma once
#include <cstddef>
#include <cstdint>

namespace rb {

size_t zstd_compressed_size(const uint8_t* data, size_t n, int level);  // zstd -level
size_t xz_compressed_size(const uint8_t* data, size_t n, int preset);   // xz -preset
size_t gzip_compressed_size(const uint8_t* data, size_t n, int level);  // gzip -level (gzip framing)

inline double bits_per_byte(size_t compressed, size_t n) { return n ? 8.0 * double(compressed) / double(n) : 0.0; }

}  // namespace rb
