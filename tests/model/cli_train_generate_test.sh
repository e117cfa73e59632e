#!/usr/bin/env bash
# `longnet train`, `generate` and `eval` end to end on a tiny model: outputs (checkpoint,
# optimizer state, loss.csv, loss.png), an interrupted run (--time-limit) resumed with
# --resume gives exactly the losses of an uninterrupted run, generation, evaluation (the
# validation loss train printed; JSON, a chart, the passkey task), --help, and bad
# input (a missing file, inconsistent flags, a truncated checkpoint, bf16 on the CPU) gives
# one error line naming the problem and a non-zero exit; `longnet bench train` on a tiny
# model prints its table and writes JSON.
# Usage: cli_train_generate_test.sh LONGNET_BINARY WORK_DIR
set -euo pipefail
longnet=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

for i in $(seq 1 120); do echo "In the beginning was the word $i, and the word was with the text."; done > "$work/text.txt"
tiny=(--data "$work/text.txt" --seq-len 32 --batch-size 2 --d-model 16 --heads 2 --layers 1 --ffn-dim 32
      --segments 8,16 --dilations 1,2 --dropout 0.1 --steps 6 --warmup 2 --eval-every 3 --eval-batches 2
      --checkpoint-every 3 --log-every 1)

"$longnet" train "${tiny[@]}" --out "$work/a" > "$work/a.out" 2> "$work/a.err" || fail "train: $(cat "$work/a.err")"
for f in checkpoint.safetensors checkpoint.optimizer.safetensors loss.csv loss.png; do
  [ -s "$work/a/$f" ] || fail "train did not write $f"
done
[ "$(head -c 4 "$work/a/loss.png" | tail -c 3)" = "PNG" ] || fail "loss.png is not a PNG"
[ "$(wc -l < "$work/a/loss.csv")" -eq 7 ] || fail "loss.csv should have a header and 6 rows"
grep -q "validation loss" "$work/a.err" || fail "no validation loss printed"
grep -q "^tokens_per_second " "$work/a.out" || fail "no tokens/s printed"
! grep -q "note:" "$work/a.err" || fail "a note for patterns whose every offset has a head: $(grep note: "$work/a.err")"
# Two heads for dilation 4: half the offsets of the second pattern take no head, and train says so.
"$longnet" train --data "$work/text.txt" --seq-len 32 --batch-size 2 --d-model 16 --heads 2 --layers 1 --ffn-dim 32 \
  --segments 8,16 --dilations 1,4 --steps 1 --out "$work/n" > /dev/null 2> "$work/n.err" ||
  fail "train with dilation 4: $(cat "$work/n.err")"
grep -q "note: pattern 1 (segment 16, dilation 4) gives heads to 2 of its 4 offsets" "$work/n.err" ||
  fail "no note for offsets without a head: $(cat "$work/n.err")"

# Interrupted after its first step, then resumed: the same losses as the run above.
"$longnet" train "${tiny[@]}" --out "$work/b" --time-limit 1e-9 > /dev/null 2> "$work/b.err" ||
  fail "interrupted train: $(cat "$work/b.err")"
grep -q "continue with --resume" "$work/b.err" || fail "the time limit did not stop the run"
"$longnet" train "${tiny[@]}" --out "$work/b" --resume > /dev/null 2> "$work/b2.err" ||
  fail "resume: $(cat "$work/b2.err")"
grep -q "resumed at step 1" "$work/b2.err" || fail "did not resume at step 1"
diff <(cut -d, -f1,2 "$work/a/loss.csv") <(cut -d, -f1,2 "$work/b/loss.csv") > /dev/null ||
  fail "resumed losses differ from the uninterrupted run's: $(diff <(cut -d, -f1,2 "$work/a/loss.csv") <(cut -d, -f1,2 "$work/b/loss.csv"))"

"$longnet" generate --checkpoint "$work/a/checkpoint.safetensors" --prompt "In the" --tokens 20 --seed 3 \
  > "$work/gen.out" 2> "$work/gen.err" || fail "generate: $(cat "$work/gen.err")"
grep -q "^In the" "$work/gen.out" || fail "the output does not start with the prompt"
grep -q "tokens/s" "$work/gen.err" || fail "generate printed no tokens/s"
[ "$(head -c 26 "$work/gen.out" | wc -c)" -eq 26 ] || fail "generate printed fewer than 20 new bytes"

# eval: the validation loss train printed at its last step (the same batches), a table row
# a length, JSON and a chart; the passkey task adds whole keys retrieved.
"$longnet" eval --checkpoint "$work/a/checkpoint.safetensors" --data "$work/text.txt" --seq-lens 32,64 \
  --batch-size 2 --batches 2 --json "$work/eval.json" --plot "$work/eval.png" > "$work/eval.out" 2> "$work/eval.err" ||
  fail "eval: $(cat "$work/eval.err")"
