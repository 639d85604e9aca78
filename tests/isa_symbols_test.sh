#!/usr/bin/env bash
# The AVX2 and AVX-512 objects must not define symbols the linker may share with other objects
# (weak or vague-linkage copies of inline functions or templates): the linker keeps one copy, and
# if it kept the one compiled for AVX-512, a CPU without it would run AVX-512 code through the
# portable path. The kernels live in anonymous namespaces for this reason; this keeps it true.
#   isa_symbols_test.sh libretbyte_core.a
set -euo pipefail
shared=$(nm -A "$1" | grep -E 'kernels_(avx2|avx512)\.cpp\.o:.* [WVuv] ' || true)
if [ -n "$shared" ]; then
  echo "ISA objects define shareable symbols:"
  echo "$shared" | head -20
  exit 1
fi
count=$(nm -A "$1" | grep -cE 'kernels_(avx2|avx512)\.cpp\.o:' || true)
echo "ok: $count symbols in the ISA objects, none shareable"
