"""compare BASE NEW: join two runs on identity keys, ratio with uncertainty, a significance mark per test.

Rows are the same test when every identity key (report.IDENTITY_FIELDS: model, test shape, backend,
K/V types, flash attention, batch sizes, threads, ...) is equal, the idea of llama.cpp's
compare-llama-bench.py. A key that one run does not record at all (old imported logs) is left out
of the join and named in the output; `ignore` leaves out more (e.g. backend, to compare two images).

Marks (the exit code of `invoke compare` is 1 when any line is a regression):
    faster          significant (p < alpha) and at least `threshold` faster
    SLOWER          significant and at least `threshold` slower           -> regression
    ~               no significant change, or a change smaller than the threshold
    ?               untested: a side has no raw samples (old markdown logs)
    x               not comparable: broken output or wrong device in BASE, failed in BASE, ambiguous match
    BROKEN          NEW's output is wrong (quality verdict 'broken'): never called faster -> regression
    FAILED          NEW failed where BASE worked                           -> regression
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from toolbox import report as rp
from toolbox import stats
from toolbox.errors import ToolboxError

MARKS = {"faster": "faster", "slower": "SLOWER", "same": "~", "untested": "?", "not comparable": "x",
         "broken": "BROKEN", "failed": "FAILED"}
REGRESSIONS = ("slower", "broken", "failed")


@dataclass
class Line:
    ident: dict
    test: str
    kind: str | None
    base: rp.Result | None
    new: rp.Result | None
    mark: str
    ratio: float | None = None
    ratio_err: float | None = None
    p_value: float | None = None
    note: str = ""
    base_error: str | None = None
    new_error: str | None = None

    @property
    def regression(self) -> bool:
        return self.mark in REGRESSIONS


@dataclass
class CompareResult:
    base_id: str
    new_id: str
    keys: list[str]
    dropped: dict[str, str]                 # key -> why it was left out of the join
    lines: list[Line]
    only_base: list[str]
    only_new: list[str]
    differences: list[tuple[str, str, str]]  # provenance label, base value, new value
    threshold: float
    alpha: float
    test: str
    shown: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Line]:
        return [ln for ln in self.lines if ln.regression]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ln in self.lines:
            out[ln.mark] = out.get(ln.mark, 0) + 1
        return out

    def geomean(self, kind: str) -> tuple[float, int] | None:
        """Geometric mean of the ratios of one test kind (pp / tg) over comparable lines, and how many."""
        rs = [ln.ratio for ln in self.lines if ln.kind == kind and ln.ratio and ln.mark in ("faster", "slower", "same", "untested")]
        if not rs:
            return None
        return math.exp(sum(math.log(r) for r in rs) / len(rs)), len(rs)


def _jkey(ident: dict, keys: list[str]) -> tuple:
    return tuple(json.dumps(ident.get(k), sort_keys=True, default=str) for k in keys)


def _recorded(col: rp.Collected, f: str) -> bool:
    idents = [r.ident for r in col.results] + [rp.identity(x) for x in col.failures]
    return any(i.get(f) is not None for i in idents)


def compare_runs(base: tuple[dict, list[dict]], new: tuple[dict, list[dict]], *, threshold: float = 0.05, alpha: float = 0.05,
                 test: str = "welch", ignore: list[str] | tuple = (), unstable_spread: float = 0.05) -> CompareResult:
    """Join BASE and NEW rows on identity keys and judge every pair. Raises ToolboxError when nothing matches."""
    unknown = [k for k in ignore if k not in rp.IDENTITY_FIELDS]
    if unknown:
        raise ToolboxError(f"--ignore {','.join(unknown)}: not an identity key", f"choose from {', '.join(rp.IDENTITY_FIELDS)}")
    if test not in stats.TESTS:
        raise ToolboxError(f"unknown test {test!r}", f"choose one of {', '.join(stats.TESTS)}")
    bid, nid = (base[0] or {}).get("run_id") or "BASE", (new[0] or {}).get("run_id") or "NEW"
    bcol = rp.collect([base], unstable_spread=unstable_spread)
    ncol = rp.collect([new], unstable_spread=unstable_spread)
    if not bcol.results and not bcol.failures:
        raise ToolboxError(f"BASE {bid} has no rows", "pick a run with results (`invoke results` lists them)")
    if not ncol.results and not ncol.failures:
        raise ToolboxError(f"NEW {nid} has no rows", "pick a run with results (`invoke results` lists them)")

    keys, dropped = [], {}
    for f in rp.IDENTITY_FIELDS:
        if f in ignore:
            dropped[f] = "ignored (--ignore)"
        elif f not in rp.SHAPE_FIELDS and not _recorded(bcol, f):
            dropped[f] = f"absent from BASE {bid}"
        elif f not in rp.SHAPE_FIELDS and not _recorded(ncol, f):
            dropped[f] = f"absent from NEW {nid}"
        else:
            keys.append(f)

    def index(col: rp.Collected):
        ok: dict[tuple, list[rp.Result]] = {}
        bad: dict[tuple, dict] = {}
        for r in col.results:
            ok.setdefault(_jkey(r.ident, keys), []).append(r)
        for row in col.failures:
            bad.setdefault(_jkey(rp.identity(row), keys), row)
        return ok, bad

    bok, bbad = index(bcol)
    nok, nbad = index(ncol)
    all_keys = list(dict.fromkeys([*bok, *bbad, *nok, *nbad]))
    lines, only_base, only_new = [], [], []
    for k in all_keys:
        b, n = bok.get(k), nok.get(k)
        bf, nf = bbad.get(k), nbad.get(k)
        if (b or bf) and not (n or nf):
            only_base.append(_describe(b[0] if b else None, bf, bcol.shown))
            continue
        if (n or nf) and not (b or bf):
            only_new.append(_describe(n[0] if n else None, nf, ncol.shown))
            continue
        lines.append(_judge(b, n, bf, nf, threshold=threshold, alpha=alpha, test=test))

    if not lines:
        raise ToolboxError(f"BASE {bid} and NEW {nid} have no test in common ({_what_differs(bcol, ncol, keys)})",
                           "compare runs of the same matrix and model, or leave a setting out of the match with --ignore KEY[,KEY]")
    lines.sort(key=lambda ln: rp._sort_key(ln.new or ln.base) if (ln.new or ln.base) else ())
    shown, _ = rp.visible_fields([ln.ident for ln in lines])
    return CompareResult(bid, nid, keys, dropped, lines, only_base, only_new, provenance_diff(base, new),
                         threshold, alpha, test, [f for f in shown if f in keys])


def _describe(res: rp.Result | None, failed: dict | None, shown: list[str]) -> str:
    ident = res.ident if res else rp.identity(failed or {})
    test = res.test if res else rp.test_name(failed or {})
    ctx = ", ".join(f"{rp.IDENTITY_FIELDS[f]}={rp.fmt_value(ident.get(f))}" for f in shown)
    return f"{test} ({ctx})" if ctx else test


def _judge(b: list | None, n: list | None, bf: dict | None, nf: dict | None, *, threshold: float, alpha: float, test: str) -> Line:
    ref = (n or b)[0] if (n or b) else None
    ident = ref.ident if ref else rp.identity(nf or bf)
    name = ref.test if ref else rp.test_name(nf or bf)
    kind = ref.kind if ref else None
    line = Line(ident, name, kind, b[0] if b else None, n[0] if n else None, "not comparable",
                base_error=(bf or {}).get("error") if not b else None, new_error=(nf or {}).get("error") if not n else None)
    if (b and len(b) > 1) or (n and len(n) > 1):
        line.note = "several results match this key: compare with fewer --ignore keys"
        return line
    if not b and not n:
        line.note = "failed in both"
        return line
    if b and not n:
        line.mark, line.note = "failed", f"NEW failed: {(nf or {}).get('error') or (nf or {}).get('status') or '?'}"[:200]
        return line
    if n and not b:
        line.note = f"failed in BASE: {(bf or {}).get('error') or '?'}"[:200]
        return line
    br, nr = b[0], n[0]
    if br.summary and nr.summary:
        cmp_ = stats.compare_samples(br.summary, nr.summary, test)
        line.ratio, line.ratio_err, line.p_value = cmp_.ratio, cmp_.ratio_err, cmp_.p_value
    if nr.verdict == "broken":
        line.mark = "broken" if br.verdict != "broken" else "not comparable"
        line.note = "NEW output is wrong (quality: broken): its speed does not count"
        return line
    if br.verdict == "broken":
        line.note = "BASE output was wrong (quality: broken)"
        return line
    if br.device_ok is False or nr.device_ok is False:
        line.note = "ran on the wrong device in " + " and ".join(s for s, r in (("BASE", br), ("NEW", nr)) if r.device_ok is False)
        return line
    if line.ratio is None:
        line.note = "no t/s"
        return line
    if line.p_value is None:
        line.mark, line.note = "untested", "no raw samples on one side: no significance test"
        return line
    significant = line.p_value < alpha
    if significant and line.ratio >= 1 + threshold:
        line.mark = "faster"
    elif significant and line.ratio <= 1 - threshold:
        line.mark = "slower"
    else:
        line.mark = "same"
        if significant:
            line.note = f"significant but within the {threshold:.0%} threshold"
    if nr.verdict == "degraded":
        line.note = (line.note + "; " if line.note else "") + "NEW output degraded (quality check)"
    return line


def _what_differs(bcol: rp.Collected, ncol: rp.Collected, keys: list[str]) -> str:
    parts = []
    for f in keys:
        bv = {rp.fmt_value(r.ident.get(f)) for r in bcol.results} or {rp.fmt_value(rp.identity(x).get(f)) for x in bcol.failures}
        nv = {rp.fmt_value(r.ident.get(f)) for r in ncol.results} or {rp.fmt_value(rp.identity(x).get(f)) for x in ncol.failures}
        if bv.isdisjoint(nv):
            parts.append(f"{f}: {'/'.join(sorted(bv))} vs {'/'.join(sorted(nv))}")
    return "; ".join(parts) if parts else "every setting occurs in both, but never in the same combination"


def provenance_diff(base: tuple[dict, list[dict]], new: tuple[dict, list[dict]]) -> list[tuple[str, str, str]]:
    """What differs between the runs' provenance (llama.cpp, images, host, ...), run id and times left out."""
    b = dict(rp.provenance(*base))
    n = dict(rp.provenance(*new))
    out = []
    for k in dict.fromkeys([*b, *n]):
        if k in ("run", "time"):
            continue
        if b.get(k) != n.get(k):
            out.append((k, b.get(k, "—"), n.get(k, "—")))
    return out


