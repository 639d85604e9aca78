#!/usr/bin/env bash
# The main job on a fresh Debian machine, with the model that ships in models/ (no training):
# installs, builds, compresses and decompresses a text, a photograph and a recording from demo/
# (held out of the model's training data) beside xz -9e, zpaq -m5, PNG, WebP, JPEG-XL and FLAC,
# generates some text and a small image, and prints the table. Round trips are checked (the image
# by the archive's pixel hash: the restored PNG has identical pixels, not identical bytes).
#   OUT=out/demo bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target retbyte
out=${OUT:-out/demo}
rb=./build/retbyte
rm -rf "$out" && mkdir -p "$out"
echo "== the default model (models/retbyte-default.safetensors; -m, \$RETBYTE_MODEL or an installed one take precedence)"
$rb info models/retbyte-default.safetensors | sed -n 2,5p

size() { stat -c %s "$1"; }
now() { date +%s.%N; }
rows=()
for f in demo/jargon-excerpt.txt demo/wood.png demo/front_center.wav; do
  name=$(basename "$f")
  cp "$f" "$out/$name"
  echo "== $name"
  t0=$(now)
  $rb compress "$out/$name" -f
  t1=$(now)
  mkdir -p "$out/restored"
  $rb decompress "$out/$name.rbz" -o "$out/restored/$name" -f
  t2=$(now)
  check="DIFFERENT"
  case "$name" in
    *.png) check="pixels (hash)" ;;  # decompress checks the pixels' hash and fails otherwise
    *) cmp -s "$f" "$out/restored/$name" && check="identical" ;;
  esac
  xz_b=$(xz -9e -c < "$f" | wc -c)
  zpaq_b=- png_b=- webp_b=- jxl_b=- flac_b=-
  case "$name" in
    *.txt)
      rm -f "$out/z.zpaq"; zpaq a "$out/z.zpaq" "$f" -m5 > /dev/null 2>&1 && zpaq_b=$(size "$out/z.zpaq") ;;
    *.png)
      cp "$f" "$out/o.png"; optipng -quiet -o5 "$out/o.png" && png_b=$(size "$out/o.png")
      cwebp -quiet -lossless -z 9 "$f" -o "$out/w.webp" && webp_b=$(size "$out/w.webp")
      cjxl -d 0 -e 9 --quiet "$f" "$out/j.jxl" 2>/dev/null && jxl_b=$(size "$out/j.jxl") ;;
    *.wav)
      flac -8 -s -f "$f" -o "$out/f.flac" && flac_b=$(size "$out/f.flac") ;;
  esac
  rows+=("$(printf '%-20s %9d %9d %9s %9s %9s %9s %9s %9s %6.1f %6.1f  %s' "$name" "$(size "$f")" "$(size "$out/$name.rbz")" \
    "$xz_b" "$zpaq_b" "$png_b" "$webp_b" "$jxl_b" "$flac_b" "$(awk "BEGIN{print $t1 - $t0}")" "$(awk "BEGIN{print $t2 - $t1}")" "$check")")
done

echo "== generate: text, then a 32x32 image"
$rb generate -p "The hacker" -n 300 -s 1 --temp 0.6
echo
$rb generate --image 32x32x3 -o "$out/dream.png" -s 1 -f
echo "wrote $out/dream.png"

echo
echo "== bytes (smaller is better); retbyte's compress and decompress seconds on this machine"
printf '%-20s %9s %9s %9s %9s %9s %9s %9s %9s %6s %6s  %s\n' file bytes retbyte "xz -9e" "zpaq -m5" "PNG -o5" WebP \
  JPEG-XL "FLAC -8" "comp" "decomp" "round trip"
for r in "${rows[@]}"; do echo "$r"; done
