#!/usr/bin/env bash
# The main job, on a fresh machine: install, build, then show what works today: the
# forward+backward benchmark of the `small` config against sgemm, and a model file inspected.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target retbyte
./build/retbyte info tests/golden/tiny_retention.safetensors
./build/retbyte bench fwdbwd --config small --steps 3
