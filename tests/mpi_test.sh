#!/usr/bin/env bash
# Data-parallel training under a real mpirun on this machine: N ranks give bitwise the losses and
# weights of one process with the same global batch; a run resumes with another number of ranks;
# ranks on different CPU paths agree; ranks given other data or configs are refused before training;
# a killed rank takes the job down and leaves the last checkpoint intact.
#   tests/mpi_test.sh PATH/TO/retbyte PATH/TO/mpirun
set -u
bin=$1
mpirun=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# CI runs as root; two ranks on two cores; OpenMPI's own allocations are not ours to leak-check.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
mpi() { "$mpirun" --oversubscribe "$@"; }

data=$here/fixtures/text2k.txt
cat > "$tmp/c2.json" <<'JSON'
{"config": "tiny", "T": 128, "B": 2, "steps": 6, "accum_steps": 2, "lr": 0.003, "warmup_steps": 2, "val_every": 2, "val_bytes": 400, "checkpoint_every": 3}
JSON
sed 's/"accum_steps": 2/"accum_steps": 3/' "$tmp/c2.json" > "$tmp/c3.json"
sed 's/"T": 128/"T": 64/' "$tmp/c2.json" > "$tmp/other_model.json"
sed 's/"accum_steps": 2/"accum_steps": 2, "carry_state": true, "carry_bytes": 512/' "$tmp/c2.json" > "$tmp/c2carry.json"

# The logged numbers of every step (loss, bpb, validation, lr, gradient norm), without the speed.
numbers() { sed 's/,"bytes_per_s":[^,}]*//' "$1/metrics.jsonl"; }
same_run() {  # same_run A B what
  cmp -s "$1/model.safetensors" "$2/model.safetensors" || fail "$3: model.safetensors differs"
  cmp -s "$1/state.safetensors" "$2/state.safetensors" || fail "$3: state.safetensors differs"
  diff <(numbers "$1") <(numbers "$2") > /dev/null || fail "$3: per-step losses differ: $(diff <(numbers "$1") <(numbers "$2") | head -4)"
}

for c in c2 c3 c2carry; do  # c2carry: carried state (rows and their states owned by the ranks)
  "$bin" train --config "$tmp/$c.json" --data "$data" --out "$tmp/one_$c" --steps 6 -t 1 > /dev/null 2> "$tmp/err" || fail "1 process $c: $(cat "$tmp/err")"
  mpi -np 2 "$bin" train --config "$tmp/$c.json" --data "$data" --out "$tmp/two_$c" --steps 6 -t 1 > "$tmp/out" 2> "$tmp/err" || fail "2 ranks $c: $(cat "$tmp/err")"
  same_run "$tmp/one_$c" "$tmp/two_$c" "2 ranks, $c"
  [ "$(wc -l < "$tmp/out")" -eq 1 ] || fail "2 ranks print one JSON result line (rank 0's), got: $(cat "$tmp/out")"
  [ "$(grep -c '^step 6/6' "$tmp/err")" -eq 1 ] || fail "rank 0 alone prints progress: $(cat "$tmp/err")"
  grep -q "2 ranks sent .* MB per step" "$tmp/err" || fail "no bytes-per-step line: $(cat "$tmp/err")"
done

# A 2-rank checkpoint resumed by 1 rank, and a 1-rank checkpoint by 2 ranks, continue bitwise (the
# config fixes the horizon at 6 steps; --steps stops early).
mpi -np 2 "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/r" --steps 3 -t 1 > /dev/null 2>&1 || fail "2 ranks, 3 steps"
"$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/r" --steps 4 --resume -t 2 > /dev/null 2>&1 || fail "1 rank resumes"
mpi -np 2 "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/r" --steps 6 --resume -t 1 > /dev/null 2>&1 || fail "2 ranks resume"
same_run "$tmp/one_c2" "$tmp/r" "resumed 2 -> 1 -> 2 ranks"

# Ranks on different CPU paths (the numerics contract) train the same weights.
mpi -np 1 env RETBYTE_CPU=portable "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/mixed" --steps 6 -t 1 : \
    -np 1 "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/mixed" --steps 6 -t 1 > /dev/null 2> "$tmp/err" || fail "mixed CPU paths: $(cat "$tmp/err")"
same_run "$tmp/one_c2" "$tmp/mixed" "rank 0 portable, rank 1 best path"

# Refusals before training: one clear line from rank 0, no run folder.
refused() {  # refused "message" out_dir mpirun-args...
  local want=$1 out=$2; shift 2
  mpi "$@" > /dev/null 2> "$tmp/err" && fail "expected a refusal: $want"
  [ "$(grep -c '^retbyte train:' "$tmp/err")" -eq 1 ] || fail "expected one retbyte line for '$want': $(cat "$tmp/err")"
  grep -qF -- "$want" "$tmp/err" || fail "stderr lacks '$want': $(cat "$tmp/err")"
  [ ! -e "$out" ] || fail "a refused run created $out"
}
head -c 1500 "$data" > "$tmp/short.txt"
refused "rank 1 was given other data" "$tmp/bad" \
  -np 1 "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/bad" --steps 2 -t 1 : \
  -np 1 "$bin" train --config "$tmp/c2.json" --data "$tmp/short.txt" --out "$tmp/bad" --steps 2 -t 1
refused "rank 1 was given another model config than rank 0" "$tmp/bad" \
  -np 1 "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/bad" --steps 2 -t 1 : \
  -np 1 "$bin" train --config "$tmp/other_model.json" --data "$data" --out "$tmp/bad" --steps 2 -t 1
refused "accum_steps 2 is fewer than the 3 ranks" "$tmp/bad" \
  -np 3 "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/bad" --steps 2 -t 1
refused "rank 1: $tmp/missing.txt: no such file" "$tmp/bad" \
  -np 1 "$bin" train --config "$tmp/c2.json" --data "$data" --out "$tmp/bad" --steps 2 -t 1 : \
  -np 1 "$bin" train --config "$tmp/c2.json" --data "$tmp/missing.txt" --out "$tmp/bad" --steps 2 -t 1

# A rank killed mid-run: the job stops with a non-zero status, rank 0 says so, and the last
# checkpoint still resumes.
sed 's/"checkpoint_every": 3/"checkpoint_every": 2/' "$tmp/c2.json" > "$tmp/ck.json"
mpi -np 2 sh -c 'echo $$ > "$0/pid.$OMPI_COMM_WORLD_RANK"; exec "$@"' "$tmp" \
    "$bin" train --config "$tmp/ck.json" --data "$data" --out "$tmp/killed" --steps 100000 -t 1 > /dev/null 2> "$tmp/kill.err" &
job=$!
for _ in $(seq 600); do [ -s "$tmp/killed/state.safetensors" ] && [ -s "$tmp/pid.1" ] && break; sleep 0.1; done
sleep 0.3
kill -9 "$(cat "$tmp/pid.1")" 2> /dev/null || fail "no rank 1 to kill"
wait $job && fail "the job went on after a rank was killed"
grep -q "rank 0 got a stop signal" "$tmp/kill.err" || fail "rank 0 did not report the stop: $(cat "$tmp/kill.err")"
"$bin" train --config "$tmp/ck.json" --data "$data" --out "$tmp/killed" --steps 1 --resume -t 1 > /dev/null 2> "$tmp/err" ||
  fail "the checkpoint left by the killed job does not resume: $(cat "$tmp/err")"

[ $failures -eq 0 ] && echo "mpi_test: all passed" || { echo "mpi_test: $failures failures"; exit 1; }
