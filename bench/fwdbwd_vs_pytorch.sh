#!/usr/bin/env bash
# retbyte's forward+backward beside a PyTorch user's eager version of the same model and step,
# in one run on this machine (needs Debian's python3-torch for the second half).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build --target retbyte -j "$(nproc)" > /dev/null
echo "== retbyte (small, T=4096, B=4)"
./build/retbyte bench fwdbwd --config small --steps 5
if /usr/bin/python3 -c "import torch" 2> /dev/null; then
  # Debian's torch calls the pthreads OpenBLAS, whose own threads can fight torch's OpenMP
  # threads for the two cores: give PyTorch its better configuration of the two.
  echo "== PyTorch eager, same config, torch threads 2"
  /usr/bin/python3 bench/pytorch_fwdbwd.py --steps 5 --warmup 1 --threads 2
  echo "== PyTorch eager, same config, torch threads 2, OPENBLAS_NUM_THREADS=1"
  OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/pytorch_fwdbwd.py --steps 5 --warmup 1 --threads 2
else
  echo "(python3-torch not installed: apt-get install python3-torch for the PyTorch baseline)"
fi
