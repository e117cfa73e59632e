#!/usr/bin/env bash
# Runs on the GPU machine: the model's A/B comparison in one device call. The last
# variant's CUDA model tests (test_nn, test_model), then, ROUNDS times over the variants in
# turn, cuda_model_kernels_sweep and `longnet bench train` (issue 5's configuration) plus
# TRAIN_ARGS. Variants as ab_bench.sh: "label:bundle" (bundles carried in the repository),
# or "label:bundle:NAME=value,..." to run that bundle with those environment variables.
#   scripts/gpu/ab_model.sh base:.device-base/bundle.tar.xz new:.device/bundle.tar.xz
#   scripts/gpu/ab_model.sh on:.device/bundle.tar.xz off:.device/bundle.tar.xz:LONGNET_GRADIENT_STREAM=0
# Logs in $OUT (tests_nn.txt, tests_model.txt, each training run's JSON); the tables on
# stdout (TRAIN_LINES: the last lines of bench train's output kept, 13 by default: its whole
# table on CUDA), then each variant's step times and MFU over the rounds, with medians.
set -uo pipefail
here=$(dirname "$0")
out=${OUT:-/tmp/out}
mkdir -p "$out"
variants=("$@")
last=${variants[${#variants[@]} - 1]}
IFS=: read -r label bundle environment <<<"$last"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  for program in test_nn test_model; do
    # A hang in new code must not take the whole call: the comparison still runs after it.
    env ${environment//,/ } LONGNET_BUNDLE="$bundle" timeout "${TEST_TIMEOUT:-300}" "$here/run.sh" exec "$program" --gtest_filter='*Cuda*' > "$out/tests_${program#test_}.txt" 2>&1 ||
      echo "$label $program: exit status $? (124: stopped after ${TEST_TIMEOUT:-300} s)"
    echo "$label $program: $(grep -E '^\[  (PASSED|FAILED)' "$out/tests_${program#test_}.txt" | tr '\n' ' ')"
    grep -B2 -A6 "Failure" "$out/tests_${program#test_}.txt" | head -40
  done
fi
for round in $(seq "${ROUNDS:-2}"); do
  for v in "${variants[@]}"; do
    IFS=: read -r label bundle environment <<<"$v"
    echo "== round $round: $label ($bundle${environment:+ with $environment})"
    [ "${SKIP_KERNELS:-0}" = 1 ] || env ${environment//,/ } LONGNET_BUNDLE="$bundle" timeout 120 "$here/run.sh" exec cuda_model_kernels_sweep
    [ "${SKIP_TRAIN:-0}" = 1 ] || env ${environment//,/ } LONGNET_BUNDLE="$bundle" timeout 150 "$here/run.sh" exec longnet bench train ${TRAIN_ARGS:-} \
      --json "$out/train_${label}_round$round.json" 2>&1 | grep -vi "^\s*$" | tail -n "${TRAIN_LINES:-13}"
  done
done
# Each variant's rounds side by side, from the runs' JSON (train_LABEL_roundN.json).
[ "${SKIP_TRAIN:-0}" = 1 ] || python3 - "$out" "${variants[@]}" <<'SUMMARY'
import json, statistics, sys
from pathlib import Path
out, variants = Path(sys.argv[1]), [v.split(":")[0] for v in sys.argv[2:]]
print("| variant | step ms (rounds) | median | MFU % (rounds) | median |\n|---|---|---:|---|---:|")
for label in dict.fromkeys(variants):
    runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"train_{label}_round*.json"))]
    if not runs:
        print(f"| {label} | (no run finished) | | | |")
        continue
    ms = [r["median_step_ms"] for r in runs]
    mfu = [100 * r["mfu"] for r in runs]
    print(f"| {label} | {' / '.join(f'{x:.2f}' for x in ms)} | {statistics.median(ms):.2f} | "
          f"{' / '.join(f'{x:.1f}' for x in mfu)} | {statistics.median(mfu):.2f} |")
SUMMARY
