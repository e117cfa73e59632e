#!/usr/bin/env bash
# Runs on the GPU machine: the same cuda_attention_sweep arguments under several bundles
# (and settings), one after another, for an A/B comparison in one device call.
#   scripts/gpu/ab_bench.sh VARIANT... -- SWEEP ARGS
# A variant is "label:bundle[:VAR=value]": a bundle archive carried in the repository (e.g.
# one built from an older commit with LONGNET_BUNDLE_DIR=.device-base) and an optional
# environment setting. Example:
#   scripts/gpu/ab_bench.sh base:.device-base/bundle.tar.xz new:.device/bundle.tar.xz \
#     -- --seq 8192,1048576 --repeat 5
set -uo pipefail
variants=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do variants+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
here=$(dirname "$0")
for v in "${variants[@]}"; do
  IFS=: read -r label bundle setting <<<"$v"
  echo "== $label ($bundle${setting:+, $setting}): $*"
  env ${setting:+"$setting"} LONGNET_BUNDLE="$bundle" timeout "${AB_TIMEOUT:-150}" "$here/run.sh" bench "$@" |
    grep -v "^== cuda_attention_sweep"
done
