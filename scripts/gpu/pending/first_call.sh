#!/usr/bin/env bash
# The next session's first device call (scripts/gpu/pending/README.md), most important first
# so that a call cut short still returns what matters; everything is also written to $OUT.
#   carry: [".device-X"], command: scripts/gpu/pending/first_call.sh
# 1. The CUDA tests of test_nn and test_model with every opt-in switch on (ab_model.sh runs
#    them on its last variant), then the step A/B: main, the fused q/k/v projection, the
#    norm in the backward with the deferred zero fill, the pending cuBLASLt rank (the output
#    projection's forward on the H100), and all four (ROUNDS rounds).
# 2. The fused projection's q/k/v rows in the kernel sweep, stagger 0-3.
# 3. The fused tests under 2-CTA clusters and under staggers 1-3.
set -uo pipefail
cd "$(dirname "$0")/../../.."
X=${LONGNET_BUNDLE:-.device-X/bundle.tar.xz}
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
SKIP_KERNELS=1 ROUNDS=${ROUNDS:-3} TRAIN_ARGS="--warmup 4 --steps 10" scripts/gpu/ab_model.sh \
  off:"$X" fused:"$X":LONGNET_FUSED_PROJECTION=1 nz:"$X":LONGNET_NORM_IN_BACKWARD=1,LONGNET_DEFERRED_ZERO=1 \
  ranks:"$X":LONGNET_PENDING_GEMM_RANKS=1 \
  all:"$X":LONGNET_FUSED_PROJECTION=1,LONGNET_NORM_IN_BACKWARD=1,LONGNET_DEFERRED_ZERO=1,LONGNET_PENDING_GEMM_RANKS=1 \
  2>&1 | tee "$out/ab.txt"
for s in 0 1 2 3; do
  echo "== stagger $s"
  LONGNET_BUNDLE=$X LONGNET_PROJECTION_STAGGER=$s timeout 60 scripts/gpu/run.sh exec cuda_model_kernels_sweep --only qkv 2>&1 |
    tail -8
done 2>&1 | tee "$out/stagger.txt"
{
  echo "cluster 2:"
  LONGNET_BUNDLE=$X LONGNET_PROJECTION_CLUSTER=2 timeout 120 scripts/gpu/run.sh exec test_nn --gtest_filter='*Fused*:*Rotary*' 2>&1 |
    grep -E '^\[  (PASSED|FAILED)|Failure' | head -20
  for s in 1 2 3; do
    echo "stagger $s:"
    LONGNET_BUNDLE=$X LONGNET_PROJECTION_STAGGER=$s timeout 120 scripts/gpu/run.sh exec test_nn --gtest_filter='*Fused*' 2>&1 |
      grep -E '^\[  (PASSED|FAILED)|Failure' | head -20
  done
} 2>&1 | tee "$out/fused_variants.txt"
