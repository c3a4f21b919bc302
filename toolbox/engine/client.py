"""The Docker engine the toolbox talks to: a docker-py client, or a one-line error saying how to get one."""

from __future__ import annotations

from toolbox.errors import ToolboxError


def docker_client():
    """A docker-py client for the local engine (DOCKER_HOST and friends are honoured), checked with a ping."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - docker raises several types for "no daemon"
        raise ToolboxError(
            f"the Docker daemon is not reachable ({type(exc).__name__})",
            "start it (sudo systemctl start docker) and check you may use it (docker info)",
        ) from None


def image_or_none(client, ref: str):
    """The image `ref` names, or None."""
    import docker

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
