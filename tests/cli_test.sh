#!/usr/bin/env bash
# End-to-end checks of the retbyte command line: train, resume, eval, generate with saved state,
# and bad input (one line on stderr naming the problem, non-zero exit, no output file left behind).
#   tests/cli_test.sh PATH/TO/retbyte
set -u
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error "substring" command... : non-zero exit, exactly one stderr line containing substring
expect_error() {
  local want=$1; shift
  "$@" > "$tmp/out" 2> "$tmp/err"
  local rc=$?
  [ $rc -ne 0 ] || fail "expected failure: $*"
  [ "$(wc -l < "$tmp/err")" -eq 1 ] || fail "expected one stderr line from: $* (got: $(cat "$tmp/err"))"
  grep -qF -- "$want" "$tmp/err" || fail "stderr of '$*' lacks '$want': $(cat "$tmp/err")"
}

data=$here/fixtures/text2k.txt
cat > "$tmp/cfg.json" <<'JSON'
{"config": "tiny", "T": 128, "lr": 0.003, "warmup_steps": 2, "val_every": 3, "checkpoint_every": 2}
JSON
"$bin" train --config "$tmp/cfg.json" --data "$data" --out "$tmp/run" --steps 6 -t 2 > "$tmp/train.out" 2> "$tmp/train.err" || fail "train: $(cat "$tmp/train.err")"
for f in model.safetensors state.safetensors metrics.jsonl; do [ -s "$tmp/run/$f" ] || fail "train did not write $f"; done
[ "$(wc -l < "$tmp/run/metrics.jsonl")" -eq 6 ] || fail "metrics.jsonl should have 6 lines"
grep -q '"val_bpb"' "$tmp/run/metrics.jsonl" || fail "no validation in metrics"
grep -q '<polyline' "$tmp/run/curves.svg" || fail "train did not draw curves.svg"
"$bin" plot "$tmp/run" -o "$tmp/c.svg" 2> /dev/null && grep -q 'validation bpb' "$tmp/c.svg" || fail "plot"
expect_error "$tmp/c.svg: exists (use -f to overwrite)" "$bin" plot "$tmp/run" -o "$tmp/c.svg"
grep -q '^step 6/6' "$tmp/train.err" || fail "no final progress line: $(cat "$tmp/train.err")"
"$bin" train --config "$tmp/cfg.json" --data "$data" --out "$tmp/run" --steps 8 --resume > /dev/null 2>&1 || fail "resume"
[ "$(wc -l < "$tmp/run/metrics.jsonl")" -eq 8 ] || fail "metrics.jsonl should have 8 lines after resume"
"$bin" train --config "$tmp/cfg.json" --data "$data" --out "$tmp/run" --steps 9 --resume > /dev/null 2> "$tmp/resume.err" || fail "resume --steps 9"
grep -q '^step 9/9 ' "$tmp/resume.err" || fail "a run extended by --steps does not show step 9/9: $(cat "$tmp/resume.err")"
expect_error "use --resume" "$bin" train --config "$tmp/cfg.json" --data "$data" --out "$tmp/run" --steps 2
"$bin" info "$tmp/run/model.safetensors" | grep -q '"T":128' || fail "info does not show the config"

"$bin" eval -m "$tmp/run/model.safetensors" "$data" > "$tmp/eval.out" || fail "eval"
tail -n 1 "$tmp/eval.out" | grep -q '"bpb":' || fail "eval's last line is not JSON with bpb"

model=$tmp/run/model.safetensors
"$bin" generate -m "$model" -p "The" -n 100 -s 3 -o "$tmp/all.bin" || fail "generate"
[ "$(wc -c < "$tmp/all.bin")" -eq 100 ] || fail "generate -n 100 wrote $(wc -c < "$tmp/all.bin") bytes"
"$bin" generate -m "$model" -p "The" -n 37 -s 3 -o "$tmp/a.bin" --state-out "$tmp/state" || fail "generate --state-out"
"$bin" generate -m "$model" -n 63 --state-in "$tmp/state" -o "$tmp/b.bin" 2> /dev/null || fail "generate --state-in"
cat "$tmp/a.bin" "$tmp/b.bin" | cmp -s - "$tmp/all.bin" || fail "37 + saved state + 63 bytes differ from one 100-byte run"
"$bin" generate -m "$model" -p "The" -n 100 -s 3 -t 1 | cmp -s - "$tmp/all.bin" || fail "1 thread differs from 2"
# A state decoded with int8 products continues with them without being told, and refuses others.
"$bin" generate -m "$model" -p "The" -n 100 -s 3 --weights int8 -o "$tmp/all8.bin" 2> /dev/null || fail "generate --weights int8"
"$bin" generate -m "$model" -p "The" -n 37 -s 3 --weights int8 -o "$tmp/a8.bin" --state-out "$tmp/state8" 2> /dev/null || fail "int8 --state-out"
"$bin" generate -m "$model" -n 63 --state-in "$tmp/state8" -o "$tmp/b8.bin" 2> /dev/null || fail "int8 --state-in"
cat "$tmp/a8.bin" "$tmp/b8.bin" | cmp -s - "$tmp/all8.bin" || fail "an int8 state does not continue as one int8 run"
"$bin" info "$tmp/state8" | grep -q "int8 products" || fail "info does not show a state's int8 products"
expect_error "$tmp/state8: decoded with int8 products" "$bin" generate -m "$model" -n 5 --weights fp32 --state-in "$tmp/state8"

