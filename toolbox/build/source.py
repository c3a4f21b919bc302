"""llama.cpp source for offline builds: a local directory or tarball, or llama-cpp-python's sdist
from PyPI (which vendors llama.cpp at the pinned commit). The sdist is verified against the pin; a
--source tree is the pinned one or a side tree (toolbox.build.side), told apart by its tree hash."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from toolbox.build.pins import Pins
from toolbox.build.side import SideSource, origin_of
from toolbox.errors import ToolboxError
from toolbox.files import sha256_file

# The files the benchmark tools are built from; containers/common/tree-hash.sh hashes the same set.
TREE_HASH_PATHS = (
    "CMakeLists.txt",
    "cmake",
    "ggml",
    "src",
    "include",
    "common",
    "tools/CMakeLists.txt",
    "tools/llama-bench",
    "tools/perplexity",
    "tools/quantize",
    "tools/cli",
    "tools/rpc",
)
PYPI_SIMPLE = "https://pypi.org/simple/{package}/"


def tree_hash(root: Path) -> str:
    """sha256 over `sha256sum`-style lines of the tracked files, sorted by path as bytes (LC_ALL=C)."""
    root = Path(root)
    files: list[str] = []
    for rel in TREE_HASH_PATHS:
        p = root / rel
        if p.is_file():
            files.append(rel)
        elif p.is_dir():
            files.extend(str(f.relative_to(root)) for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    outer = hashlib.sha256()
    for rel in sorted(files, key=lambda s: s.encode()):
        outer.update(f"{sha256_file(root / rel)}  {rel}\n".encode())
    return outer.hexdigest()


def is_llama_cpp_tree(path: Path) -> bool:
    return (path / "CMakeLists.txt").is_file() and (path / "ggml").is_dir() and (path / "tools" / "llama-bench").is_dir()


def _find_tree(top: Path) -> Path | None:
    """The llama.cpp root inside an unpacked tarball or directory (itself, one level down, or an sdist's vendor dir)."""
    candidates = [top, *sorted(p for p in top.iterdir() if p.is_dir())]
    candidates += [c / "vendor" / "llama.cpp" for c in list(candidates)]
    return next((c for c in candidates if c.is_dir() and is_llama_cpp_tree(c)), None)


def verify_tree(tree: Path, pins: Pins, origin: str) -> Path:
    got = tree_hash(tree)
    want = pins.llama_cpp.tree_sha256
    if got != want:
        raise ToolboxError(
            f"{origin} is not the pinned llama.cpp {pins.llama_cpp.short_commit} (tree hash {got[:12]}, pinned {want[:12]})",
            "pass the pinned source, or change the pin (commit, build_number, tree_sha256 in containers/pins.toml)",
        )
    return tree


def source_tree(path: Path, cache_dir: Path) -> Path:
    """The llama.cpp tree in a directory, a tarball of one or an sdist (unpacked once into the cache), not verified."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ToolboxError(f"--source {path} does not exist", "pass a llama.cpp directory or a .tar.gz of one")
    if path.is_dir():
        tree = _find_tree(path)
        if tree is None:
            raise ToolboxError(
                f"--source {path} is not a llama.cpp tree (no CMakeLists.txt, ggml/, tools/llama-bench/)",
                "pass the llama.cpp checkout's top directory",
            )
        return tree
    if not tarfile.is_tarfile(path):
        raise ToolboxError(f"--source {path} is neither a directory nor a tarball", "pass a llama.cpp directory or a .tar.gz of one")
    tree = _unpack(path, cache_dir / "sources" / f"tar-{sha256_file(path)[:16]}")
    if tree is None:
        raise ToolboxError(f"--source {path} holds no llama.cpp tree", "pass a tarball of a llama.cpp checkout or llama-cpp-python's sdist")
    return tree


def given_source(path: Path, pins: Pins, cache_dir: Path) -> tuple[Path, SideSource | None]:
    """A directory or tarball given with --source (tarballs unpacked once): (its tree, None) when it is the
    pinned tree, else (its tree, the side tree with its hash and where it came from)."""
    tree = source_tree(path, cache_dir)
    got = tree_hash(tree)
    if got == pins.llama_cpp.tree_sha256:
        return tree, None
    path = Path(path).expanduser()
    return tree, SideSource(tree, got, origin_of(path, None if path.is_dir() else sha256_file(path)), pins.llama_cpp.tree_sha256)


def _unpack(tarball: Path, dest: Path) -> Path | None:
    if not dest.exists():
        tmp = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None, prefix=".unpack-"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tf:
            tf.extractall(tmp, filter="tar")
        tmp.rename(dest)
    return _find_tree(dest)


def sdist_source(pins: Pins, cache_dir: Path) -> Path:
    """llama.cpp from llama-cpp-python's sdist on PyPI (downloaded once, hash-checked, unpacked once)."""
    sd = pins.llama_cpp.sdist
    tarball = cache_dir / "downloads" / sd.filename
    if not tarball.exists() or sha256_file(tarball) != sd.sha256:
        _download_sdist(pins, tarball)
    tree = _unpack(tarball, cache_dir / "sources" / f"sdist-{sd.sha256[:16]}")
    if tree is None:
        raise ToolboxError(f"{sd.filename} holds no vendor/llama.cpp", "check [llama_cpp.sdist] in containers/pins.toml")
    return verify_tree(tree, pins, f"{sd.filename} ({sd.subdir})")


def _download_sdist(pins: Pins, dest: Path) -> None:
    sd = pins.llama_cpp.sdist
    index = PYPI_SIMPLE.format(package=sd.package)
    try:
        req = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
        url = next(f["url"] for f in files if f["filename"] == sd.filename)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=300) as resp, open(part, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError, StopIteration, KeyError, ValueError) as exc:
        raise ToolboxError(
            f"cannot download {sd.filename} from PyPI ({exc})",
            "check the network, or pass --source PATH (a llama.cpp directory or tarball)",
        ) from None
    if sha256_file(part) != sd.sha256:
        part.unlink()
        raise ToolboxError(
            f"{sd.filename} from PyPI does not match its pinned sha256", "check [llama_cpp.sdist] sha256 in containers/pins.toml"
        )
    part.rename(dest)
