"""The site's pages other than runs and trends: the layout every page shares, the index of runs, hosts,
campaigns and the public reference figures. Tables are complete HTML (readable with scripts off);
site.js only adds sorting and filtering."""

from __future__ import annotations

import functools
import html
import re
from collections import defaultdict

from toolbox.site.data import PublicFigure

e = functools.lru_cache(maxsize=1 << 16)(html.escape)  # the same hosts, builds and images on many rows
SECTIONS = (("index.html", "Runs"), ("trends/index.html", "Trends"), ("hosts/index.html", "Hosts"), ("campaigns/index.html", "Campaigns"))
SECTIONS += (("references.html", "Public figures"),)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:80] or "x"


def layout(title: str, body: str, *, depth: int = 0, here: str = "") -> str:
    """A whole page: the site's CSS and script (relative links: works from file:// and any static host), the top bar."""
    up = "../" * depth
    nav = "".join(f"<a href='{up}{href}'{' class=here' if href == here else ''}>{e(name)}</a>" for href, name in SECTIONS)
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{e(title)}</title><link rel='stylesheet' href='{up}assets/site.css'></head><body>"
        f"<nav class='top'>{nav}</nav><main><h1>{e(title)}</h1>{body}</main>"
        f"<script src='{up}assets/site.js'></script></body></html>"
    )


