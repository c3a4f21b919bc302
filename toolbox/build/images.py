"""Images: build the pinned llama.cpp images with BuildKit, verify them, label them, list them.

Tags are derived from a hash of everything that goes into an image (pins, Dockerfile, build scripts,
source tree hash, base image), so an unchanged image is never rebuilt. An image gets its final tag
only after it passed the smoke check and got the labels of what is really installed in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from toolbox.build import side as sd
from toolbox.build.base import BASE_REPO, build_lock, ensure_offline_base, from_registry, online_mirror, online_source
from toolbox.build.base import mkdir as _mkdir
from toolbox.build.failures import build_error
from toolbox.build.pins import LABEL_PREFIX, Pins, build_args, load_pins
from toolbox.engine.client import docker_client, image_or_none
from toolbox.engine.container import ContainerSpec, run_to_end
from toolbox.errors import ToolboxError
from toolbox.settings import Settings

IMAGE_REPO = "strix-toolbox/llama-{backend}"
# Bump when what the build does outside the Dockerfiles changes (the label step): it is part of the inputs.
IMAGE_FORMAT = 2


@dataclass
class BuildResult:
    backend: str
    tag: str
    up_to_date: bool
    seconds: float
    labels: dict = field(default_factory=dict)
    size_bytes: int = 0
    log: Path | None = None
    check_report: Path | None = None  # build --check: the configure + compile output, also when BuildKit cached it


def _hash_files(h, paths: list[Path]) -> None:
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())


def image_pins(b) -> dict:
    """The pins that go into an image: not its description, nor the other variants or what it runs as
    (so adding a variant or a description does not make every image out of date)."""
    dump = b.model_dump(exclude={"description", "variants", "variant_of"})
    return {k: v for k, v in dump.items() if not (k in ("variant", "runtime_apt_suites") and not v)}


def inputs_hash(settings: Settings, pins: Pins, backend: str, base_identity: str, tree: str | None = None) -> str:
    """Everything an image is built from, hashed: a change anywhere gives a new tag. tree: a side variant's tree hash."""
    b = pins.backend(backend)
    h = hashlib.sha256()
    inputs = {"llama": pins.llama_cpp.model_dump(), "backend": image_pins(b), "base": base_identity, "format": IMAGE_FORMAT}
    h.update(json.dumps(inputs | ({"side_tree": tree} if tree else {}), sort_keys=True).encode())
    containers = settings.containers_dir
    _hash_files(h, [containers / b.dockerfile, *sorted((containers / "common").iterdir())])
    return h.hexdigest()


def image_tag(pins: Pins, backend: str, digest: str) -> str:
    """strix-toolbox/llama-vulkan:b11312-<inputs>; a variant's repository carries its name (llama-vulkan-mesa-sid),
    a side variant's its tree (llama-cpu-src-<tree12>:<inputs>)."""
    if sd.split_name(backend)[1]:
        return sd.side_tag(backend, digest)
    return f"{IMAGE_REPO.format(backend=backend.replace(':', '-'))}:b{pins.llama_cpp.build_number}-{digest[:12]}"


# --- build -------------------------------------------------------------------


