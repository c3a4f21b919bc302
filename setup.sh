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

# The site's browser tests (tests/test_site.py) drive Debian's chromium through chromedriver; they skip without them.
if [ "${TOOLBOX_SETUP_BROWSER:-1}" != 0 ] && ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null; then
  say "installing chromium and chromium-driver (browser tests of invoke site; optional)"
  as_root apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } \
    || say "chromium not installed: the site's browser tests will skip"
fi

# The online-path tests (tests/test_online.py) run Debian's docker-registry on loopback; they skip without it.
if [ "${TOOLBOX_SETUP_REGISTRY:-1}" != 0 ] && ! command -v docker-registry >/dev/null && command -v apt-get >/dev/null; then
  say "installing docker-registry (a local registry for the online-path tests; optional, its service is not used)"
  as_root apt-get install -y -qq docker-registry >/dev/null 2>&1 \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq docker-registry >/dev/null 2>&1; } \
    || say "docker-registry not installed: the online-path tests will skip"
fi

# Python packages: into this Python if it allows it, else (PEP 668 "externally managed" system
# Pythons, e.g. Debian 12+, Ubuntu 24.04, or a Python without pip) into ./.venv.
: > /tmp/toolbox-pip.err
managed=$(python3 -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
if [ "$managed" = 0 ] && python3 -m pip --version >/dev/null 2>&1 && python3 -m pip install -q -e '.[test]' 2>/tmp/toolbox-pip.err; then
  py=python3
elif [ "$managed" = 1 ] || ! python3 -m pip --version >/dev/null 2>&1 || grep -q externally-managed /tmp/toolbox-pip.err; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    as_root apt-get install -y -qq python3-venv >/dev/null
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q -e '.[test]'
  py=.venv/bin/python
  # The README's commands, verbatim: `invoke` from a directory already on PATH (a link to .venv/bin/invoke),
  # and `python3 -m pytest` through a .pth file in this user's site-packages that lets python3 read .venv's
  # packages (nothing is installed into the system's Python; delete the .pth file and the link to undo).
  venv_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  user_site=$(python3 -m site --user-site)
  mkdir -p "$user_site" && printf 'import site; site.addsitedir(%s)\n' "'$venv_site'" > "$user_site/strix-halo-toolbox.pth"
  linked=""
  for dir in "$HOME/.local/bin" /usr/local/bin; do
    case ":$PATH:" in *":$dir:"*) ;; *) continue ;; esac
    if [ -w "$dir" ] || { [ ! -e "$dir" ] && mkdir -p "$dir" 2>/dev/null; }; then
      ln -sf "$PWD/.venv/bin/invoke" "$dir/invoke" && linked=$dir && break
    fi
  done
  why=$([ "$managed" = 1 ] && echo "is externally managed (PEP 668)" || echo "has no pip")
  say "this system's Python $why: installed into .venv; python3 reads it through $user_site/strix-halo-toolbox.pth"
  if [ -n "$linked" ]; then say "invoke: $linked/invoke -> .venv/bin/invoke"; else say "no writable directory on PATH for invoke: run 'source .venv/bin/activate' once"; fi
else
  cat /tmp/toolbox-pip.err >&2; exit 1
fi
say "ready: $(docker buildx version | head -n1); python $($py -c 'import sys; print(sys.version.split()[0])')"