# --------------------------------------------------------------------------------------------------
# rendering


def dropped_text(cr: CompareResult) -> str:
    """The keys left out of the join, grouped by reason: 'absent from BASE x: n_batch, n_ubatch; ignored: backend'."""
    by: dict[str, list[str]] = {}
    for k, why in cr.dropped.items():
        by.setdefault(why, []).append(k)
    return "; ".join(f"{why}: {', '.join(keys)}" for why, keys in by.items())


def fmt_ratio(ln: Line) -> str:
    if ln.ratio is None:
        return "—"
    return f"{ln.ratio:.3f} ± {ln.ratio_err:.3f}" if ln.ratio_err is not None else f"{ln.ratio:.3f}"


def fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}" if p >= 0.001 else "<0.001"


def table(cr: CompareResult) -> tuple[list[str], list[list[str]]]:
    header = [rp.IDENTITY_FIELDS[f] for f in cr.shown] + ["test", f"t/s {cr.base_id}", f"t/s {cr.new_id}", "ratio", "p", "", "note"]
    cells = []
    for ln in cr.lines:
        bt = rp.fmt_ts(ln.base.summary) if ln.base else "failed"
        nt = rp.fmt_ts(ln.new.summary) if ln.new else "failed"
        if ln.new and ln.new.verdict:
            nt += f" [{ln.new.verdict}]"
        if ln.base and ln.base.verdict:
            bt += f" [{ln.base.verdict}]"
        cells.append([rp.fmt_value(ln.ident.get(f)) for f in cr.shown] +
                     [ln.test, bt, nt, fmt_ratio(ln), fmt_p(ln.p_value), MARKS[ln.mark], ln.note])
    return header, cells


