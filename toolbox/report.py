"""Reports: a rich table in the terminal and, beside the run, report.md, report.html and PNG plots.

Everything is derived from rows.jsonl and run.json (via toolbox.results); nothing here measures.
Rows with the same identity in one run (a resumed case, a repeated group) are pooled by their raw
samples, never averaged as averages. Columns whose value never varies are hidden from the tables
and stated once in the header. Old imported logs lack most fields: every field is optional.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from toolbox import roofline as rf
from toolbox import stats
from toolbox.errors import ToolboxError

# Fields that make two results the same test (the idea of compare-llama-bench.py's key properties),
# with the short header used in tables. `model` (llama.cpp's model type, present in every llama-bench
# format), `model_file` (the file's base name) and `env` are derived; see identity().
IDENTITY_FIELDS: dict[str, str] = {
    "backend": "backend", "backends": "ggml backends", "model": "model", "model_file": "model file", "env": "env",
    "n_threads": "threads", "n_gpu_layers": "ngl", "n_cpu_moe": "cpu moe", "n_batch": "batch",
    "n_ubatch": "ubatch", "type_k": "K", "type_v": "V", "flash_attn": "fa", "load_mode": "load",
    "split_mode": "split", "main_gpu": "main gpu", "no_kv_offload": "nkvo", "tensor_split": "ts",
    "tensor_buft_overrides": "ot", "embeddings": "embd", "no_op_offload": "nopo", "cpu_mask": "cpu mask",
    "cpu_strict": "cpu strict", "poll": "poll", "no_host": "no host", "repack": "repack",
    "n_prompt": "n_prompt", "n_gen": "n_gen", "n_depth": "depth",
}
SHAPE_FIELDS = ("n_prompt", "n_gen", "n_depth")  # shown through the test name (pp512@d4096)
FA_NAMES = {"1": "on", "true": "on", "on": "on", "enabled": "on", "0": "off", "false": "off", "off": "off",
            "disabled": "off", "-1": "auto", "auto": "auto"}
KIND_TITLES = {"pp": "Prompt processing", "tg": "Generation", "pp+tg": "Prompt + generation", None: "Other"}
BOOL_FIELDS = ("no_kv_offload", "embeddings", "cpu_strict", "no_host", "repack", "no_op_offload")
INT_FIELDS = ("n_threads", "n_gpu_layers", "n_cpu_moe", "n_batch", "n_ubatch", "main_gpu", "poll",
              "n_prompt", "n_gen", "n_depth")
HOST_PARAM_PREFIXES = ("iommu", "amd_iommu", "ttm.", "amdttm.", "amdgpu.", "transparent_hugepage", "mitigations")


# --------------------------------------------------------------------------------------------------
# normalising rows


def _norm(field_name: str, v):
    """One spelling per value, so that old and new llama-bench outputs (bool vs int fa, "1" vs 1) join."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    if field_name == "flash_attn":
        return FA_NAMES.get(str(v).strip().lower(), str(v))
    if field_name in BOOL_FIELDS:
        s = str(v).strip().lower()
        return 1 if s in ("1", "true", "yes", "on") else 0 if s in ("0", "false", "no", "off") else s
    if field_name in INT_FIELDS:
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return str(v)
    if field_name in ("type_k", "type_v"):
        return str(v).strip().lower()
    return v if isinstance(v, (int, float)) else str(v)


def model_name(row: dict) -> str | None:
    """The model as a person names it: the file name, else llama.cpp's model type (for messages and MoE hints)."""
    fname = row.get("model_filename")
    if fname:
        return PurePosixPath(str(fname)).name
    return row.get("model_type") or None


def identity(row: dict) -> dict:
    """The normalised identity of a row: IDENTITY_FIELDS, None where the row does not say."""
    out = {}
    for f in IDENTITY_FIELDS:
        if f == "model":
            out[f] = row.get("model_type") or None
        elif f == "model_file":
            fname = row.get("model_filename")
            out[f] = PurePosixPath(str(fname)).name if fname else None
        elif f == "env":
            env = row.get("env") or {}
            out[f] = " ".join(f"{k}={v}" for k, v in sorted(env.items())) or None if isinstance(env, dict) else str(env)
        else:
            out[f] = _norm(f, row.get(f))
    return out


def test_name(row: dict) -> str:
    """llama-bench's test name: pp512, tg128, pp512+tg128, with @d<depth> when the depth is not 0."""
    from toolbox.llama_bench import test_name as lb_test_name

    return lb_test_name(row.get("n_prompt"), row.get("n_gen"), row.get("n_depth"))


# --------------------------------------------------------------------------------------------------
# results: rows pooled per identity, with statistics and roofline figures


