#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each for a
# bounded time (default 60 s each; scripts/fuzz.sh SECONDS): fuzz_rbz (the .rbz parser and
# decoder) and fuzz_loaders (model files, decode states, model and training configs). Inputs
# that once crashed are kept in tests/fuzz/regressions/TARGET/ and replayed first; a new crasher
# fails the run and is copied there, to be committed with its fix.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! command -v clang++ > /dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a > /dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-dev > /dev/null
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRETBYTE_FUZZ=ON -DRETBYTE_CUDA=OFF > /dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzz_rbz make_rbz_seeds fuzz_loaders make_loaders_seeds
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for target in rbz loaders; do
  bin=build-fuzz/tests/fuzz/fuzz_$target
  regressions=tests/fuzz/regressions/$target
  corpus=build-fuzz/corpus/$target
  mkdir -p "$corpus" "$regressions"
  build-fuzz/tests/fuzz/make_${target}_seeds "$corpus"
  if compgen -G "$regressions/*" > /dev/null; then
    "$bin" -runs=0 "$regressions"/* > build-fuzz/$target.replay.log 2>&1 || { echo "fuzz_$target: a kept regression input fails again"; tail -20 build-fuzz/$target.replay.log; status=1; continue; }
  fi
  artifacts=build-fuzz/artifacts/$target/
  mkdir -p "$artifacts"
  if "$bin" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=20 -artifact_prefix="$artifacts" "$corpus" \
      > build-fuzz/$target.log 2>&1; then
    echo "fuzz_$target: $(grep -o '#[0-9]* *DONE.*' build-fuzz/$target.log | tail -1 || tail -1 build-fuzz/$target.log)"
  else
    echo "fuzz_$target: FOUND A CRASH (kept in $regressions/)"
    tail -30 build-fuzz/$target.log
    cp "$artifacts"* "$regressions"/ 2> /dev/null || true
    status=1
  fi
done
exit $status
