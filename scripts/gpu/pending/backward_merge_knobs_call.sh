#!/usr/bin/env bash
# One device call for backward_merge_knobs.patch (README.md beside it): the training
# attention layer's forward+backward with the merging backward launches storing dK, dV
# instead of adding (LONGNET_TUNE_STORE_ALL_KV: wrong gradients, timing only: what the
# accumulators' read and add cost) and without programmatic overlap between the backward's
# launches (LONGNET_TUNE_NO_BACKWARD_OVERLAP: what the overlap buys), alternated three times.
# Bundle, made here first:
#   git apply scripts/gpu/pending/backward_merge_knobs.patch
#   LONGNET_BUNDLE_ONLY="bench/cuda/cuda_attention_sweep" LONGNET_BUNDLE_DIR=.device-k scripts/gpu/make_bundle.sh
#   git checkout -- src/
# then run this with carry [".device-k"].
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
args="--mode longnet --causal --seq 32768 --heads 12 --head-dim 64 --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --repeat 10"
for round in 1 2 3; do
  for e in NONE=1 LONGNET_TUNE_STORE_ALL_KV=1 LONGNET_TUNE_NO_BACKWARD_OVERLAP=1; do
    echo "== round $round $e $(env $e LONGNET_BUNDLE=.device-k/bundle.tar.xz timeout 40 scripts/gpu/run.sh exec cuda_attention_sweep $args 2>&1 | tail -1)" | tee -a "$OUT/summary.txt"
  done
done