@dataclass
class Result:
    run_id: str
    ident: dict
    test: str
    kind: str | None
    row: dict                         # the first row of the pool (for model size, build, ...)
    summary: stats.Summary | None
    roofline: rf.Roofline | None = None
    quality: dict | None = None
    device_ok: bool | None = None
    n_rows: int = 1

    @property
    def verdict(self) -> str | None:
        return (self.quality or {}).get("verdict") if isinstance(self.quality, dict) else None


@dataclass
class Collected:
    results: list[Result]
    failures: list[dict]              # failed / timeout / skipped rows with no ok row of the same identity
    metas: list[dict]
    hidden: dict = field(default_factory=dict)   # identity field -> the one value it has everywhere
    shown: list[str] = field(default_factory=list)


def _key(run_id: str, ident: dict) -> tuple:
    return (run_id, *(json.dumps(ident[f], sort_keys=True, default=str) for f in IDENTITY_FIELDS))


def collect(runs: list[tuple[dict, list[dict]]], *, unstable_spread: float = 0.05, peak_bandwidth_gbs: float = 256.0,
            peak_tflops: float = 59.4, active_hint: dict | None = None) -> Collected:
    """Pool the rows of each run by identity, summarise samples, compute roofline figures."""
    pools: dict[tuple, list[dict]] = {}
    failed: dict[tuple, dict] = {}
    metas = []
    for meta, rows in runs:
        meta = meta or {}
        metas.append(meta)
        run_id = meta.get("run_id") or "?"
        for row in rows:
            rid = row.get("run_id") or run_id
            k = _key(rid, identity(row))
            if (row.get("status") or "ok") == "ok":
                pools.setdefault(k, []).append(row)
            else:
                failed.setdefault(k, row)
    results = []
    model_entries = {m.get("run_id"): m.get("models") for m in metas}
    for k, rows in pools.items():
        first = rows[0]
        samples = [s for r in rows for s in (r.get("samples_ts") or [])]
        if samples:
            summ = stats.summarize(samples, unstable_spread=unstable_spread)
        elif len(rows) == 1:
            summ = stats.summarize_row(first, unstable_spread)
        else:  # several rows without samples: the only fair pool is of their means
            summ = stats.summarize([r.get("avg_ts") for r in rows], unstable_spread=unstable_spread)
        hint = active_hint if active_hint else rf.model_hint(first, model_entries.get(k[0]))
        res = Result(k[0], identity(first), test_name(first), rf.test_kind(first), first, summ, n_rows=len(rows))
        res.roofline = rf.roofline(first, summ.median if summ else None, peak_bandwidth_gbs=peak_bandwidth_gbs,
                                   peak_tflops=peak_tflops, hint=hint)
        qualities = [r.get("quality") for r in rows if isinstance(r.get("quality"), dict)]
        # the worst verdict of the pool counts: one broken output makes the configuration broken
        order = {"broken": 0, "degraded": 1, "same": 2}
        res.quality = min(qualities, key=lambda q: order.get(q.get("verdict"), 3)) if qualities else None
        oks = [r.get("device_ok") for r in rows]
        res.device_ok = False if False in oks else True if oks and all(o is True for o in oks) else None
        results.append(res)
    failures = [row for k, row in failed.items() if k not in pools]
    results.sort(key=_sort_key)
    col = Collected(results, failures, metas)
    # decide on the successful results (failed rows lack most fields); a run of failures only uses those
    col.shown, col.hidden = visible_fields([r.ident for r in results] or [identity(r) for r in failures])
    return col


def _sort_key(r: Result):
    def s(v):
        return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
    i = r.ident
    return (r.run_id, s(i["backend"]), s(i["model"]), {"pp": 0, "tg": 1}.get(r.kind, 2), s(i["n_prompt"]), s(i["n_gen"]),
            s(i["n_depth"]), _type_order(i["type_k"] or ""), _type_order(i["type_v"] or ""),
            *(s(i[f]) for f in IDENTITY_FIELDS if f not in ("backend", "model", "type_k", "type_v", *SHAPE_FIELDS)))


def visible_fields(idents: list[dict]) -> tuple[list[str], dict]:
    """(fields whose value varies, {field: value} of those that never vary and are known)."""
    shown, hidden = [], {}
    for f in IDENTITY_FIELDS:
        if f in SHAPE_FIELDS:
            continue
        values = {json.dumps(i.get(f), default=str) for i in idents}
        if len(values) > 1:
            shown.append(f)
        elif idents and idents[0].get(f) is not None:
            hidden[f] = idents[0].get(f)
    # the llama.cpp backend string follows from the toolbox backend (cpu -> CPU): don't show it twice
    if "backend" in shown and "backends" in shown:
        pairs = {(json.dumps(i.get("backend"), default=str), json.dumps(i.get("backends"), default=str)) for i in idents}
        if len(pairs) == len({p[0] for p in pairs}):
            shown.remove("backends")
    return shown, hidden


