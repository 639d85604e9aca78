#!/usr/bin/env bash
# `generate` at -t 1 against -t 2, idle and with another process busy on one core (a shell
# busy-loop): worker threads that spin, or a caller that waits for a descheduled worker, make
# -t 2 much slower than -t 1 on a loaded machine. Medians of RUNS alternating runs.
#   bash bench/generate_loaded.sh [build/retbyte]      (RUNS=7 N=3000 to change)
set -euo pipefail
bin=${1:-build/retbyte}
runs=${RUNS:-7}
n=${N:-3000}
tmp=$(mktemp -d)
hog=""
trap 'rm -rf "$tmp"; [ -n "$hog" ] && kill "$hog" 2>/dev/null || true' EXIT
cd "$(dirname "$0")/.."
"$bin" train --config small --data tests/fixtures/text2k.txt --out "$tmp/m" --steps 2 -t 2 > /dev/null 2>&1
model="$tmp/m/model.safetensors"

seconds() {  # wall seconds of one generate run
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" generate -m "$model" -p "The " -n "$n" -s 1 -t "$1" > /dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

measure() {  # prints "median_t1 median_t2"
  local a=() b=()
  for ((i = 0; i < runs; i++)); do
    a+=("$(seconds 1)")
    b+=("$(seconds 2)")
  done
  echo "$(printf '%s\n' "${a[@]}" | median) $(printf '%s\n' "${b[@]}" | median)"
}

read -r idle1 idle2 < <(measure)
( while :; do :; done ) &
hog=$!
read -r load1 load2 < <(measure)
kill "$hog"
hog=""
printf '%-28s %10s %10s %8s\n' "generate -n $n (median s)" "-t 1" "-t 2" "t2/t1"
printf '%-28s %10.3f %10.3f %8.2f\n' "idle" "$idle1" "$idle2" "$(echo "$idle2 / $idle1" | bc -l)"
printf '%-28s %10.3f %10.3f %8.2f\n' "one core busy elsewhere" "$load1" "$load2" "$(echo "$load2 / $load1" | bc -l)"
printf '{"bench":"generate_loaded","n":%d,"runs":%d,"idle_t1_s":%.4f,"idle_t2_s":%.4f,"loaded_t1_s":%.4f,"loaded_t2_s":%.4f,"loaded_ratio":%.3f}\n' \
  "$n" "$runs" "$idle1" "$idle2" "$load1" "$load2" "$(echo "$load2 / $load1" | bc -l)"
