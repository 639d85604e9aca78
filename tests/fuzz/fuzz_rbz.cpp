// libFuzzer target: the .rbz parser and decoder on arbitrary bytes. Every input must end in a
// restored file or an rb::Error; anything else (a crash, a sanitizer report, an unbounded
// allocation) is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codecs/rbz.h"
#include "src/common/errors.h"
#include "tests/fuzz/fuzz_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static rb::fuzz::FuzzModel fm;
  const std::vector<uint8_t> rbz(data, data + size);
  try {
    rb::decompress_file("fuzz.rbz", rbz, fm.model.get());
  } catch (const rb::Error&) {}
  return 0;
}
