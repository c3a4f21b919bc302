"""The README's commands verbatim on a system whose Python is externally managed (PEP 668): a clean clone
in a Debian trixie container (the locally bootstrapped base image), `./setup.sh`, then `invoke` and
`python3 -m pytest` as typed, with the host's Docker socket for setup.sh's Docker checks. This machine
has no registry: the container's apt and pip reach Debian's archive and PyPI. The browser packages
(optional) are skipped; the benchmark itself (`invoke bench --build`) is covered by tests/test_bench.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASE = "strix-toolbox/base:debian-trixie"

SCRIPT = r"""
set -e
apt-get update -qq
apt-get install -y -qq python3 python3-venv ca-certificates git >/dev/null
apt-get install -y -qq docker-cli >/dev/null 2>&1 || apt-get install -y -qq docker.io >/dev/null
python3 -m pip --version >/dev/null 2>&1 || true
cd /repo
./setup.sh
echo "== invoke"
invoke --list
echo "== pytest"
python3 -m pytest --collect-only -q tests/test_layout.py tests/test_cli.py | tail -n 1
python3 -m pytest -q -x tests/test_layout.py -k "import_circle or every_module"
"""


def _host_ca() -> list[str]:
    """Where HTTPS goes through a proxy with its own CA (this CI machine), pip in the container trusts the
    host's CA bundle, as a user behind such a proxy would configure it."""
    bundle = os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT")
    if not bundle or not Path(bundle).is_file():
        return []
    return ["-v", f"{bundle}:/host-ca.crt:ro", "-e", "PIP_CERT=/host-ca.crt"]


@pytest.mark.container
def test_the_readme_commands_work_verbatim_on_debian_trixie(tmp_path):
    if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode != 0:
        pytest.skip(f"{BASE} is not built (invoke build cpu --offline makes it)")
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    p = subprocess.run(
        [
            "docker", "run", "--rm", "--label", "org.strix-toolbox.test=setup",
            "-v", f"{clone}:/repo", "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-e", "TOOLBOX_SETUP_BROWSER=0", "-e", "TOOLBOX_SETUP_REGISTRY=0", *_host_ca(), BASE, "bash", "-c", SCRIPT,
        ],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "externally managed (PEP 668)" in out, "trixie's python3 is externally managed: setup.sh must have used .venv"
    assert "invoke: /usr/local/bin/invoke -> .venv/bin/invoke" in out
    listed = out.split("== invoke", 1)[1].split("== pytest", 1)[0]
    assert "bench" in listed and "report" in listed
    assert " collected" in out.split("== pytest", 1)[1] or "tests collected" in out.split("== pytest", 1)[1]
    assert "passed" in out.split("== pytest", 1)[1]