def build(
    settings: Settings,
    backend: str,
    *,
    offline: bool | None = None,
    source: Path | None = None,
    echo=print,
    force: bool = False,
    check: bool = False,
    stage: str | None = None,
) -> BuildResult:
    """Build (or find up to date) the pinned image for one backend.

    stage="build" builds only that Dockerfile stage, tagged <tag>-<stage> (not verified, not labelled):
    what the build stage weighs beside the runtime image (benchmarks/image_build.py).

    check=True builds only the Dockerfile's `check` stage: configure with the pinned flags (failing
    on unused ones) and compile the backend's check_targets; no image is tagged. This is how CI
    proves the HIP build for gfx1151 on a machine without an AMD GPU, in minutes instead of an hour.
    """
    from toolbox.build import source as src

    pins = load_pins(settings.pins_file)
    if sd.split_name(backend)[1]:
        raise ToolboxError(
            f"{backend!r} is the name of a side variant: it is built from its tree",
            f"invoke build {sd.split_name(backend)[0]} --source PATH",
        )
    b = pins.backend(backend)
    # --source first, before Docker is asked anything: a wrong path is one line even when the image is up to date;
    # a tree that is not the pinned one builds a side variant (toolbox.build.side), named by its tree hash.
    tree, side = src.given_source(source, pins, settings.cache_dir) if source is not None else (None, None)
    offline = settings.offline if offline is None and settings.offline else offline
    client = docker_client()
    _require_buildx()
    t0 = time.monotonic()
    if offline is None:  # not asked either way: online when the base's registry answers (or the base is here)
        offline = b.offline_capable and not _online_possible(client, from_registry(b.base_image, settings.registry), echo)

    if offline:
        if not b.offline_capable:
            alt = [n for n, p in pins.backends.items() if p.offline_capable and n.startswith(backend)]
            raise ToolboxError(
                f"backend {backend!r} builds from {b.base_image}, which needs a registry",
                f"use {alt[0]!r} for an offline build" if alt else "build it online",
            )
        base = ensure_offline_base(settings, pins, client, echo)
        base_identity = client.images.get(base).id
    else:
        base = from_registry(b.base_image, settings.registry)
        base_identity = base

    # Source: context (offline: sdist or --source) or fetched by the build itself at the pinned commit.
    if tree is None and offline:
        tree = src.sdist_source(pins, settings.cache_dir)

    if side is not None:
        backend = sd.side_name(backend, side.tree_sha256)
        echo(
            f"{side.origin} is not the pinned llama.cpp tree (tree hash {side.tree_sha256[:12]}, pinned {side.pinned_sha256[:12]}): "
            f"building the side variant {backend}"
        )
    digest = inputs_hash(settings, pins, backend, base_identity, side.tree_sha256 if side else None)
    job = _BuildJob(settings, pins, backend, client, image_tag(pins, backend, digest), digest, base, tree, offline, echo, t0, side)
    with build_lock(settings, job.tag):  # a second `invoke build` of the same image waits, then finds it up to date
        return _build_locked(job, check=check, force=force, stage=stage)


def _online_possible(client, base: str | None, echo) -> bool:
    from toolbox.build.choose import registry_answers, registry_host

    if not base or image_or_none(client, base) is not None or registry_answers(base):
        return True
    echo(f"no registry answers ({registry_host(base)}): building offline (the base from Debian's archive, llama.cpp from PyPI's sdist)")
    return False


@dataclass
class _BuildJob:
    """What one image build needs: the pins, the tag derived from its inputs, the base and the source tree."""

    settings: Settings
    pins: Pins
    backend: str
    client: object
    tag: str
    digest: str
    base: str
    tree: Path | None  # llama.cpp source in the build context, or None: fetched by the build at the pinned commit
    offline: bool
    echo: object
    t0: float
    side: sd.SideSource | None = None  # llama.cpp from another tree than the pin: a side variant


