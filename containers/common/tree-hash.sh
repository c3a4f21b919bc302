#!/bin/sh
# Content hash of the llama.cpp source files that the benchmark binaries are built from.
# toolbox/build/source.py computes the same value in Python; a test proves they agree.
# usage: tree-hash.sh <llama.cpp dir>   -> prints one sha256 hex digest
set -eu
cd "$1"
find CMakeLists.txt cmake ggml src include common tools/CMakeLists.txt tools/llama-bench tools/perplexity tools/quantize tools/cli tools/rpc -type f -print0 \
  | LC_ALL=C sort -z \
  | xargs -0 sha256sum \
  | sha256sum | cut -d' ' -f1
