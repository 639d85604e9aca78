#!/usr/bin/env bash
# Formats the C++ and CUDA sources with clang-format (.clang-format), or with --check lists the
# files that differ from it and fails (CI runs the check).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format > /dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang-format > /dev/null
fi
mapfile -t files < <(git ls-files '*.h' '*.cpp' '*.cu' '*.inc')
if [ "${1:-}" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format "$f" | cmp -s - "$f" || bad+=("$f")
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "not formatted (run bash scripts/format.sh): ${bad[*]}"
    exit 1
  fi
  echo "format: ${#files[@]} files as .clang-format says"
else
  clang-format -i "${files[@]}"
fi
