#!/bin/sh
# The compose runner: the same matrix groups `invoke bench` runs, for machines with only Docker.
# Leaves results/<run_id>/ with run.json (provenance) and rows.jsonl (llama-bench's own jsonl rows,
# read by `invoke report` / `invoke compare` like any run) and logs/.
# Environment: MATRIX (a preset name), MODEL (a file name under /models; default: every *.gguf),
# HOST_NAME / HOST_ID (machine identity, from `invoke compose-env`), TELEMETRY=0 (no telemetry.jsonl),
# TELEMETRY_IDLE_S (idle baseline before each group, default 3 s; telemetry.sh).
set -eu
matrix=${MATRIX:-default}
args_file=/toolbox/matrices/$matrix.args
[ -f "$args_file" ] || { echo "error: unknown matrix '$matrix': choose one of: $(cd /toolbox/matrices && ls | sed 's/\.args$//' | tr '\n' ' ')" >&2; exit 2; }
if [ -n "${MODEL:-}" ]; then models="/models/$MODEL"; else models=$(ls /models/*.gguf 2>/dev/null || true); fi
[ -n "$models" ] || { echo "error: no GGUF model in /models: set MODELS_DIR to a directory of .gguf files (and MODEL to pick one)" >&2; exit 2; }
for m in $models; do [ -f "$m" ] || { echo "error: model $m not found in MODELS_DIR" >&2; exit 2; }; done

run_id=$(date -u +%Y%m%dT%H%M%SZ)-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
dir=/results/$run_id
mkdir -p "$dir/logs"
esc() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r\t'; }
sysval() { cat "$1" 2>/dev/null | head -n1 || true; }

write_run_json() { # status ended_at
  gpu_vram=$(sysval "$(ls /sys/class/drm/card*/device/mem_info_vram_total 2>/dev/null | head -n1)")
  gpu_gtt=$(sysval "$(ls /sys/class/drm/card*/device/mem_info_gtt_total 2>/dev/null | head -n1)")
  cat > "$dir/run.json.tmp" <<JSON
{
  "schema_version": 1,
  "run_id": "$run_id",
  "kind": "compose",
  "status": "$1",
  "started_at": "$started",
  "ended_at": $2,
  "argv": ["docker", "compose", "run", "bench", "MATRIX=$matrix"],
  "matrix": {"name": "$matrix", "lines": "$(esc "$(grep -v '^#' "$args_file")")"},
  "images": {"$(esc "$(sed -n 's/.*"backend": "\([^"]*\)".*/\1/p' /opt/llama/build.json)")": {"build": $(cat /opt/llama/build.json), "installed": $(cat /opt/llama/versions.json)}},
  "models": [$(for m in $models; do printf '%s{"path": "%s", "name": "%s", "size": %s}' "${sep:-}" "$(esc "$m")" "$(basename "$m")" "$(stat -c %s "$m")"; sep=', '; done)],
  "host": {
    "machine": {"hostname": "$(esc "${HOST_NAME:-unknown}")", "machine_id": "$(esc "${HOST_ID:-}")"},
    "kernel": {"release": "$(esc "$(uname -r)")", "cmdline": "$(esc "$(sysval /proc/cmdline)")"},
    "cpu": {"model": "$(esc "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)")"},
    "memory": {"mem_total_kb": "$(esc "$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' /proc/meminfo)")"},
    "gpu": {"mem_info_vram_total": "$(esc "$gpu_vram")", "mem_info_gtt_total": "$(esc "$gpu_gtt")"}
  }
}
JSON
  mv "$dir/run.json.tmp" "$dir/run.json"
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
write_run_json running null
. /toolbox/telemetry.sh
tel_start
trap tel_stop EXIT
echo "run $run_id: matrix $matrix, $(grep -vc '^#' "$args_file") groups x $(echo "$models" | wc -w) models -> $dir"
status=complete
n=0
for m in $models; do
  grep -v '^#' "$args_file" | while read -r line; do
    n=$((n + 1))
    # leading VAR=value words are environment for this group
    envs=""; rest=""
    for w in $line; do
      case "$w" in [A-Z]*=*) [ -z "$rest" ] && envs="$envs $w" || rest="$rest $w" ;; *) rest="$rest $w" ;; esac
    done
    echo "group $n: ${envs:+$envs }llama-bench -m $m$rest"
    tel_idle "group-$n"
    tel_mark container_start "group-$n"
    # each row is appended the moment it arrives, and (with telemetry) marked on the samples' clock
    # shellcheck disable=SC2086
    { rc=0; env $envs llama-bench -m "$m" $rest 2>> "$dir/logs/group-$n.stderr.log" || rc=$?; echo "$rc" > "$dir/.rc"; } | while IFS= read -r row; do
      printf '%s\n' "$row" >> "$dir/rows.jsonl"
      [ -z "$tel_file" ] || tel_mark row "group-$n" "$(wc -l < "$dir/rows.jsonl")"
    done
    tel_mark container_end "group-$n"
    if [ "$(cat "$dir/.rc")" != 0 ]; then
      echo "group $n failed: see logs/group-$n.stderr.log" >&2
      touch "$dir/logs/failed"
    fi
    rm -f "$dir/.rc"
  done
done
tel_stop
[ -e "$dir/logs/failed" ] && status=failed
write_run_json "$status" "\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
echo "run $run_id: $status; $(wc -l < "$dir/rows.jsonl" 2>/dev/null || echo 0) rows in results/$run_id/rows.jsonl"