# --------------------------------------------------------------------------------------------------
# provenance


def _get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict):
            return default
        d = d.get(p)
    return default if d is None else d


def provenance(meta: dict, rows: list[dict]) -> list[tuple[str, str]]:
    """(label, value) pairs that head a report: what ran, where, with which versions. Missing fields are skipped."""
    meta = meta or {}
    out: list[tuple[str, str]] = []

    def add(label, value):
        if value not in (None, "", [], {}):
            out.append((label, str(value)))

    add("run", f"{meta.get('run_id', '?')} ({meta.get('kind', '?')}, {meta.get('status', '?')})")
    add("time", " → ".join(str(t) for t in (meta.get("started_at"), meta.get("ended_at")) if t))
    add("matrix", _get(meta, "matrix", "name"))
    commits = sorted({f"{r.get('build_commit')}" + (f" (b{r.get('build_number')})" if r.get("build_number") else "")
                      for r in rows if r.get("build_commit")})
    if not commits:
        commits = sorted({f"{_get(i, 'labels', 'org.strix-toolbox.llama-commit', default='')[:12]}" for i in (meta.get("images") or {}).values()
                          if isinstance(i, dict)} - {""})
    add("llama.cpp", ", ".join(commits))
    for backend, img in sorted((meta.get("images") or {}).items()):
        if not isinstance(img, dict):
            continue
        labels = img.get("labels") or {}
        digest = img.get("repo_digest") or img.get("id") or ""
        parts = [img.get("tag") or "", digest[:19] if digest else ""]
        for lab, name in (("org.strix-toolbox.rocm-version", "ROCm"), ("org.strix-toolbox.mesa-version", "Mesa")):
            if labels.get(lab):
                parts.append(f"{name} {labels[lab]}")
        add(f"image {backend}", ", ".join(p for p in parts if p))
    gpus = sorted({r.get("gpu_info") for r in rows if r.get("gpu_info")})
    add("gpu (llama-bench)", "; ".join(gpus))
    host = meta.get("host") or {}
    add("host", _get(host, "machine", "hostname"))
    add("cpu", _get(host, "cpu", "model") or (sorted({r.get("cpu_info") for r in rows if r.get("cpu_info")}) or [None])[0])
    mem = _get(host, "memory", "mem_total_bytes")
    add("memory", f"{mem / 2**30:.0f} GiB" if isinstance(mem, (int, float)) else None)
    add("gfx target", _get(host, "gpu", "devices", "gfx_target"))
    add("kernel", _get(host, "kernel", "release"))
    params = _get(host, "kernel", "params") or {}
    add("kernel parameters", " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k.startswith(HOST_PARAM_PREFIXES)))
    add("IOMMU", _get(host, "iommu", "mode"))
    add("tuned profile", _get(host, "power", "tuned"))
    add("cpu governor", _get(host, "cpu", "governor"))
    add("transparent hugepages", host.get("transparent_hugepages") if isinstance(host.get("transparent_hugepages"), str) else None)
    add("linux-firmware", _get(host, "firmware", "linux_firmware_date"))
    add("MES firmware", _get(host, "firmware", "mes"))
    tb = meta.get("toolbox") or {}
    if tb:
        add("toolbox", f"{tb.get('version', '?')} ({tb.get('git_commit') or '?'}{', dirty' if tb.get('git_dirty') else ''})")
    for s in meta.get("sources") or []:
        if isinstance(s, dict):
            add("imported from", f"{s.get('path')} ({s.get('format', '?')}, {s.get('rows', '?')} rows)")
    return out


# --------------------------------------------------------------------------------------------------
# tables


def fmt_value(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def fmt_ts(s: stats.Summary | None) -> str:
    if s is None:
        return "—"
    digits = 2 if s.median < 100 else 1
    spread = f" ± {s.spread:.1%}" if s.spread is not None else ""
    return f"{s.median:.{digits}f}{spread}"


def fmt_share(share: float) -> str:
    """A share of the peak in percent, with enough digits for tiny models on a CPU (0.0339%)."""
    pct = share * 100
    return f"{pct:.1f}%" if pct >= 10 else f"{pct:.2g}%" if pct >= 0.01 else f"{pct:.1e}%"


def flags(r: Result) -> list[str]:
    out = []
    if r.summary and r.summary.unstable:
        out.append("unstable")
    elif r.summary and r.summary.n is not None and r.summary.n < 3:
        out.append(f"n={r.summary.n}")
    if r.summary and r.summary.n is None:
        out.append("no samples")
    if r.device_ok is False:
        out.append("WRONG DEVICE")
    if r.roofline and r.roofline.estimated:
        out.append("MoE share estimated")
    return out


def table_rows(col: Collected, kind: str | None) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one kind's table (pp / tg / pp+tg)."""
    results = [r for r in col.results if r.kind == kind]
    has_quality = any(r.quality for r in col.results)
    multi_run = len({r.run_id for r in col.results}) > 1
    header = (["run"] if multi_run else []) + [IDENTITY_FIELDS[f] for f in col.shown] + ["test", "t/s (median ± spread)", "n"]
    if has_quality:
        header.append("quality")
    if kind == "tg":
        header += ["GB/s", "% of peak BW"]
    elif kind == "pp":
        header += ["TFLOP/s", "% of peak FLOPs"]
    header.append("notes")
    cells = []
    for r in results:
        c = ([r.run_id] if multi_run else []) + [fmt_value(r.ident.get(f)) for f in col.shown]
        c += [r.test, fmt_ts(r.summary), fmt_value(r.summary.n if r.summary else None)]
        if has_quality:
            c.append(r.verdict or "—")
        if kind in ("tg", "pp"):
            if r.roofline:
                c += [f"{r.roofline.value:.3g}", fmt_share(r.roofline.share) + ("~" if r.roofline.estimated else "")]
            else:
                c += ["—", "—"]
        c.append(", ".join(flags(r)))
        cells.append(c)
    return header, cells


def kinds_present(col: Collected) -> list:
    seen = []
    for k in ("pp", "tg", "pp+tg", None):
        if any(r.kind == k for r in col.results):
            seen.append(k)
    return seen


def md_table(header: list[str], cells: list[list[str]]) -> str:
    def esc(s):
        return str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---:" if _numeric_col(cells, i) else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _numeric_col(cells, i) -> bool:
    vals = [row[i] for row in cells if row[i] not in ("—", "")]
    def isnum(s):
        try:
            float(str(s).split(" ")[0].rstrip("%~"))
            return True
        except ValueError:
            return False
    return bool(vals) and all(isnum(v) for v in vals)


def rich_table(header: list[str], cells: list[list[str]], title: str | None = None):
    from rich.table import Table

    t = Table(*header, title=title, title_justify="left")
    for row in cells:
        style = "red" if any(w in row[-1] for w in ("unstable", "WRONG DEVICE")) or "broken" in row else None
        t.add_row(*row, style=style)
    return t


# --------------------------------------------------------------------------------------------------
# warnings, explanations


def warnings_for(col: Collected) -> list[str]:
    """Per-result warnings (unstable, wrong device, broken output); 'few samples' is said once for all."""
    out, few = [], {}
    for r in col.results:
        ctx = ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(r.ident.get(f))}" for f in col.shown)
        where = f"{r.test} ({ctx})" if ctx else r.test
        if r.run_id and len({x.run_id for x in col.results}) > 1:
            where = f"{r.run_id}: {where}"
        if r.summary and r.summary.unstable:
            out.append(f"{where}: {r.summary.warning}")
        elif r.summary and r.summary.n is not None and r.summary.n < 3:
            few[r.summary.n] = few.get(r.summary.n, 0) + 1
        if r.device_ok is False:
            out.append(f"{where}: ran on a different device than intended (gpu_info/devices); the number is not the backend's")
        if r.verdict == "broken":
            out.append(f"{where}: output is wrong (quality check: broken); its speed means nothing")
    for n, count in sorted(few.items()):
        out.append(f"{count} result{'s' if count > 1 else ''} with only {n} sample{'s' if n > 1 else ''}: "
                   "the spread is not meaningful; use more repetitions (-r 3 or more)")
    return out


def explanations(peak_bandwidth_gbs: float, peak_tflops: float, unstable_spread: float) -> list[str]:
    return [
        "t/s is the median of llama-bench's per-repetition samples (samples_ts); ± is the spread, the sample "
        "standard deviation divided by the mean. Rows of the same test in one run are pooled by their samples.",
        f"A result is flagged unstable when its spread exceeds {unstable_spread:.0%} of the mean "
        "(setting unstable_spread): use more repetitions, check thermals.",
        f"tg: {rf.FORMULAS['tg']}. Peak bandwidth: {peak_bandwidth_gbs:g} GB/s (setting peak_bandwidth_gbs; "
        "256 GB/s is Strix Halo's theoretical LPDDR5X-8000 figure, record your measured peak to compare against it).",
        f"pp: {rf.FORMULAS['pp']}. Peak: {peak_tflops:g} TFLOP/s (setting peak_tflops).",
        f"Both are {rf.FORMULAS['bounds']}; MoE models count only the active experts (a ~ marks an estimate from the model type).",
    ]


# --------------------------------------------------------------------------------------------------
# plots


@dataclass
class Plot:
    name: str        # file name, e.g. depth.png
    title: str
    png: bytes


def _series_label(ident: dict, fields: list[str]) -> str:
    return ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(ident.get(f))}" for f in fields) or "all"


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def plot_depth(col: Collected) -> Plot | None:
    """t/s against context depth: one panel per backend and test kind, one line per KV type (and other varying settings)."""
    res = [r for r in col.results if r.kind in ("pp", "tg") and r.summary and isinstance(r.ident.get("n_depth"), int)]
    if len({r.ident["n_depth"] for r in res}) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_fields = [f for f in ("backend", "model") if f in col.shown] or []
    series_fields = [f for f in col.shown if f not in panel_fields]
    multi_run = len({r.run_id for r in res}) > 1
    panels = sorted({(tuple(fmt_value(r.ident.get(f)) for f in panel_fields), r.kind) for r in res},
                    key=lambda p: (p[0], p[1]))
    rows_keys = sorted({p[0] for p in panels})
    kinds = [k for k in ("pp", "tg") if any(p[1] == k for p in panels)]
    fig, axes = plt.subplots(len(rows_keys), len(kinds), figsize=(6.5 * len(kinds), 4.2 * len(rows_keys)), squeeze=False,
                             layout="constrained")
    for i, pk in enumerate(rows_keys):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            sel = [r for r in res if r.kind == kind and tuple(fmt_value(r.ident.get(f)) for f in panel_fields) == pk]
            series: dict[str, list[Result]] = {}
            for r in sel:
                label = _series_label(r.ident, series_fields)
                if multi_run:
                    label = f"{r.run_id}: {label}"
                # the test shape without depth (pp512, tg128) also separates lines
                label = r.test.split("@")[0] + (f" {label}" if series_fields or multi_run else "")
                series.setdefault(label, []).append(r)
            for label, rs in sorted(series.items()):
                rs.sort(key=lambda r: r.ident["n_depth"])
                xs = [r.ident["n_depth"] for r in rs]
                ys = [r.summary.median for r in rs]
                err = [r.summary.stdev or 0 for r in rs]
                ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, label=label)
            where = ", ".join(f"{IDENTITY_FIELDS[f]}={v}" for f, v in zip(panel_fields, pk))
            ax.set_title(f"{KIND_TITLES[kind]}{' — ' + where if where else ''}", fontsize=10)
            ax.set_xlabel("context depth (tokens)")
            ax.set_ylabel("t/s")
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            if sel:
                ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.suptitle("t/s against context depth (error bars: standard deviation)", fontsize=11)
    return Plot("depth.png", "t/s against context depth", _png(fig))


