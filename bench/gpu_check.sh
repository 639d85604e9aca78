#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU and the CUDA toolkit: build with the CUDA backend,
# run the backend op suite (every op on CUDA against the CPU reference, finite-difference
# gradients, a model's training steps), then the GPU benchmarks beside the CPU's. Results go to
# stdout and to bench/gpu_check-<date>.log (JSON lines from each bench at the end of its block).
#   bash bench/gpu_check.sh            (BUILD=build-gpu, CPU_THREADS=all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build-gpu}
log=bench/gpu_check-$(date +%Y%m%d-%H%M).log
exec > >(tee "$log") 2>&1
command -v nvidia-smi > /dev/null && nvidia-smi -L || echo "nvidia-smi not found"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DRETBYTE_CUDA=ON > /dev/null
cmake --build "$build" -j "$(nproc)"
bin=$build/retbyte
"$bin" --version
echo "== op suite: every backend (CUDA must run, not skip)"
"$build"/tests/retbyte_tests --gtest_filter='EveryBackend/BackendOps.*:Cuda.*' | tee /tmp/gpu_ops.txt | tail -n 30
if grep -q 'BackendOps.*/cuda.*SKIPPED\|\[  SKIPPED \].*cuda' /tmp/gpu_ops.txt; then echo "CUDA tests skipped: no GPU seen" >&2; exit 1; fi
echo "== bench fwdbwd and train: small and base, cuda beside cpu"
for cfg in small base; do
  for dev in cuda cpu; do
    "$bin" bench fwdbwd --config $cfg --device $dev --steps 5
    "$bin" bench train --config $cfg --device $dev --steps 4
  done
done
echo "== bench fwdbwd small with TF32 (opt-in)"
"$bin" bench fwdbwd --config small --device cuda --tf32 --steps 5
echo "== bench decode at 1 KiB and 1 MiB of context: cuda with graphs, cuda launching kernels one by one, cpu"
for ctx in 1024 1048576; do
  "$bin" bench decode --config small --context $ctx -n 1024 --device cuda
  RETBYTE_CUDA_GRAPHS=0 "$bin" bench decode --config small --context $ctx -n 1024 --device cuda
  "$bin" bench decode --config small --context $ctx -n 1024 --device cpu
  "$bin" bench decode --config small --global attention --context $ctx -n 1024 --device cuda  # the baseline
done
echo "== train tiny for 60 steps on the GPU, then generate from it there (a graph failure prints 'CUDA graphs off')"
run=$(mktemp -d)
"$bin" train --config tiny --data tests/fixtures --out "$run/tiny" --steps 60 --device cuda 2>&1 | tail -n 3
"$bin" eval -m "$run/tiny/model.safetensors" --device cuda tests/fixtures/text2k.txt 2>&1 | tail -n 1
"$bin" generate -m "$run/tiny/model.safetensors" -p "The " -n 256 -s 1 --device cuda 2>&1 | tail -c 400; echo
rm -rf "$run"
echo "== bad input: an impossible allocation is a one-line error, not a crash"
cat > /tmp/huge.json <<'JSON'
{"config": "base", "B": 64, "T": 131072}
JSON
"$bin" bench fwdbwd --config /tmp/huge.json --device cuda --steps 1 2>&1 | tail -n 1 || true
echo "log: $log"
