#!/usr/bin/env bash
# `longnet train` under mpirun end to end, on a tiny model: data-parallel (2 processes,
# uneven shares) and sequence-parallel (3 processes, zigzag) runs give the losses of the
# single-process run to 1e-5 relative (loss.csv prints 6 digits); only rank 0 prints and
# writes; a run interrupted under 2 processes resumes exactly under 3; a bad configuration
# (batch smaller than the world, a sequence too short for the layout, --parallel none
# under mpirun) is one error line on every process and a non-zero exit, never a hang.
# Usage: cli_distributed_train_test.sh LONGNET_BINARY MPIEXEC WORK_DIR
set -euo pipefail
longnet=$1
mpiexec=$2
work=$3
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
run_mpi() {  # run_mpi PROCESSES ARGS...
  local processes=$1
  shift
  timeout 120 "$mpiexec" -n "$processes" --oversubscribe "$longnet" "$@"
}

for i in $(seq 1 120); do echo "In the beginning was the word $i, and the word was with the text."; done > "$work/text.txt"
tiny=(--data "$work/text.txt" --seq-len 31 --batch-size 5 --d-model 16 --heads 2 --layers 1 --ffn-dim 32
      --segments 8,16 --dilations 1,2 --steps 6 --warmup 2 --eval-every 3 --eval-batches 2
      --checkpoint-every 3 --log-every 1)

"$longnet" train "${tiny[@]}" --out "$work/single" > /dev/null 2> "$work/single.err" ||
  fail "single-process train: $(cat "$work/single.err")"

# Train losses of two runs, and validation losses where both have one, equal to 1e-5
# relative, row by row (an interrupted run also evaluates where it stopped).
same_losses() {  # same_losses A.csv B.csv WHAT
  paste -d, <(cut -d, -f1-3 "$1") <(cut -d, -f1-3 "$2") | awk -F, -v what="$3" '
    NR == 1 { next }
    function differ(a, b) { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; return d > 1e-5 * m }
    $1 != $4 || differ($2, $5) || ($3 != "" && $6 != "" && differ($3, $6)) {
      print what ": row " NR - 1 " differs: " $0; bad = 1 }
    END { if (NR != 7) { print what ": " NR - 1 " rows, expected 6"; bad = 1 } exit bad }' ||
    fail "$3: losses differ from the single-process run"
}

run_mpi 2 train "${tiny[@]}" --parallel data --out "$work/data" > "$work/data.out" 2> "$work/data.err" ||
  fail "data-parallel train: $(cat "$work/data.err")"
same_losses "$work/data/loss.csv" "$work/single/loss.csv" "data-parallel over 2"
grep -q "data-parallel over 2 processes" "$work/data.err" || fail "no data-parallel header: $(cat "$work/data.err")"
[ "$(grep -c "^train: LongNetLM" "$work/data.err")" -eq 1 ] || fail "more than one process printed the header"
[ "$(grep -c "^tokens_per_second" "$work/data.out")" -eq 1 ] || fail "more than one process printed tokens/s"
for f in checkpoint.safetensors checkpoint.optimizer.safetensors loss.csv loss.png; do
  [ -s "$work/data/$f" ] || fail "data-parallel train did not write $f"
done

run_mpi 3 train "${tiny[@]}" --parallel sequence --sequence-order zigzag --out "$work/sequence" \
  > /dev/null 2> "$work/sequence.err" || fail "sequence-parallel train: $(cat "$work/sequence.err")"
same_losses "$work/sequence/loss.csv" "$work/single/loss.csv" "sequence-parallel over 3 (zigzag)"
grep -q "sequence-parallel over 3 processes (mpi, zigzag layout)" "$work/sequence.err" ||
  fail "no sequence-parallel header: $(cat "$work/sequence.err")"

# Interrupted after its first step under 2 processes (sequence), resumed under 3 (data).
run_mpi 2 train "${tiny[@]}" --parallel sequence --out "$work/resumed" --time-limit 1e-9 > /dev/null \
  2> "$work/interrupted.err" || fail "interrupted train: $(cat "$work/interrupted.err")"
grep -q "continue with --resume" "$work/interrupted.err" || fail "the time limit did not stop the run"
run_mpi 3 train "${tiny[@]}" --parallel data --out "$work/resumed" --resume > /dev/null 2> "$work/resumed.err" ||
  fail "resume: $(cat "$work/resumed.err")"
grep -q "resumed at step 1" "$work/resumed.err" || fail "did not resume at step 1: $(cat "$work/resumed.err")"
same_losses "$work/resumed/loss.csv" "$work/single/loss.csv" "interrupted and resumed"

# Bad configurations: the same error line from every process, a non-zero exit.
expect_error() {  # expect_error PROCESSES FRAGMENT ARGS...
  local processes=$1 fragment=$2
  shift 2
  if run_mpi "$processes" "$@" > /dev/null 2> "$work/err"; then fail "succeeded: $*"; fi
  local lines
  lines=$(grep -c -F -- "longnet: error: " "$work/err" || true)
  [ "$lines" -eq "$processes" ] || fail "$processes processes but $lines error lines for '$*': $(cat "$work/err")"
  grep -q -F -- "$fragment" "$work/err" || fail "error of '$*' lacks '$fragment': $(cat "$work/err")"
}
small=(--data "$work/text.txt" --d-model 16 --heads 2 --layers 1 --ffn-dim 32 --segments 8,16 --dilations 1,2
       --steps 2 --out "$work/bad")
expect_error 3 "data parallelism over 3 processes: batch_size = 2" train "${small[@]}" --batch-size 2 --seq-len 16
expect_error 3 "seq_len = 5 with world_size = 3" \
  train "${small[@]}" --batch-size 2 --seq-len 5 --parallel sequence --sequence-order zigzag
expect_error 2 "--parallel = none with 2 MPI processes" train "${small[@]}" --parallel none
# Processes that run different commands (here one more evaluation on rank 1) would call
# different collectives: refused before training.
if timeout 120 "$mpiexec" -n 2 --oversubscribe bash -c \
  "exec \"$longnet\" train ${small[*]} --eval-every \$((OMPI_COMM_WORLD_RANK + 1))" > /dev/null 2> "$work/err"; then
  fail "processes with different options trained"
fi
[ "$(grep -c -F "the options of \`longnet train\` (every process must run the same command): rank 1 differs" \
  "$work/err")" -eq 2 ] || fail "different options: $(cat "$work/err")"
[ ! -e "$work/bad/checkpoint.safetensors" ] || fail "a failed run wrote a checkpoint"

"$longnet" train --help | grep -q -- "--parallel" || fail "train --help does not list --parallel"
"$longnet" train --help | grep -q -- "--sequence-order" || fail "train --help does not list --sequence-order"
echo ok
