#!/usr/bin/env bash
# Prepared in the twenty-second session (no device time was left to run it; README.md
# beside it). Nsight Compute on the training layer's backward launches: the first
# (dilation 1, stores dK/dV) against the merging ones (dilation 2 first; they add to fp32
# accumulators): speed of light, warp states, and the first merging one's per-instruction
# stalls.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# Bundle: LONGNET_BUNDLE_ONLY="bench/cuda/cuda_attention_sweep" scripts/gpu/make_bundle.sh (carry .device)
export LONGNET_BUNDLE=${LONGNET_BUNDLE:-.device/bundle.tar.xz}
scripts/gpu/run.sh exec cuda_attention_sweep --help > /dev/null 2>&1  # unpacks the bundle
export LD_LIBRARY_PATH=/tmp/longnet-device/lib:${LD_LIBRARY_PATH:-}
bin=/tmp/longnet-device/bin
args="--mode longnet --causal --seq 32768 --heads 12 --head-dim 64 --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --repeat 1"
timeout 150 ncu --clock-control none -k "regex:flash_backward" -c 5 --section SpeedOfLight --section WarpStateStats \
  --section LaunchStats --section MemoryWorkloadAnalysis $bin/cuda_attention_sweep $args > "$OUT/sol.txt" 2> "$OUT/sol.log"
echo "sol rc $?"
grep -E "^  [a-zA-Z_:]+.*\(|Duration|Memory Throughput|DRAM Throughput|L2 Hit|Issue Slots|Stall|Warp Cycles Per Issued|Compute \(SM\)" "$OUT/sol.txt" | head -80
timeout 150 ncu --clock-control none -k "regex:flash_backward" --launch-skip 1 -c 1 --section SourceCounters \
  --section WarpStateStats --page source --print-source sass --csv $bin/cuda_attention_sweep $args > "$OUT/source.csv" 2> "$OUT/source.log"
echo "source rc $?"; wc -l "$OUT/source.csv"; xz -9 "$OUT/source.csv"
