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
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
ours=() torch_a=() torch_b=()
for ((r = 0; r < rounds; r++)); do
  ours+=("$("$bin" bench train --config small --steps 6 | field bytes_per_s)")
  # Debian's torch calls the pthreads OpenBLAS, whose threads can fight torch's OpenMP threads
  # for the two cores: both settings run, and PyTorch is credited with the better median.
  torch_a+=("$(/usr/bin/python3 bench/pytorch_fwdbwd.py --steps 5 --warmup 1 --threads 2 | field bytes_per_s_train)")
  torch_b+=("$(OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/pytorch_fwdbwd.py --steps 5 --warmup 1 --threads 2 | field bytes_per_s_train)")
  printf 'round %d: retbyte %.0f, PyTorch %.0f / %.0f (OPENBLAS_NUM_THREADS=1) bytes/s\n' "$r" "${ours[-1]}" "${torch_a[-1]}" "${torch_b[-1]}"
done
m_ours=$(median "${ours[@]}") m_a=$(median "${torch_a[@]}") m_b=$(median "${torch_b[@]}")
best=$(python3 -c "print(max($m_a, $m_b))")
printf 'medians: retbyte %.0f bytes/s (%s kernels), PyTorch %.0f bytes/s: %.2fx\n' "$m_ours" \
  "$("$bin" bench train --help > /dev/null; echo "${RETBYTE_CPU:-best}")" "$best" "$(python3 -c "print($m_ours / $best)")"
printf '{"bench":"train_vs_pytorch","rounds":%d,"retbyte_bytes_per_s":%.0f,"pytorch_bytes_per_s":%.0f,"ratio":%.3f}\n' \
  "$rounds" "$m_ours" "$best" "$(python3 -c "print($m_ours / $best)")"
