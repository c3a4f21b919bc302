"""Side variants: an image built from another llama.cpp tree than the pinned one (`invoke build BACKEND
--source PATH`), so a patched tree or another commit is compared with the pinned build in one matrix.

A side variant is the image it is built as (cpu, vulkan, vulkan:mesa-sid, rocm-debian: same Dockerfile,
same pins) with llama.cpp from PATH. Its name, usable wherever an image name is (a matrix's `images`,
--backend, `invoke images`), is `<image>@<tree12>`: the first 12 hex digits of its tree hash
(containers/common/tree-hash.sh). Its repository carries the tree (strix-toolbox/llama-cpu-src-<tree12>),
its labels say where the tree came from and that it is not the pinned one, and its llama-bench reports
build_commit `tree-<tree12>` and build_number 0 instead of the pinned commit. docs/pins.md, "Side builds".
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.llamacpp import SIDE_BUILD_PREFIX

SIDE_SEP = "@"
TREE_DIGITS = 12  # a side variant's name and tag carry this many hex digits of the tree hash
_TREE12 = re.compile(rf"^[0-9a-f]{{{TREE_DIGITS}}}$")
SIDE_REPO = "strix-toolbox/llama-{image}-src-{tree12}"
LABELS = "org.strix-toolbox"


@dataclass(frozen=True)
class SideSource:
    """A llama.cpp tree given with --source whose hash is not the pinned one."""

    tree: Path  # the unpacked tree, as the build context gets it
    tree_sha256: str
    origin: str  # where it came from: the directory, or the tarball and its sha256
    pinned_sha256: str  # the pinned tree hash it was compared with


def split_name(name: str) -> tuple[str, str | None]:
    """'cpu@3f2a9c1b7d40' -> ('cpu', '3f2a9c1b7d40'); 'vulkan:mesa-sid' -> ('vulkan:mesa-sid', None).

    A malformed tree part is a one-line error naming the form."""
    image, sep, tree12 = name.partition(SIDE_SEP)
    if not sep:
        return name, None
    if not _TREE12.match(tree12):
        raise ToolboxError(
            f"{name!r} is not a side variant name (IMAGE{SIDE_SEP}<the first {TREE_DIGITS} hex digits of its tree hash>)",
            "invoke images lists the side variants built here; build one with invoke build BACKEND --source PATH",
        )
    return image, tree12


def side_name(image: str, tree_sha256: str) -> str:
    """The name a side variant goes by: 'cpu@3f2a9c1b7d40'."""
    return f"{image}{SIDE_SEP}{tree_sha256[:TREE_DIGITS]}"


def side_repo(name: str) -> str:
    """strix-toolbox/llama-cpu-src-3f2a9c1b7d40 (a variant: llama-vulkan-mesa-sid-src-...)."""
    image, tree12 = split_name(name)
    return SIDE_REPO.format(image=image.replace(":", "-"), tree12=tree12)


def side_tag(name: str, digest: str) -> str:
    """strix-toolbox/llama-cpu-src-<tree12>:<inputs12>: no build number, the tree is not a numbered build."""
    return f"{side_repo(name)}:{digest[:12]}"


def build_commit(tree_sha256: str) -> str:
    """What a side build's llama-bench reports as build_commit: tree-<tree12>, never a git commit."""
    return f"{SIDE_BUILD_PREFIX}{tree_sha256[:TREE_DIGITS]}"


def side_build_args(tree_sha256: str) -> dict[str, str]:
    """The llama.cpp build args of a side build (the git stand-in answers with these): no pinned commit, build 0."""
    return {
        "LLAMA_COMMIT": f"{SIDE_BUILD_PREFIX}{tree_sha256}",  # image labels, build.json
        "LLAMA_SHORT_COMMIT": build_commit(tree_sha256),  # llama-bench's build_commit
        "LLAMA_BUILD_NUMBER": "0",  # llama.cpp's own value for a build without git history
        "LLAMA_TREE_SHA256": tree_sha256,
    }


def side_labels(name: str, side: SideSource) -> dict[str, str]:
    """The labels that say what a side image's llama.cpp is: its tree, where it came from, not the pinned tree."""
    return {
        f"{LABELS}.llama-source": "side",
        f"{LABELS}.llama-tree-sha256": side.tree_sha256,
        f"{LABELS}.llama-source-origin": side.origin,
        f"{LABELS}.llama-pinned-tree-sha256": side.pinned_sha256,
        f"{LABELS}.side-of": split_name(name)[0],
    }


def pinned_labels(tree_sha256: str) -> dict[str, str]:
    """The same labels on a pinned image (from this version on): its tree is the pinned one."""
    return {f"{LABELS}.llama-source": "pinned", f"{LABELS}.llama-tree-sha256": tree_sha256}


def origin_of(path: Path, tarball_sha256: str | None) -> str:
    """Where a side tree came from, for its label: the directory (and its git commit, when it is a checkout),
    or the tarball and its sha256."""
    path = Path(path).expanduser().resolve()
    if tarball_sha256:
        return f"{path} (sha256 {tarball_sha256})"
    git = _git_head(path)
    return f"{path}" + (f" (git {git})" if git else "")


def _git_head(path: Path) -> str | None:
    """The checkout's commit, '-dirty' when it has changes; None when it is no git checkout (or git is missing)."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def built_trees(client, name: str) -> list[str]:
    """The full tree hashes of the images built for a side name (read from their labels), newest first."""
    images = client.images.list(name=side_repo(name))
    images.sort(key=lambda i: i.attrs.get("Created", ""), reverse=True)
    tree12 = split_name(name)[1]
    trees = [(i.labels or {}).get(f"{LABELS}.llama-tree-sha256", "") for i in images]
    return list(dict.fromkeys(t for t in trees if t.startswith(tree12)))


def side_hint(name: str) -> str:
    """How to get a side variant that is not built (from the current pins): only its tree builds it."""
    return (
        f"a side variant is built from its tree: invoke build {split_name(name)[0].replace(':', ' --variant ')} --source PATH "
        "(invoke images lists the side variants built here)"
    )
