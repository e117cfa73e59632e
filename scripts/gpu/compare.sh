#!/usr/bin/env bash
# Runs on the GPU machine: the checks and the A/B comparison a kernel change needs, in one
# device call (each call costs minutes of start-up; refusals cost budget too).
#   scripts/gpu/compare.sh BASE_BUNDLE NEW_BUNDLE [quick | deterministic]
# 1. the new bundle's CUDA tests, compute-sanitizer memcheck and racecheck, and the CUDA
#    tests of test_dist / test_nn / test_model when the bundle has them
#    (LONGNET_GPU_EXTRA="tests/dist/test_dist tests/nn/test_nn tests/model/test_model"
#    scripts/gpu/make_bundle.sh);
# 2. base and new one after the other on the BENCHMARKS.md configurations: head-groups
#    8K / 128K / 1M, causal 1M, LongNet 128K, head_dim 128 at 128K ("quick": 1M and
#    causal 1M and LongNet 128K only; "deterministic": 128K, 1M, causal 1M and LongNet 128K with
#    --deterministic, and the training step with --deterministic, which is what
#    `longnet train` runs by default);
# 3. the issue-5 training step, base / new / base / new (the step varies by ~1.5 ms
#    between runs of one bundle: alternate and compare the backward phase).
# Example (carry both bundles):
#   scripts/gpu/compare.sh .device-head/bundle.tar.xz .device/bundle.tar.xz
set -uo pipefail
base=${1:?base bundle} new=${2:?new bundle} mode=${3:-full}
here=$(dirname "$0")
export LONGNET_BUNDLE=$new
timeout 200 "$here/run.sh" tests sanitize
contents=$(xz -dc "$new" | tar -t 2>/dev/null)
for program in test_dist test_nn test_model; do
  if grep -q "bin/$program$" <<<"$contents"; then
    timeout 100 "$here/run.sh" exec "$program" --gtest_filter='*Cuda*' | grep -E "PASSED|FAILED|Failure|tests ran" | head -8
  fi
done
# COMPARE_EXTRA="label:bundle ..." adds bundles between base and new to the attention
# comparisons (e.g. the steps of a change, slim bundles of cuda_attention_sweep only).
# shellcheck disable=SC2086
ab() { AB_TIMEOUT=${AB_TIMEOUT:-100} "$here/ab_bench.sh" "base:$base" ${COMPARE_EXTRA:-} "new:$new" -- "$@"; }
train_flags=()
if [ "$mode" = quick ]; then
  ab --seq 1048576 --repeat 5
  ab --seq 1048576 --causal --repeat 5
elif [ "$mode" = deterministic ]; then
  ab --seq 131072,1048576 --repeat 5 --deterministic
  ab --seq 1048576 --causal --repeat 5 --deterministic
  train_flags=(--deterministic)
else
  ab --seq 8192,131072,1048576 --repeat 5
  ab --seq 1048576 --causal --repeat 5
  ab --seq 131072 --head-dim 128 --repeat 5
fi
ab --seq 131072 --mode longnet --repeat 3 "${train_flags[@]}"
# The attention of one training layer (issue 5: causal LongNet mode, 12 heads, five patterns).
ab --seq 32768 --mode longnet --causal --heads 12 --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 \
  --repeat 10 "${train_flags[@]}"
for bundle in "$base" "$new" "$base" "$new"; do
  echo "== train ($bundle)"
  LONGNET_BUNDLE=$bundle timeout 60 "$here/run.sh" exec longnet bench train "${train_flags[@]}" |
    grep -E "step time|MFU|forward /"
done
