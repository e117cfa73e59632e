#!/usr/bin/env bash
# One device call for forward_l2_groups.patch (README.md beside it). Bundles, made here first:
#   LONGNET_BUNDLE_ONLY="bin/longnet bench/cuda/cuda_attention_sweep" LONGNET_BUNDLE_DIR=.device-m scripts/gpu/make_bundle.sh
#   git apply scripts/gpu/pending/forward_l2_groups.patch
#   LONGNET_BUNDLE_ONLY="bin/longnet tests/attention/test_attention bench/cuda/cuda_attention_sweep" \
#     LONGNET_BUNDLE_DIR=.device-g scripts/gpu/make_bundle.sh
# then run this with carry [".device-m", ".device-g"]: the attention tests on the patched
# bundle, the training configuration's attention alternated twice, the step A/B twice.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
LONGNET_BUNDLE=.device-g/bundle.tar.xz timeout 100 scripts/gpu/run.sh exec test_attention \
  --gtest_filter='DilatedAttentionCuda.*' > "$OUT/tests_attention.txt" 2>&1
echo "grouped test_attention: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests_attention.txt" | tr '\n' ' ')" | tee "$OUT/summary.txt"
grep -B2 -A6 "Failure" "$OUT/tests_attention.txt" | head -30
args="--mode longnet --causal --seq 32768 --heads 12 --head-dim 64 --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --repeat 10"
for round in 1 2; do
  for v in main:.device-m/bundle.tar.xz grouped:.device-g/bundle.tar.xz; do
    IFS=: read -r label bundle <<<"$v"
    echo "== round $round $label" | tee -a "$OUT/summary.txt"
    LONGNET_BUNDLE=$bundle timeout 60 scripts/gpu/run.sh exec cuda_attention_sweep $args 2>&1 | tail -2 | tee -a "$OUT/summary.txt"
  done
done
SKIP_TESTS=1 ROUNDS=2 SKIP_KERNELS=1 TRAIN_ARGS="--warmup 4 --steps 10" TRAIN_LINES=6 timeout 200 \
  "$(dirname "$0")/../ab_model.sh" main:.device-m/bundle.tar.xz grouped:.device-g/bundle.tar.xz 2>&1 | tee -a "$OUT/summary.txt"
