"""The pins file (containers/pins.toml): every version the images depend on, typed and validated."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolbox.build.side import split_name
from toolbox.errors import ToolboxError

LABEL_PREFIX = "org.strix-toolbox"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SdistPins(_Frozen):
    package: str
    version: str
    filename: str
    sha256: str
    subdir: str


class LlamaCppPins(_Frozen):
    repo: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    short_commit: str
    build_number: int
    tree_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    sdist: SdistPins


class DebianPins(_Frozen):
    mirror: str
    suite: str
    # snapshot.debian.org timestamp (YYYYMMDDTHHMMSSZ) at which every pinned version was in the archive
    snapshot: str | None = Field(None, pattern=r"^\d{8}T\d{6}Z$")

    def snapshot_mirror(self, url_template: str) -> str | None:
        """The dated archive that keeps every pinned version after the live mirror dropped it: the setting
        debian_snapshot_url (snapshot.debian.org's URL shape, `{snapshot}` for the timestamp) filled in."""
        if not (self.snapshot and url_template):
            return None
        return url_template.replace("{snapshot}", self.snapshot).rstrip("/")


class VariantPins(_Frozen):
    """A named image variant of a backend: what differs from the backend's own pins (containers/pins.toml
    [backends.<name>.variants.<variant>]); packages are merged over the backend's, the rest replaces."""

    description: str = ""
    runtime_apt_suites: list[str] = []  # suites added to the runtime stage only (the compiled tools stay the same)
    runtime_packages: dict[str, str] = {}
    version_packages: list[str] = []


class BackendPins(_Frozen):
    name: str = ""
    description: str = ""
    variant_of: str | None = None  # another backend whose devices this image runs on (rocm-debian: rocm)
    variant: str | None = None  # set on a resolved variant ("mesa-sid"), None for the backend's own image
    runtime_apt_suites: list[str] = []
    variants: dict[str, VariantPins] = {}
    dockerfile: str
    base_image: str
    runtime_base_image: str | None = None
    offline_base: str | None = None
    apt_extra_suites: list[str] = []
    gpu_target: str | None = None
    rocm_version: str | None = None
    cmake_flags: list[str]
    build_packages: dict[str, str] = {}
    runtime_packages: dict[str, str] = {}
    version_packages: list[str] = []
    check_targets: list[str] = []  # object files `build --check` compiles (configure + a few units)

    @property
    def offline_capable(self) -> bool:
        return self.offline_base is not None


class Pins(_Frozen):
    schema_: int = Field(alias="schema")
    llama_cpp: LlamaCppPins
    debian: DebianPins
    backends: dict[str, BackendPins]

    def backend(self, name: str) -> BackendPins:
        """A backend's pins, or a variant's (`vulkan:mesa-sid`): the backend's with the variant merged over them.
        A side variant (`cpu@3f2a9c1b7d40`: llama.cpp from another tree) has the pins of the image it is built as."""
        name = split_name(name)[0]
        base, _, variant = name.partition(":")
        try:
            b = self.backends[base]
        except KeyError:
            raise ToolboxError(f"unknown backend {base!r}", f"choose one of: {', '.join(self.image_names())}") from None
        if not variant:
            return b
        v = b.variants.get(variant)
        if v is None:
            raise ToolboxError(f"backend {base!r} has no variant {variant!r}", f"choose one of: {', '.join(self.image_names())}")
        return b.model_copy(
            update={
                "name": name,
                "variant": variant,
                "description": v.description,
                "runtime_apt_suites": v.runtime_apt_suites,
                "runtime_packages": b.runtime_packages | v.runtime_packages,
                "version_packages": list(dict.fromkeys(b.version_packages + v.version_packages)),
                "variants": {},
            }
        )

    def runs_on(self, name: str) -> str:
        """The backend whose devices an image runs on: vulkan:mesa-sid -> vulkan, rocm-debian -> rocm, cpu@<tree12> -> cpu."""
        return self.backend(name).variant_of or split_name(name)[0].partition(":")[0]

    def check_image_names(self, names: list[str], also: tuple[str, ...] = ()) -> None:
        """A one-line error for a name that is neither an image the pins describe (or a side variant of one:
        `cpu@3f2a9c1b7d40`; whether it is built is found later) nor one of `also`."""
        known = self.image_names()
        for name in names:
            if split_name(name)[0] not in known and name not in also:
                raise ToolboxError(f"unknown backend or image {name!r}", f"choose {', '.join(dict.fromkeys([*also, *known]))}")

    def image_names(self) -> list[str]:
        """Every image the pins describe: each backend and each of its variants (`vulkan:mesa-sid`)."""
        return [n for name, b in self.backends.items() for n in (name, *(f"{name}:{v}" for v in b.variants))]


def load_pins(path: Path) -> Pins:
    """Read and validate the pins file; a broken file is a one-line error naming the field."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ToolboxError(f"pins file not found: {path}", "run from the toolbox checkout or set TOOLBOX_PINS_FILE") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolboxError(f"pins file {path} is not valid TOML ({exc})", "fix the syntax") from None
    for name, backend in data.get("backends", {}).items():
        backend["name"] = name
    try:
        return Pins.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ToolboxError(f"pins file {path}: {where}: {err['msg']}", "fix containers/pins.toml") from None


def image_versions(labels: dict) -> dict:
    """What a row's number depends on in its image beyond the pins: the image name, its variant, Mesa, ROCm, and whose
    llama.cpp tree it is (llama_source pinned or side, llama_tree its hash; images built before these labels have neither)."""
    keys = {
        "image": "image",
        "variant": "variant",
        "mesa": "mesa-version",
        "rocm": "rocm-version",
        "llama_source": "llama-source",
        "llama_tree": "llama-tree-sha256",
    }  # pinned or side, and which tree
    return {k: labels[f"{LABEL_PREFIX}.{v}"] for k, v in keys.items() if labels.get(f"{LABEL_PREFIX}.{v}")}


def apt_spec(packages: dict[str, str]) -> str:
    """`{"cmake": "3.31.6-2"}` -> `"cmake=3.31.6-2"`: what apt-get install takes for a pinned version."""
    return " ".join(f"{name}={version}" if version else name for name, version in packages.items())


def build_args(pins: Pins, backend: str, base_image: str, llama_source: str = "context") -> dict[str, str]:
    """The docker build args for one backend: the only way versions reach the Dockerfiles."""
    b = pins.backend(backend)
    llama = pins.llama_cpp
    args = {
        "BACKEND": backend.partition(":")[0].partition("@")[0],
        "BASE_IMAGE": base_image,
        "LLAMA_SOURCE": llama_source,
        "LLAMA_REPO": llama.repo,
        "LLAMA_COMMIT": llama.commit,
        "LLAMA_SHORT_COMMIT": llama.short_commit,
        "LLAMA_BUILD_NUMBER": str(llama.build_number),
        "LLAMA_TREE_SHA256": llama.tree_sha256,
        "CMAKE_FLAGS": " ".join(b.cmake_flags),
        "BUILD_PACKAGES": apt_spec(b.build_packages),
        "RUNTIME_PACKAGES": apt_spec(b.runtime_packages),
        "VERSION_PACKAGES": " ".join(b.version_packages),
        "GPU_TARGET": b.gpu_target or "",
    }
    if b.apt_extra_suites:
        args["APT_EXTRA_SUITES"] = " ".join(b.apt_extra_suites)
    if b.runtime_apt_suites:
        args["RUNTIME_APT_SUITES"] = " ".join(b.runtime_apt_suites)
    if b.offline_capable:  # a Debian base: apt reads the mirror (the online path: the dated snapshot instead)
        args["DEBIAN_MIRROR"] = pins.debian.mirror
        args["DEBIAN_SUITE"] = pins.debian.suite
    if b.runtime_base_image:
        args["RUNTIME_BASE_IMAGE"] = b.runtime_base_image
    if b.rocm_version:
        args["ROCM_VERSION"] = b.rocm_version
    if b.check_targets:
        args["CHECK_TARGETS"] = " ".join(b.check_targets)
    return args
