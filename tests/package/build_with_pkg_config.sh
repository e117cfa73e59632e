#!/bin/sh
# Builds the consumer with only pkg-config's flags, then runs it.
set -e
prefix=$1; cxx=$2; source=$3; out=$4
mkdir -p "$out"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib64/pkgconfig"
"$cxx" -O1 "$source" -o "$out/consumer" $(pkg-config --cflags --libs longnet)
"$out/consumer" "$out/out.safetensors"
