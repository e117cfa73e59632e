#!/usr/bin/env bash
# One device call for a change to the training step (issue 5) against main: the CUDA tests
# a model change touches, the step A/B, and where the time went.
#   1. test_attention DilatedAttentionCuda.*, test_nn and test_model *Cuda* (the new bundle;
#      logs tests_*.txt);
#   2. `longnet bench train --warmup 4 --steps 10`, main and new alternated TRAIN_ROUNDS
#      times (default 3);
#   3. Nsight Compute's kernel times of a step with the new bundle (`run.sh train-profile`;
#      its summary in log.txt, so that the call stays under the device tool's 8 files).
# Bundles, carried both: main's `bin/longnet` in .device-base (BASE), the tree's longnet,
# test_attention, test_nn and test_model in .device-X (LONGNET_BUNDLE):
#   LONGNET_BUNDLE_ONLY="bin/longnet" LONGNET_BUNDLE_DIR=.device-base scripts/gpu/make_bundle.sh   (at main)
#   LONGNET_BUNDLE_ONLY="bin/longnet tests/attention/test_attention tests/nn/test_nn tests/model/test_model" \
#     LONGNET_BUNDLE_DIR=.device-X scripts/gpu/make_bundle.sh                                     (the change)
# Everything also goes to $OUT/log.txt (first used for the summing conversion, docs/benchmarks.md,
# 2026-12-07, twenty-sixth session).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
B=${LONGNET_BUNDLE:-.device-X/bundle.tar.xz}
BASE=${BASE:-.device-base/bundle.tar.xz}
log() { echo "$*" | tee -a "$out/log.txt"; }
log "$(nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader)"
# test_attention's dilated CUDA tests here; ab_model.sh runs test_nn and test_model's on the
# last variant (new) before the rounds.
LONGNET_BUNDLE=$B timeout 240 scripts/gpu/run.sh exec test_attention --gtest_filter='DilatedAttentionCuda.*' \
  > "$out/tests_attention.txt" 2>&1
log "new test_attention: $(grep -E '^\[  (PASSED|FAILED)' "$out/tests_attention.txt" | tr '\n' ' ')"
grep -B2 -A8 "Failure" "$out/tests_attention.txt" | head -60 >> "$out/log.txt"
ROUNDS=${TRAIN_ROUNDS:-3} SKIP_KERNELS=1 TRAIN_ARGS="--warmup 4 --steps 10" TRAIN_LINES=12 \
  scripts/gpu/ab_model.sh main:$BASE new:$B > "$out/ab.txt" 2>&1
grep -E "test_nn|test_model" "$out/ab.txt" | tee -a "$out/log.txt"
grep -E "==|MFU|step time|forward / backward" "$out/ab.txt" | tee -a "$out/log.txt"
start=$SECONDS
OUT=/tmp/profile LONGNET_BUNDLE=$B timeout 200 scripts/gpu/run.sh train-profile > "$out/profile.txt" 2>&1
log "train-profile new ($((SECONDS - start)) s):"
head -40 /tmp/profile/train_profile.txt >> "$out/log.txt"
