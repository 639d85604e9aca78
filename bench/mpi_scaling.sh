#!/usr/bin/env bash
# Data-parallel training on this machine: 1 rank x 2 threads against 2 ranks x 1 thread (mpirun
# --bind-to core), the same global batch (small, T=4096, B=4, accum_steps 2: 32,768 bytes per step),
# alternating runs, and the bytes the ranks send per step. Prints the median training bytes/s of
# each (steps after the first two) and the gradient volume, for the README's scaling arithmetic.
#   bash bench/mpi_scaling.sh [build/retbyte] [DATA...]     (RUNS=3 STEPS=8 to change)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/retbyte}
shift || true
data=("$@")
[ ${#data[@]} -gt 0 ] || data=(/usr/share/common-licenses)
runs=${RUNS:-3}
steps=${STEPS:-8}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cat > "$tmp/cfg.json" <<'JSON'
{"config": "small", "accum_steps": 2, "val_every": 0, "checkpoint_every": 0}
JSON

median_speed() {  # median bytes_per_s of steps 3.. of a run folder
  sed -n 's/.*"bytes_per_s":\([0-9.e+]*\).*/\1/p' "$1/metrics.jsonl" | tail -n +3 | sort -g |
    awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'
}
one=() two=()
for r in $(seq "$runs"); do
  "$bin" train --config "$tmp/cfg.json" --data "${data[@]}" --out "$tmp/one$r" --steps "$steps" -t 2 > /dev/null 2>&1
  one+=("$(median_speed "$tmp/one$r")")
  mpirun -np 2 --bind-to core "$bin" train --config "$tmp/cfg.json" --data "${data[@]}" --out "$tmp/two$r" --steps "$steps" -t 1 \
    > /dev/null 2> "$tmp/two$r.err"
  two+=("$(median_speed "$tmp/two$r")")
  cmp -s "$tmp/one$r/model.safetensors" "$tmp/two$r/model.safetensors" || { echo "weights differ between 1 and 2 ranks" >&2; exit 1; }
done
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
sent=$(grep -o 'sent .*' "$tmp/two1.err")
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), path $("$bin" --version | sed -n 's/.*best: \([a-z0-9]*\).*/\1/p')"
echo "1 rank x 2 threads: $(med "${one[@]}") bytes/s (runs: ${one[*]})"
echo "2 ranks x 1 thread: $(med "${two[@]}") bytes/s (runs: ${two[*]})"
echo "2 ranks $sent; weights identical in every pair"
