"""What the site knows of each run, small enough to keep in its manifest: the index entry and the trend points.

A run is read once (rows.jsonl, run.json, quality.jsonl) when its fingerprint changes; afterwards the
site is rebuilt from these records alone, which is what makes an incremental build fast.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from toolbox.analysis.answer import tokens_per_joule
from toolbox.analysis.identity import IDENTITY_FIELDS, SHAPE_FIELDS, Collected, fmt_value
from toolbox.llamacpp import build_text

SITE_VERSION = 1  # bump when pages change shape: every run page is rebuilt
RUN_FILES = ("run.json", "rows.jsonl", "quality.jsonl")
CONFIG_FIELDS = [f for f in IDENTITY_FIELDS if f not in ("model", "model_file", *SHAPE_FIELDS)]
UNKNOWN_HOST = "unknown host"


def fingerprint(run_dir: Path) -> str:
    """Size and modification time of the files a run's pages are made of (a change to any of them rebuilds the run)."""
    parts = [str(SITE_VERSION)]
    for name in RUN_FILES:
        try:
            st = (run_dir / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    return "|".join(parts)


def _get(d, *path):
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def host_name(meta: dict) -> str:
    return str(_get(meta, "host", "machine", "hostname") or meta.get("hostname") or UNKNOWN_HOST)


def campaign_of(meta: dict) -> str | None:
    """The fleet campaign a run belongs to (runs of one plan on several hosts), where it says."""
    c = meta.get("campaign") or meta.get("campaign_id")
    if isinstance(c, dict):
        c = c.get("id")
    return str(c) if c else None


def build_of(row: dict) -> str:
    return build_text(row.get("build_commit"), row.get("build_number"))


def config_key(ident: dict) -> str:
    return json.dumps({f: ident.get(f) for f in CONFIG_FIELDS if ident.get(f) is not None}, sort_keys=True, default=str)


def config_text(ident: dict) -> str:
    """Every setting of a configuration that the rows record, for tables and titles."""
    return ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(ident.get(f))}" for f in CONFIG_FIELDS if ident.get(f) is not None) or "—"


def trend_id(model: str, test: str, key: str) -> str:
    return hashlib.sha1(f"{model}\0{test}\0{key}".encode()).hexdigest()[:12]


def run_entry(meta: dict, rows: list[dict]) -> dict:
    """One line of the index: host, backends, images, llama.cpp builds, models, status, row counts."""
    images = []
    for backend, img in sorted((meta.get("images") or {}).items()):
        if isinstance(img, dict):
            digest = img.get("repo_digest") or img.get("id") or ""
            images.append(f"{img.get('tag') or backend}" + (f" ({digest[:19]})" if digest else ""))
    ok = [r for r in rows if (r.get("status") or "ok") == "ok"]
    models = sorted(
        {
            str(r.get("model_type") or Path(str(r.get("model_filename"))).name)
            for r in rows
            if r.get("model_type") or r.get("model_filename")
        }
    )
    return {
        "run_id": meta.get("run_id"),
        "started_at": meta.get("started_at") or "",
        "kind": meta.get("kind") or "?",
        "status": meta.get("status") or "?",
        "host": host_name(meta),
        "campaign": campaign_of(meta),
        "backends": sorted({str(r.get("backend") or r.get("backends")) for r in rows if r.get("backend") or r.get("backends")}),
        "images": images,
        "builds": sorted({build_of(r) for r in rows if r.get("build_commit")}),
        "models": models,
        "rows": len(rows),
        "rows_ok": len(ok),
        "rows_failed": len(rows) - len(ok),
    }


def run_points(meta: dict, col: Collected) -> list[dict]:
    """One trend point per result of the run: what it is (model, test, configuration), where and with what, its t/s."""
    host, when = host_name(meta), meta.get("started_at") or ""
    out = []
    for r in col.results:
        if r.summary is None:
            continue
        key = config_key(r.ident)
        model = r.ident.get("model_file") or r.ident.get("model") or "?"
        out.append(
            {
                "trend": trend_id(str(model), r.test, key),
                "model": model,
                "model_type": r.ident.get("model"),
                "test": r.test,
                "kind": r.kind,
                "depth": r.ident.get("n_depth"),
                "config": key,
                "run_id": r.run_id,
                "host": host,
                "time": when,
                "build": build_of(r.row),
                "image": str(r.row.get("image_digest") or r.row.get("image") or "—")[:19],
                "median": r.summary.median,
                "stdev": r.summary.stdev,
                "samples": [round(s, 4) for s in r.summary.samples],
                "not_counted": r.not_counted,
                "tokens_per_j": tokens_per_joule(r.row),
            }
        )
    return out


# A run's points as the manifest keeps them: what a trend is, once per trend, and per point only what varies.
TREND_FIELDS = ("model", "model_type", "test", "kind", "config")
POINT_FIELDS = ("trend", "build", "image", "median", "stdev", "samples", "not_counted", "tokens_per_j")


def pack_points(points: list[dict]) -> dict:
    """The manifest's compact form of run_points(): {'trends': {id: [model, ...]}, 'points': [[trend, build, ...]]}."""
    return {
        "trends": {p["trend"]: [p[f] for f in TREND_FIELDS] for p in points},
        "points": [[p[f] for f in POINT_FIELDS] for p in points],
    }


def unpack_points(packed: dict, entry: dict) -> list[dict]:
    """run_points() again from pack_points() and the run's index entry (run id, host, start time)."""
    trends = {tid: dict(zip(TREND_FIELDS, v)) for tid, v in (packed.get("trends") or {}).items()}
    common = {"run_id": entry["run_id"], "host": entry["host"], "time": entry.get("started_at") or ""}
    return [{**trends[v[0]], **dict(zip(POINT_FIELDS, v)), **common} for v in packed.get("points") or []]


@dataclass(frozen=True)
class PublicFigure:
    model: str
    quant: str
    backend: str
    build: str
    test: str
    ts: float
    date: str
    machine: str
    source_url: str


def norm_model(name: str | None) -> str:
    """A model name for matching published figures: lower case, letters and digits only."""
    return "".join(ch for ch in str(name or "").lower() if ch.isalnum())


def references(path: Path | None = None) -> list[PublicFigure]:
    """The published Strix Halo figures shipped in toolbox/data/references.csv (each with its source URL)."""
    path = path or Path(str(resources.files("toolbox") / "data" / "references.csv"))
    text = path.read_text(encoding="utf-8")
    return [
        PublicFigure(r["model"], r["quant"], r["backend"], r["build"], r["test"], float(r["ts"]), r["date"], r["machine"], r["source_url"])
        for r in csv.DictReader(text.splitlines())
    ]