cp "$model" "$tmp/model-copy"
expect_error "is an input of this command" "$bin" generate -m "$model" -n 5 --state-out "$model"
expect_error "two outputs of this command would be the same file" "$bin" generate -m "$model" -n 5 -o "$tmp/x.bin" --state-out "$tmp/x.bin"
expect_error "$tmp: is a folder" "$bin" generate -m "$model" -n 5 -o "$tmp"
expect_error "$tmp/state: exists (use -f to overwrite)" "$bin" generate -m "$model" -n 5 --state-out "$tmp/state"
cmp -s "$model" "$tmp/model-copy" || fail "a refused generate changed the model"
expect_error "$tmp/all.bin: exists (use -f to overwrite)" "$bin" generate -m "$model" -n 5 -o "$tmp/all.bin"
"$bin" generate -m "$model" -n 5 -s 1 -o "$tmp/all.bin" -f 2> /dev/null || fail "generate -f"
"$bin" generate -m "$model" --image 12x7x3 -s 1 -o "$tmp/g.png" 2> /dev/null || fail "generate --image"
"$bin" generate -m "$model" --image 12x7x3 --prompt-file "$tmp/g.png" -s 2 -o "$tmp/g2.png" 2> /dev/null || fail "generate --image with a prompt image"
"$bin" generate -m "$model" --audio 4000:2:0.1 -s 1 -o "$tmp/g.wav" 2> /dev/null || fail "generate --audio"
"$bin" eval -m "$model" "$tmp/g.png" "$tmp/g.wav" > "$tmp/media.out" || fail "eval on generated media"
grep -q '"image":' "$tmp/media.out" && grep -q '"audio":' "$tmp/media.out" || fail "eval did not see an image and an audio file"
grep -q '"bytes":252,' "$tmp/media.out" || fail "eval did not score the PNG's 12x7x3 pixels"
"$bin" bench bpb -m "$model" "$tmp/g.png" "$tmp/g.wav" "$data" > "$tmp/bpb.out" || fail "bench bpb"
tail -n 1 "$tmp/bpb.out" | grep -q '"bench":"bpb","cpu_path":' || fail "bench bpb's last line is not its JSON"
tail -n 1 "$tmp/bpb.out" | grep -q '"gzip -9":' || fail "bench bpb has no gzip -9 baseline"
grep -q '^total (text) ' "$tmp/bpb.out" && grep -q '^total (image) ' "$tmp/bpb.out" || fail "bench bpb has no per-modality totals"
expect_error "$tmp/nope.png: no such file" "$bin" eval -m "$model" "$tmp/nope.png"
# Devices: a bad --device, --tf32 on the CPU, and (where no GPU is seen) --device cuda are one-line errors.
expect_error "--device: 'tpu' is not cpu, cuda or cuda:N" "$bin" eval -m "$model" --device tpu "$data"
expect_error "--tf32 applies to --device cuda only" "$bin" generate -m "$model" -n 5 --device cpu --tf32
if "$bin" --version | grep -q '^gpu: .*none'; then
  expect_error "--device cuda" "$bin" train --config tiny --data "$data" --out "$tmp/gpu-run" --steps 1 --device cuda
  expect_error "--device cuda" "$bin" bench fwdbwd --config tiny --steps 1 --device cuda:1
  [ ! -e "$tmp/gpu-run" ] || fail "--device cuda without a GPU left a run folder"
fi
"$bin" eval -m "$model" "$tmp/nope.png" 2> /dev/null | grep -q . && fail "eval printed its table before checking its inputs"
# compress / decompress, zstd's rules for files
cp "$data" "$tmp/c.txt"
"$bin" compress -m "$model" "$tmp/c.txt" --verify 2> "$tmp/c.err" || fail "compress: $(cat "$tmp/c.err")"
grep -q "verified" "$tmp/c.err" || fail "compress --verify did not say verified"
mv "$tmp/c.txt" "$tmp/c.orig"
"$bin" decompress -m "$model" "$tmp/c.txt.rbz" 2> /dev/null || fail "decompress"
cmp -s "$tmp/c.txt" "$tmp/c.orig" || fail "decompress did not restore the file"
"$bin" compress -m "$model" "$tmp/c.txt" --model-only -o "$tmp/m.rbz" 2> "$tmp/m.err" || fail "compress --model-only"
"$bin" decompress -m "$model" "$tmp/m.rbz" -c -t 1 | cmp -s - "$tmp/c.orig" || fail "decompress -c of a model-coded file"
"$bin" compress -m "$model" "$tmp/c.txt" --model-only --no-mix -o "$tmp/nm.rbz" 2> "$tmp/nm.err" || fail "compress --no-mix"
grep -q "mixed" "$tmp/m.err" || fail "compress did not say it mixed: $(cat "$tmp/m.err")"
grep -q "mixed" "$tmp/nm.err" && fail "compress --no-mix says mixed: $(cat "$tmp/nm.err")"
"$bin" decompress -m "$model" "$tmp/nm.rbz" -c | cmp -s - "$tmp/c.orig" || fail "decompress of an unmixed file"
# Lanes: one context per file by default; --lanes N and --fast cut the file, and still round-trip.
for how in "--lanes 3" "--fast"; do
  "$bin" compress -m "$model" "$tmp/c.txt" --model-only $how -o "$tmp/lanes.rbz" -f 2> /dev/null || fail "compress $how"
  "$bin" decompress -m "$model" "$tmp/lanes.rbz" -c | cmp -s - "$tmp/c.orig" || fail "decompress of a file coded with $how"
