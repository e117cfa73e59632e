#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job on its built-in default:
# `longnet info`, the tensors-and-files example, and a small dilated-attention demo (the
# C++ example, `longnet attn` on the inputs it leaves, and a short `longnet bench
# attention` sweep with its JSON and plot), on the GPU when there is one; then it trains a
# small LongNetLM on the King James Bible for a few minutes and generates a sample.
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

echo "== LongNetLM: train on the King James Bible (a few minutes), then generate and evaluate"
run="$LONGNET_BUILD_DIR/longnet-run"
rm -rf "$run"
# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads starve
# the working ones (measured: 4x more tokens/s with 2 threads and other jobs running).
export OMP_WAIT_POLICY=passive
train=("$longnet" train --out "$run" --steps 600 --warmup 50 --eval-every 100 --checkpoint-every 200
       --log-every 50 --time-limit 300)
# The model's CUDA kernels are new: should training on the GPU fail, the CPU takes over.
if ! "${train[@]}" --device "$device"; then
  [ "$device" != cpu ] || exit 1
  echo "(training on CUDA failed; using the CPU)"
  rm -rf "$run"
  "${train[@]}" --device cpu
  device=cpu
fi
"$longnet" generate --checkpoint "$run/checkpoint.safetensors" --prompt "And God said" --tokens 300 \
  --temperature 0.8 --device "$device"
# Held-out text at the training length and beyond (xPos and the dilated patterns take any).
"$longnet" eval --checkpoint "$run/checkpoint.safetensors" --seq-lens 128,256,512 --device "$device" \
  --json "$run/eval.json" --plot "$run/eval.png"
echo "loss log $run/loss.csv, loss curve $run/loss.png, evaluation $run/eval.json and $run/eval.png"
