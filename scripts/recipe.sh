#!/usr/bin/env bash
# A training recipe run end to end on ../shared/data (or DATA): split off held-out files the model
# never sees, train for MINUTES with trainer/configs/recipe-MODALITY.json, then score the held-out
# files: eval (bpb beside zstd, xz, gzip and the media codecs), eval --adapt (the codec's lanes
# without and with online adaptation), and compress each with and without --adapt beside xz -9e and
# zstd -19 of the file, checking every round trip.
#   bash scripts/recipe.sh text|image|audio|mixed MINUTES [OUT]     (DATA=../shared/data by default)
# THREADS=N sets -t for every command (default: all cores); SCORE_ONLY=1 skips training and scores
# the model already in OUT/run (e.g. again after a codec change).
# Held out: text, the last 256 KiB of each text file; images: camera.png, coins.png, flower.jpg;
# audio: bell.wav, camera-shutter.wav, music-track23.wav; mixed: all of these.
set -euo pipefail
cd "$(dirname "$0")/.."
modality=${1:?text, image, audio or mixed}
minutes=${2:?minutes of training}
out=${3:-out/recipe-$modality-${minutes}min}
data=${DATA:-../shared/data}
bin=${BIN:-build/retbyte}  # BIN: another build of retbyte (e.g. a frozen copy during a long run)
[ -x "$bin" ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null; cmake --build build -j "$(nproc)" --target retbyte; }
threads=()
[ -n "${THREADS:-}" ] && threads=(-t "$THREADS")
if [ -z "${SCORE_ONLY:-}" ]; then
rm -rf "$out"
mkdir -p "$out/train" "$out/held"
held_tail=$((256 * 1024))
split_text() {
  for f in "$data"/text/*.txt; do
    local n base
    n=$(stat -c %s "$f")
    base=$(basename "$f" .txt)
    head -c $((n - held_tail)) "$f" > "$out/train/$base-head.txt"
    tail -c "$held_tail" "$f" > "$out/held/$base-tail.txt"
  done
}
split_named() {  # split_named FOLDER HELD...
  local folder=$1; shift
  for f in "$data/$folder"/*; do
    local name held=0
    name=$(basename "$f")
    for h in "$@"; do [ "$name" = "$h" ] && held=1; done
    if [ $held = 1 ]; then cp "$f" "$out/held/"; else cp "$f" "$out/train/"; fi
  done
}
case $modality in
  text) split_text ;;
  image) split_named image camera.png coins.png flower.jpg ;;
  audio) split_named audio bell.wav camera-shutter.wav music-track23.wav ;;
  mixed) split_text; split_named image camera.png coins.png flower.jpg; split_named audio bell.wav camera-shutter.wav music-track23.wav ;;
  *) echo "unknown modality $modality" >&2; exit 2 ;;
esac
config=trainer/configs/recipe-$modality.json
echo "== $modality: train $config for $minutes min on $(ls "$out/train" | wc -l) files; held out: $(ls "$out/held" | tr '\n' ' ')"
"$bin" train --config "$config" --data "$out/train" --out "$out/run" --minutes "$minutes" "${threads[@]}"
fi
model=$out/run/model.safetensors
echo "== eval on the held-out files"
"$bin" eval -m "$model" "${threads[@]}" "$out"/held/* | tee "$out/eval.txt"
echo "== eval --adapt on the held-out files"
"$bin" eval -m "$model" --adapt "${threads[@]}" "$out"/held/* | tee "$out/eval-adapt.txt"
echo "== compress, with and without --adapt (bytes), beside xz -9e and zstd -19 of the file"
printf '%-32s %10s %10s %10s %10s %10s\n' file original rbz "rbz-adapt" "xz-9e" "zstd-19" | tee "$out/sizes.txt"
for f in "$out"/held/*; do
  "$bin" compress -m "$model" "${threads[@]}" "$f" -o "$out/plain.rbz" -f 2> /dev/null
  "$bin" compress -m "$model" --adapt "${threads[@]}" "$f" -o "$out/adapt.rbz" -f 2> /dev/null
  for r in plain adapt; do
    "$bin" decompress -m "$model" "${threads[@]}" "$out/$r.rbz" -o "$out/back" -f 2> /dev/null
    case $f in
      *.png|*.jpg|*.flac) : ;;  # pixels or samples come back; eval's table has the media codecs
      *) cmp -s "$out/back" "$f" || { echo "round trip failed: $f ($r)" >&2; exit 1; } ;;
    esac
  done
  printf '%-32s %10d %10d %10d %10d %10d\n' "$(basename "$f")" "$(stat -c %s "$f")" "$(stat -c %s "$out/plain.rbz")" \
    "$(stat -c %s "$out/adapt.rbz")" "$(xz -9e -c "$f" | wc -c)" "$(zstd -19 -c "$f" 2> /dev/null | wc -c)" | tee -a "$out/sizes.txt"
done
rm -f "$out/plain.rbz" "$out/adapt.rbz" "$out/back"
