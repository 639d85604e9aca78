#!/usr/bin/env bash
# retbyte's training step beside a PyTorch user's eager version of the same model and step, on
# this machine, alternating runs (this VM's speed drifts) and quoting medians and the median of
# the per-round ratios. Needs Debian's python3-torch for the PyTorch side.
#   bash bench/fwdbwd_vs_pytorch.sh [build/retbyte]     (ROUNDS=5 to change)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/retbyte}
rounds=${ROUNDS:-5}
if ! /usr/bin/python3 -c "import torch" 2> /dev/null; then
  echo "python3-torch is not installed: apt-get install python3-torch for the PyTorch baseline" >&2
  exit 1
fi
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
ours=() torch=() ratios=()
for ((r = 0; r < rounds; r++)); do
  a=$("$bin" bench train --config small --steps 5 | field bytes_per_s)
  # Debian's torch calls the pthreads OpenBLAS, whose threads can fight torch's OpenMP threads
  # for the two cores: PyTorch gets the better of its two thread settings each round.
  b1=$(/usr/bin/python3 bench/pytorch_fwdbwd.py --steps 5 --warmup 1 --threads 2 | field bytes_per_s_train)
  b2=$(OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/pytorch_fwdbwd.py --steps 5 --warmup 1 --threads 2 | field bytes_per_s_train)
  b=$(python3 -c "print(max($b1, $b2))")
  ours+=("$a") torch+=("$b") ratios+=("$(python3 -c "print($a / $b)")")
  printf 'round %d: retbyte %.0f bytes/s, PyTorch %.0f bytes/s, ratio %.2f\n' "$r" "$a" "$b" "${ratios[-1]}"
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
printf '{"bench":"train_vs_pytorch","rounds":%d,"retbyte_bytes_per_s":%.0f,"pytorch_bytes_per_s":%.0f,"ratio":%.3f}\n' \
  "$rounds" "$(median "${ours[@]}")" "$(median "${torch[@]}")" "$(median "${ratios[@]}")"
