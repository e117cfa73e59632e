#!/usr/bin/env bash
# Issue 8's runs on a machine with several GPUs, through the device tool with the bundle
# of make_bundle.sh carried (LONGNET_GPU_EXTRA="tests/dist/test_dist tests/dist/test_dist_mpi"):
#   scripts/gpu/multi_gpu.sh STEP P [P ...]
# Steps (one per device call keeps each under its time limit):
#   exact    mpirun -np P test_dist_mpi: the NCCL communicator and sequence-parallel
#            attention (bf16/f16, random configurations) against the fp64 single process
#   weak     longnet bench sequence-parallel at 1M rows per GPU (N = P x 1M), LongNet
#            patterns plus one spanning all GPUs, forward and forward + backward
#   longest  the longest rows per GPU that fit, forward and forward + backward
# Logs and JSON go to $OUT. NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
set -uo pipefail
cd "$(dirname "$0")/../.."
scripts/gpu/run.sh info >/dev/null 2>&1  # unpacks the bundle
bin=/tmp/longnet-device/bin
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="/tmp/longnet-device/lib:${nccl_lib}:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
step=${1:?usage: multi_gpu.sh exact|weak|longest P [P ...]}
shift
gpus=$(nvidia-smi -L | wc -l)
launch() {
  local P=$1
  shift
  mpirun -np "$P" --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE "$@"
}
status=0
for P in "$@"; do
  if [ "$P" -gt "$gpus" ]; then
    echo "P = $P: this machine has $gpus GPUs"
    status=1
    continue
  fi
  case "$step" in
    exact)
      launch "$P" "$bin/test_dist_mpi" --gtest_filter='NcclCommunicator.*:SequenceParallelNccl.*' \
        > "$out/exact_np$P.txt" 2>&1 || status=1
      grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]" "$out/exact_np$P.txt" | sort | uniq -c | head
      ;;
    weak)
      launch "$P" "$bin/longnet" bench sequence-parallel --device cuda --local-seqs 1048576 --repeat 5 --warmup 2 \
        --json "$out/weak_np$P.json" 2>&1 | grep -v done | tee "$out/weak_np$P.txt" || status=1
      ;;
    longest)
      for pass in --forward-only ""; do
        launch "$P" "$bin/longnet" bench sequence-parallel --device cuda --find-max-local $pass --local-seqs 4194304 \
          --repeat 1 --warmup 0 2>&1 | tee -a "$out/longest_np$P.txt" | grep longest || status=1
      done
      ;;
    *)
      echo "unknown step '$step' (exact, weak, longest)"
      exit 2
      ;;
  esac
done
exit $status
