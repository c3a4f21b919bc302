"""`invoke site`: a static, self-contained site over every run in results/ (like asv publish).

    DIR/index.html              every run, sortable and filterable
    DIR/runs/<run_id>.html      a run's report (the answer first)
    DIR/trends/<id>.html        t/s of one model, test and configuration over runs, builds, images and hosts
    DIR/hosts/, campaigns/      per host; per fleet campaign, hosts side by side
    DIR/references.html         the public Strix Halo figures the trend pages draw
    DIR/assets/                 site.css and site.js (ours, no CDN)
    DIR/manifest.json           per run: its fingerprint, index entry and trend points

Incremental: a run whose files have not changed (fingerprint: size and mtime of run.json, rows.jsonl,
quality.jsonl) is not read again; its page stays and its entry and points come from the manifest.
The pages over all runs (index, trends, hosts, campaigns) are rewritten from the manifest each time,
and a file whose content did not change is not touched.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from toolbox.analysis.identity import collect
from toolbox.errors import ToolboxError
from toolbox.files import make_dir, write_json_atomic
from toolbox.report.render import build_report
from toolbox.site import data, pages, runpage, trends
from toolbox.store.runs import ResultsWarning, load_run, run_ids

MANIFEST = "manifest.json"


@dataclass
class SiteBuild:
    out_dir: Path
    rebuilt: list[str] = field(default_factory=list)  # runs read and their pages written
    kept: int = 0  # runs taken from the manifest
    removed: list[str] = field(default_factory=list)  # runs gone from results/: their pages deleted
    problems: list[str] = field(default_factory=list)  # runs that could not be read (listed, no page)
    pages_written: int = 0
    seconds: float = 0.0


def default_out(settings) -> Path:
    return Path(settings.results_dir) / "site"


def _load_manifest(path: Path) -> dict:
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(m, dict) and m.get("version") == data.SITE_VERSION:
            return m
    except (OSError, ValueError):
        pass
    return {"version": data.SITE_VERSION, "runs": {}, "verdicts": {}, "trends": {}}


def _write(path: Path, text: str) -> bool:
    """Write when the content changed (a static host or browser cache sees only real changes); True when written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


def _read_run(settings, run_id: str) -> tuple[dict, list[dict], str]:
    """(entry, points, page html) of one run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultsWarning)  # a half-written line is said by the report's own warnings
        meta, rows = load_run(settings.results_dir, run_id)
    meta.setdefault("run_id", run_id)
    rep = build_report(
        [(meta, rows)],
        peak_bandwidth_gbs=settings.peak_bandwidth_gbs,
        peak_tflops=settings.peak_tflops,
        unstable_spread=settings.unstable_spread,
        with_plots=False,
    )
    col = rep.collected if rep.collected.results or rep.collected.failures else collect([(meta, rows)])
    return data.run_entry(meta, rows), data.run_points(meta, col), runpage.run_page(rep)


def build_site(settings, out_dir: Path | None = None, *, full: bool = False, references_file: Path | None = None) -> SiteBuild:
    """Build (or bring up to date) the site over every run of settings.results_dir in out_dir."""
    t0 = time.perf_counter()
    out = make_dir(Path(out_dir) if out_dir else default_out(settings), "site")
    result = SiteBuild(out)
    manifest = {"version": data.SITE_VERSION, "runs": {}, "verdicts": {}, "trends": {}} if full else _load_manifest(out / MANIFEST)
    old = manifest["runs"]
    runs: dict[str, dict] = {}
    results_dir = Path(settings.results_dir)
    for rid in run_ids(results_dir):
        run_dir = results_dir / rid
        if run_dir.resolve() == out.resolve():
            continue
        fp = data.fingerprint(run_dir)
        page = out / "runs" / f"{rid}.html"
        prev = old.get(rid)
        if prev and prev.get("fingerprint") == fp and (page.exists() or prev.get("error")):
            runs[rid] = prev
            result.kept += 1
            continue
        try:
            entry, points, html = _read_run(settings, rid)
        except (ToolboxError, OSError) as exc:
            result.problems.append(f"{rid}: {exc}")
            entry = {**data.run_entry({"run_id": rid, "status": "corrupt"}, []), "run_id": rid}
            runs[rid] = {"fingerprint": fp, "entry": entry, "error": str(exc), **data.pack_points([])}
            page.unlink(missing_ok=True)
            continue
        result.pages_written += _write(page, html)
        runs[rid] = {"fingerprint": fp, "entry": entry, **data.pack_points(points)}
        result.rebuilt.append(rid)
    for rid in set(old) - set(runs):
        (out / "runs" / f"{rid}.html").unlink(missing_ok=True)
        result.removed.append(rid)

    entries = [r["entry"] for r in runs.values()]
    points = [p for r in runs.values() for p in data.unpack_points(r, r["entry"])]
    refs = data.references(references_file)
    site_pages = {"index.html": pages.index_page(entries, {rid for rid, r in runs.items() if not r.get("error")})}
    fingerprints = {rid: r["fingerprint"] for rid, r in runs.items()}
    trend_html, verdicts, drawn = trends.trend_pages(
        points, refs, manifest.get("verdicts") or {}, fingerprints, manifest.get("trends") or {}, lambda rel: (out / rel).exists()
    )
    site_pages.update(trend_html)
    keep = {f"trends/{tid}.html" for tid in drawn}
    site_pages.update(pages.hosts_pages(entries, points))
    site_pages.update(pages.campaign_pages(entries, points))
    site_pages["references.html"] = pages.references_page(refs)
    for name in ("site.css", "site.js"):
        site_pages[f"assets/{name}"] = (resources.files("toolbox") / "site" / "assets" / name).read_text(encoding="utf-8")
    for section in ("trends", "hosts", "campaigns"):  # pages of trends, hosts, campaigns that no longer exist
        d = out / section
        if d.is_dir():
            for f in d.glob("*.html"):
                if f"{section}/{f.name}" not in site_pages and f"{section}/{f.name}" not in keep:
                    f.unlink()
    for rel, text in site_pages.items():
        result.pages_written += _write(out / rel, text)
    if result.rebuilt or result.removed or verdicts != manifest.get("verdicts") or drawn != manifest.get("trends"):
        new = {"version": data.SITE_VERSION, "runs": runs, "verdicts": verdicts, "trends": drawn}
        write_json_atomic(out / MANIFEST, new, indent=None)
    result.seconds = time.perf_counter() - t0
    return result


def serve(out_dir: Path, port: int = 8000):
    """An HTTP server for the site on 127.0.0.1 (a quick look; the site needs none). Call serve_forever() on it."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    try:
        return ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(out_dir)))
    except OSError as exc:
        raise ToolboxError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}", "choose another port with --port") from None
