#!/usr/bin/env bash
# One device call for small kernels of the training step: the nn and model CUDA tests of
# TESTS_BUNDLE, then per variant (label:bundle[:ENV=v,...], bundles made with
# LONGNET_BUNDLE_TIMELINE=1) a CUPTI timeline of `longnet bench train` ($TRAIN_ARGS) and,
# for each regex in $KERNELS, the in-step durations of the kernels it matches
# (kernel_in_step.py). Outputs in $OUT/<label><round>/ (timeline.txt, exec.txt).
#   KERNELS="rotary forward_kernel.*EmbeddingParams" scripts/gpu/small_kernels_check.sh \
#     .device-S/bundle.tar.xz new:.device-T/bundle.tar.xz old:.device-T/bundle.tar.xz:NAME=1
set -uo pipefail
here=$(dirname "$0")
out=${OUT:-/tmp/out}
tests=$1
shift
ROUNDS=0 "$here/ab_model.sh" "tests:$tests"  # the tests only
for round in $(seq "${ROUNDS:-1}"); do
  for v in "$@"; do
    IFS=: read -r label bundle environment <<<"$v"
    mkdir -p "$out/$label$round"
    env ${environment//,/ } OUT="$out/$label$round" LONGNET_BUNDLE="$bundle" "$here/run.sh" timeline longnet bench train ${TRAIN_ARGS:---warmup 2 --steps 6} > "$out/$label$round/log.txt" 2>&1
    echo "== $label round $round: $(grep -E '^\| step time' "$out/$label$round/exec.txt" | tr -s ' ')"
    for k in ${KERNELS:-rotary}; do
      python3 "$here/kernel_in_step.py" "$out/$label$round/timeline.csv.xz" "$k" 2>&1 | head -1
    done
    grep -E "^== step" "$out/$label$round/timeline.txt" | head -3
    rm -f "$out/$label$round/timeline.csv.xz" "$out/$label$round/log.txt"
  done
done
