#!/bin/sh
# Configure (pinned flags, verified) and build llama.cpp's tools into /opt/llama.
# usage: build-llama.sh <src> <build dir> <cmake flags...>
set -eu
src=$1; build=$2; shift 2
configure-llama.sh "$src" "$build" "$@"
targets=${LLAMA_TARGETS:-llama-bench llama-server llama-cli llama-perplexity llama-quantize ggml-rpc-server}
# shellcheck disable=SC2086
cmake --build "$build" --target $targets
mkdir -p /opt/llama/bin /opt/llama/lib
for t in $targets; do cp "$build/bin/$t" /opt/llama/bin/; done
find "$build/bin" -maxdepth 1 -name '*.so*' -exec cp -P {} /opt/llama/lib/ \;
ccache -s || true
