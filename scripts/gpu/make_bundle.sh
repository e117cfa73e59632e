#!/usr/bin/env bash
# Builds the CUDA test and benchmark programs here (nvcc compiles for sm_90) and packs
# them with the shared libraries they need that a bare GPU machine may lack, into
# .device/ (git-ignored), which the device tool carries: `carry: [".device"]`.
# LONGNET_BUNDLE_DIR picks another (git-ignored) folder, e.g. .device-mine, for a second
# engineer's bundle; run it there with LONGNET_BUNDLE=.device-mine/bundle.tar.xz.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
build=${LONGNET_GPU_BUILD_DIR:-build}
dest=${LONGNET_BUNDLE_DIR:-.device}
staging=$(mktemp -d)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLONGNET_WITH_CUDA=ON >/dev/null
# Programs to carry: the defaults, plus LONGNET_GPU_EXTRA (paths relative to the build
# folder, e.g. "tests/nn/test_nn"); the carried folder must stay under 64 MiB.
# LONGNET_BUNDLE_ONLY replaces the list (e.g. "bench/cuda/cuda_attention_sweep": a ~5 MB
# bundle, so that several commits fit in one carry for an ab_bench.sh comparison).
programs="tests/attention/test_attention tests/core/test_core bench/cuda/cuda_attention_sweep bench/cuda/cuda_model_kernels_sweep bin/longnet ${LONGNET_GPU_EXTRA:-}"
programs=${LONGNET_BUNDLE_ONLY:-$programs}
targets=""
for program in $programs; do targets="$targets $(basename "$program")"; done
targets=${targets/ longnet / longnet_cli }
cmake --build "$build" --parallel "$LONGNET_JOBS" --target $targets
# A miscompile the GPU tests would catch, and a main-loop schedule the benchmarks would, caught
# here first (check_wgmma_fragments.py).
fragment_objects=$(find "$build" -name 'flash_backward_ws_*_sm90a.cu.o' 2>/dev/null)
if [ -n "$fragment_objects" ] && command -v cuobjdump >/dev/null && command -v nvdisasm >/dev/null; then
  python3 scripts/gpu/check_wgmma_fragments.py $fragment_objects
elif [ -n "$fragment_objects" ]; then
  echo "make_bundle: cuobjdump/nvdisasm not on PATH (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm):" \
    "SASS fragment check skipped" >&2
fi
mkdir -p "$staging/bin" "$staging/lib"
for program in $programs; do cp "$build/$program" "$staging/bin/"; done
# Non-system libraries the programs load (resolved here, from every program: a slim bundle's
# first program may not link OpenBLAS), copied under their sonames.
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libgomp.so.1 libcudart.so.13; do
  for program in $programs; do
    path=$(ldd "$staging/bin/$(basename "$program")" | awk -v l="$lib" '$1 == l {print $3}')
    if [ -n "$path" ]; then
      cp -L "$path" "$staging/lib/$lib"
      break
    fi
  done
done
# LONGNET_BUNDLE_TIMELINE=1 adds the CUPTI timeline recorder (for run.sh timeline).
dirs="bin lib"
if [ "${LONGNET_BUNDLE_TIMELINE:-0}" = 1 ]; then
  scripts/gpu/timeline/build.sh "$staging/tools"
  dirs="$dirs tools"
fi
# LONGNET_BUNDLE_KEEP_SYMBOLS=1 keeps the symbols (for run.sh callers; ~8 MB more a program).
[ "${LONGNET_BUNDLE_KEEP_SYMBOLS:-0}" = 1 ] || strip --strip-unneeded "$staging"/bin/* 2>/dev/null || true
# Compressed, the bundle stays far under the 64 MiB the device tool carries; run.sh unpacks it.
tar -C "$staging" -cf - $dirs | xz -T0 -6 > "$staging/bundle.tar.xz"
rm -rf "$dest" && mkdir -p "$dest" && mv "$staging/bundle.tar.xz" "$dest/bundle.tar.xz" && rm -rf "$staging"
du -sh "$dest/bundle.tar.xz"
