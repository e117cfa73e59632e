#!/usr/bin/env bash
# Runs on the GPU machine (through the device tool) from the repository root, with the
# bundle of scripts/gpu/make_bundle.sh carried in .device/. Steps (any subset, in order):
#   info       nvidia-smi and `longnet info`
#   tests      the CUDA tests (GoogleTest filter *Cuda*:*Memory*:...)
#   sanitize   compute-sanitizer memcheck and racecheck on a small CUDA suite
#   bench ARGS cuda_attention_sweep with ARGS (until the next step name)
#   profile ARGS  Nsight Compute (ncu) on cuda_attention_sweep ARGS: speed of light, warp
#              stalls, pipes and occupancy of the attention kernels (clocks left alone)
#   profile-source ARGS  Nsight Compute's per-instruction stall samples of one kernel
#              (NCU_KERNEL_REGEX, default flash_backward) as CSV: $OUT/source.csv
#   train-profile  Nsight Compute's time of every kernel of `longnet bench train` (one warm-up
#              and one timed step: three steps in all), summed by kernel and, for the
#              attention kernels, by pattern (scripts/gpu/kernel_times.py --cycle)
#   clocks ARGS  runs a bundled program with all remaining ARGS (so it comes last) while
#              nvidia-smi samples the SM clock and power every 50 ms ($OUT/clocks.csv):
#              whether a sustained run (a training step) holds the clocks that Nsight
#              Compute's one-kernel-at-a-time timings see, e.g. clocks longnet bench train
#   timeline ARGS  runs a bundled program with all remaining ARGS (so it comes last) under
#              the CUPTI timeline recorder (a bundle made with LONGNET_BUNDLE_TIMELINE=1;
#              scripts/gpu/timeline/): every kernel, memset and copy and every API call,
#              $OUT/timeline.csv; scripts/gpu/timeline.py says per training step where the
#              device was idle and whether the host was late ($OUT/timeline.txt);
#              LONGNET_TIMELINE_MEMORY=1 adds allocations and the pool's size (does a slow
#              cudaMallocFromPoolAsync grow the pool?)
#   memcheck ARGS  runs a bundled program with all remaining ARGS (so it comes last) under
#              compute-sanitizer memcheck ($OUT/memcheck.txt), e.g. memcheck test_nn --gtest_filter=ModelCuda.*
#   exec ARGS  runs a bundled program with all remaining ARGS (so it comes last), e.g. exec test_nn --gtest_filter=*Cuda*
#   callers FUNCTION PROGRAM ARGS  runs a bundled program under cuda-gdb (all remaining
#              ARGS, so it comes last) and counts the call stacks that reach FUNCTION (a
#              host function, e.g. longnet::detail::cuda_strided_copy): which code launches
#              a kernel. Needs a bundle with symbols (LONGNET_BUNDLE_KEEP_SYMBOLS=1
#              scripts/gpu/make_bundle.sh); stacks in $OUT/callers.txt
# Logs go to $OUT.
set -uo pipefail
# LONGNET_BUNDLE: the bundle to run (default .device/bundle.tar.xz). It is unpacked again
# whenever it differs from the one unpacked last, since a warm machine keeps /tmp between
# calls (and two engineers may send different bundles).
archive=${LONGNET_BUNDLE:-.device/bundle.tar.xz}
bundle=/tmp/longnet-device
if [ -f "$archive" ]; then
  stamp=$(sha256sum "$archive" | cut -d' ' -f1)
  if [ "$(cat "$bundle/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$bundle" && mkdir -p "$bundle" && xz -dc "$archive" | tar -C "$bundle" -xf - && echo "$stamp" > "$bundle/stamp"
  fi
fi
export LD_LIBRARY_PATH="$bundle/lib:${LD_LIBRARY_PATH:-}"
# NCCL (the dist programs link it): the machine's Python image carries libnccl.so.2 in the
# nvidia-nccl package; the bundle does not (it is larger than the whole carry).
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
[ -n "$nccl_lib" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$nccl_lib"
export NCCL_NVLS_ENABLE=0
bin=$bundle/bin
out=${OUT:-/tmp/out}
mkdir -p "$out"
status=0
# Whether a word is a step name (it ends the arguments of bench and profile).
is_step() { case "$1" in info | tests | sanitize | bench | profile | profile-source | train-profile | clocks | timeline | memcheck | exec | callers) return 0 ;; *) return 1 ;; esac; }
# args = the words before the next step name (the caller shifts them off).
step_args() {
  args=()
  while [ $# -gt 0 ] && ! is_step "$1"; do
    args+=("$1")
    shift
  done
}
while [ $# -gt 0 ]; do
  step=$1
  shift
  case "$step" in
    info)
      nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv 2>&1 | tee "$out/info.txt"
      "$bin/longnet" info 2>&1 | tee -a "$out/info.txt"
      ;;
    tests)
      filter=${GTEST_FILTER:-*Cuda*:*CudaRoundTrip*:MemoryPool.*}
      "$bin/test_attention" --gtest_filter="$filter" > "$out/tests.txt" 2>&1 || status=1
      grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]" "$out/tests.txt" | grep -v "^\[       OK" | head -40
      grep -A2 "Failure" "$out/tests.txt" | head -30
      "$bin/test_core" --gtest_filter='*Cuda*:MemoryPool.*' 2>&1 | tail -3
      ;;
    sanitize)
      for tool in memcheck racecheck; do
        compute-sanitizer --tool "$tool" --error-exitcode 7 "$bin/test_attention" \
          --gtest_filter='DilatedAttentionCuda.EdgeCases:DilatedAttentionCuda.StridedInputsAreReadInPlace' \
          > "$out/sanitize_$tool.txt" 2>&1
        echo "compute-sanitizer $tool: exit $? ($(grep -cE 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards' "$out/sanitize_$tool.txt") clean summaries)"
        tail -3 "$out/sanitize_$tool.txt"
      done
      ;;
    bench)
      step_args "$@"
      shift ${#args[@]}
      echo "== cuda_attention_sweep ${args[*]}"
      "$bin/cuda_attention_sweep" "${args[@]}" 2>&1 | tee -a "$out/bench.txt"
      ;;
    profile)
      step_args "$@"
      shift ${#args[@]}
      name=profile_$(echo "${args[*]}" | tr -c 'A-Za-z0-9' '_' | cut -c1-60)
      echo "== ncu cuda_attention_sweep ${args[*]} -> $name.txt"
      # NCU_KERNEL_REGEX narrows the kernels (e.g. flash_backward); NCU_STALLS=1 adds the
      # per-reason stall cycles per issued instruction of every warp state.
      stalls=()
      [ -n "${NCU_STALLS:-}" ] && stalls=(--metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio')
      ncu --clock-control none -k "regex:${NCU_KERNEL_REGEX:-flash|simt}" -c "${NCU_KERNELS:-6}" \
        --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis \
        --section Occupancy --section MemoryWorkloadAnalysis --section LaunchStats "${stalls[@]}" \
        "$bin/cuda_attention_sweep" "${args[@]}" > "$out/$name.txt" 2>&1 || status=1
      grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|Stall|stalled" "$out/$name.txt" | head -${NCU_LINES:-60}
      ;;
    profile-source)
      # Per-SASS-instruction warp-state samples of one kernel (Nsight Compute's source
      # page, CSV) for scripts/gpu/sass_hotspots.py: which instructions the warps wait on.
      step_args "$@"
      shift ${#args[@]}
      echo "== ncu source counters, cuda_attention_sweep ${args[*]} -> source.csv"
      ncu --clock-control none -k "regex:${NCU_KERNEL_REGEX:-flash_backward}" -c 1 --section SourceCounters \
        --section WarpStateStats --page source --print-source sass --csv \
        "$bin/cuda_attention_sweep" "${args[@]}" > "$out/source.csv" 2> "$out/source.log" || status=1
      wc -l "$out/source.csv"; head -c 600 "$out/source.csv"; echo; tail -3 "$out/source.log"
      ;;
    train-profile)
      here=$(dirname "$0")
      ncu --clock-control none --csv --metrics gpu__time_duration.sum "$bin/longnet" bench train --warmup 1 --steps 1 \
        > "$out/train_profile.csv" 2> "$out/train_profile.log" || status=1
      patterns=${LONGNET_PATTERNS:-5}  # attention launches per layer (the issue-5 model: 5)
      python3 "$here/kernel_times.py" "$out/train_profile.csv" 25 --cycle "$patterns" flash_backward |
        tee "$out/train_profile.txt"
      python3 "$here/kernel_times.py" "$out/train_profile.csv" 0 --cycle "$patterns" flash_forward | tail -n +3 |
        tee -a "$out/train_profile.txt"
      ;;
    memcheck)
      args=("$@")
      shift $#
      compute-sanitizer --tool memcheck --error-exitcode 7 "$bin/${args[0]}" "${args[@]:1}" > "$out/memcheck.txt" 2>&1
      code=$?
      [ "$code" -eq 0 ] || status=1
      echo "memcheck ${args[*]}: exit $code ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/memcheck.txt") clean summaries)"
      ;;
    clocks)
      args=("$@")
      shift $#
      echo "== ${args[*]} (SM clock and power sampled every 50 ms)"
      nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu \
        --format=csv,noheader,nounits -lms 50 > "$out/clocks.csv" 2>&1 &
      sampler=$!
      sleep 0.5
      "$bin/${args[0]}" "${args[@]:1}" 2>&1 | tee -a "$out/exec.txt" | tail -20
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      kill "$sampler" 2>/dev/null
      wait "$sampler" 2>/dev/null
      # The samples while the GPU drew more than 200 W (the program's work, not its set-up).
      python3 - "$out/clocks.csv" <<'PY'
