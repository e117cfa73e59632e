#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job on its built-in default:
# for now, `longnet info` and the tensors-and-files example.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/install-deps.sh
scripts/build.sh
"$LONGNET_BUILD_DIR"/bin/longnet info
(cd "$LONGNET_BUILD_DIR" && ./examples/example_tensors_and_files)