done
# Several files in one run: coded side by side, each archive the one compressing it alone writes.
mkdir -p "$tmp/many" && head -c 3000 "$tmp/c.orig" > "$tmp/many/a.txt" && tail -c 2000 "$tmp/c.orig" > "$tmp/many/b.txt"
cp "$tmp/c.orig" "$tmp/many/c.txt"
"$bin" compress -m "$model" --model-only "$tmp/many/a.txt" "$tmp/many/b.txt" "$tmp/many/c.txt" 2> "$tmp/many.err" ||
  fail "compress of three files: $(cat "$tmp/many.err")"
grep -q "3 files side by side" "$tmp/many.err" || fail "three files were not coded side by side: $(cat "$tmp/many.err")"
"$bin" compress -m "$model" --model-only "$tmp/many/b.txt" -o "$tmp/b-alone.rbz" 2> /dev/null || fail "compress b.txt alone"
cmp -s "$tmp/many/b.txt.rbz" "$tmp/b-alone.rbz" || fail "a file coded beside others differs from it coded alone"
mv "$tmp/many/a.txt" "$tmp/many/a.orig" && mv "$tmp/many/b.txt" "$tmp/many/b.orig" && rm "$tmp/many/c.txt"
"$bin" decompress -m "$model" "$tmp/many/a.txt.rbz" "$tmp/many/b.txt.rbz" "$tmp/many/c.txt.rbz" 2> "$tmp/many.err" ||
  fail "decompress of three archives: $(cat "$tmp/many.err")"
cmp -s "$tmp/many/a.txt" "$tmp/many/a.orig" && cmp -s "$tmp/many/b.txt" "$tmp/many/b.orig" &&
  cmp -s "$tmp/many/c.txt" "$tmp/c.orig" || fail "decompress side by side did not restore the files"
expect_error "--fast and --lanes cannot be used together" "$bin" compress -m "$model" "$tmp/c.txt" --fast --lanes 2 -o "$tmp/never.rbz"
expect_error "--lanes: 0 is out of range (1 to 1024)" "$bin" compress -m "$model" "$tmp/c.txt" --lanes 0 -o "$tmp/never.rbz"
expect_error "--no-mix needs --adapt" "$bin" eval -m "$model" --no-mix "$tmp/c.orig"
expect_error "needs the model it was compressed with" "$bin" decompress "$tmp/m.rbz" -o "$tmp/never.txt"
expect_error "$tmp/c.txt.rbz: exists (use -f to overwrite)" "$bin" compress -m "$model" "$tmp/c.txt"
expect_error "is an input of this command" "$bin" compress -m "$model" "$tmp/c.txt" -o "$tmp/c.txt" -f
expect_error "is an input of this command" "$bin" compress -m "$model" "$tmp/c.txt" -o "$model" -f
"$bin" compress -m "$model" "$tmp/c.txt" -f 2> /dev/null || fail "compress -f"
head -c 60 "$tmp/m.rbz" > "$tmp/cut.rbz"
expect_error "$tmp/cut.rbz: truncated" "$bin" decompress -m "$model" "$tmp/cut.rbz" -o "$tmp/never.txt"
expect_error "$tmp/c.orig: not a .rbz file" "$bin" decompress -m "$model" "$tmp/c.orig" -o "$tmp/never.txt"
cp "$tmp/m.rbz" "$tmp/m.bin"
expect_error "does not end in .rbz" "$bin" decompress -m "$model" "$tmp/m.bin"
[ ! -e "$tmp/never.txt" ] || fail "a failed decompress left its output file"
expect_error "$tmp/no-such-dir/c.rbz: cannot create" "$bin" compress -m "$model" "$tmp/c.txt" -o "$tmp/no-such-dir/c.rbz"
if [ -w /dev/full ]; then
  expect_error "stdout: write failed" sh -c "\"$bin\" decompress -m \"$model\" \"$tmp/m.rbz\" -c > /dev/full"
