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
    x               not comparable: BASE does not count (broken output, wrong device), NEW ran on the wrong
                    device, failed in BASE, ambiguous match; no ratio (toolbox.quality.gate)
    BROKEN          NEW's output is wrong (quality verdict 'broken'): never called faster, no ratio -> regression
    FAILED          NEW failed where BASE worked                           -> regression
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.analysis import identity as rp
from toolbox.analysis import stats
from toolbox.analysis.provenance import provenance
from toolbox.errors import ToolboxError

MARKS = {
    "faster": "faster",
    "slower": "SLOWER",
    "same": "~",
    "untested": "?",
    "not comparable": "x",
    "broken": "BROKEN",
    "failed": "FAILED",
}
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
    # tokens per joule (telemetry), judged by the same rule on per-repetition tokens/J: more / less efficient / same
    tpj_ratio: float | None = None
    tpj_err: float | None = None
    tpj_p: float | None = None
    tpj_mark: str | None = None

    @property
    def regression(self) -> bool:
        return self.mark in REGRESSIONS


@dataclass
class CompareResult:
    base_id: str
    new_id: str
    keys: list[str]
    dropped: dict[str, str]  # key -> why it was left out of the join
    lines: list[Line]
    only_base: list[str]
    only_new: list[str]
    differences: list[tuple[str, str, str]]  # provenance label, base value, new value
    threshold: float
    alpha: float
    test: str
    shown: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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


def check_ignore(keys) -> None:
    """--ignore takes identity keys only."""
    unknown = [k for k in keys if k not in rp.IDENTITY_FIELDS]
    if unknown:
        raise ToolboxError(f"--ignore {','.join(unknown)}: not an identity key", f"choose from {', '.join(rp.IDENTITY_FIELDS)}")


def _jkey(ident: dict, keys: list[str]) -> tuple:
    return tuple(json.dumps(ident.get(k), sort_keys=True, default=str) for k in keys)


def _recorded(col: rp.Collected, f: str) -> bool:
    idents = [r.ident for r in col.results] + [rp.identity(x) for x in col.failures]
    return any(i.get(f) is not None for i in idents)


def compare_runs(
    base: tuple[dict, list[dict]],
    new: tuple[dict, list[dict]],
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
    test: str = "welch",
    ignore: list[str] | tuple = (),
    unstable_spread: float = 0.05,
) -> CompareResult:
    """Join BASE and NEW rows on identity keys and judge every pair. Raises ToolboxError when nothing matches."""
    check_ignore(ignore)
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
        raise ToolboxError(
            f"BASE {bid} and NEW {nid} have no test in common ({_what_differs(bcol, ncol, keys)})",
            "compare runs of the same matrix and model, or leave a setting out of the match with --ignore KEY[,KEY]",
        )
    lines.sort(key=by_change)
    shown, _ = rp.visible_fields([ln.ident for ln in lines])
    warnings = []
    if bid == nid:
        warnings.append(f"BASE and NEW are the same run ({bid}): every ratio is 1 by construction; compare two different runs")
    return CompareResult(
        bid,
        nid,
        keys,
        dropped,
        lines,
        only_base,
        only_new,
        provenance_diff(base, new),
        threshold,
        alpha,
        test,
        [f for f in shown if f in keys],
        warnings,
    )


