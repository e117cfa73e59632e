#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test:
#   1. the Release build (CUDA code compiled when nvcc exists; GPU tests skip without a GPU),
#   2. the sanitizer build (AddressSanitizer + UndefinedBehaviorSanitizer, CPU backend),
#   3. the safetensors fuzzer (clang + libFuzzer) for a short run over the malformed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/install-deps.sh

echo "== release build and tests"
scripts/build.sh
ctest --test-dir "$LONGNET_BUILD_DIR" --output-on-failure -j "$LONGNET_JOBS"

echo "== sanitizer build and tests"
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLONGNET_SANITIZE=ON \
      -DLONGNET_WITH_CUDA=OFF -DLONGNET_BUILD_BENCHMARKS=OFF
cmake --build build-sanitize --parallel "$LONGNET_JOBS"
ctest --test-dir build-sanitize --output-on-failure -j "$LONGNET_JOBS"

if command -v clang++ >/dev/null 2>&1; then
  echo "== fuzzing the safetensors reader"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DLONGNET_BUILD_FUZZERS=ON -DLONGNET_WITH_CUDA=OFF -DLONGNET_WITH_MPI=OFF -DLONGNET_BUILD_TESTS=OFF \
      -DLONGNET_BUILD_APPS=OFF -DLONGNET_BUILD_BENCHMARKS=OFF -DLONGNET_BUILD_EXAMPLES=OFF
  cmake --build build-fuzz --parallel "$LONGNET_JOBS" --target fuzz_safetensors  # the reader and what it links
  ctest --test-dir build-fuzz --output-on-failure
fi
echo "== all tests passed"