def _build_locked(job: _BuildJob, *, check: bool, force: bool, stage: str | None = None) -> BuildResult:
    settings, pins, backend, client, tag, digest, base, tree, offline, echo, t0 = (
        job.settings,
        job.pins,
        job.backend,
        job.client,
        job.tag,
        job.digest,
        job.base,
        job.tree,
        job.offline,
        job.echo,
        job.t0,
    )
    b = pins.backend(backend)
    existing = image_or_none(client, tag)
    if existing is not None and not force and not check and not stage:
        return BuildResult(backend, tag, True, time.monotonic() - t0, existing.labels, existing.attrs.get("Size", 0))
    if check and not b.check_targets:
        raise ToolboxError(
            f"backend {backend!r} has no check_targets in containers/pins.toml", "build the full image instead (without --check)"
        )
    args = build_args(pins, backend, base, "context" if tree is not None else "fetch") | (
        sd.side_build_args(job.side.tree_sha256) if job.side else {}
    )
    host_network = False
    if not offline and b.offline_capable:  # Debian's archive as of the pinned snapshot (pins that never rot)
        args["DEBIAN_MIRROR"], host_network = online_mirror(settings, pins)
    if tree is None:  # the online path: llama.cpp fetched by the build, the runtime base from the same registry
        args["LLAMA_REPO"], source_local = online_source(settings, pins)
        host_network = host_network or source_local
        if b.runtime_base_image:
            args["RUNTIME_BASE_IMAGE"] = from_registry(b.runtime_base_image, settings.registry)

    log = _mkdir(settings.cache_dir / "logs") / f"build-{backend}-{digest[:12]}.log"
    unverified = f"{tag}-{stage}" if stage else f"{tag}-unverified"
    with tempfile.TemporaryDirectory(prefix="ctx-", dir=_mkdir(settings.cache_dir / "contexts")) as ctx:
        ctx = Path(ctx)
        shutil.copytree(settings.containers_dir / "common", ctx / "common")
        if tree is not None:
            _link_tree(tree, ctx / "llama.cpp")
        report_dir = ctx / ".check-report"
        cmd = [
            "docker",
            "buildx",
            "build",
            "--progress=plain",
            "--target",
            "check-report" if check else stage or "runtime",
            "-f",
            str(settings.containers_dir / b.dockerfile),
        ]
        cmd += ["--output", f"type=local,dest={report_dir}"] if check else ["-t", unverified]
        cmd += ["--network", "host"] if host_network else []  # a loopback source URL is only reachable from the host
        for k, v in args.items():
            cmd += ["--build-arg", f"{k}={v}"]
        cmd.append(str(ctx))
        what = f"checking {backend} (configure + {len(b.check_targets)} units)" if check else f"building {tag}"
        echo(f"{what} ({'offline' if offline else 'online'}, base {base}); log: {log}")
        with one_build_at_a_time(settings, echo):
            rc = _stream(cmd, log, echo)
        report = log.with_suffix(".check.log")
        if check and rc == 0:
            # the check's own output, exported by the check-report stage even when BuildKit cached the step
            shutil.copyfile(report_dir / "check.log", report)
    if rc != 0:
        _untag(client, unverified)
        raise build_error(log, backend, args.get("DEBIAN_MIRROR"))
    if check:
        return BuildResult(backend, "", False, time.monotonic() - t0, {}, 0, log, report)
    if stage:
        return BuildResult(backend, unverified, False, time.monotonic() - t0, {}, client.images.get(unverified).attrs.get("Size", 0), log)

    try:
        more = sd.side_labels(backend, job.side) if job.side else sd.pinned_labels(pins.llama_cpp.tree_sha256)
        labels = _verify_and_label(client, unverified, tag, backend, echo, _base_digest(client, base), more)
    finally:
        _untag(client, unverified)
    image = client.images.get(tag)
    return BuildResult(backend, tag, False, time.monotonic() - t0, labels, image.attrs.get("Size", 0), log)


