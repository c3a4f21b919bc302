"""Containers can do only what they must (issue 18): every container the one launcher starts, and the
compose services, run without network, capabilities or new privileges, on a read-only root filesystem,
models read-only, the backend's devices only, never privileged, never as root. Real containers,
inspected with `docker inspect` while they run and probed from inside."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest
import yaml

from toolbox.engine import container as launcher
from toolbox.engine.container import find_containers
from toolbox.engine.devices import DeviceSetup

REPO = Path(__file__).resolve().parent.parent
LABEL = {"org.strix-toolbox.test": "containment"}


def _probe(image: str, script: str, tmp_path: Path, **spec) -> launcher.Finished:
    return launcher.run_to_end(
        docker.from_env(),
        launcher.ContainerSpec(image, ["sh", "-c", script], labels=LABEL, shader_cache=tmp_path / "shader", **spec),
        timeout_s=60,
    )


def _status(text: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(key + ":"))


@pytest.mark.container
def test_a_running_bench_container_has_only_what_it_must(cpu_image, tmp_path):
    """`invoke bench` itself: its llama-bench container, inspected while it runs."""
    client = docker.from_env()
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path / "results")}
    matrix = REPO / "tests" / "data" / "matrices" / "env-groups.toml"
    proc = subprocess.Popen(["invoke", "bench", "--matrix", str(matrix)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        attrs = None
        t0 = time.monotonic()
        while attrs is None and time.monotonic() - t0 < 120 and proc.poll() is None:
            for c in find_containers(client, running=True, label=launcher.RUN_ID_LABEL):
                if (tmp_path / "results" / c.labels[launcher.RUN_ID_LABEL]).is_dir():
                    attrs = c.attrs
                    break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.communicate(timeout=120)
    assert attrs is not None, "no bench container seen"
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["Privileged"] is False
    assert not host.get("Devices"), "the cpu backend gets no device"
    uid, gid = launcher.container_user()
    assert attrs["Config"]["User"] == f"{uid}:{gid}" and uid != 0, "never root inside"
    models = next(m for m in attrs["Mounts"] if m["Destination"] == "/models")
    assert models["RW"] is False, "the model is mounted read-only"
    assert [m for m in attrs["Mounts"] if m["RW"]] == [m for m in attrs["Mounts"] if m["Destination"] == "/cache"], (
        "the shader cache is the only writable mount"
    )


@pytest.mark.container
def test_a_gpu_container_gets_its_devices_and_their_groups_and_nothing_else(cpu_image, tmp_path):
    """The Vulkan/ROCm shape on a machine without a GPU: /dev/null stands in for a render node (a fake)."""
    fake_render = DeviceSetup(devices=["/dev/null"], group_add=[44, 993], target="gpu")
    done = _probe(cpu_image, "id -u; id -G; ls /dev", tmp_path, setup=fake_render)
    assert done.exit_code == 0, done.stderr
    uid, groups, *devs = done.stdout.split("\n")
    assert int(uid) == launcher.container_user()[0] != 0
    assert {"44", "993"} <= set(groups.split()), "the device files' numeric GIDs are the container user's groups"
    assert "null" in devs and "kfd" not in devs and "dri" not in devs


@pytest.mark.container
def test_inside_a_container_there_is_no_network_no_capability_and_no_writable_root(cpu_image, tmp_path):
    script = (
        "tail -n +3 /proc/net/dev | sed 's/^ *\\([^:]*\\):.*/IF \\1/'; grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status; "
        "touch /usr/x 2>&1 || echo ROOT-READ-ONLY; touch /models/x 2>&1 || echo MODELS-READ-ONLY; "
        "touch /tmp/x && echo TMP-WRITABLE; echo HOME=$HOME"
    )
    models = tmp_path / "models"
    models.mkdir(mode=0o777)
    done = _probe(cpu_image, script, tmp_path, mounts={str(models): ("/models", "ro")})
    assert done.exit_code == 0, done.stderr
    out = done.stdout
    interfaces = {line.split()[1] for line in out.splitlines() if line.startswith("IF ")}
    assert interfaces == {"lo"}, f"a benchmark container must have no network interface but loopback: {interfaces}"
    assert int(_status(out, "CapEff"), 16) == 0 and int(_status(out, "CapPrm"), 16) == 0
    assert _status(out, "NoNewPrivs") == "1"
    assert "ROOT-READ-ONLY" in out and "MODELS-READ-ONLY" in out and "TMP-WRITABLE" in out and "HOME=/tmp" in out


@pytest.mark.container
def test_a_benchmark_container_cannot_reach_the_network(cpu_image, tmp_path):
    """A real attempt: getent (the image's libc resolver) cannot resolve a name and there is no route anywhere."""
    done = _probe(cpu_image, "getent hosts deb.debian.org && echo RESOLVED; cat /proc/net/route | wc -l", tmp_path)
    assert "RESOLVED" not in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "1", "only the routing table's header: no route at all"


@pytest.mark.skipif(os.getuid() != 0, reason="only a root invoker's containers run as another user (nobody)")
def test_a_model_nobody_can_read_is_one_line_before_any_container(tmp_path):
    from toolbox.errors import ToolboxError

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    model = private / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ToolboxError, match="cannot be read inside the container.*chmod o\\+x"):
        launcher.model_mount(model)
    private.chmod(0o755)
    assert launcher.model_mount(model) == {str(private): ("/models", "ro")}