def plot_kv(col: Collected) -> Plot | None:
    """A K x V heatmap of t/s per test (columns) and per combination of the other varying settings (rows)."""
    res = [r for r in col.results if r.summary and r.ident.get("type_k") and r.ident.get("type_v")]
    ks = sorted({r.ident["type_k"] for r in res}, key=_type_order)
    vs = sorted({r.ident["type_v"] for r in res}, key=_type_order)
    if len(ks) < 2 and len(vs) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    multi_run = len({r.run_id for r in res}) > 1
    row_fields = [f for f in col.shown if f not in ("type_k", "type_v")]

    def row_key(r):
        return ((r.run_id,) if multi_run else ()) + tuple(fmt_value(r.ident.get(f)) for f in row_fields)

    row_keys = sorted({row_key(r) for r in res})
    tests = sorted({r.test for r in res}, key=lambda t: ({"p": 0, "t": 1}.get(t[0], 2), t))
    fig, axes = plt.subplots(len(row_keys), len(tests), figsize=(1.1 * len(vs) * len(tests) + 1.5, 1.0 * len(ks) * len(row_keys) + 1.2),
                             squeeze=False, layout="constrained")
    for i, rk in enumerate(row_keys):
        for j, t in enumerate(tests):
            ax = axes[i][j]
            grid = np.full((len(ks), len(vs)), np.nan)
            for r in res:
                if r.test == t and row_key(r) == rk:
                    grid[ks.index(r.ident["type_k"]), vs.index(r.ident["type_v"])] = r.summary.median
            if np.all(np.isnan(grid)):
                ax.axis("off")
                continue
            # colours span this panel's range (K/V effects are a few percent); labels: t/s and % below the panel's best
            best, worst = np.nanmax(grid), np.nanmin(grid)
            ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=min(worst, best * 0.9), vmax=best, aspect="auto")
            for a in range(len(ks)):
                for b in range(len(vs)):
                    if not np.isnan(grid[a, b]):
                        v = grid[a, b]
                        light = v < (min(worst, best * 0.9) + best) / 2
                        rel = f"\n{(v / best - 1) * 100:+.1f}%" if v < best else "\nbest"
                        ax.text(b, a, f"{v:.4g}{rel}", ha="center", va="center", fontsize=7,
                                color="white" if light else "black")
                    else:
                        ax.text(b, a, "–", ha="center", va="center", fontsize=8, color="grey")
            ax.set_xticks(range(len(vs)), vs, fontsize=7)
            ax.set_yticks(range(len(ks)), ks, fontsize=7)
            if i == len(row_keys) - 1:
                ax.set_xlabel("V type", fontsize=8)
            if j == 0:
                label = ", ".join(x for x in ((rk[0],) if multi_run else ()) + tuple(
                    f"{IDENTITY_FIELDS[f]}={v}" for f, v in zip(row_fields, rk[1:] if multi_run else rk)))
                ax.set_ylabel(f"{label}\nK type" if label else "K type", fontsize=8)
            if i == 0:
                ax.set_title(t, fontsize=9)
    fig.suptitle("t/s by K (rows) x V (columns) cache type, % against the best cell of each panel; '–' = not run", fontsize=10)
    return Plot("kv.png", "K x V cache types", _png(fig))