fi
cmp -s "$tmp/c.txt" "$tmp/c.orig" || fail "a failed command changed its input"
"$bin" compress -m "$model" "$tmp/g.png" -o "$tmp/g.rbz" 2> "$tmp/png.err" || fail "compress a PNG"
"$bin" decompress -m "$model" "$tmp/g.rbz" -o "$tmp/g-back.png" 2> /dev/null || fail "decompress a PNG"
"$bin" eval -m "$model" "$tmp/g-back.png" | grep -q '"bytes":252,' || fail "the restored PNG is not 12x7x3"
# Standard input: "-" reads it and writes standard output unless -o names a file (zstd's rule); the
# archive is the one the named file gives (images too: decoded from the bytes read, not from a path).
"$bin" compress -m "$model" - < "$tmp/c.orig" > "$tmp/stdin.rbz" 2> /dev/null || fail "compress -"
"$bin" compress -m "$model" "$tmp/c.orig" -c > "$tmp/named.rbz" 2> /dev/null || fail "compress -c"
cmp -s "$tmp/stdin.rbz" "$tmp/named.rbz" || fail "compress - gives another archive than the named file"
"$bin" decompress -m "$model" - < "$tmp/stdin.rbz" 2> /dev/null | cmp -s - "$tmp/c.orig" || fail "decompress - to stdout"
"$bin" decompress -m "$model" - -o "$tmp/from-stdin.txt" < "$tmp/stdin.rbz" 2> /dev/null && cmp -s "$tmp/from-stdin.txt" "$tmp/c.orig" ||
  fail "decompress - -o"
"$bin" compress -m "$model" - < "$tmp/g.png" > "$tmp/stdin-png.rbz" 2> /dev/null || fail "compress - of a PNG"
"$bin" compress -m "$model" "$tmp/g.png" -c > "$tmp/named-png.rbz" 2> /dev/null || fail "compress -c of a PNG"
cmp -s "$tmp/stdin-png.rbz" "$tmp/named-png.rbz" || fail "a PNG through stdin is not coded as the named PNG"
expect_error "standard input can only be the single input" "$bin" compress -m "$model" "$tmp/c.orig" - -o "$tmp/never.rbz"
expect_error "stdin: not a .rbz file" sh -c "\"$bin\" decompress -m \"$model\" - < \"$tmp/c.orig\""
# Bad files among good ones (zstd's and gzip's rule): each bad one gets its line and is skipped, the
# others are done, the exit status is 1. A file refused while its group is prepared costs only itself.
mkdir -p "$tmp/kg" && head -c 1500 "$tmp/c.orig" > "$tmp/kg/s1.txt" && tail -c 1200 "$tmp/c.orig" > "$tmp/kg/s2.txt"
head -c 3000 "$tmp/c.orig" > "$tmp/kg/big.txt" && cp "$tmp/kg/s2.txt" "$tmp/kg/s3.txt" && touch "$tmp/kg/s3.txt.rbz"
"$bin" compress -m "$model" --adapt --segment 64 "$tmp/kg/s1.txt" "$tmp/kg/missing.txt" "$tmp/kg/big.txt" "$tmp/kg/s2.txt" \
  "$tmp/kg/s3.txt" 2> "$tmp/kg.err"
rc=$?
[ $rc -eq 1 ] || fail "compress with bad files among good ones: exit $rc, want 1"
[ "$(grep -c '^retbyte compress: ' "$tmp/kg.err")" -eq 3 ] || fail "want a line for each of 3 bad files: $(cat "$tmp/kg.err")"
grep -qF "$tmp/kg/missing.txt: No such file" "$tmp/kg.err" || fail "no line for the missing file: $(cat "$tmp/kg.err")"
grep -qF "$tmp/kg/big.txt: --adapt needs every segment" "$tmp/kg.err" || fail "no line for the refused file: $(cat "$tmp/kg.err")"
grep -qF "$tmp/kg/s3.txt.rbz: exists" "$tmp/kg.err" || fail "no line for the output in the way: $(cat "$tmp/kg.err")"
[ ! -e "$tmp/kg/big.txt.rbz" ] && [ ! -s "$tmp/kg/s3.txt.rbz" ] || fail "a skipped file left an archive"
for f in s1 s2; do
  "$bin" decompress -m "$model" "$tmp/kg/$f.txt.rbz" -c 2> /dev/null | cmp -s - "$tmp/kg/$f.txt" || fail "$f.txt, compressed beside bad files, does not round-trip"
done
cp "$tmp/kg/s1.txt.rbz" "$tmp/kg/cut.rbz" && truncate -s 40 "$tmp/kg/cut.rbz" && echo junk > "$tmp/kg/junk.rbz"
mv "$tmp/kg/s1.txt" "$tmp/kg/s1.orig" && mv "$tmp/kg/s2.txt" "$tmp/kg/s2.orig"
"$bin" decompress -m "$model" "$tmp/kg/s1.txt.rbz" "$tmp/kg/cut.rbz" "$tmp/kg/junk.rbz" "$tmp/kg/s2.txt.rbz" 2> "$tmp/kg.err"
rc=$?
[ $rc -eq 1 ] || fail "decompress with damaged archives among good ones: exit $rc, want 1"
[ "$(grep -c '^retbyte decompress: ' "$tmp/kg.err")" -eq 2 ] || fail "want a line for each damaged archive: $(cat "$tmp/kg.err")"
grep -qF "$tmp/kg/cut.rbz:" "$tmp/kg.err" && grep -qF "$tmp/kg/junk.rbz: not a .rbz file" "$tmp/kg.err" ||
  fail "the damaged archives are not named: $(cat "$tmp/kg.err")"
cmp -s "$tmp/kg/s1.txt" "$tmp/kg/s1.orig" && cmp -s "$tmp/kg/s2.txt" "$tmp/kg/s2.orig" ||
  fail "archives beside damaged ones were not restored"