def test_compose_services_have_the_same_limits_and_run_as_the_user(tmp_path):
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if "extends" in svc:  # a serving service: its bench service's limits, plus its one port
            svc = compose["services"][svc["extends"]] | svc
        if name.startswith("serve-bench-"):
            assert svc["network_mode"] == "bridge" and all(p.startswith("127.0.0.1:") for p in svc["ports"]), name
        elif name.startswith("rpc-worker-"):  # an RPC worker's one network is the bridge with its published port; no models
            assert "network_mode" not in svc and svc["ports"] == ["${RPC_PORT:-50052}:${RPC_PORT:-50052}"], name
            assert not any(":/models" in v for v in svc["volumes"]), name
        else:
            assert svc["network_mode"] == "none", name
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges" in svc["security_opt"], name
        assert svc["read_only"] is True and any(t.startswith("/tmp") for t in svc["tmpfs"]), name
        assert not svc.get("privileged"), name
        assert svc["user"] == "${TOOLBOX_UID:-1000}:${TOOLBOX_GID:-1000}", name
    from toolbox.run.compose import compose_env
    from toolbox.settings import load_settings

    s = load_settings(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    env = dict(line.split("=", 1) for line in compose_env(s).splitlines() if "=" in line and not line.startswith("#"))
    assert env["TOOLBOX_UID"] == str(os.getuid()) and env["TOOLBOX_GID"] == str(os.getgid())
    assert Path(env["RESULTS_DIR"]).is_dir() and Path(env["SHADER_CACHE_DIR"]).is_dir(), "made by the user, not by Docker as root"
    assert Path(env["RPC_CACHE_DIR"]).is_dir(), "the rpc-worker services' cache, made by the user too"


@pytest.mark.container
def test_compose_writes_results_owned_by_the_user_from_env(cpu_image, tiny_model, tmp_path):
    from test_compose import compose_cmd

    uid, gid = 4242, 4343  # a user who is not root (the test may run as root)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / tiny_model.name)
    out, cache = tmp_path / "results", tmp_path / "shader"
    for d in (out, cache):
        d.mkdir()
        os.chown(d, uid, gid)
    env = os.environ | {
        "CPU_IMAGE": cpu_image,
        "MODELS_DIR": str(models),
        "RESULTS_DIR": str(out),
        "SHADER_CACHE_DIR": str(cache),
        "TOOLBOX_UID": str(uid),
        "TOOLBOX_GID": str(gid),
    }
    p = subprocess.run(
        [*compose_cmd(), "--profile", "cpu", "run", "--rm", "-T", "bench-cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-1000:]
    files = [f for f in out.rglob("*")]
    assert files and all((f.stat().st_uid, f.stat().st_gid) == (uid, gid) for f in files), "results belong to the user"


@pytest.mark.container
def test_a_container_removed_while_the_list_is_read_is_left_out(cpu_image):
    """The list and each container's inspect are two requests; a killed run's container whose removal was
    already asked for can be listed and gone at the inspect (CI, stop 22: a 404 from `invoke results`'s
    clean-up path). A real container, listed, then removed before the inspect."""
    client = docker.from_env()
    label = {launcher.RUN_ID_LABEL: "race-test"}
    c = client.containers.create(cpu_image, ["true"], labels=label | LABEL)
    listing = client.api.containers(all=True, filters={"label": f"{launcher.RUN_ID_LABEL}=race-test"})
    assert [x["Id"] for x in listing] == [c.id]
    c.remove(force=True)
    client.api.containers = lambda **kw: listing  # the daemon answered the list before the removal
    with pytest.raises(docker.errors.NotFound):
        client.containers.list(all=True, filters={"label": f"{launcher.RUN_ID_LABEL}=race-test"})  # docker-py alone
    assert find_containers(client, label=f"{launcher.RUN_ID_LABEL}=race-test") == []
    assert launcher.remove_leftovers(client, "race-test") == 0
