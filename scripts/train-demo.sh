#!/usr/bin/env bash
# The main job on a fresh Debian machine: install, build, train `small` for a fixed number of steps
# (about 5 minutes on 2 cores) on text every Debian system has (/usr/share/common-licenses), hold
# one file out (GPL-2, whose relatives GPL-1 and GPL-3 are in the training set: the model's learned
# prior is what zstd lacks), then generate from the model, score the held-out file beside zstd -19,
# compress it losslessly and check the round trip, and run the speed benchmark. Training is
# bit-identical on every CPU and thread count (README, numerics contract), so the printed held-out
# bpb is the same everywhere.
#   STEPS=400 OUT=out/train-demo bash scripts/train-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target retbyte
steps=${STEPS:-400}
out=${OUT:-out/train-demo}
licenses=/usr/share/common-licenses
held_out=$licenses/GPL-2
mapfile -t files < <(find -L "$licenses" -type f ! -name GPL-2 | sort)
rm -rf "$out"
echo "== train small for $steps steps on ${#files[@]} files of $licenses (held out: $held_out)"
./build/retbyte train --config trainer/configs/demo.json --data "${files[@]}" --out "$out" --steps "$steps"
echo "== generate"
./build/retbyte generate -m "$out/model.safetensors" -p "This program is free software" -n 300 -s 1 --temp 0.5
echo
echo "== eval on the held-out file, beside zstd -19"
./build/retbyte eval -m "$out/model.safetensors" "$held_out"
echo "== compress the held-out file (lossless, decodes bit-exactly on any CPU), beside zstd -19 and xz -9"
cp "$held_out" "$out/GPL-2"
./build/retbyte compress -m "$out/model.safetensors" "$out/GPL-2" -f --verify
echo "zstd -19: $(zstd -q -19 -c < "$held_out" | wc -c) bytes; xz -9: $(xz -9 -c < "$held_out" | wc -c) bytes"
./build/retbyte decompress -m "$out/model.safetensors" "$out/GPL-2.rbz" -c | cmp - "$held_out" && echo "decompressed: identical to $held_out"
echo "== speed"
./build/retbyte bench fwdbwd --config small --steps 3
echo "== loss curves: $out/curves.svg (open it in a browser; retbyte plot DIR redraws it for any run)"