[ ! -e "$tmp/kg/cut" ] && [ ! -e "$tmp/kg/junk" ] || fail "a damaged archive left an output"
expect_error "--image: '12x0x3' is malformed" "$bin" generate -m "$model" --image 12x0x3 -o "$tmp/never.png"
expect_error "prompt image is 12 wide" "$bin" generate -m "$model" --image 10x7x3 --prompt-file "$tmp/g.png" -o "$tmp/never.png"
expect_error "-n: 'abc' is not an integer" "$bin" generate -m "$model" -n abc
expect_error "$tmp/missing.txt: cannot open" "$bin" generate -m "$model" --prompt-file "$tmp/missing.txt" -o "$tmp/never.bin"
[ ! -e "$tmp/never.bin" ] || fail "a failed generate left its output file"
ls "$tmp" | grep -q '\.tmp\.' && fail "a temporary file was left behind"
expect_error "made with another model" "$bin" generate -m "$here/golden/tiny_retention.safetensors" --state-in "$tmp/state"
head -c 100 "$tmp/state" > "$tmp/cut.state"
expect_error "$tmp/cut.state" "$bin" generate -m "$model" --state-in "$tmp/cut.state"
printf 'abc' > "$tmp/bad.safetensors"
expect_error "$tmp/bad.safetensors: file is 3 bytes" "$bin" eval -m "$tmp/bad.safetensors" "$data"
expect_error "$tmp/nope: no such file or folder" "$bin" train --config tiny --data "$tmp/nope" --out "$tmp/x"
mkdir "$tmp/empty"
expect_error "$tmp/empty: folder has no files" "$bin" train --config tiny --data "$tmp/empty" --out "$tmp/x"
printf '{"config": "tiny", "bogus": 1}' > "$tmp/unknown.json"
expect_error "unknown key \"bogus\"" "$bin" train --config "$tmp/unknown.json" --data "$data" --out "$tmp/x"
printf '{"config": "tiny", "H_G": 3}' > "$tmp/impossible.json"
expect_error "not divisible by H_G = 3" "$bin" train --config "$tmp/impossible.json" --data "$data" --out "$tmp/x"
expect_error "unknown command" "$bin" frobnicate
"$bin" bench > "$tmp/bench.out"; grep -q "codec" "$tmp/bench.out" && grep -q "kernels" "$tmp/bench.out" || fail "bench does not list its benchmarks"
mkfifo "$tmp/fifo"
expect_error "$tmp/fifo: a config must be a regular file" timeout 10 "$bin" train --config "$tmp/fifo" --data "$data" --out "$tmp/x"
expect_error "$tmp/fifo: not a regular file" timeout 10 "$bin" generate -m "$model" --prompt-file "$tmp/fifo" -n 3
expect_error "/dev/zero: a config must be a regular file" "$bin" train --config /dev/zero --data "$data" --out "$tmp/x"
printf '{"config": "tiny", "lr": 1e400}' > "$tmp/overflow.json"
expect_error "$tmp/overflow.json: not valid JSON" "$bin" train --config "$tmp/overflow.json" --data "$data" --out "$tmp/x"
if [ -w /dev/full ]; then
  expect_error "stdout: write failed" sh -c "\"$bin\" generate -m \"$model\" -n 50 -s 1 > /dev/full"
fi
# An interrupted run that never validated: "n/a" on screen, null in JSON (never -1).
printf '{"config": "tiny", "T": 128, "val_every": 0, "checkpoint_every": 0}' > "$tmp/noval.json"
"$bin" train --config "$tmp/noval.json" --data "$data" --out "$tmp/int" --steps 100000 -t 1 > "$tmp/int.out" 2> "$tmp/int.err" &
intpid=$!
for _ in $(seq 600); do [ -s "$tmp/int/metrics.jsonl" ] && break; sleep 0.1; done  # steps under way (slow under ASan)
kill -INT $intpid
wait $intpid
grep -q '"val_bpb":null' "$tmp/int.out" || fail "an interrupted run's JSON lacks \"val_bpb\":null: $(cat "$tmp/int.out")"
grep -q 'val bpb n/a' "$tmp/int.err" || fail "an interrupted run does not say val bpb n/a"
# kill -9 while checkpoints are being written: the run resumes, and no temporary file survives it.
printf '{"config": "tiny", "T": 128, "val_every": 0, "checkpoint_every": 1}' > "$tmp/ck.json"
"$bin" train --config "$tmp/ck.json" --data "$data" --out "$tmp/kill" --steps 100000 -t 1 > /dev/null 2>&1 &
killpid=$!
for _ in $(seq 600); do [ -s "$tmp/kill/state.safetensors" ] && break; sleep 0.1; done  # a first checkpoint exists
sleep 0.5
kill -9 $killpid
wait $killpid 2> /dev/null
at=$("$bin" info "$tmp/kill/state.safetensors" | sed -n 's/^step: *\([0-9]*\) of.*/\1/p')
[ -n "$at" ] || fail "no loadable training state after kill -9"
"$bin" train --config "$tmp/ck.json" --data "$data" --out "$tmp/kill" --resume --steps $((at + 1)) -t 1 > /dev/null 2>&1 || fail "resume after kill -9"
ls "$tmp/kill" | grep -q '\.tmp\.' && fail "temporary files survived a kill -9 and a resume: $(ls "$tmp/kill")"
# A full disk (a 64 KiB tmpfs, where this machine lets us mount one): a one-line error, no output,
# no temporary file left, the inputs untouched.
mkdir -p "$tmp/small"
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=64k tmpfs "$tmp/small" 2> /dev/null; then
  expect_error "$tmp/small/gen.bin: write failed" "$bin" generate -m "$model" -n 200000 -s 1 -o "$tmp/small/gen.bin"
  head -c 300000 /dev/urandom > "$tmp/big.bin"
  "$bin" compress -m "$model" "$tmp/big.bin" -o "$tmp/big.rbz" 2> /dev/null || fail "compress big.bin"
  expect_error "$tmp/small/big.bin: write failed" "$bin" decompress "$tmp/big.rbz" -o "$tmp/small/big.bin"
  [ -z "$(ls -A "$tmp/small")" ] || fail "a full disk left files behind: $(ls -A "$tmp/small")"
  umount "$tmp/small"
