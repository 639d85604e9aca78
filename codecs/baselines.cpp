#include "codecs/baselines.h"

#include <lzma.h>
#include <zstd.h>

#include <vector>

#include "src/errors.h"

namespace rb {

size_t zstd_compressed_size(const uint8_t* data, size_t n, int level) {
  std::vector<uint8_t> out(ZSTD_compressBound(n));
  const size_t r = ZSTD_compress(out.data(), out.size(), data, n, level);
  if (ZSTD_isError(r)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(r));
  return r;
}

size_t xz_compressed_size(const uint8_t* data, size_t n, int preset) {
  std::vector<uint8_t> out(lzma_stream_buffer_bound(n));
  size_t pos = 0;
  const lzma_ret r = lzma_easy_buffer_encode(uint32_t(preset), LZMA_CHECK_CRC64, nullptr, data, n,
                                             out.data(), &pos, out.size());
  if (r != LZMA_OK) throw Error("xz: compression failed (code " + std::to_string(int(r)) + ")");
  return pos;
}

}  // namespace rb
