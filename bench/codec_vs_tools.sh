#!/usr/bin/env bash
# Compressed sizes of the .rbz codec beside the tools people use, on the same files, in one run:
# zstd -19, xz -9 for every file; FLAC -8 for WAV; optipng -o5, lossless WebP and JPEG-XL for
# images (where installed). Each .rbz is decompressed and checked (bytes, or pixels for images).
#   bench/codec_vs_tools.sh MODEL FILE... [-- retbyte compress options]
# Prints a table of sizes in bytes and a JSON line per file.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${RETBYTE:-$here/build/retbyte}
model=$1
shift
files=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do files+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
size() { if [ -s "$1" ]; then stat -L -c %s "$1"; else echo null; fi; }
printf '%-36s %10s %10s %10s %10s %10s %10s %10s %10s %8s %8s\n' file bytes rbz zstd-19 xz-9 flac-8 png-o5 webp-ll jxl-ll "rbz s" "unrbz s"
for f in "${files[@]}"; do
  name=$(basename "$f")
  rm -f "$tmp/back"
  cp "$f" "$tmp/$name"
  t0=$(date +%s.%N)
  "$bin" compress -m "$model" "$tmp/$name" -o "$tmp/$name.rbz" "$@" 2> "$tmp/log" || { cat "$tmp/log"; exit 1; }
  t1=$(date +%s.%N)
  "$bin" decompress -m "$model" "$tmp/$name.rbz" -o "$tmp/back" 2>> "$tmp/log" || { cat "$tmp/log"; exit 1; }
  t2=$(date +%s.%N)
  mode=$(grep -o '[a-z]* mode' "$tmp/log" | head -1 | cut -d' ' -f1)
  if [ "$mode" = image ]; then
    "$bin" eval -m "$model" "$tmp/back" > /dev/null 2>&1 || { echo "$f: restored PNG unreadable"; exit 1; }
  else
    cmp -s "$tmp/back" "$f" || { echo "$f: round trip FAILED"; exit 1; }
  fi
  zstd -q -19 -c < "$f" > "$tmp/z"
  xz -9 -c < "$f" > "$tmp/x"
  rm -f "$tmp/fl" "$tmp/png" "$tmp/webp" "$tmp/jxl"
  case "$(head -c 4 "$f" | od -An -c | tr -d ' ')" in
    RIFF) command -v flac > /dev/null && flac -s -8 -f -o "$tmp/fl" "$f" 2> /dev/null || true ;;
    *PNG*|BM*|P[1-6]*)
      command -v optipng > /dev/null && optipng -quiet -o5 -out "$tmp/png" "$f" 2> /dev/null || true
      command -v cwebp > /dev/null && cwebp -quiet -lossless -z 9 "$f" -o "$tmp/webp" 2> /dev/null || true
      command -v cjxl > /dev/null && cjxl --quiet "$f" "$tmp/jxl" -d 0 -e 9 2> /dev/null || true ;;
  esac
  printf '%-36s %10s %10s %10s %10s %10s %10s %10s %10s %8.1f %8.1f\n' "$name" "$(size "$f")" "$(size "$tmp/$name.rbz")" "$(size "$tmp/z")" \
    "$(size "$tmp/x")" "$(size "$tmp/fl")" "$(size "$tmp/png")" "$(size "$tmp/webp")" "$(size "$tmp/jxl")" \
    "$(awk "BEGIN{print $t1 - $t0}")" "$(awk "BEGIN{print $t2 - $t1}")"
  echo "{\"file\":\"$name\",\"mode\":\"$mode\",\"bytes\":$(size "$f"),\"rbz\":$(size "$tmp/$name.rbz"),\"zstd19\":$(size "$tmp/z"),\"xz9\":$(size "$tmp/x"),\"flac8\":$(size "$tmp/fl"),\"optipng\":$(size "$tmp/png"),\"webp_lossless\":$(size "$tmp/webp"),\"jxl_lossless\":$(size "$tmp/jxl")}" >> "$tmp/json"
done
cat "$tmp/json"
