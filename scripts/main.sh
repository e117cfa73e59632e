#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job on its built-in default:
# `longnet info`, the tensors-and-files example, and a small dilated-attention demo (the
# C++ example, `longnet attn` on the inputs it leaves, and a short `longnet bench
# attention` sweep with its JSON and plot), on the GPU when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/install-deps.sh
scripts/build.sh
longnet="$LONGNET_BUILD_DIR"/bin/longnet
"$longnet" info
(cd "$LONGNET_BUILD_DIR" && ./examples/example_tensors_and_files)

echo "== dilated attention demo"
device=cpu
if "$longnet" info | grep -q "^CUDA devices: [1-9]"; then device=cuda; fi
demo="$LONGNET_BUILD_DIR/demo"
mkdir -p "$demo"
(cd "$demo" && ../examples/example_dilated_attention)
"$longnet" attn --input "$demo/dilated_attention_inputs.safetensors" --output "$demo/dilated_attention_outputs.safetensors" \
  --segments 128,256,512 --dilations 1,2,4 --causal --backward --repeat 3 --device "$device"
"$longnet" bench attention --device "$device" --seq-lens 2048,4096 --repeat 1 --warmup 1 \
  --json "$demo/bench_attention.json" --plot "$demo/bench_attention.png"