else
  echo "cli_test: full-disk checks not run (cannot mount a tmpfs here)"
fi
"$bin" --version | grep -q "numerics contract v" || fail "--version does not name the numerics contract"
expect_error "unexpected argument 'extra'" "$bin" generate -m "$model" -n 3 extra
printf '{"config": "tiny", "T": 4194304, "B": 64}' > "$tmp/huge.json"
expect_error "$tmp/huge.json: its config needs about" "$bin" train --config "$tmp/huge.json" --data "$data" --out "$tmp/huge"
[ ! -e "$tmp/huge" ] || fail "a refused train left a run folder"
for t in 0 100000 -2 12abc; do
  expect_error "-t: '$t' threads is not a count from 1 to" "$bin" generate -m "$model" -n 3 -t "$t"
done
expect_error "-n given twice (5 and 6)" "$bin" generate -m "$model" -n 5 -n 6
expect_error "-p and --prompt-file cannot be used together" "$bin" generate -m "$model" -p x --prompt-file "$data"
expect_error "--minutes: 'nan' is not a non-negative number" "$bin" train --config tiny --data "$data" --out "$tmp/nan" --minutes nan
"$bin" info -m "$model" -t 1 | grep -q "kind:   model" || fail "info -m MODEL -t 1"
"$bin" info "$tmp/run/state.safetensors" | grep -q "training state" || fail "info does not recognise a training state"
"$bin" info "$tmp/state" | grep -q "decode state" || fail "info does not recognise a decode state"
for cmd in train eval generate info "bench fwdbwd" "bench train" "bench decode" "bench kernels" "bench bpb" "bench codec" compress decompress plot; do
  $bin $cmd --help > /dev/null || fail "$cmd --help"
done

# Devices and FIFOs are written into, never replaced by a regular file (with or without -f).
"$bin" compress -m "$model" "$tmp/c.orig" -o /dev/null -f 2> /dev/null || fail "compress -o /dev/null -f"
"$bin" compress -m "$model" "$tmp/c.orig" -o /dev/null 2> /dev/null || fail "compress -o /dev/null"
"$bin" decompress -m "$model" "$tmp/m.rbz" -o /dev/null -f 2> /dev/null || fail "decompress -o /dev/null -f"
"$bin" generate -m "$model" -n 20 -s 1 -o /dev/null -f --state-out "$tmp/dev-state" 2> /dev/null || fail "generate -o /dev/null -f"
[ -c /dev/null ] || fail "/dev/null is no longer a character device"
mkfifo "$tmp/out.fifo"
cat "$tmp/out.fifo" > "$tmp/from-fifo" &
catpid=$!
"$bin" decompress -m "$model" "$tmp/m.rbz" -o "$tmp/out.fifo" 2> /dev/null || fail "decompress into a FIFO"
wait $catpid
cmp -s "$tmp/from-fifo" "$tmp/c.orig" && [ -p "$tmp/out.fifo" ] || fail "decompress replaced the FIFO or wrote other bytes"
# Two commands writing one output at once: without -f one of them fails with "exists", the other's
# file is whole.
head -c 150000 /dev/urandom | base64 > "$tmp/race.txt"
for round in 1 2; do
  rm -f "$tmp/race.rbz"
  "$bin" compress -m "$model" --model-only "$tmp/race.txt" -o "$tmp/race.rbz" -t 1 2> "$tmp/race1.err" & p1=$!
  "$bin" compress -m "$model" --model-only "$tmp/race.txt" -o "$tmp/race.rbz" -t 1 2> "$tmp/race2.err" & p2=$!
  wait $p1; r1=$?
  wait $p2; r2=$?
  [ $((r1 == 0)) -ne $((r2 == 0)) ] || fail "racing compresses: exits $r1 and $r2 (one must fail)"
  cat "$tmp/race1.err" "$tmp/race2.err" | grep -q "race.rbz: exists" || fail "the losing compress did not say exists"
  "$bin" decompress -m "$model" "$tmp/race.rbz" -c | cmp -s - "$tmp/race.txt" || fail "the winning compress's file does not decompress"
