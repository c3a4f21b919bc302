#!/usr/bin/env bash
# Set up this host for the toolbox: Python packages, and where they are missing, Docker's BuildKit
# client (buildx) and debootstrap (offline base images). Safe to run again; changes nothing twice.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else say "need root for: $*"; return 1; fi; }

command -v docker >/dev/null || { say "Docker is not installed: install Docker Engine (https://docs.docker.com/engine/install/) and run ./setup.sh again"; exit 1; }

if ! docker buildx version >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    # Debian's docker-buildx package, unpacked as a CLI plugin only (the host's docker packages stay as they are).
    say "installing the docker buildx plugin from Debian trixie"
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial"
    echo "deb http://deb.debian.org/debian trixie main" > "$tmp/sources.list"
    opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::State::Lists=$tmp/lists" -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq
    (cd "$tmp" && apt-get "${opts[@]}" download docker-buildx >/dev/null)
    dpkg -x "$tmp"/docker-buildx_*.deb "$tmp/x"
    as_root install -D -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-buildx" /usr/local/lib/docker/cli-plugins/docker-buildx
  else
    say "docker buildx is missing: install it (https://github.com/docker/buildx#installing) and run ./setup.sh again"; exit 1
  fi
fi

if ! command -v debootstrap >/dev/null; then
  if command -v apt-get >/dev/null; then
    say "installing debootstrap (offline base images)"
    as_root apt-get install -y -qq debootstrap >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq debootstrap >/dev/null; }
  else
    say "debootstrap not found: only needed for --offline builds"
  fi
fi

python3 -m pip install -q -e '.[test]'
say "ready: $(docker buildx version | head -n1); python $(python3 -c 'import sys; print(sys.version.split()[0])')"
