#!/usr/bin/env bash
# One device call for tune_knobs.patch (README.md beside it): the training attention with
# the forward's L2 group size and the backward's tail waves varied through the patch's
# temporary environment knobs, alternated three times. Bundle, made here first:
#   git apply scripts/gpu/pending/tune_knobs.patch
#   LONGNET_BUNDLE_ONLY="bin/longnet bench/cuda/cuda_attention_sweep" LONGNET_BUNDLE_DIR=.device-t \
#     scripts/gpu/make_bundle.sh
#   git checkout -- src/
# then run this with carry [".device-t"].
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
args="--mode longnet --causal --seq 32768 --heads 12 --head-dim 64 --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --repeat 10"
for round in 1 2 3; do
  for e in NONE=1 LONGNET_TUNE_L2_GROUP_BYTES=8388608 LONGNET_TUNE_L2_GROUP_BYTES=33554432 \
    LONGNET_TUNE_TAIL_WAVES=2 LONGNET_TUNE_TAIL_WAVES=8; do
    echo "== round $round $e $(env $e LONGNET_BUNDLE=.device-t/bundle.tar.xz timeout 40 scripts/gpu/run.sh exec cuda_attention_sweep $args 2>&1 | tail -1)" | tee -a "$OUT/summary.txt"
  done
done
