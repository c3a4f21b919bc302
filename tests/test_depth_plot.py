"""The depth plot reads at a glance: backends on shared axes, log-2 depth, a handful of lines, one look per configuration."""

from helpers import DEPTH, FIXTURE_RUNS, KV, NEW_KV

from toolbox.analysis.identity import collect
from toolbox.report import plots
from toolbox.store.runs import load_run


def _texts(run_id):
    return plots.plot_depth(collect([load_run(FIXTURE_RUNS, run_id)])).texts


def test_every_backend_shares_one_panel_per_kind_on_a_log2_depth_axis():
    texts = _texts(DEPTH)
    assert {"pp512 backend=cpu", "pp512 backend=vulkan", "tg128 backend=cpu", "tg128 backend=vulkan"} <= set(texts)
    assert "Prompt processing" in texts and "Generation" in texts  # no panel per backend
    assert {"0", "1k", "4k", "8k"} <= set(texts) and "context depth (tokens, log-2 scale)" in texts


def test_a_panel_keeps_the_fastest_lines_and_greys_what_does_not_count():
    texts = _texts(NEW_KV)  # 24 configurations per kind, one of them broken
    lines = sorted({t for t in texts if t.startswith("pp512 ")})  # each label is drawn twice: the line and its legend entry
    assert len(lines) == plots.MAX_SERIES + 1  # the five fastest that count, and the broken one greyed
    assert sum("(not counted: broken)" in t for t in lines) == 1
    assert any("more lines left out" in t for t in texts)
    col = collect([load_run(FIXTURE_RUNS, NEW_KV)])
    means = {}  # the lines kept are the fastest by mean t/s over the depths
    for r in col.results:
        if r.kind == "pp" and not r.not_counted:
            key = (f"backend={r.ident['backend']}, K={r.ident['type_k']}, V={r.ident['type_v']}", r.ident["flash_attn"])
            means.setdefault(key, []).append(r.summary.median)
    best = sorted(means, key=lambda k: -sum(means[k]) / len(means[k]))[: plots.MAX_SERIES]
    assert {fa for _, fa in best} == {"on"}  # so the legend leaves fa out: it does not vary among the lines drawn
    assert sorted(t.split(" ", 1)[1] for t in lines if "not counted" not in t) == sorted(k for k, _ in best)


def test_one_look_per_configuration_on_every_plot():
    a = plots.config_styles(["backend=cpu", "backend=vulkan", "backend=rocm"])
    b = plots.config_styles(["backend=vulkan", "backend=rocm", "backend=cpu"])
    assert a == b and len(set(a.values())) == 3
    many = plots.config_styles(f"cfg{i}" for i in range(30))
    assert len(set(many.values())) == 30  # 10 colours x 3 line styles before a look repeats
    assert _texts(KV)  # a run with two depths draws


def _pixels(png: bytes, colour: str) -> int:
    """How many pixels of the PNG have this colour (markers and bars are filled with it)."""
    import io

    import matplotlib.image as mpimg
    import numpy as np

    img = (mpimg.imread(io.BytesIO(png))[..., :3] * 255).round()
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=-1) <= 2).sum())


def test_a_backend_has_the_same_colour_in_the_depth_and_the_bar_plot():
    """depth.png's line 'backend=cpu' and backends.png's cpu bars are drawn in one colour, vulkan in another."""
    col = collect([load_run(FIXTURE_RUNS, DEPTH)])
    looks = plots.config_styles(["backend=cpu", "backend=vulkan"])
    depth, bars = plots.plot_depth(col), plots.plot_backends(col)
    for backend in ("cpu", "vulkan"):
        colour = looks[f"backend={backend}"][0]
        assert _pixels(depth.png, colour) > 50 and _pixels(bars.png, colour) > 500, backend
    unused = plots.STYLES[5][0]  # a colour neither plot should use
    assert _pixels(depth.png, unused) == 0 and _pixels(bars.png, unused) == 0
