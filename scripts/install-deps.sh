#!/usr/bin/env bash
# Installs what longnet needs to build and test on Debian 12 (as root or through sudo).
# Installs nothing that is already there; CUDA is used when nvcc is present but never
# installed by this script.
set -euo pipefail

packages=(cmake ninja-build g++ pkg-config python3
          libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev
          libgtest-dev libgmock-dev libbenchmark-dev libpng-dev
          libopenmpi-dev openmpi-bin
          clang libclang-rt-14-dev
          bible-kjv)  # the public-domain King James text `longnet train` uses by default

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Optional: the Python reference implementation of safetensors for the interop test.
if ! python3 -c "import safetensors, numpy" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check safetensors numpy >/dev/null 2>&1 ||
    echo "install-deps: pip could not install safetensors/numpy; the Python interop test will be skipped"
fi
echo "install-deps: ok"
