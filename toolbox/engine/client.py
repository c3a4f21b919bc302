"""The Docker engine the toolbox talks to: a docker-py client, or a one-line error saying how to get one.

The local engine by default (DOCKER_HOST and friends are honoured); another machine's engine by a
Docker context name (`docker context create strix2 --docker host=ssh://me@strix2`) or an engine URL
(ssh://, tcp://, unix://): RPC workers and fleets reach other Strix Halos that way, with Docker's own
transport, never a protocol of ours.
"""

from __future__ import annotations

from toolbox.errors import ToolboxError


def docker_client(engine: str | None = None, *, timeout: int = 600):
    """A docker-py client for the local engine, or for `engine` (a context name or a URL), checked with a ping."""
    import docker

    where = f"the Docker engine {engine!r}" if engine else "the Docker daemon"
    try:
        if not engine:
            client = docker.from_env(timeout=timeout)
        else:
            base_url, tls = engine_url(engine)
            # ssh:// through the ssh command (the user's keys and ~/.ssh/config), not paramiko
            client = docker.DockerClient(base_url=base_url, tls=tls, timeout=timeout, use_ssh_client=base_url.startswith("ssh://"))
        client.ping()
        return client
    except ToolboxError:
        raise
    except Exception as exc:  # noqa: BLE001 - docker raises several types for "no daemon"
        fix = (
            "check it answers: docker --context NAME info (or DOCKER_HOST=URL docker info)"
            if engine
            else "start it (sudo systemctl start docker) and check you may use it (docker info)"
        )
        raise ToolboxError(f"{where} is not reachable ({type(exc).__name__})", fix) from None


def engine_url(engine: str) -> tuple[str, object]:
    """(base URL, TLS config or False) of a context name or an engine URL.

    Contexts are read from Docker's own store (DOCKER_CONFIG or ~/.docker: contexts/meta/<sha256 of the
    name>/meta.json, TLS files under contexts/tls/), as the docker CLI keeps them: docker-py's reader
    finds nothing when ~/.docker/config.json does not exist.
    """
    if "://" in engine:
        return engine, False
    import hashlib
    import json
    import os
    from pathlib import Path

    base = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "contexts"
    cid = hashlib.sha256(engine.encode()).hexdigest()
    try:
        meta = json.loads((base / "meta" / cid / "meta.json").read_text())
        host = meta["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        host = None
    if engine == "default" and not host:
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host:
        raise ToolboxError(
            f"no Docker context named {engine!r}", "list them with `docker context ls`, or give an engine URL (ssh://user@host)"
        )
    tls_dir = base / "tls" / cid / "docker"
    if (tls_dir / "cert.pem").is_file():
        from docker.tls import TLSConfig

        ca = tls_dir / "ca.pem"
        skip = bool(meta["Endpoints"]["docker"].get("SkipTLSVerify"))
        return host, TLSConfig(
            client_cert=(str(tls_dir / "cert.pem"), str(tls_dir / "key.pem")),
            ca_cert=str(ca) if ca.is_file() else None,
            verify=not skip,
        )
    return host, False


def image_or_none(client, ref: str):
    """The image `ref` names, or None."""
    import docker

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
