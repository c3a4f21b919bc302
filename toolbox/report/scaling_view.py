"""The scaling table of runs with RPC workers: per model and test, t/s against nodes, efficiency, link, load."""

from __future__ import annotations

from toolbox.analysis.identity import Collected
from toolbox.analysis.scaling import scaling

TITLE = "Scaling over RPC workers"
NOTE = (
    "nodes = this machine + its RPC workers; efficiency = t/s against the row with the fewest nodes of the same model, "
    "test and settings (1.00 = no loss; tg usually loses: every token crosses the link); link = the pre-check's upload "
    "throughput to the slowest worker and the longest round trip; load = seconds from the container's start to the "
    "first measurement, less the measured runs (an estimate: llama-bench prints no load time)"
)


def scaling_section(col: Collected) -> tuple[str, list[str], list[list[str]]] | None:
    """(title, header, cells), or None when no series has more than one node count."""
    points = scaling(col)
    if not points:
        return None
    several_runs = len({p["run_id"] for p in points}) > 1
    header = [
        *(["run"] if several_runs else []),
        "model",
        "test",
        "backend",
        "nodes",
        "workers",
        "t/s",
        "efficiency",
        "link MB/s",
        "rtt ms",
        "load s",
    ]
    cells = []
    for p in points:
        eff = "—" if p["efficiency"] is None else f"{p['efficiency']:.2f}" + (f" (vs {p['base_nodes']})" if p["base_nodes"] != 1 else "")
        cells.append(
            [
                *([p["run_id"][-6:]] if several_runs else []),
                str(p["model"]),
                p["test"],
                str(p["backend"]),
                str(p["nodes"]),
                ", ".join(p["workers"]) or "—",
                f"{p['ts']:.2f}",
                eff,
                "—" if p["link_mbs"] is None else f"{p['link_mbs']:.0f}",
                "—" if p["rtt_ms"] is None else f"{p['rtt_ms']:.2f}",
                "—" if p["load_s"] is None else f"{p['load_s']:.1f}",
            ]
        )
    return TITLE, header, cells
