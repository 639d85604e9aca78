#!/usr/bin/env bash
# Folders are layers (doc/design.md): a file may include headers of its own layer and of the
# layers it builds on, never one above or beside it. Fails, naming the file, line and include,
# on any include that points up, and on a source file outside every layer.
#   tests/layer_check.sh REPO_ROOT
set -euo pipefail
cd "$1"
# layer: folder, then the layers it may use (its CMake library links exactly these)
declare -A folder=([common]=src/common [kernels]=kernels [model]=src/model [datasets]=datasets
                   [trainer]=trainer [generator]=generator [codecs]=codecs [cli]=cli)
declare -A uses=([common]="" [kernels]="common" [model]="kernels common" [datasets]="model kernels common"
                 [trainer]="datasets model kernels common" [generator]="model kernels common"
                 [codecs]="trainer generator datasets model kernels common"
                 [cli]="codecs trainer generator datasets model kernels common")
layer_of() {  # the layer a path lies in, or nothing
  local p=$1 l
  for l in "${!folder[@]}"; do
    case $p in "${folder[$l]}"/*) echo "$l"; return ;; esac
  done
}
bad=0
files=$(git ls-files 'src/*' 'kernels/*' 'datasets/*' 'trainer/*' 'generator/*' 'codecs/*' 'cli/*' | grep -E '\.(h|cpp|cu|inc)$')
for f in $files; do
  from=$(layer_of "$f")
  if [ -z "$from" ]; then echo "$f: in no layer (doc/design.md lists the folders)"; bad=1; continue; fi
  while IFS=: read -r line inc; do
    to=$(layer_of "$inc")
    [ -z "$to" ] && { case $inc in tests/*) echo "$f:$line: includes the test oracle $inc"; bad=1 ;; esac; continue; }
    [ "$to" = "$from" ] && continue
    case " ${uses[$from]} " in *" $to "*) ;; *) echo "$f:$line: $from includes $inc of layer $to"; bad=1 ;; esac
  done < <(grep -n '^#include "' "$f" | sed -E 's/^([0-9]+):#include "([^"]+)".*/\1:\2/')
done
[ $bad -eq 0 ] && echo "layer check: $(echo "$files" | wc -w) files, no include points up a layer"
exit $bad