done
ls "$tmp" | grep -q '\.tmp\.' && fail "racing commands left a temporary file"
# eval --by-position: a table by position, carried against reset, and a chart.
"$bin" eval -m "$model" --by-position --svg "$tmp/pos.svg" "$tmp/race.txt" > "$tmp/pos.out" 2> /dev/null || fail "eval --by-position"
grep -q '^0-4K ' "$tmp/pos.out" && grep -q '"bpb_reset"' "$tmp/pos.out" || fail "eval --by-position printed no buckets: $(cat "$tmp/pos.out")"
grep -q '<polyline' "$tmp/pos.svg" || fail "eval --by-position --svg drew no chart"
expect_error "--svg needs --by-position" "$bin" eval -m "$model" --svg "$tmp/x.svg" "$tmp/race.txt"
"$bin" eval -m "$model" --by-position --reset-every 512 "$tmp/race.txt" 2> /dev/null | grep -q '"reset_every":512' || fail "eval --by-position --reset-every 512"
expect_error "--reset-every 6 is not a multiple of the model's patch size" "$bin" eval -m "$model" --by-position --reset-every 6 "$tmp/race.txt"
# Numbers out of range name the range.
expect_error "-n: 4294967296 is out of range (0 to 1073741824)" "$bin" generate -m "$model" -n 4294967296
expect_error "--segment: 99999999999 is out of range (0 to 16777216)" "$bin" compress -m "$model" "$tmp/c.orig" --segment 99999999999 -o "$tmp/never.rbz"
# 16-bit and maxval-100 PNM, and a stereo WAV with a partial last frame: every archive decompresses
# to the original bytes (coded as bytes where pixels would lose information).
printf 'P5\n3 2\n65535\n' > "$tmp/deep.pgm"; printf '\001\002\003\004\005\006\007\010\011\012\013\014' >> "$tmp/deep.pgm"
printf 'P5\n3 2\n100\n\001\002\003\004\005\144' > "$tmp/low.pgm"
for f in deep.pgm low.pgm; do
  "$bin" compress -m "$model" --model-only --verify "$tmp/$f" -o "$tmp/$f.rbz" 2> /dev/null || fail "compress $f"
  "$bin" decompress -m "$model" "$tmp/$f.rbz" -c | cmp -s - "$tmp/$f" || fail "$f does not come back byte for byte"
done

# Without -m: $RETBYTE_MODEL, else the model installed beside the binary (PREFIX/share/retbyte), else
# the source tree's. Archives record the model, so another model is refused by fingerprint.
printf 'the default model codes this line, and this line, and this line again.\n%.0s' 1 2 3 4 5 6 7 8 > "$tmp/d.txt"
RETBYTE_MODEL="$model" "$bin" compress --model-only "$tmp/d.txt" -o "$tmp/d.rbz" 2> /dev/null || fail "compress with \$RETBYTE_MODEL"
RETBYTE_MODEL="$model" "$bin" decompress "$tmp/d.rbz" -c | cmp -s - "$tmp/d.txt" || fail "decompress with \$RETBYTE_MODEL"
"$bin" decompress -m "$model" "$tmp/d.rbz" -c | cmp -s - "$tmp/d.txt" || fail "the \$RETBYTE_MODEL archive does not decode with -m"
RETBYTE_MODEL="$tmp/none.safetensors" expect_error "none.safetensors: no such model file (from \$RETBYTE_MODEL)" "$bin" compress "$tmp/d.txt" -o "$tmp/never.rbz"
RETBYTE_MODEL="$model" "$bin" info | grep -qF "file:   $model" || fail "info without FILE does not show \$RETBYTE_MODEL's model"
mkdir -p "$tmp/prefix/bin" "$tmp/prefix/share/retbyte" "$tmp/elsewhere"
cp "$bin" "$tmp/prefix/bin/retbyte"
cp "$model" "$tmp/prefix/share/retbyte/retbyte-default.safetensors"
(cd "$tmp/elsewhere" && env -u RETBYTE_MODEL "$tmp/prefix/bin/retbyte" compress --model-only ../d.txt -o d.rbz 2> /dev/null) || fail "compress with the installed model"
"$bin" decompress -m "$model" "$tmp/elsewhere/d.rbz" -c | cmp -s - "$tmp/d.txt" || fail "the installed model is not the one that was copied there"
"$bin" train --config "$tmp/cfg.json" --data "$data" --out "$tmp/other" --steps 1 > /dev/null 2>&1 || fail "train another model"
expect_error "compressed with model" "$bin" decompress -m "$tmp/other/model.safetensors" "$tmp/d.rbz" -o "$tmp/never.txt"
# A new default model keeps the one before it beside it as retbyte-FINGERPRINT.safetensors: archives
# made with either decompress without -m, side by side; without the earlier file the error names it.
fp=$("$bin" info "$model" | sed -n 's/^fingerprint: //p')
installed="$tmp/prefix/bin/retbyte"
(cd "$tmp/elsewhere" && env -u RETBYTE_MODEL "$installed" compress --model-only ../c.orig -o c.rbz 2> /dev/null) || fail "compress c.orig with the installed model"
cp "$tmp/other/model.safetensors" "$tmp/prefix/share/retbyte/retbyte-default.safetensors"
(cd "$tmp/elsewhere" && env -u RETBYTE_MODEL "$installed" compress --model-only ../d.txt -o d-new.rbz 2> /dev/null) || fail "compress with the new default"
env -u RETBYTE_MODEL "$installed" decompress "$tmp/elsewhere/d.rbz" -o "$tmp/never.txt" 2> "$tmp/earlier.err" && fail "an archive of a replaced default decoded without its model"
grep -qF "needs the model it was compressed with (fingerprint $fp)" "$tmp/earlier.err" || fail "the error does not name the earlier model: $(cat "$tmp/earlier.err")"
cp "$model" "$tmp/prefix/share/retbyte/retbyte-$fp.safetensors"
mkdir -p "$tmp/both"
cp "$tmp/elsewhere/d.rbz" "$tmp/elsewhere/c.rbz" "$tmp/elsewhere/d-new.rbz" "$tmp/both/"
(cd "$tmp/both" && env -u RETBYTE_MODEL "$installed" decompress d.rbz d-new.rbz c.rbz 2> /dev/null) || fail "archives of the earlier and the new default do not decompress together"
cmp -s "$tmp/both/d" "$tmp/d.txt" && cmp -s "$tmp/both/d-new" "$tmp/d.txt" && cmp -s "$tmp/both/c" "$tmp/c.orig" ||
  fail "archives of two defaults decoded to the wrong bytes"
