"""telemetry.png: power, gfx clock and temperature over a run, with its groups and idle baselines marked.

Drawn from results/<run_id>/telemetry.jsonl (every sample, nothing smoothed). No plot when the run has
no telemetry or its host had no sensor: nothing is drawn that was not measured.
"""

from __future__ import annotations

from pathlib import Path

from toolbox.analysis.energy import power_series
from toolbox.report.plots import Plot, _fit, _plot
from toolbox.store.telemetry import read_sessions

CLOCKS = ("gpu.sclk_mhz", "gpu.metrics.gfxclk_mhz")


def _series(samples: list[dict], names) -> tuple[str | None, list[tuple[float, float]]]:
    for name in names:
        pts = [(s["t"], float(s["v"][name])) for s in samples if isinstance(s["v"].get(name), (int, float))]
        if pts:
            return name, pts
    return None, []


def _temps(samples: list[dict]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        for k, v in s["v"].items():
            if k.endswith("_c") and "temp" in k and isinstance(v, (int, float)):
                out.setdefault(k, []).append((s["t"], float(v)))
    return out


def plot_telemetry(run_path: Path) -> Plot | None:
    """The run's power / clock / temperature plot, or None when it has no samples."""
    sessions = [s for s in read_sessions(run_path) if s["samples"]]
    if not sessions:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, sharex=True, figsize=_fit(11, 7))
    offset = 0.0  # sessions (a resumed run) are drawn one after the other
    for n, sess in enumerate(sessions):
        t0 = sess["samples"][0]["t"]

        def x(t, t0=t0, offset=offset):
            return t - t0 + offset

        source, pts = power_series(sess)
        if pts:
            axes[0].plot([x(t) for t, _ in pts], [p for _, p in pts], color="#d62728", lw=1, label=source if n == 0 else None)
        clock, cpts = _series(sess["samples"], CLOCKS)
        if cpts:
            axes[1].plot([x(t) for t, _ in cpts], [c for _, c in cpts], color="#1f77b4", lw=1, label=clock if n == 0 else None)
        for i, (name, tpts) in enumerate(sorted(_temps(sess["samples"]).items())[:6]):
            axes[2].plot([x(t) for t, _ in tpts], [v for _, v in tpts], lw=1, label=name if n == 0 else None, color=f"C{i}")
        starts: dict[str, float] = {}
        for m in sess["marks"]:
            ev, g = m.get("event"), m.get("group")
            if ev in ("idle_start", "container_start"):
                starts[ev + str(g)] = m["t"]
            elif ev in ("idle_end", "container_end"):
                begin = starts.pop(("idle_start" if ev == "idle_end" else "container_start") + str(g), None)
                if begin is None:
                    continue
                for ax in axes:
                    ax.axvspan(x(begin), x(m["t"]), color="#dddddd" if ev == "idle_end" else "#fff2cc", zorder=0)
                if ev == "container_end":
                    axes[0].annotate(str(g)[-6:], (x(begin), 1.0), xycoords=("data", "axes fraction"), fontsize=7, va="top")
            elif ev == "row":
                axes[0].axvline(x(m["t"]), color="#888888", lw=0.5, ls=":")
        offset = x(sess["samples"][-1]["t"]) + 1.0
    axes[0].set_ylabel("power, W")
    axes[1].set_ylabel("gfx clock, MHz")
    axes[2].set_ylabel("temperature, °C")
    axes[2].set_xlabel("seconds since sampling started (yellow: a group's container runs, grey: idle baseline, dotted: a row arrives)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    scope = (
        "APU package power (CPU + GPU)"
        if (source or "").startswith("gpu.")
        else "CPU package power (RAPL)"
        if source
        else "no power sensor"
    )
    fig.suptitle(f"Telemetry over the run: {scope}", fontsize=10)
    return _plot("telemetry.png", "Power, gfx clock and temperature over the run", fig)
