"""Model files: identity (size, sha256 cached by path, size and mtime; split models) and discovery.

`resolve_models()` turns what the user passed (files, directories, nothing) into model paths: nothing
means the embedded tiny model (toolbox.model.tiny), written on first use into the cache.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.files import sha256_file, write_json_atomic
from toolbox.model.names import DEFAULT_MODEL_NAME

GGUF_MAGIC = b"GGUF"
_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$")


def models_dir(settings) -> Path:
    return Path(settings.cache_dir) / "models"


def ensure_default_model(settings) -> Path:
    """The embedded default model in settings.cache_dir/models, written on first use."""
    path = models_dir(settings) / DEFAULT_MODEL_NAME
    if not _is_gguf(path):
        from toolbox.model.tiny import write_tiny_llama  # numpy and gguf: only when writing

        write_tiny_llama(path)
    return path


# --------------------------------------------------------------------------------------------------
# identity


def _cached_sha256(path: Path, settings) -> str:
    """sha256 of a file, cached in cache_dir/hashes.json under its absolute path with size and mtime_ns."""
    path = Path(path).resolve()
    st = path.stat()
    cache_file = Path(settings.cache_dir) / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(str(path))
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns and hit.get("sha256"):
        return hit["sha256"]
    digest = sha256_file(path)
    # re-read before writing: another process may have added entries meanwhile
    try:
        fresh = json.loads(cache_file.read_text())
        cache = fresh if isinstance(fresh, dict) else cache
    except (OSError, ValueError):
        pass
    cache[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache_file, cache, indent=None)
    return digest


def split_parts(path: Path) -> list[Path]:
    """All parts of a split model (name-0000k-of-0000N.gguf) given its first part; [path] otherwise."""
    path = Path(path)
    m = _SPLIT_RE.match(path.name)
    if not m:
        return [path]
    total = int(m["total"])
    return [path.with_name(f"{m['stem']}-{k:05d}-of-{total:05d}.gguf") for k in range(1, total + 1)]


def model_identity(path: Path, settings) -> dict:
    """{path, name, size, sha256} of a model; sha256 cached (see _cached_sha256).

    For a split model (path = first part) size is the sum of all parts, sha256 the first part's
    (it holds the metadata and every tensor's shape and offset), and `parts` lists each part.
    """
    path = Path(path).resolve()
    parts = split_parts(path)
    ident = {"path": str(path), "name": path.name, "size": path.stat().st_size, "sha256": _cached_sha256(path, settings)}
    if len(parts) > 1:
        missing = [p.name for p in parts if not p.is_file()]
        if missing:
            raise ToolboxError(f"split model {path.name} is missing parts {', '.join(missing)}", "put all parts in the same directory")
        ident["parts"] = [{"name": p.name, "size": p.stat().st_size, "sha256": _cached_sha256(p, settings)} for p in parts]
        ident["size"] = sum(p["size"] for p in ident["parts"])
    return ident


# --------------------------------------------------------------------------------------------------
# discovery


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _check_file(path: Path) -> Path:
    if not _is_gguf(path):
        raise ToolboxError(f"not a GGUF file: {path}", "pass a .gguf model")
    m = _SPLIT_RE.match(path.name)
    if m and int(m["part"]) != 1:
        first = split_parts(path)[0]
        if not _is_gguf(first):
            raise ToolboxError(
                f"{path} is part {int(m['part'])} of a split model whose first part {first.name} is missing",
                "pass the -00001-of- file, with all parts in the same directory",
            )
        return first
    return path


def resolve_models(paths, settings) -> list[Path]:
    """Model files to benchmark: None/empty -> the embedded default; files checked; directories expanded.

    A directory gives every *.gguf in it (sorted, not recursive), split models by their first part
    only. A later part of a split model given as a file stands for its first part. Paths come back
    absolute (symlinks resolved, so the model's directory is the one mounted into containers),
    without duplicates, in the order given.
    """
    if not paths:
        return [ensure_default_model(settings).resolve()]
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            found = [f for f in sorted(p.glob("*.gguf")) if f.is_file()]
            if not found:
                raise ToolboxError(f"no GGUF files in directory {p}", "pass a directory containing .gguf models, or a .gguf file")
            files = [_check_file(f) for f in found]  # later split parts map to their first part
        elif p.exists():
            files = [_check_file(p)]
        else:
            raise ToolboxError(f"model not found: {p}", "pass an existing .gguf file or a directory of them")
        for f in files:
            f = f.resolve()
            if f not in out:
                out.append(f)
    return out
