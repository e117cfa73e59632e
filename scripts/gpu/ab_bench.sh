#!/usr/bin/env bash
# Runs on the GPU machine: the same cuda_attention_sweep arguments under several bundles
# (and settings), one after another, for an A/B comparison in one device call.
#   scripts/gpu/ab_bench.sh "LABEL=ENV ... BUNDLE" ... -- SWEEP ARGS
# Each variant is "label:bundle[:VAR=value]" (bundle: a bundle archive carried in the repo).
# Example: scripts/gpu/ab_bench.sh base:.device-base/bundle.tar.xz new:.device/bundle.tar.xz \
#            new2:.device/bundle.tar.xz:LONGNET_SM90_FORWARD=two -- --seq 8192,1048576 --repeat 5
set -uo pipefail
variants=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do variants+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
here=$(dirname "$0")
for v in "${variants[@]}"; do
  IFS=: read -r label bundle setting <<<"$v"
  echo "== $label ($bundle${setting:+, $setting}): $*"
  if [ -n "${setting:-}" ]; then
    env "$setting" LONGNET_BUNDLE="$bundle" timeout "${AB_TIMEOUT:-150}" "$here/run.sh" bench "$@" | grep -v "^== cuda_attention_sweep"
  else
    LONGNET_BUNDLE="$bundle" timeout "${AB_TIMEOUT:-150}" "$here/run.sh" bench "$@" | grep -v "^== cuda_attention_sweep"
  fi
done