import statistics, sys
busy = []
for line in open(sys.argv[1]):
    fields = [f.strip() for f in line.split(",")]
    try:
        if float(fields[2]) > 200:
            busy.append((int(fields[1]), float(fields[2])))
    except (IndexError, ValueError):
        pass
if not busy:
    print("no samples above 200 W")
else:
    clocks = sorted(c for c, _ in busy)
    print(f"busy samples {len(busy)}: SM clock min {clocks[0]} median {statistics.median(clocks):.0f} "
          f"max {clocks[-1]} MHz, mean power {statistics.mean(p for _, p in busy):.0f} W")
PY
      ;;
    timeline)
      args=("$@")
      shift $#
      echo "== ${args[*]} (CUPTI timeline)"
      if [ ! -f "$bundle/tools/libcupti_timeline.so" ]; then
        echo "timeline: the bundle has no recorder (make it with LONGNET_BUNDLE_TIMELINE=1 scripts/gpu/make_bundle.sh)"
        status=1
        continue
      fi
      CUDA_INJECTION64_PATH="$bundle/tools/libcupti_timeline.so" LONGNET_TIMELINE="$out/timeline.csv" \
        "$bin/${args[0]}" "${args[@]:1}" 2>&1 | tee -a "$out/exec.txt" | tail -20
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      python3 "$(dirname "$0")/timeline.py" "$out/timeline.csv" > "$out/timeline.txt" 2>&1 || status=1
      head -60 "$out/timeline.txt"
      xz -T0 "$out/timeline.csv"
      ;;
    exec)
      args=("$@")
      shift $#
      echo "== ${args[*]}"
      program=${args[0]}
      "$bin/$program" "${args[@]:1}" 2>&1 | tee -a "$out/exec.txt" | tail -40
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      ;;
    callers)
      function=$1
      program=$2
      shift 2
      args=("$@")
      shift $#
      commands=$(mktemp)
      printf '%s\n' "set pagination off" "set print frame-arguments none" "set breakpoint pending on" \
        "break $function" "commands" "silent" "bt 7" "continue" "end" "run" > "$commands"
      cuda-gdb -q -batch -x "$commands" --args "$bin/$program" "${args[@]}" > "$out/callers.txt" 2>&1 || status=1
      echo "== calls of $function: $(grep -c '^#0 ' "$out/callers.txt")"
      # Each stack as one line of its frames 1-6 (function names only), counted.
      awk '/^#0 /{if (s != "") print s; s = ""; next} /^#[1-6] /{sub(/^#[0-9]+ +(0x[0-9a-f]+ in )?/, ""); sub(/\(.*/, ""); s = s " <- " $0}
           END {if (s != "") print s}' "$out/callers.txt" | sort | uniq -c | sort -rn | head -30
      ;;
    *) echo "unknown step $step"; status=2 ;;
  esac
done
exit $status