def summary_lines(cr: CompareResult) -> list[str]:
    c = cr.counts()
    out = [f"{len(cr.lines)} tests compared: " + ", ".join(f"{v} {MARKS[k]} ({k})" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))]
    for kind in ("pp", "tg"):
        g = cr.geomean(kind)
        if g:
            out.append(f"{kind}: geometric mean ratio {g[0]:.3f} over {g[1]} tests")
    if cr.regressions:
        out.append(f"{len(cr.regressions)} regression(s) beyond {cr.threshold:.0%} (or broken / failed)")
    return out


def explanation(cr: CompareResult) -> str:
    name = "Welch's t-test" if cr.test == "welch" else "the Mann-Whitney U test"
    return (f"ratio = mean t/s NEW / mean t/s BASE ± its 1-sigma uncertainty (standard errors of the means, propagated); "
            f"p from {name} on the raw samples (samples_ts, two-sided); faster / SLOWER need p < {cr.alpha:g} and a change "
            f"of at least {cr.threshold:.0%}; ? = no raw samples on one side; x = not comparable; "
            "BROKEN = NEW's output is wrong (quality check), never counted as faster.")


def render_markdown(cr: CompareResult) -> str:
    out = [f"# compare {cr.base_id} (BASE) → {cr.new_id} (NEW)", ""]
    if cr.differences:
        out += ["What differs:", "", rp.md_table(["", "BASE", "NEW"], [list(d) for d in cr.differences]), ""]
    out += [f"- {s}" for s in summary_lines(cr)] + [""]
    header, cells = table(cr)
    out += [rp.md_table(header, cells), ""]
    if cr.dropped:
        out += ["Not used to match rows: " + dropped_text(cr), ""]
    if cr.only_base:
        out += [f"Only in BASE ({len(cr.only_base)}): " + "; ".join(cr.only_base[:20]) + (" ..." if len(cr.only_base) > 20 else ""), ""]
    if cr.only_new:
        out += [f"Only in NEW ({len(cr.only_new)}): " + "; ".join(cr.only_new[:20]) + (" ..." if len(cr.only_new) > 20 else ""), ""]
    out += [explanation(cr), ""]
    return "\n".join(out)


