#!/usr/bin/env bash
# The next device call for backward_dilation_one_last.patch (README.md here). The patch
# passed every CUDA test it touches and made the attention layer faster alone, but the
# training step slower (docs/benchmarks.md, twenty-fifth session); this call says where the
# step loses:
#   1. `longnet bench train`, two rounds alternated: the patch (new), its dilation-1-first
#      order (old: the temporary knob LONGNET_TMP_DILATION_ONE_FIRST), both again without
#      the parameter-gradient stream (LONGNET_GRADIENT_STREAM=0: is it the overlap with the
#      weight-gradient GEMMs?), both with the side stream above the default stream's
#      priority (the patch's temporary LONGNET_TMP_SIDE_STREAM_PRIORITY=-5: does the order
#      the block scheduler serves the two streams in matter, in either order?), and main
#      itself when BASE names main's bundle;
#   2. Nsight Compute's time of every kernel of a step (`run.sh train-profile`) for new and
#      old: which kernel moved, with nothing running beside it.
# Bundles (carry both; longnet alone is 12 MB):
#   patched tree: LONGNET_BUNDLE_ONLY="bin/longnet" LONGNET_BUNDLE_DIR=.device-X scripts/gpu/make_bundle.sh
#   main:         LONGNET_BUNDLE_ONLY="bin/longnet" LONGNET_BUNDLE_DIR=.device-base scripts/gpu/make_bundle.sh
# then LONGNET_BUNDLE=.device-X/bundle.tar.xz BASE=.device-base/bundle.tar.xz
# scripts/gpu/pending/backward_dilation_one_last.sh. Everything also goes to $OUT/log.txt.
# The tests to rerun once the step is fixed: test_attention '*Cuda*', test_nn and
# test_model '*Cuda*' (the twenty-fifth session's bundle passed them all).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
B=${LONGNET_BUNDLE:-.device-X/bundle.tar.xz}
log() { echo "$*" | tee -a "$out/log.txt"; }
log "$(nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader)"
old=LONGNET_TMP_DILATION_ONE_FIRST=1
variants=(old:$B:$old new:$B old_gs0:$B:$old,LONGNET_GRADIENT_STREAM=0 new_gs0:$B:LONGNET_GRADIENT_STREAM=0
  old_side_first:$B:$old,LONGNET_TMP_SIDE_STREAM_PRIORITY=-5 new_side_first:$B:LONGNET_TMP_SIDE_STREAM_PRIORITY=-5)
[ -n "${BASE:-}" ] && variants=(main:$BASE "${variants[@]}")
SKIP_TESTS=1 ROUNDS=${TRAIN_ROUNDS:-2} SKIP_KERNELS=1 TRAIN_ARGS="--warmup 4 --steps 10" TRAIN_LINES=12 \
  scripts/gpu/ab_model.sh "${variants[@]}" > "$out/ab.txt" 2>&1
grep -E "==|MFU|step time|forward / backward" "$out/ab.txt" | tee -a "$out/log.txt"
for v in new old; do
  mkdir -p "$out/$v"
  knob=X=1; [ $v = old ] && knob=$old  # (X=1: no knob)
  start=$SECONDS
  env $knob OUT="$out/$v" LONGNET_BUNDLE=$B timeout 200 scripts/gpu/run.sh train-profile > "$out/$v/stdout.txt" 2>&1
  log "train-profile $v ($((SECONDS - start)) s):"
  head -30 "$out/$v/train_profile.txt" >> "$out/log.txt"
done
