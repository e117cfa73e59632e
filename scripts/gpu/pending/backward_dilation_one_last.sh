#!/usr/bin/env bash
# One device call for backward_dilation_one_last.patch (README.md here): the training
# layer's attention and `longnet bench train`, the patch (new) against the dilation-1
# pattern first (old: its temporary knob LONGNET_TMP_DILATION_ONE_FIRST), alternated; then
# test_attention's DilatedAttentionCuda tests. Bundle: the patched tree's
#   LONGNET_BUNDLE_ONLY="bin/longnet tests/attention/test_attention bench/cuda/cuda_attention_sweep" scripts/gpu/make_bundle.sh
# (21 MB, .device/). Everything also goes to $OUT/log.txt, kept if the call is cut off.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
B=${LONGNET_BUNDLE:-.device/bundle.tar.xz}
log() { echo "$*" | tee -a "$out/log.txt"; }
log "$(nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader)"
for round in 1 2 3; do
  for v in new old; do
    knob=X=1; [ $v = old ] && knob=LONGNET_TMP_DILATION_ONE_FIRST=1  # (X=1: no knob)
    log "$v: $(env $knob LONGNET_BUNDLE=$B scripts/gpu/run.sh exec cuda_attention_sweep --mode longnet --causal --seq 32768 --heads 12 --head-dim 64 --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --repeat 10 | tail -1)"
  done
done
SKIP_TESTS=1 ROUNDS=2 SKIP_KERNELS=1 TRAIN_ARGS="--warmup 4 --steps 10" TRAIN_LINES=12 \
  scripts/gpu/ab_model.sh old:$B:LONGNET_TMP_DILATION_ONE_FIRST=1 new:$B > "$out/ab.txt" 2>&1
grep -E "==|MFU|step time|forward / backward" "$out/ab.txt" | tee -a "$out/log.txt"
start=$SECONDS
LONGNET_BUNDLE=$B scripts/gpu/run.sh exec test_attention --gtest_filter='DilatedAttentionCuda.*' > "$out/tests.txt" 2>&1
log "test_attention DilatedAttentionCuda.* ($((SECONDS - start)) s): $(grep -E '^\[  (PASSED|FAILED)' "$out/tests.txt" | tr '\n' ' ')"
grep -B2 -A8 "Failure" "$out/tests.txt" | head -30