# convert: bf16 weights in half the file, the training summary kept, and archives that decode with it.
"$bin" convert "$model" --weights bf16 -o "$tmp/half.safetensors" 2> /dev/null || fail "convert to bf16"
"$bin" info "$tmp/half.safetensors" | grep -q "weights: bf16" || fail "the converted model is not bf16"
"$bin" info "$tmp/half.safetensors" | grep -q "training:" || fail "convert dropped the training summary"
[ "$(stat -c %s "$tmp/half.safetensors")" -lt "$(( $(stat -c %s "$model") * 6 / 10 ))" ] || fail "bf16 model is not about half the size"
"$bin" compress -m "$tmp/half.safetensors" --model-only "$tmp/d.txt" -o "$tmp/h.rbz" 2> /dev/null || fail "compress with bf16 model"
"$bin" decompress -m "$tmp/half.safetensors" "$tmp/h.rbz" -c | cmp -s - "$tmp/d.txt" || fail "bf16 model round trip"
expect_error "exists (use -f to overwrite)" "$bin" convert "$model" --weights bf16 -o "$tmp/half.safetensors"
# int8 products: the archive records them and decompress follows it without being told.
"$bin" compress -m "$model" --weights int8 --model-only "$tmp/d.txt" -o "$tmp/i8.rbz" 2> /dev/null || fail "compress --weights int8"
"$bin" decompress -m "$model" "$tmp/i8.rbz" -c | cmp -s - "$tmp/d.txt" || fail "int8 round trip"
cmp -s "$tmp/i8.rbz" "$tmp/h.rbz" && fail "int8 and bf16 archives are the same bytes"
"$bin" info "$tmp/i8.rbz" | grep -q "weights: fp32 values, int8 products" || fail "info does not show an archive's int8 products"
"$bin" info "$tmp/h.rbz" | grep -q "weights: bf16 values, int8 products" || fail "compress does not default to int8 products"
"$bin" compress -m "$model" --weights bf16 --model-only "$tmp/d.txt" -o "$tmp/b.rbz" 2> /dev/null || fail "compress --weights bf16"
"$bin" info "$tmp/b.rbz" | grep -q "weights: bf16 values$" || fail "--weights bf16 does not code with bf16 products"
"$bin" decompress -m "$model" "$tmp/b.rbz" -c | cmp -s - "$tmp/d.txt" || fail "bf16 products round trip"
head -c 30 "$tmp/i8.rbz" > "$tmp/cut.rbz"
expect_error "$tmp/cut.rbz: truncated .rbz file" "$bin" info "$tmp/cut.rbz"
expect_error "--adapt cannot be used with int8" "$bin" compress -m "$model" --weights int8 --adapt "$tmp/d.txt" -o "$tmp/never.rbz"
[ -e "$tmp/never.rbz" ] && fail "a refused compress left an output file"
expect_error "--weights FORMAT is required" "$bin" convert "$model" -o "$tmp/never.safetensors"
# Fine-tuning: --init takes the model's shape; the run records where it started.
"$bin" train --init "$model" --data "$data" --out "$tmp/tuned" --steps 2 -t 1 > /dev/null 2> "$tmp/tune.err" || fail "train --init: $(cat "$tmp/tune.err")"
grep -q "starting from the weights of" "$tmp/tune.err" || fail "train --init does not say where it starts"
"$bin" info "$tmp/tuned/model.safetensors" | grep -q '"init"' || fail "the fine-tuned model does not record its init model"
expect_error "--config is required" "$bin" train --data "$data" --out "$tmp/never"

[ $failures -eq 0 ] && echo "cli_test: all checks passed"
exit $failures
