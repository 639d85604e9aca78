#!/usr/bin/env bash
# Builds retbyte and runs the full test suite (the README's test command; CI runs it too).
#   scripts/test.sh            release build in build/, then ctest
#   scripts/test.sh --sanitize AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
dir=build
flags=(-DCMAKE_BUILD_TYPE=Release)
# The CUDA toolkit, where installed, builds the CUDA backend (--device cuda); its host-side tests
# run everywhere. Debian-less installs put nvcc in /usr/local/cuda/bin, often not on PATH.
if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=$PATH:/usr/local/cuda/bin; fi
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  # Without the CUDA runtime: its own allocations at exit are not ours to leak-check. The GPU
  # kernels' host emulation (tests/gpu_emulation.h) still runs under the sanitizers.
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DRETBYTE_SANITIZE=ON -DRETBYTE_CUDA=OFF)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
cmake -S . -B "$dir" "${flags[@]}" > /dev/null
cmake --build "$dir" -j "$(nproc)"
OMP_NUM_THREADS=2 ctest --test-dir "$dir" --output-on-failure -j 1
