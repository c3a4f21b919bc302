#!/bin/sh
# The compose serving service: the pinned image's llama-server with a serving configuration, for
# machines with only Docker. It listens on the host's 127.0.0.1:$SERVE_PORT (compose.yaml); measure it
# with any OpenAI-compatible load generator, or run the full sweep (levels, percentiles, goodput,
# cross-talk check, rows in results/) with `invoke serve-bench` on a machine with the toolbox.
# Environment: MODEL (a file name under /models; default: the only *.gguf there), SERVE_ARGS
# (llama-server flags; default: the `default` serving preset's).
set -eu
if [ -n "${MODEL:-}" ]; then model="/models/$MODEL"; else model=$(ls /models/*.gguf 2>/dev/null | head -n1 || true); fi
[ -n "$model" ] && [ -f "$model" ] || { echo "error: no GGUF model ${MODEL:-} in /models: set MODELS_DIR to a directory of .gguf files (and MODEL to pick one)" >&2; exit 2; }
echo "llama-server on $model with: ${SERVE_ARGS}" >&2
# shellcheck disable=SC2086
exec llama-server -m "$model" --host 0.0.0.0 --port 8080 --metrics --no-webui $SERVE_ARGS