def render_console(cr: CompareResult, console) -> None:
    from rich.table import Table

    console.print(f"[bold]compare[/] {cr.base_id} (BASE) → {cr.new_id} (NEW)")
    if cr.differences:
        t = Table("", "BASE", "NEW", title="what differs", title_justify="left")
        for d in cr.differences:
            t.add_row(*d)
        console.print(t)
    header, cells = table(cr)
    t = Table(*header)
    styles = {"slower": "red", "broken": "bold red", "failed": "red", "faster": "green", "not comparable": "dim", "untested": "yellow"}
    for ln, row in zip(cr.lines, cells):
        t.add_row(*row, style=styles.get(ln.mark))
    console.print(t)
    for s in summary_lines(cr):
        console.print(s)
    if cr.dropped:
        console.print("[dim]not used to match rows: " + dropped_text(cr) + "[/]")
    for label, items in (("only in BASE", cr.only_base), ("only in NEW", cr.only_new)):
        if items:
            console.print(f"[dim]{label} ({len(items)}): " + "; ".join(items[:10]) + (" ..." if len(items) > 10 else "") + "[/]")
    console.print(f"[dim]{explanation(cr)}[/]")


# --------------------------------------------------------------------------------------------------
# entry point


def resolve_run(settings, ref: str) -> str:
    """A run id, or a llama-bench output file (imported once into results/ as a run of kind 'imported')."""
    from toolbox import results

    p = Path(ref).expanduser()
    if p.is_file():
        return results.import_files([p], settings.results_dir, argv=["compare", ref])
    return ref


def compare(settings, base: str, new: str, *, threshold: float = 0.05, alpha: float = 0.05, test: str = "welch",
            ignore: list[str] | tuple = ()) -> CompareResult:
    """`invoke compare BASE NEW`: load (or import) both, join, judge."""
    from toolbox import results

    b = results.load_run(settings.results_dir, resolve_run(settings, base))
    n = results.load_run(settings.results_dir, resolve_run(settings, new))
    return compare_runs(b, n, threshold=threshold, alpha=alpha, test=test, ignore=ignore,
                        unstable_spread=settings.unstable_spread)
