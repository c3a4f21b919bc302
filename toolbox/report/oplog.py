"""The optimization log: your own Markdown file, one dated entry per change tried on this machine.

`invoke log BEFORE AFTER --title ... [--note ...]` compares the two runs (toolbox.analysis.compare)
and appends what changed (the provenance differences and the note), the key figures before and
after with their ratio and mark, the geometric mean ratio per test kind, and the run ids, so that
every number can be traced back to results/<run_id>/. Entries are only ever appended, to the setting
oplog_file (default: results/optimization-log.md) or --file; never to the repository's own
docs/optimization-log.md, which holds the project's entries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from toolbox.analysis import compare as cmp
from toolbox.analysis.identity import IDENTITY_FIELDS
from toolbox.errors import ToolboxError
from toolbox.report.compare_view import fmt_p, fmt_ratio, side
from toolbox.report.tables import fmt_value, md_table

HEADER = """# Optimization log

The running record of which optimization did what on this machine. Each entry is appended by

    invoke log BEFORE_RUN AFTER_RUN --title "what was tried" [--note "why, how"] [--file LOG]

and holds: the date, what changed between the runs (llama.cpp commit, images, host settings, as
recorded in their run.json, plus the note), the key figures before and after with the ratio
(± its uncertainty) and the mark of `invoke compare` (faster / SLOWER / ~ no significant change /
? untested / x not comparable / BROKEN), the geometric mean ratio per test kind (pp = prompt
processing, tg = generation), and the run ids: every number can be traced to results/<run_id>/.
Entries are appended, never edited; a wrong entry is corrected by a later one.
"""

MAX_LINES = 12


def entry(cr: cmp.CompareResult, title: str, note: str | None = None, when: datetime | None = None) -> str:
    """One Markdown entry: heading with date and title, what changed, key figures, summary, run ids."""
    when = when or datetime.now(UTC)
    out = [f"## {when:%Y-%m-%d} — {title.strip()}", ""]
    out.append(f"- before: `{cr.base_id}`, after: `{cr.new_id}`")
    if note:
        out.append(f"- note: {note.strip()}")
    if cr.differences:
        out.append("- what changed: " + "; ".join(f"{k}: {b} → {n}" for k, b, n in cr.differences))
    else:
        out.append("- what changed: nothing recorded in run.json differs (see the note)")
    for kind, name in (("pp", "prompt processing"), ("tg", "generation")):
        g = cr.geomean(kind)
        if g:
            out.append(f"- {name}: geometric mean ratio **{g[0]:.3f}** over {g[1]} tests")
    counts = cr.counts()
    out.append("- verdicts: " + ", ".join(f"{v} {cmp.MARKS[k]}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    if cr.regressions:
        out.append(f"- **{len(cr.regressions)} regression(s)** beyond {cr.threshold:.0%} (or broken / failed)")
    out.append("")
    # key figures: the largest changes first (regressions always included), at most MAX_LINES
    lines = sorted(cr.lines, key=lambda ln: (not ln.regression, -abs((ln.ratio or 1.0) - 1.0)))[:MAX_LINES]
    lines.sort(key=lambda ln: cr.lines.index(ln))
    header = [IDENTITY_FIELDS[f] for f in cr.shown] + ["test", "before t/s", "after t/s", "ratio", "p", ""]
    cells = [
        [fmt_value(ln.ident.get(f)) for f in cr.shown]
        + [
            ln.test,
            side(ln.base),
            side(ln.new),
            fmt_ratio(ln),
            fmt_p(ln.p_value),
            cmp.MARKS[ln.mark],
        ]
        for ln in lines
    ]
    if len(cr.lines) > len(lines):
        out.append(f"Key figures ({len(lines)} of {len(cr.lines)} tests, largest changes; all: `invoke compare {cr.base_id} {cr.new_id}`):")
    else:
        out.append("Key figures:")
    out += ["", md_table(header, cells), ""]
    return "\n".join(out) + "\n"


def append_entry(path: Path, text: str) -> None:
    """Append one entry, creating the log with its header when it does not exist yet."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        with open(path, "a", encoding="utf-8") as f:
            if not existing:
                f.write(HEADER)
            if existing and not existing.endswith("\n"):
                f.write("\n")
            f.write("\n" + text)
    except OSError as exc:
        raise ToolboxError(f"cannot append to {path}: {exc.strerror or exc}", "check the file's permissions") from None


def log_path(settings) -> Path:
    """Where `invoke log` appends: the setting oplog_file, else optimization-log.md in the results directory."""
    return Path(settings.oplog_file) if settings.oplog_file else Path(settings.results_dir) / "optimization-log.md"


def log(
    settings,
    title: str,
    before: str,
    after: str,
    note: str | None = None,
    *,
    path: Path | None = None,
    threshold: float = 0.05,
    ignore: list[str] | tuple = (),
) -> tuple[Path, str, cmp.CompareResult]:
    """`invoke log`: compare BEFORE and AFTER and append the entry to your log (path, else the setting oplog_file)."""
    if not title or not title.strip():
        raise ToolboxError("--title: the entry needs a title", 'pass --title "what was tried"')
    path = Path(path).expanduser() if path else log_path(settings)
    cr = cmp.compare(settings, before, after, threshold=threshold, ignore=ignore)
    text = entry(cr, title, note)
    append_entry(path, text)
    return path, text, cr