grep -q "^| 32 | " "$work/eval.out" || fail "eval printed no row for 32: $(cat "$work/eval.out")"
grep -q "^| 64 | " "$work/eval.out" || fail "eval printed no row for 64: $(cat "$work/eval.out")"
grep -q "next byte right" "$work/eval.out" || fail "eval printed no accuracy: $(cat "$work/eval.out")"
trained=$(grep -o "validation loss [0-9.]*" "$work/a.err" | tail -1 | cut -d' ' -f3)
evaluated=$(grep "^| 32 | " "$work/eval.out" | cut -d'|' -f3 | tr -d ' ')
[ "$trained" = "$evaluated" ] || fail "eval's loss at 32 ($evaluated) is not train's last validation loss ($trained)"
grep -q '"sequence_accuracy"' "$work/eval.json" || fail "eval wrote no JSON"
[ "$(head -c 4 "$work/eval.png" | tail -c 3)" = "PNG" ] || fail "eval.png is not a PNG"
"$longnet" eval --checkpoint "$work/a/checkpoint.safetensors" --dataset passkey --seq-lens 96 --batch-size 2 \
  --batches 1 > "$work/eval_passkey.out" 2> "$work/eval.err" || fail "eval passkey: $(cat "$work/eval.err")"
grep -q "keys retrieved" "$work/eval_passkey.out" || fail "eval passkey: $(cat "$work/eval_passkey.out")"

"$longnet" bench train --device cpu --d-model 16 --heads 2 --layers 1 --ffn-dim 32 --seq-len 96 --batch-size 2 \
  --segments 8,16 --dilations 1,2 --warmup 1 --steps 2 --json "$work/bench.json" > "$work/bench.out" 2> "$work/bench.err" ||
  fail "bench train: $(cat "$work/bench.err")"
grep -q "tokens/s" "$work/bench.out" || fail "bench train printed no tokens/s: $(cat "$work/bench.out")"
grep -q '"tokens_per_second"' "$work/bench.json" || fail "bench train wrote no JSON"
# One q/k/v projection GEMM: the model says so, and the fused backward runs.
"$longnet" bench train --device cpu --d-model 16 --heads 2 --layers 1 --ffn-dim 32 --seq-len 96 --batch-size 2 \
  --segments 8,16 --dilations 1,2 --warmup 1 --steps 1 --fused-qkv > "$work/bench_fused.out" 2> "$work/bench.err" ||
  fail "bench train --fused-qkv: $(cat "$work/bench.err")"
grep -q "fused qkv projection" "$work/bench_fused.out" || fail "bench train --fused-qkv: $(cat "$work/bench_fused.out")"

"$longnet" train --help | grep -q -- "--checkpoint-every" || fail "train --help"
"$longnet" generate --help | grep -q -- "--top-p" || fail "generate --help"
"$longnet" eval --help | grep -q -- "--seq-lens" || fail "eval --help"

expect_error() {  # expect_error FRAGMENT COMMAND...
  local fragment=$1
  shift
  if "$@" > /dev/null 2> "$work/err"; then fail "succeeded: $*"; fi
  grep -q -- "$fragment" "$work/err" || fail "error of '$*' lacks '$fragment': $(cat "$work/err")"
}
expect_error "missing.txt" "$longnet" train --data "$work/missing.txt" --out "$work/c"
expect_error "segment_lengths has 2 entries but dilation_rates has 1" \
  "$longnet" train --data "$work/text.txt" --segments 8,16 --dilations 1 --out "$work/c"
head -c 1000 "$work/a/checkpoint.safetensors" > "$work/truncated.safetensors"
expect_error "truncated.safetensors" "$longnet" generate --checkpoint "$work/truncated.safetensors"
expect_error "bf16 compute needs a CUDA device" "$longnet" train --data "$work/text.txt" --dtype bf16 --out "$work/c"
expect_error "temperature" "$longnet" generate --checkpoint "$work/a/checkpoint.safetensors" --temperature -1
expect_error "--batches = 0" "$longnet" eval --checkpoint "$work/a/checkpoint.safetensors" --data "$work/text.txt" --batches 0
expect_error "--seq-lens" "$longnet" eval --checkpoint "$work/a/checkpoint.safetensors" --data "$work/text.txt" --seq-lens 0
expect_error "--dataset = 'nope'" "$longnet" eval --checkpoint "$work/a/checkpoint.safetensors" --dataset nope
expect_error "truncated.safetensors" "$longnet" eval --checkpoint "$work/truncated.safetensors" --data "$work/text.txt"
echo "ok"
