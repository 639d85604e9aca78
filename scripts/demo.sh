#!/usr/bin/env bash
# The main job on a fresh Debian machine: install, build, train `small` for a few minutes on text
# every Debian system has (/usr/share/common-licenses), hold one file out (GPL-2, whose relatives
# GPL-1 and GPL-3 are in the training set: the model's learned prior is what zstd lacks), then
# generate from the model, score the held-out file beside zstd -19, and run the speed benchmark.
#   MINUTES=4 OUT=out/demo bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target retbyte
minutes=${MINUTES:-4}
out=${OUT:-out/demo}
licenses=/usr/share/common-licenses
held_out=$licenses/GPL-2
mapfile -t files < <(find -L "$licenses" -type f ! -name GPL-2 | sort)
rm -rf "$out"
echo "== train small for $minutes minutes on ${#files[@]} files of $licenses (held out: $held_out)"
./build/retbyte train --config trainer/configs/demo.json --data "${files[@]}" --out "$out" --minutes "$minutes"
echo "== generate"
./build/retbyte generate -m "$out/model.safetensors" -p "This program is free software" -n 300 -s 1 --temp 0.5
echo
echo "== eval on the held-out file, beside zstd -19"
./build/retbyte eval -m "$out/model.safetensors" "$held_out"
echo "== speed"
./build/retbyte bench fwdbwd --config small --steps 3
