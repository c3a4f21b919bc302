"""Trend pages: for each model, test and configuration, t/s over time per host, llama.cpp build and image
beside every point, regressions marked, public reference figures drawn where the model and test match.

A regression is compare's own verdict (analysis.compare.judge_speed: significant and at least 5 %
slower) between a point and the previous one of the same host. Verdicts are cached by the pair of runs,
so an incremental build only tests the pairs it has not seen.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
from collections import defaultdict
from datetime import datetime

from toolbox.analysis import stats
from toolbox.site import svg
from toolbox.site.data import PublicFigure, config_text, norm_model
from toolbox.site.pages import layout, slug, table

e = functools.lru_cache(maxsize=1 << 16)(html.escape)  # hosts, builds, images repeat on every point
THRESHOLD, ALPHA = 0.05, 0.05


def _summary(p: dict) -> stats.Summary | None:
    return stats.summarize(p["samples"]) if p.get("samples") else stats.summarize(mean=p["median"])


def judge_pairs(trends: dict[str, list[dict]], cache: dict) -> dict:
    """{'trend|base_run|new_run': [mark, ratio, p]} for consecutive points of each host; `cache` holds earlier verdicts."""
    from toolbox.analysis.compare import judge_speed

    out = {}
    for tid, pts in trends.items():
        by_host = defaultdict(list)
        for p in pts:
            by_host[p["host"]].append(p)
        for series in by_host.values():
            series.sort(key=lambda p: (p["time"], p["run_id"]))
            for prev, cur in zip(series, series[1:]):
                key = f"{tid}|{prev['run_id']}|{cur['run_id']}"
                if key in cache:
                    out[key] = cache[key]
                    continue
                if prev["not_counted"] or cur["not_counted"]:
                    out[key] = ["not comparable", None, None]
                    continue
                cmp_, mark, _ = judge_speed(_summary(prev), _summary(cur), threshold=THRESHOLD, alpha=ALPHA)
                out[key] = [mark, cmp_.ratio, cmp_.p_value]
    return out


def _epoch(t: str) -> float:
    try:
        return datetime.fromisoformat(str(t).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def matching_references(refs: list[PublicFigure], model_type, model_file, test: str) -> list[PublicFigure]:
    names = {norm_model(model_type), norm_model(model_file)} - {""}
    return [r for r in refs if r.test == test and norm_model(r.model) in names]


MAX_CHANGES = 12


def _changes(pts: list[dict]) -> list[tuple[float, str]]:
    """Where the llama.cpp build or the image changed from one run to the next (in time), labelled with the new one."""
    out, before = [], None
    for p in pts:
        now = (p["build"], p["image"])
        if before is not None and now != before:
            what = [f"llama.cpp {p['build']}"] if now[0] != before[0] else []
            what += [f"image {p['image'][7:19] if p['image'].startswith('sha256:') else p['image']}"] if now[1] != before[1] else []
            out.append((_epoch(p["time"]), ", ".join(what)))
        before = now
    return out[-MAX_CHANGES:]


def _energy_chart(pts: list[dict], colour: dict[str, str]) -> str:
    """Tokens per joule over time, a line per host, when telemetry recorded them (results that count only)."""
    series: dict[str, svg.Series] = {}
    for p in pts:
        if p.get("tokens_per_j") and not p["not_counted"]:
            s = series.setdefault(p["host"], svg.Series(p["host"], colour[p["host"]]))
            s.points.append(svg.Point(_epoch(p["time"]), p["tokens_per_j"], None, f"{p['run_id']}: {p['tokens_per_j']:.3g} tokens/J"))
    if not series:
        return ""
    chart = svg.line_chart(list(series.values()), x_axis="time", x_label="run start (UTC)", y_label="tokens/J", chart_id="energy-chart")
    return f"<figure class='chart'>{chart}<figcaption>tokens per joule (telemetry), a line per host</figcaption></figure>"


def trend_page(tid: str, pts: list[dict], verdicts: dict, refs: list[PublicFigure]) -> tuple[str, dict]:
    """The page of one trend, and its line in the trends index."""
    first = pts[0]
    pts = sorted(pts, key=lambda p: (p["time"], p["run_id"]))
    hosts = sorted({p["host"] for p in pts})
    colour = svg.colours(hosts)
    prev_of: dict[str, dict] = {}
    series = {h: svg.Series(h, colour[h]) for h in hosts}
    grey = {h: svg.Series(f"{h} (not counted)", svg.GREY, grey=True) for h in hosts}
    rows, classes, regressions = [], {}, 0
    for i, p in enumerate(pts):
        prev = prev_of.get(p["host"])
        verdict = verdicts.get(f"{tid}|{prev['run_id']}|{p['run_id']}") if prev else None
        mark = verdict[0] if verdict else ""
        regression = mark == "slower"
        regressions += regression
        title = f"{p['run_id']} on {p['host']}: {p['median']:.4g} t/s, llama.cpp {p['build']}, image {p['image']}" + (
            f" (not counted: {p['not_counted']})" if p["not_counted"] else ""
        )
        point = svg.Point(_epoch(p["time"]), p["median"], p.get("stdev"), title, regression)
        (grey if p["not_counted"] else series)[p["host"]].points.append(point)
        prev_of[p["host"]] = p
        change = f"{verdict[1] - 1:+.1%}" if verdict and verdict[1] else ""
        rows.append(
            [
                e(p["time"][:16].replace("T", " ")),
                f"<a href='../runs/{e(p['run_id'])}.html'>{e(p['run_id'])}</a>",
                e(p["host"]),
                e(p["build"]),
                e(p["image"]),
                f"{p['median']:.4g}",
                f"{p['tokens_per_j']:.3g}" if p.get("tokens_per_j") else "—",
                e(change),
                e({"slower": "REGRESSION", "faster": "faster", "same": "~", "untested": "?"}.get(mark, mark)),
                e(f"not counted: {p['not_counted']}" if p["not_counted"] else ""),
            ]
        )
        if p["not_counted"]:
            classes[i] = "excluded"
        elif regression:
            classes[i] = "regression"
    drawn = [s for s in [*series.values(), *grey.values()] if s.points]
    matched = matching_references(refs, first.get("model_type"), first["model"], first["test"])
    marks = [svg.Reference(r.ts, f"{r.backend} {r.build or ''} ({r.machine})".replace("  ", " "), r.source_url) for r in matched]
    chart = svg.line_chart(drawn, x_axis="time", x_label="run start (UTC)", refs=marks, changes=_changes(pts), chart_id="trend-chart")
    config = config_text(json.loads(first["config"]))
    title = f"{first['model']} {first['test']}"
    body = (
        f"<p><b>Configuration</b>: {e(config)}</p>"
        f"<figure class='chart'>{chart}<figcaption>{svg.legend(drawn)}t/s of every run of this model, test and configuration, "
        "a line per host, error bars ± 1 standard deviation; a red ring marks a regression (significantly slower than the previous "
        f"run on the same host, by at least {THRESHOLD:.0%}); purple diamonds are published figures for the same model and test"
        "</figcaption></figure>"
    )
    body += _energy_chart(pts, colour)
    if matched:
        body += (
            "<h2>Public figures for this model and test</h2><ul>"
            + "".join(
                f"<li>{r.ts:g} t/s, {e(r.backend)}, build {e(r.build or '?')}, {e(r.machine)}: "
                f"<a href='{e(r.source_url)}'>{e(r.source_url)}</a></li>"
                for r in matched
            )
            + "</ul>"
        )
    header = ["time", "run", "host", "llama.cpp", "image", "t/s", "tokens/J", "change", "mark", "notes"]
    body += "<h2>Every point</h2>" + table(
        "points", header, rows, facets=("host", "llama.cpp"), numeric=("t/s", "tokens/J"), row_classes=classes
    )
    counted = [p for p in pts if not p["not_counted"]]
    latest = counted[-1] if counted else None
    line = {
        "id": tid,
        "model": str(first["model"]),
        "test": first["test"],
        "config": config,
        "hosts": len(hosts),
        "points": len(pts),
        "latest": latest["median"] if latest else None,
        "regressions": regressions,
        "references": len(matched),
    }
    return layout(f"Trend: {title}", body, depth=1, here="trends/index.html"), line


def signature(pts: list[dict], fingerprints: dict[str, str], refs: list[PublicFigure]) -> str:
    """What a trend page is made of: its runs (by fingerprint) and the public figures; the page is redrawn when it changes."""
    h = hashlib.sha1(repr(refs).encode())
    for rid in sorted({p["run_id"] for p in pts}):
        h.update(f"{rid}:{fingerprints.get(rid)}\n".encode())
    return h.hexdigest()


def trend_pages(
    points: list[dict], refs: list[PublicFigure], cache: dict, fingerprints: dict[str, str], drawn: dict, exists
) -> tuple[dict[str, str], dict, dict]:
    """({path: html} of the trend pages to write and the trends index, verdicts to cache, {trend id: {sig, line}}).

    A trend whose signature is in `drawn` and whose page exists (`exists(path)`) is not drawn again."""
    trends: dict[str, list[dict]] = defaultdict(list)
    for p in points:
        trends[p["trend"]].append(p)
    verdicts = judge_pairs(trends, cache)
    out, lines, now = {}, [], {}
    for tid, pts in trends.items():
        sig, path = signature(pts, fingerprints, refs), f"trends/{tid}.html"
        before = drawn.get(tid)
        if before and before["sig"] == sig and exists(path):
            line = before["line"]
        else:
            out[path], line = trend_page(tid, pts, verdicts, refs)
        now[tid] = {"sig": sig, "line": line}
        lines.append(line)
    lines.sort(key=lambda x: (x["model"], x["test"], x["config"]))
    rows = [
        [
            e(x["model"]),
            f"<a href='{x['id']}.html'>{e(x['test'])}</a>",
            e(x["config"]),
            str(x["hosts"]),
            str(x["points"]),
            f"{x['latest']:.4g}" if x["latest"] else "—",
            str(x["regressions"]),
            str(x["references"]),
        ]
        for x in lines
    ]
    classes = {i: "regression" for i, x in enumerate(lines) if x["regressions"]}
    intro = (
        f"<p>{len(lines)} trends: one per model, test and configuration, over every run. Sort by regressions to see what got slower; "
        "a trend with public figures draws them beside yours.</p>"
    )
    header = ["model", "test", "configuration", "hosts", "points", "latest t/s", "regressions", "public figures"]
    out["trends/index.html"] = layout(
        "Trends",
        intro
        + table(
            "trends",
            header,
            rows,
            facets=("model",),
            numeric=("hosts", "points", "latest t/s", "regressions", "public figures"),
            row_classes=classes,
        ),
        depth=1,
        here="trends/index.html",
    )
    return out, verdicts, now


__all__ = ["trend_pages", "matching_references", "slug"]
