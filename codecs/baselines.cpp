#include "codecs/baselines.h"

#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>

#include <vector>

#include "src/common/errors.h"

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
  const lzma_ret r = lzma_easy_buffer_encode(uint32_t(preset), LZMA_CHECK_CRC64, nullptr, data, n, out.data(), &pos, out.size());
  if (r != LZMA_OK) throw Error("xz: compression failed (code " + std::to_string(int(r)) + ")");
  return pos;
}

size_t gzip_compressed_size(const uint8_t* data, size_t n, int level) {
  z_stream z = {};
  // windowBits 15 + 16: the gzip container, as `gzip -level` writes it (less the file name).
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) throw Error("gzip: deflateInit failed");
  std::vector<uint8_t> out(1 << 16);
  size_t total = 0;
  int r = Z_OK;
  // deflate's avail_in is 32-bit: feed at most 1 GiB at a time.
  const uint8_t* next = data;
  size_t left = n;
  for (;;) {
    if (z.avail_in == 0 && left > 0) {
      const size_t feed = std::min<size_t>(left, size_t(1) << 30);
      z.next_in = const_cast<uint8_t*>(next);
      z.avail_in = uInt(feed);
      next += feed;
      left -= feed;
    }
    z.next_out = out.data();
    z.avail_out = uInt(out.size());
    r = deflate(&z, left == 0 ? Z_FINISH : Z_NO_FLUSH);
    if (r == Z_STREAM_ERROR) break;
    total += out.size() - z.avail_out;
    if (r == Z_STREAM_END) break;
  }
  deflateEnd(&z);
  if (r != Z_STREAM_END) throw Error("gzip: compression failed");
  return total;
}

}  // namespace rb
