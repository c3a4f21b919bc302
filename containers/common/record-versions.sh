#!/bin/sh
# Write what is really installed (from the package manager, not from the pins) to /opt/llama/versions.json.
# usage: record-versions.sh <package>...   (packages that are not installed are left out)
set -eu
out=/opt/llama/versions.json
mkdir -p /opt/llama
{
  printf '{'
  sep=''
  for p in "$@"; do
    v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
    [ -n "$v" ] || continue
    printf '%s"%s": "%s"' "$sep" "$p" "$v"
    sep=', '
  done
  printf '}\n'
} > "$out"
cat "$out"
