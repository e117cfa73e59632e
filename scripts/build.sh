#!/usr/bin/env bash
# Configures and builds longnet (Release) into ./build; extra arguments go to CMake.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cmake -S . -B "$LONGNET_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$LONGNET_BUILD_DIR" --parallel "$LONGNET_JOBS"
