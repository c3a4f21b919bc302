#!/bin/sh
# Configure llama.cpp with the pinned flags; refuse flags the pinned llama.cpp does not use.
# usage: configure-llama.sh <src> <build dir> <cmake flags...>
set -eu
src=$1; build=$2; shift 2
mkdir -p "$build"
# CMake's own "Manually-specified variables were not used" warning never fires for GGML_* flags:
# ggml reads every variable to write its package config. So look each flag up in the CMake sources.
unused=""
for f in "$@"; do
  case "$f" in -D*) name=${f#-D}; name=${name%%=*}; name=${name%%:*} ;; *) continue ;; esac
  case "$name" in CMAKE_*) continue ;; esac
  grep -rqw --include=CMakeLists.txt --include='*.cmake' -e "$name" "$src" || unused="$unused $name"
done
if [ -n "$unused" ]; then
  echo "error: CMake did not use some of the pinned flags:$unused (not in the pinned llama.cpp's CMake files): fix cmake_flags in containers/pins.toml" >&2
  exit 3
fi
# ccache for every language the build compiles: HIP units too (clang -x hip), else a one-file change
# recompiles every FlashAttention and matrix kernel of the ROCm build (30 min on 2 cores; 44 s with it).
hip_launcher=""
case " $* " in *" -DGGML_HIP=ON "*) hip_launcher="-DCMAKE_HIP_COMPILER_LAUNCHER=ccache" ;; esac
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache $hip_launcher \
  "$@" > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; echo "error: CMake configure failed" >&2; exit 1; }
cat "$build/configure.log"
# A flag CMake did not use does nothing: a label that lists it would be a lie.
if grep -q "Manually-specified variables were not used" "$build/configure.log"; then
  sed -n '/Manually-specified variables were not used/,/^$/p' "$build/configure.log" >&2
  echo "error: CMake did not use some of the pinned flags (above): fix cmake_flags in containers/pins.toml" >&2
  exit 3
fi
