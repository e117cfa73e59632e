#!/usr/bin/env bash
# Runs on the GPU machine: one device call that checks a bundle of main and measures the
# training step, for a session whose changes have not yet run on a GPU.
#   1. CUDA tests: test_attention and test_core (run.sh tests), test_nn, test_model and
#      test_dist; test_nn and test_model again with the model's kernels launched
#      programmatically (LONGNET_MODEL_PDL=1);
#   2. compute-sanitizer memcheck and racecheck (run.sh sanitize), and memcheck on the
#      model's CUDA tests (run.sh memcheck);
#   3. the CUPTI timeline of `longnet bench train` with allocations (needs a bundle made
#      with LONGNET_BUNDLE_TIMELINE=1; run.sh says so otherwise);
#   4. `longnet bench train` ROUNDS times (default 2), without and with LONGNET_MODEL_PDL=1
#      in turn.
# Usage (bundle carried in the repository, see make_bundle.sh):
#   LONGNET_BUNDLE=.device/bundle.tar.xz scripts/gpu/check_main.sh
# Logs in $OUT (check_*.txt and run.sh's); a summary on stdout. About 8 minutes of the
# device call's 10 (ROUNDS=1 saves about one).
set -uo pipefail
here=$(dirname "$0")
out=${OUT:-/tmp/out}
mkdir -p "$out"
run="$here/run.sh"
rounds=${ROUNDS:-2}

summary() {  # the gtest verdict lines of a log
  grep -E "^\[  (PASSED|FAILED) +\]|^\[  FAILED  \] [A-Za-z]" "$1" | head -12
}

echo "== CUDA tests"
"$run" info tests > "$out/check_tests.txt" 2>&1
echo "test_attention:"
summary "$out/tests.txt"
echo "test_core: $(grep -E '^\[  (PASSED|FAILED)' "$out/check_tests.txt" | tr '\n' ' ')"
for program in test_nn test_model test_dist; do
  "$run" exec "$program" --gtest_filter='*Cuda*:*Nccl*' > "$out/check_$program.txt" 2>&1
  echo "$program:"
  summary "$out/check_$program.txt"
done
for program in test_nn test_model; do
  LONGNET_MODEL_PDL=1 "$run" exec "$program" --gtest_filter='*Cuda*' > "$out/check_${program}_pdl.txt" 2>&1
  echo "$program with LONGNET_MODEL_PDL=1:"
  summary "$out/check_${program}_pdl.txt"
done

echo "== compute-sanitizer"
"$run" sanitize 2>&1 | grep "compute-sanitizer"
"$run" memcheck test_nn --gtest_filter='ModelCuda.*'

echo "== timeline of longnet bench train (with allocations)"
LONGNET_TIMELINE_MEMORY=1 "$run" timeline longnet bench train --warmup 1 --steps 2 > "$out/check_timeline.txt" 2>&1
grep -hE "^timeline:|^== step|idle time|memory:|pool grew|step time|MFU" "$out/check_timeline.txt" \
  "$out/timeline.txt" 2>/dev/null | head -24

echo "== longnet bench train, $rounds rounds (plain, then LONGNET_MODEL_PDL=1)"
for round in $(seq "$rounds"); do
  for pdl in 0 1; do
    LONGNET_MODEL_PDL=$pdl "$run" exec longnet bench train > "$out/check_train_${round}_$pdl.txt" 2>&1
    echo "round $round, LONGNET_MODEL_PDL=$pdl: $(grep -E 'step time|MFU|forward / backward' "$out/check_train_${round}_$pdl.txt" |
      sed -E 's/ +\| */ /g; s/^\| *//' | tr '\n' ';')"
  done
done