def _type_order(t: str):
    order = ["f32", "f16", "bf16", "q8_0", "q6_k", "q5_1", "q5_0", "iq4_nl", "q4_1", "q4_0"]
    return (order.index(t) if t in order else len(order), t)


def plot_backends(col: Collected) -> Plot | None:
    """Bars per backend: the best t/s of each backend per test (the configuration is in the bar's label)."""
    res = [r for r in col.results if r.kind in ("pp", "tg") and r.summary]
    if not res:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    backends = sorted({fmt_value(r.ident.get("backend") or r.ident.get("backends")) for r in res})
    kinds = [k for k in ("pp", "tg") if any(r.kind == k for r in res)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(max(6.0, 1.2 * len(backends) * 3) * len(kinds) / 1.4, 4.6), squeeze=False,
                             layout="constrained")
    other = [f for f in col.shown if f not in ("backend", "backends")]
    for j, kind in enumerate(kinds):
        ax = axes[0][j]
        sel = [r for r in res if r.kind == kind]
        tests = sorted({r.test for r in sel}, key=lambda t: (len(t), t))
        width = 0.8 / len(backends)
        for b_i, b in enumerate(backends):
            xs, ys, errs, labels = [], [], [], []
            for t_i, t in enumerate(tests):
                cand = [r for r in sel if r.test == t and fmt_value(r.ident.get("backend") or r.ident.get("backends")) == b]
                if not cand:
                    continue
                best = max(cand, key=lambda r: r.summary.median)
                xs.append(t_i + (b_i - (len(backends) - 1) / 2) * width)
                ys.append(best.summary.median)
                errs.append(best.summary.stdev or 0)
                labels.append(_series_label(best.ident, other) if len(cand) > 1 and other else "")
            bars = ax.bar(xs, ys, width * 0.95, yerr=errs, capsize=3, label=b)
            for bar, y, lab in zip(bars, ys, labels):
                ax.annotate(f"{y:.4g}" + (f"\n{lab}" if lab else ""), (bar.get_x() + bar.get_width() / 2, y),
                            ha="center", va="bottom", fontsize=6, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(np.arange(len(tests)), tests, rotation=30 if len(tests) > 4 else 0, fontsize=8)
        ax.set_ylabel("t/s")
        ax.set_title(f"{KIND_TITLES[kind]}: best per backend", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
        ax.legend(fontsize=8)
    return Plot("backends.png", "Best t/s per backend", _png(fig))


def make_plots(col: Collected) -> tuple[list[Plot], list[str]]:
    """All plots that apply, and one message per plot that could not be drawn (a report never fails on a plot)."""
    plots, problems = [], []
    for fn in (plot_depth, plot_kv, plot_backends):
        try:
            p = fn(col)
        except Exception as exc:  # noqa: BLE001 - a plot bug must not cost the user the tables
            problems.append(f"{fn.__name__.replace('plot_', '')} plot could not be drawn: {type(exc).__name__}: {exc}")
            continue
        if p:
            plots.append(p)
    return plots, problems


# --------------------------------------------------------------------------------------------------
# documents


@dataclass
class Report:
    run_ids: list[str]
    out_dir: Path | None
    collected: Collected
    provenance: list[tuple[str, list[tuple[str, str]]]]   # per run
    warnings: list[str]
    plots: list[Plot]
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)     # plots or files that could not be written
    settings: dict = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.collected.results


def render_markdown(rep: Report) -> str:
    col, s = rep.collected, rep.settings
    out = [f"# llama.cpp benchmark report: {', '.join(rep.run_ids)}", ""]
    for run_id, prov in rep.provenance:
        if len(rep.provenance) > 1:
            out += [f"**{run_id}**", ""]
        out += [f"- **{k}**: {v}" for k, v in prov] + [""]
    if col.hidden:
        out += ["Same for every result: " + ", ".join(f"{IDENTITY_FIELDS[f]} = `{fmt_value(v)}`" for f, v in col.hidden.items()), ""]
    if rep.empty:
        out += [f"**No successful results**: {len(col.failures)} failed, see Failures below.", ""]
    for kind in kinds_present(col):
        header, cells = table_rows(col, kind)
        out += [f"## {KIND_TITLES[kind]}", "", md_table(header, cells), ""]
    if rep.warnings:
        out += ["## Warnings", ""] + [f"- {w}" for w in rep.warnings] + [""]
    if col.failures:
        out += ["## Failures", "", md_table(["test", "status", *[IDENTITY_FIELDS[f] for f in col.shown], "error"],
                                            [[test_name(r), r.get("status") or "?", *[fmt_value(identity(r).get(f)) for f in col.shown],
                                              (r.get("error") or "")[:200]] for r in col.failures]), ""]
    if rep.plots:
        out += ["## Plots", ""] + [f"![{p.title}]({p.name})" for p in rep.plots] + [""]
    out += ["## How the figures are computed", ""] + [f"- {e}" for e in explanations(
        s.get("peak_bandwidth_gbs", 256.0), s.get("peak_tflops", 59.4), s.get("unstable_spread", 0.05))] + [""]
    return "\n".join(out)


HTML_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.bad td{background:#fde8e8}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dt{font-weight:600}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}.warn{color:#a00}code{background:#f4f4f4;padding:0 3px}
"""


def _html_table(header, cells) -> str:
    e = html.escape
    num = [_numeric_col(cells, i) for i in range(len(header))]
    rows = []
    for row in cells:
        bad = any(w in row[-1] for w in ("unstable", "WRONG DEVICE")) or "broken" in row
        tds = "".join(f'<td class="num">{e(str(c))}</td>' if num[i] else f"<td>{e(str(c))}</td>" for i, c in enumerate(row))
        rows.append(f'<tr{" class=bad" if bad else ""}>{tds}</tr>')
    return "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"


def render_html(rep: Report) -> str:
    """One self-contained page: inline CSS, plots as data: URIs, no scripts, no external resources."""
    e = html.escape
    col, s = rep.collected, rep.settings
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>report {e(', '.join(rep.run_ids))}</title>"
             f"<style>{HTML_STYLE}</style></head><body>", f"<h1>llama.cpp benchmark report: {e(', '.join(rep.run_ids))}</h1>"]
    for run_id, prov in rep.provenance:
        if len(rep.provenance) > 1:
            parts.append(f"<h3>{e(run_id)}</h3>")
        parts.append("<dl class='prov'>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in prov) + "</dl>")
    if col.hidden:
        parts.append("<p>Same for every result: " + ", ".join(f"{e(IDENTITY_FIELDS[f])} = <code>{e(fmt_value(v))}</code>" for f, v in col.hidden.items()) + "</p>")
    if rep.empty:
        parts.append(f"<p class='warn'><b>No successful results</b>: {len(col.failures)} failed, see Failures below.</p>")
    for kind in kinds_present(col):
        header, cells = table_rows(col, kind)
        parts.append(f"<h2>{e(KIND_TITLES[kind])}</h2>" + _html_table(header, cells))
    if rep.warnings:
        parts.append("<h2>Warnings</h2><ul class='warn'>" + "".join(f"<li>{e(w)}</li>" for w in rep.warnings) + "</ul>")
    if col.failures:
        parts.append("<h2>Failures</h2>" + _html_table(["test", "status", "error"], [[test_name(r), r.get("status") or "?", (r.get("error") or "")[:300]] for r in col.failures]))
    for p in rep.plots:
        parts.append(f"<h2>{e(p.title)}</h2><img alt='{e(p.title)}' src='data:image/png;base64,{base64.b64encode(p.png).decode()}'>")
    parts.append("<h2>How the figures are computed</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in explanations(
        s.get("peak_bandwidth_gbs", 256.0), s.get("peak_tflops", 59.4), s.get("unstable_spread", 0.05))) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_console(rep: Report, console) -> None:
    """The report in the terminal: provenance, one rich table per test kind, warnings, files written."""
    from rich.text import Text

    col = rep.collected
    for run_id, prov in rep.provenance:
        for k, v in prov:
            console.print(Text.assemble((f"{k}: ", "bold"), v))
    if col.hidden:
        console.print(Text("same everywhere: " + ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(v)}" for f, v in col.hidden.items()), style="dim"))
    for kind in kinds_present(col):
        header, cells = table_rows(col, kind)
        console.print(rich_table(header, cells, KIND_TITLES[kind]))
    if rep.empty:
        console.print(f"[bold red]no successful results[/]: {len(col.failures)} failed")
    for f in col.failures[:20]:
        console.print(f"[red]{f.get('status') or 'failed'}[/] {test_name(f)}: {(f.get('error') or '')[:160]}")
    if len(col.failures) > 20:
        console.print(f"... and {len(col.failures) - 20} more failures (see report.md)")
    for w in rep.warnings:
        console.print(f"[yellow]warning[/]: {w}")
    for p in rep.problems:
        console.print(f"[red]problem[/]: {p}")


# --------------------------------------------------------------------------------------------------
# entry point


def load_runs(results_dir: Path, run_ids: list[str] | None) -> list[tuple[dict, list[dict]]]:
    """(meta, rows) per run id; the latest run when no id is given. Unknown ids raise ToolboxError naming the closest."""
    from toolbox import results

    ids = list(run_ids or [])
    if not ids:
        latest = results.latest_run_id(results_dir)
        if latest is None:
            raise ToolboxError(f"no runs in {results_dir}", "run `invoke bench` first, or import llama-bench output")
        ids = [latest]
    return [results.load_run(results_dir, rid) for rid in ids]


def build_report(runs: list[tuple[dict, list[dict]]], *, peak_bandwidth_gbs: float = 256.0, peak_tflops: float = 59.4,
                 unstable_spread: float = 0.05, active_params: float | None = None, with_plots: bool = True) -> Report:
    """Everything a report shows, in memory (no files written)."""
    hint = None
    if active_params:
        models = {model_name(r) for _, rows in runs for r in rows if (r.get("status") or "ok") == "ok"}
        if len(models) > 1:
            raise ToolboxError(f"--active-params applies to one model, these runs have {len(models)}",
                               "record active_params per model in run.json's models, or report one model at a time")
        hint = {"active_params": active_params}
    col = collect(runs, unstable_spread=unstable_spread, peak_bandwidth_gbs=peak_bandwidth_gbs, peak_tflops=peak_tflops,
                  active_hint=hint)
    run_ids = [(m or {}).get("run_id") or "?" for m, _ in runs]
    prov = [(rid, provenance(m, rows)) for rid, (m, rows) in zip(run_ids, runs)]
    plots, problems = make_plots(col) if with_plots else ([], [])
    return Report(run_ids, None, col, prov, warnings_for(col), plots, problems=problems,
                  settings={"peak_bandwidth_gbs": peak_bandwidth_gbs, "peak_tflops": peak_tflops, "unstable_spread": unstable_spread})


def write_report(rep: Report, out_dir: Path) -> Report:
    """Write report.md, report.html and the PNGs into out_dir. A PNG that can't be written is a problem
    noted in the report; report.md / report.html that can't be written is an error."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolboxError(f"cannot create the report directory {out_dir}: {exc.strerror}", "pass a writable directory with --out") from None
    rep.out_dir = out_dir
    written = []
    for p in list(rep.plots):
        try:
            (out_dir / p.name).write_bytes(p.png)
            written.append(out_dir / p.name)
        except OSError as exc:
            rep.problems.append(f"plot {out_dir / p.name} could not be written: {exc.strerror or exc}; check permissions and free space, or pass --out")
            rep.plots.remove(p)  # not linked from report.md; the HTML embeds none that failed, to stay consistent
    for name, text in (("report.md", render_markdown(rep)), ("report.html", render_html(rep))):
        try:
            (out_dir / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ToolboxError(f"cannot write {out_dir / name}: {exc.strerror or exc}", "pass a writable directory with --out") from None
        written.append(out_dir / name)
    rep.files = written
    return rep


def report(settings, run_ids: list[str] | None = None, *, out_dir: Path | None = None, active_params: float | None = None,
           write: bool = True) -> Report:
    """`invoke report`: load runs, build the report, write it beside the run (or into out_dir)."""
    runs = load_runs(settings.results_dir, run_ids)
    rep = build_report(runs, peak_bandwidth_gbs=settings.peak_bandwidth_gbs, peak_tflops=settings.peak_tflops,
                       unstable_spread=settings.unstable_spread, active_params=active_params, with_plots=write)
    if write:
        if out_dir is None:
            # several runs: inside the last one's directory (results/ itself holds only run directories)
            run_dir = Path(settings.results_dir) / rep.run_ids[-1]
            out_dir = run_dir if len(rep.run_ids) == 1 else run_dir / "reports" / "+".join(rep.run_ids)
        write_report(rep, out_dir)
    return rep
