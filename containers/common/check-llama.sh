#!/bin/sh
# Configure llama.cpp with the pinned flags (failing on flags CMake does not use) and compile only
# the named object files: proves a backend's flags and toolchain without a full build.
# usage: check-llama.sh <src> <build dir> "<object file patterns>" <cmake flags...>
set -eu
src=$1; build=$2; patterns=$3; shift 3
configure-llama.sh "$src" "$build" "$@"
targets=""
for p in $patterns; do
  t=$(ninja -C "$build" -t targets all | sed -n "s/^\([^:]*$p[^:]*\.o\): .*/\1/p" | head -n1)
  [ -n "$t" ] || { echo "error: no object file matches '$p'" >&2; exit 1; }
  targets="$targets $t"
done
echo "compiling:$targets"
ninja -C "$build" $targets
echo "check passed: configured with the pinned flags and compiled$(echo "$targets" | wc -w) units"