def by_change(ln: Line) -> tuple:
    """Regressions first (broken and failed, then the largest slowdowns), then every other line by its ratio, then lines without one."""
    if ln.regression:
        group = 0
    elif ln.ratio is not None:
        group = 1
    else:
        group = 2
    return (group, ln.ratio is not None, ln.ratio or 0.0, ln.test)


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
    line = Line(
        ident,
        name,
        kind,
        b[0] if b else None,
        n[0] if n else None,
        "not comparable",
        base_error=(bf or {}).get("error") if not b else None,
        new_error=(nf or {}).get("error") if not n else None,
    )
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
    # a side that does not count (quality.gate) sets no ratio; NEW broken where BASE was not is a regression
    if nr.not_counted or br.not_counted:
        if nr.verdict == "broken" and br.verdict != "broken":
            line.mark = "broken"
        sides = [f"{s} {r.not_counted}" for s, r in (("BASE", br), ("NEW", nr)) if r.not_counted]
        line.note = "not counted: " + " and ".join(sides) + (" (quality check): its speed does not count" if line.mark == "broken" else "")
        return line
    if not (br.summary and nr.summary):
        line.note = "no t/s"
        return line
    _judge_energy(line, br, nr, threshold=threshold, alpha=alpha, test=test)
    cmp_, line.mark, line.note = judge_speed(br.summary, nr.summary, threshold=threshold, alpha=alpha, test=test)
    line.ratio, line.ratio_err, line.p_value = cmp_.ratio, cmp_.ratio_err, cmp_.p_value
    if line.mark == "untested":
        return line
    if nr.verdict == "degraded":
        line.note = (line.note + "; " if line.note else "") + "NEW output degraded (quality check)"
    return line


def _judge_energy(line: Line, br: rp.Result, nr: rp.Result, **how) -> None:
    """Tokens per joule of both sides (telemetry), by judge_speed's rule on the per-repetition values."""
    bs, ns = (stats.summarize([x for x in (r.energy or {}).get("samples_tokens_per_j") or [] if x]) for r in (br, nr))
    if bs is None or ns is None:
        return
    cmp_, mark, _ = judge_speed(bs, ns, **how)
    line.tpj_ratio, line.tpj_err, line.tpj_p = cmp_.ratio, cmp_.ratio_err, cmp_.p_value
    line.tpj_mark = {"faster": "more efficient", "slower": "less efficient"}.get(mark, mark)


def judge_speed(
    base: stats.Summary, new: stats.Summary, *, threshold: float = 0.05, alpha: float = 0.05, test: str = "welch"
) -> tuple[stats.Comparison, str, str]:
    """(comparison, mark, note) of NEW's t/s against BASE's: 'faster' / 'slower' when significant (p < alpha) and at
    least `threshold` apart, 'same' otherwise, 'untested' without raw samples. The one rule of compare, trends and answers."""
    cmp_ = stats.compare_samples(base, new, test)
    if cmp_.p_value is None:
        return cmp_, "untested", "no raw samples on one side: no significance test"
    significant = cmp_.p_value < alpha
    if significant and cmp_.ratio >= 1 + threshold:
        return cmp_, "faster", ""
    if significant and cmp_.ratio <= 1 - threshold:
        return cmp_, "slower", ""
    return cmp_, "same", f"significant but within the {threshold:.0%} threshold" if significant else ""


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
    b = dict(provenance(*base))
    n = dict(provenance(*new))
    out = []
    for k in dict.fromkeys([*b, *n]):
        if k in ("run", "time"):
            continue
        if b.get(k) != n.get(k):
            out.append((k, b.get(k, "—"), n.get(k, "—")))
    return out


# --------------------------------------------------------------------------------------------------
# entry point


def load_side(settings, ref: str) -> tuple[dict, list[dict]]:
    """(meta, rows) of a run (any reference the store resolves), or of a llama-bench output file, read in
    memory: comparing with a file never creates a run (`invoke import` does that)."""
    from toolbox.store.importer import read_files
    from toolbox.store.runs import load_run

    p = Path(ref).expanduser()
    if p.is_file():
        return read_files([p])
    return load_run(settings.results_dir, ref)


def compare(
    settings,
    base: str,
    new: str,
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
    test: str = "welch",
    ignore: list[str] | tuple = (),
) -> CompareResult:
    """`invoke compare BASE NEW`: load (or read) both, join, judge."""
    b = load_side(settings, base)
    n = load_side(settings, new)
    return compare_runs(b, n, threshold=threshold, alpha=alpha, test=test, ignore=ignore, unstable_spread=settings.unstable_spread)
