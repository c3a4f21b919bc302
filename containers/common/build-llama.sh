#!/bin/sh
# Configure and build llama.cpp's benchmark tools; refuse flags the pinned llama.cpp ignores.
# usage: build-llama.sh <src> <build dir> <cmake flags...>
set -eu
src=$1; build=$2; shift 2
mkdir -p "$build"
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
  "$@" > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; echo "error: CMake configure failed" >&2; exit 1; }
cat "$build/configure.log"
# A flag CMake did not use does nothing: a label that lists it would be a lie.
if grep -q "Manually-specified variables were not used" "$build/configure.log"; then
  sed -n '/Manually-specified variables were not used/,/^$/p;/^ *[A-Z_]*$/p' "$build/configure.log" >&2
  echo "error: CMake did not use some of the pinned flags (above): fix cmake_flags in containers/pins.toml" >&2
  exit 3
fi
cmake --build "$build" --target ${LLAMA_TARGETS:-llama-bench llama-server llama-cli llama-perplexity llama-quantize}
mkdir -p /opt/llama/bin /opt/llama/lib
for t in ${LLAMA_TARGETS:-llama-bench llama-server llama-cli llama-perplexity llama-quantize}; do
  cp "$build/bin/$t" /opt/llama/bin/
done
find "$build/bin" -maxdepth 1 -name '*.so*' -exec cp -P {} /opt/llama/lib/ \;
ccache -s || true