def table(table_id: str, header: list[str], rows: list[list[str]], *, facets=(), numeric=(), row_classes=None, filter_box=True) -> str:
    """A sortable table with an optional filter bar (hidden until the script shows it). Cells are HTML already."""
    heads = "".join(f"<th{' data-facet' if h in facets else ''}{' class=num' if h in numeric else ''}>{e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = (row_classes or {}).get(i)
        tds = "".join(f"<td class='num'>{c}</td>" if header[j] in numeric else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{f' class={cls}' if cls else ''}>{tds}</tr>")
    bar = (
        f"<div class='filters' data-filter-for='{table_id}' hidden><input type='search' placeholder='filter rows' "
        f"aria-label='filter rows'><span class='count'></span></div>"
        if filter_box
        else ""
    )
    return f"{bar}<table class='sortable' id='{table_id}'><thead><tr>{heads}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def index_page(entries: list[dict], pages: set[str]) -> str:
    """Every run: host, backend, image, llama.cpp build, model, status, rows; newest first."""
    header = ["run", "started", "host", "kind", "backend", "image", "llama.cpp", "model", "status", "rows", "failed", "campaign"]
    rows, classes = [], {}
    for i, x in enumerate(sorted(entries, key=lambda x: x.get("started_at") or "", reverse=True)):
        rid = x["run_id"]
        link = f"<a href='runs/{e(rid)}.html'>{e(rid)}</a>" if rid in pages else e(rid)
        camp = x.get("campaign")
        rows.append(
            [
                link,
                e((x.get("started_at") or "")[:16].replace("T", " ")),
                f"<a href='hosts/{slug(x['host'])}.html'>{e(x['host'])}</a>",
                e(x.get("kind") or "?"),
                e(", ".join(x.get("backends") or []) or "—"),
                e("; ".join(x.get("images") or []) or "—"),
                e(", ".join(x.get("builds") or []) or "—"),
                e(", ".join(x.get("models") or []) or "—"),
                f"<span class='status-{e(x.get('status') or '?')}'>{e(x.get('status') or '?')}</span>",
                str(x.get("rows", 0)),
                str(x.get("rows_failed", 0)),
                f"<a href='campaigns/{slug(camp)}.html'>{e(camp)}</a>" if camp else "",
            ]
        )
        if x.get("status") in ("failed", "corrupt"):
            classes[i] = "excluded"
    intro = (
        f"<p>{len(entries)} runs. Click a column header to sort, type to filter, or pick a host, kind, status or backend. "
        "A run's page is its report: the answer first, then what ran and every result.</p>"
    )
    return layout(
        "Benchmark runs",
        intro + table("runs", header, rows, facets=("host", "kind", "backend", "status"), numeric=("rows", "failed"), row_classes=classes),
        here="index.html",
    )


def hosts_pages(entries: list[dict], points: list[dict]) -> dict[str, str]:
    """hosts/index.html and one page per host: its runs, and its best figure per model and test."""
    by_host: dict[str, list[dict]] = defaultdict(list)
    for x in entries:
        by_host[x["host"]].append(x)
    out = {}
    index_rows = []
    for host, runs in sorted(by_host.items()):
        runs.sort(key=lambda x: x.get("started_at") or "")
        index_rows.append(
            [
                f"<a href='{slug(host)}.html'>{e(host)}</a>",
                str(len(runs)),
                e((runs[0].get("started_at") or "")[:10]),
                e((runs[-1].get("started_at") or "")[:10]),
                e(", ".join(sorted({b for x in runs for b in x.get("backends") or []}))),
            ]
        )
        best: dict[tuple, dict] = {}
        for p in points:
            if p["host"] == host and not p["not_counted"]:
                k = (p["model"], p["test"])
                if k not in best or p["median"] > best[k]["median"]:
                    best[k] = p
        run_rows = [
            [
                f"<a href='../runs/{e(x['run_id'])}.html'>{e(x['run_id'])}</a>",
                e(x.get("kind") or "?"),
                e(", ".join(x.get("backends") or [])),
                e(", ".join(x.get("builds") or []) or "—"),
                e(x.get("status") or "?"),
                str(x.get("rows", 0)),
            ]
            for x in reversed(runs)
        ]
        best_rows = [
            [
                e(str(m)),
                f"<a href='../trends/{p['trend']}.html'>{e(t)}</a>",
                f"{p['median']:.4g}",
                f"<a href='../runs/{e(p['run_id'])}.html'>{e(p['run_id'])}</a>",
                e(p["build"]),
            ]
            for (m, t), p in sorted(best.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
        ]
        body = "<h2>Runs</h2>" + table("host-runs", ["run", "kind", "backend", "llama.cpp", "status", "rows"], run_rows, facets=("kind",))
        body += "<h2>Best figure per model and test (what counts)</h2>" + table(
            "host-best", ["model", "test", "best t/s", "run", "llama.cpp"], best_rows, numeric=("best t/s",)
        )
        out[f"hosts/{slug(host)}.html"] = layout(f"Host {host}", body, depth=1, here="hosts/index.html")
    out["hosts/index.html"] = layout(
        "Hosts",
        table("hosts", ["host", "runs", "first", "latest", "backends"], index_rows, numeric=("runs",)),
        depth=1,
        here="hosts/index.html",
    )
    return out


def campaign_pages(entries: list[dict], points: list[dict]) -> dict[str, str]:
    """campaigns/index.html and a page per campaign: its hosts side by side, per model, test and configuration."""
    by_c: dict[str, list[dict]] = defaultdict(list)
    for x in entries:
        if x.get("campaign"):
            by_c[x["campaign"]].append(x)
    out = {}
    idx = []
    for camp, runs in sorted(by_c.items()):
        hosts = sorted({x["host"] for x in runs})
        ids = {x["run_id"] for x in runs}
        cells: dict[tuple, dict[str, dict]] = defaultdict(dict)
        for p in points:
            if p["run_id"] in ids:
                cells[(str(p["model"]), p["test"], p["config"])][p["host"]] = p
        rows = []
        for (model, test, _), per_host in sorted(cells.items()):
            any_p = next(iter(per_host.values()))
            row = [e(model), f"<a href='../trends/{any_p['trend']}.html'>{e(test)}</a>"]
            for h in hosts:
                p = per_host.get(h)
                row.append("—" if p is None else f"{p['median']:.4g}" + (f" (not counted: {p['not_counted']})" if p["not_counted"] else ""))
            rows.append(row)
        run_links = ", ".join(f"<a href='../runs/{e(x['run_id'])}.html'>{e(x['host'])}</a>" for x in runs)
        body = f"<p>Runs: {run_links}</p>" + table("campaign", ["model", "test", *hosts], rows, numeric=tuple(hosts))
        out[f"campaigns/{slug(camp)}.html"] = layout(f"Campaign {camp}", body, depth=1, here="campaigns/index.html")
        idx.append([f"<a href='{slug(camp)}.html'>{e(camp)}</a>", str(len(runs)), e(", ".join(hosts))])
    note = "" if idx else "<p>No campaigns yet: runs of one plan on several hosts (fleets) carry a campaign id and show up here.</p>"
    out["campaigns/index.html"] = layout(
        "Campaigns", note + table("campaigns", ["campaign", "runs", "hosts"], idx, numeric=("runs",)), depth=1, here="campaigns/index.html"
    )
    return out


def references_page(refs: list[PublicFigure]) -> str:
    rows = [
        [
            e(r.model),
            e(r.quant),
            e(r.backend),
            e(r.build or "—"),
            e(r.test),
            f"{r.ts:g}",
            e(r.date or "—"),
            e(r.machine),
            f"<a href='{e(r.source_url)}'>{e(r.source_url)}</a>",
        ]
        for r in refs
    ]
    intro = (
        "<p>Published llama-bench figures from Strix Halo owners (toolbox/data/references.csv), each with its source. "
        "Trend pages draw them as purple diamonds where the model (llama.cpp's model type) and the test match, so you see "
        "at once whether your machine performs as others' do. Builds and settings differ: read the source before concluding.</p>"
    )
    header = ["model", "quant", "backend", "build", "test", "t/s", "date", "machine", "source"]
    return layout(
        "Public Strix Halo figures",
        intro + table("refs", header, rows, facets=("backend", "test"), numeric=("t/s",)),
        here="references.html",
    )
