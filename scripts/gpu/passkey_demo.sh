#!/usr/bin/env bash
# Runs on the GPU machine (one device call of about 6 minutes, bundle of make_bundle.sh
# carried in .device/): what a long context buys, measured on the passkey task.
# Two LongNetLMs (d_model 256, 4 layers, 8 heads, bf16) learn the task at SEQ tokens
# (default 1024) for at most MINUTES minutes each (default 2.5): "local", whose patterns
# reach 128 bytes back (segments 64,128 / dilations 1,2: a key further from the question
# than that is out of reach), and "dilated", LongNet's patterns over the whole sequence
# (segments SEQ/8,SEQ/4,SEQ/2,SEQ / dilations 1,2,4,8: every rate divides the 8 heads, so
# every row takes part in every pattern; at dilation 16 with 8 heads half the rows of the
# widest pattern had no head, and a 4,096-token run of 3 minutes learnt nothing,
# docs/benchmarks.md 2026-12-05). Then `longnet eval` of both at SEQ/4..SEQ*4 tokens: loss,
# key digits right and whole keys retrieved against the length. LOCAL and DILATED replace
# the patterns ("--segments ... --dilations ...").
# Usage: scripts/gpu/passkey_demo.sh
# Output: $OUT/passkey_{local,dilated}.{txt,json,png} (evaluation), ..._loss.{csv,png}
# (training). RUN and DEVICE replace run.sh and cuda (a try on the CPU: RUN=a script that
# runs build/bin/PROGRAM ARGS for `exec PROGRAM ARGS`, DEVICE=cpu, SEQ=128 SECONDS_EACH=20).
here=$(dirname "$0")
run=${RUN:-$here/run.sh}
device=${DEVICE:-cuda}
out=${OUT:-/tmp/out}
mkdir -p "$out"
seq=${SEQ:-1024}
seconds=${SECONDS_EACH:-$(awk -v m="${MINUTES:-2.5}" 'BEGIN { print int(m * 60) }')}
local_patterns=${LOCAL:-"--segments 64,128 --dilations 1,2"}
dilated_patterns=${DILATED:-"--segments $((seq / 8)),$((seq / 4)),$((seq / 2)),$seq --dilations 1,2,4,8"}
model=(--d-model 256 --heads 8 --layers 4 --ffn-dim 1024 --batch-size 8 --seq-len "$seq" --lr 2e-3 --min-lr 2e-4
       --warmup 100 --steps 100000 --eval-every 250 --checkpoint-every 1000 --log-every 50 --device "$device")
for variant in local dilated; do
  if [ "$variant" = local ]; then read -ra patterns <<< "$local_patterns"; else
    read -ra patterns <<< "$dilated_patterns"; fi
  work=/tmp/passkey_$variant  # checkpoints stay on the machine; the logs come back
  rm -rf "$work"
  "$run" exec longnet train --dataset passkey "${model[@]}" "${patterns[@]}" --time-limit "$seconds" \
    --out "$work" > "$out/passkey_${variant}_train.txt" 2>&1
  cp "$work/loss.csv" "$out/passkey_${variant}_loss.csv" 2>/dev/null
  cp "$work/loss.png" "$out/passkey_${variant}_loss.png" 2>/dev/null
  echo "$variant: $(grep -E 'validation loss' "$out/passkey_${variant}_train.txt" | tail -1)"
  "$run" exec longnet eval --checkpoint "$work/checkpoint.safetensors" --dataset passkey \
    --seq-lens "$((seq / 4)),$((seq / 2)),$seq,$((seq * 2)),$((seq * 4))" --batches 8 --device "$device" \
    --json "$out/passkey_$variant.json" --plot "$out/passkey_$variant.png" > "$out/passkey_$variant.txt" 2>&1
  cat "$out/passkey_$variant.txt"
done
