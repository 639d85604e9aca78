#!/usr/bin/env bash
# Installs the Debian packages retbyte needs (as root, or with sudo). Safe to run again.
#   bash scripts/install-deps.sh [PACKAGE...]   (with arguments: those packages instead, e.g. corpus.sh's tools)
set -euo pipefail
packages=("$@")
[ $# -gt 0 ] || packages=(build-essential cmake libopenblas-openmp-dev nlohmann-json3-dev libgtest-dev
          libzstd-dev liblzma-dev zlib1g-dev libxxhash-dev libsndfile1-dev libstb-dev zstd xz-utils
          libopenmpi-dev openmpi-bin  # data-parallel training (mpirun -np N retbyte train)
          webp libjxl-tools optipng flac zpaq)  # the last five: baselines in eval and the demo
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