@contextlib.contextmanager
def one_build_at_a_time(settings: Settings, echo):
    """A machine-wide lock around the compile: two image builds at once only slow each other down."""
    path = _mkdir(settings.cache_dir / "locks") / "image-build.lock"
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo("another image build is running on this machine: waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _require_buildx() -> None:
    ok = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
    if not ok:
        raise ToolboxError("docker buildx (BuildKit) is missing", "run ./setup.sh, or install Docker's buildx plugin")


def _link_tree(tree: Path, dest: Path) -> None:
    """Hard-link the source into the build context (fast, no copy); fall back to copying across filesystems."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == tree
        return {n for n in names if n == ".git" or n.endswith(".gguf") or (top and n.startswith("build"))}

    try:
        shutil.copytree(tree, dest, copy_function=os.link, ignore=ignore)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(tree, dest, ignore=ignore)


def _stream(cmd: list[str], log: Path, echo) -> int:
    """Run a build, teeing its plain progress to the terminal (live) and the log file."""
    with open(log, "w") as out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            out.write(line)
            if echo is not None:
                sys.stdout.write(line)
        return proc.wait()


def _untag(client, ref: str) -> None:
    import docker

    try:
        client.images.remove(ref, noprune=False)
    except docker.errors.APIError:
        pass


def _base_digest(client, base: str) -> str:
    """The base image as pulled or bootstrapped: its registry digest when it has one, else its image id."""
    image = image_or_none(client, base)
    if image is None:
        return ""
    return (image.attrs.get("RepoDigests") or [image.id])[0]


def _verify_and_label(client, unverified: str, tag: str, backend: str, echo, base_digest: str = "", more: dict | None = None) -> dict:
    """Smoke-check the image, read what is really installed, and give it its final tag with labels."""
    smoke = run_to_end(client, ContainerSpec(unverified, ["llama-bench", "--list-devices"]), timeout_s=300)
    recorded = run_to_end(client, ContainerSpec(unverified, ["cat", "/opt/llama/versions.json"]), timeout_s=60)
    if smoke.exit_code != 0 or recorded.exit_code != 0:
        raise ToolboxError(
            f"the new {backend} image fails its smoke check (llama-bench --list-devices: {smoke.stderr.strip()[-200:]!r})",
            "see the build log; the image was not tagged",
        )
    try:
        versions = json.loads(recorded.stdout)
    except ValueError:
        raise ToolboxError(
            f"the new {backend} image has no readable /opt/llama/versions.json", "see the build log; the image was not tagged"
        ) from None
    out = smoke.stdout + smoke.stderr
    echo(out.strip())
    labels = {f"{LABEL_PREFIX}.installed.{pkg}": ver for pkg, ver in versions.items()}
    labels[f"{LABEL_PREFIX}.image"] = backend  # the image it was built as: vulkan, vulkan:mesa-sid, rocm-debian, cpu@<tree12>
    labels[f"{LABEL_PREFIX}.variant"] = sd.split_name(backend)[0].partition(":")[2] or "default"
    labels.update(more or {})
    if "mesa-vulkan-drivers" in versions:
        labels[f"{LABEL_PREFIX}.mesa-version"] = versions["mesa-vulkan-drivers"]
    rocm = versions.get("rocm-core") or versions.get("librocblas5") or versions.get("libamdhip64-6")
    if rocm:
        labels[f"{LABEL_PREFIX}.rocm-version"] = rocm
    if base_digest:
        labels["org.opencontainers.image.base.digest"] = base_digest
    labels[f"{LABEL_PREFIX}.verified"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    dockerfile = f"FROM {unverified}\nLABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "\n"
    res = subprocess.run(
        ["docker", "buildx", "build", "--progress=quiet", "-t", tag, "-"], input=dockerfile, text=True, capture_output=True
    )
    if res.returncode != 0:
        raise ToolboxError(f"labelling the {backend} image failed: {res.stderr.strip()[:200]}", "check the Docker daemon")
    return client.images.get(tag).labels


# --- finding and listing -----------------------------------------------------


def find_image(settings: Settings, backend: str, client=None) -> str | None:
    """The image built from exactly the current inputs (pins, Dockerfile, scripts; the online base or the
    local offline base), or None: after a pin changes, an older image is never used silently."""
    client = client or docker_client()
    pins = load_pins(settings.pins_file)
    identities = [from_registry(pins.backend(backend).base_image, settings.registry)]
    offline_base = image_or_none(client, f"{BASE_REPO}:debian-{pins.debian.suite}")
    if offline_base is not None:
        identities.append(offline_base.id)
    trees = sd.built_trees(client, backend) if sd.split_name(backend)[1] else [None]  # a side variant: the trees built
    for identity, tree in ((i, t) for i in identities for t in trees):
        tag = image_tag(pins, backend, inputs_hash(settings, pins, backend, identity, tree))
        image = image_or_none(client, tag)
        if image is not None and image.labels.get(f"{LABEL_PREFIX}.verified"):
            return tag
    return None


def find_images(settings, client, backends: list[str], build_missing: bool = False) -> dict[str, str]:
    """backend -> the image built from the current pins (built first when asked); a missing one is one line naming the build."""
    from toolbox.build.choose import build_hint

    images = {}
    for b in backends:
        tag = find_image(settings, b, client)
        if tag is None:
            if not build_missing or sd.split_name(b)[1]:  # a side variant: --build cannot make it, only its tree can
                raise ToolboxError(f"no {b} image built from the current pins", build_hint(b))
            tag = build(settings, b).tag
        images[b] = tag
    return images
