#!/usr/bin/env bash
# Builds the CUPTI timeline recorder (cupti_timeline.cpp) into $1 (default .device-tools/),
# with CUPTI's headers and library from NVIDIA's nvidia-cuda-cupti wheel for CUDA 13.0 (the
# lent machines' driver stack), fetched from PyPI once into ~/.cache/longnet-cupti; the
# library is copied beside the recorder so a bundle carries a matching one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-.device-tools}
cache=${LONGNET_CUPTI_CACHE:-$HOME/.cache/longnet-cupti}
root="$cache/nvidia/cu13"
if [ ! -f "$root/include/cupti.h" ]; then
  mkdir -p "$cache"
  python3 -m pip download "nvidia-cuda-cupti==13.0.*" --no-deps -d "$cache" -q
  python3 -m zipfile -e "$cache"/nvidia_cuda_cupti-13.0.*.whl "$cache"
fi
mkdir -p "$dest"
cuda_include=$(dirname "$(command -v nvcc)")/../include
g++ -std=c++17 -O2 -shared -fPIC -I"$root/include" -I"$cuda_include" "$here/cupti_timeline.cpp" \
  -o "$dest/libcupti_timeline.so" "$root/lib/libcupti.so.13" -Wl,-rpath,'$ORIGIN'
cp -L "$root/lib/libcupti.so.13" "$dest/"
echo "built $dest/libcupti_timeline.so"
