"""Reports and roofline figures, on run directories written per docs/results-schema.md.

tests/data/runs/ holds synthetic runs with realistic numbers (written through toolbox.results.make_row
by tests/data/runs/generate.py): a kv run and a depth run on the cpu and vulkan (lavapipe) images,
a pin-update kv run, an old imported markdown log and a run of failures only.
"""

import shutil

import pytest
from helpers import DEPTH, FAILED, IMPORTED, KV, NEW_KV

from toolbox.analysis import roofline as rf
from toolbox.errors import ToolboxError
from toolbox.report import render as rp
from toolbox.report import tables

# --- roofline, checked by hand -----------------------------------------------------------------

# llama.cpp's README row for LLaMA 7B Q4_0: model_size 3.56 GiB, 6.74 B parameters
LLAMA7B = {"model_type": "llama 7B Q4_0", "model_size": 3825065984, "model_n_params": 6738415616}


def test_tg_bandwidth_by_hand():
    row = {**LLAMA7B, "n_prompt": 0, "n_gen": 128, "n_depth": 0}
    r = rf.roofline(row, 50.0, peak_bandwidth_gbs=256.0, peak_tflops=59.4)
    # 3825065984 bytes x 50 t/s = 191.2533 GB/s; 191.2533 / 256 = 74.71 %
    assert r.kind == "tg" and r.unit == "GB/s"
    assert r.value == pytest.approx(191.2532992)
    assert r.share == pytest.approx(0.747083, rel=1e-5)
    assert not r.estimated and "dense" in r.basis


def test_pp_tflops_by_hand():
    row = {**LLAMA7B, "n_prompt": 512, "n_gen": 0, "n_depth": 0}
    r = rf.roofline(row, 1000.0, peak_bandwidth_gbs=256.0, peak_tflops=59.4)
    # 2 x 6738415616 x 1000 / 1e12 = 13.4768 TFLOP/s; / 59.4 = 22.69 %
    assert r.kind == "pp" and r.value == pytest.approx(13.476831232)
    assert r.share == pytest.approx(13.476831232 / 59.4)


def test_moe_counts_active_experts_only():
    row = {
        "model_type": "qwen3moe 30B.A3B Q4_K - Medium",
        "model_size": 17_280_000_000,
        "model_n_params": 30_500_000_000,
        "n_prompt": 0,
        "n_gen": 128,
    }
    est = rf.roofline(row, 70.0, peak_bandwidth_gbs=256.0, peak_tflops=59.4)
    assert est.estimated and est.value == pytest.approx(17.28e9 * 3 / 30 * 70 / 1e9)
    exact = rf.roofline(row, 70.0, peak_bandwidth_gbs=256.0, peak_tflops=59.4, hint={"active_params": 3.3e9})
    assert not exact.estimated and exact.value == pytest.approx(17.28e9 * 3.3e9 / 30.5e9 * 70 / 1e9)
    # a measured peak from the settings changes the share, not the figure
    measured = rf.roofline(row, 70.0, peak_bandwidth_gbs=215.0, peak_tflops=59.4, hint={"active_params": 3.3e9})
    assert measured.value == exact.value and measured.share == pytest.approx(exact.value / 215.0)


def test_no_figure_for_mixed_tests_or_missing_fields():
    assert rf.roofline({**LLAMA7B, "n_prompt": 512, "n_gen": 128}, 100.0, peak_bandwidth_gbs=256, peak_tflops=59.4) is None
    assert rf.roofline({"n_gen": 128}, 100.0, peak_bandwidth_gbs=256, peak_tflops=59.4) is None
    assert rf.roofline({**LLAMA7B, "n_gen": 128}, None, peak_bandwidth_gbs=256, peak_tflops=59.4) is None


# --- reports ------------------------------------------------------------------------------------


def test_kv_report_files_tables_and_plots(results):
    rep = rp.report(results, [KV])
    out = results.results_dir / KV
    names = {f.name for f in rep.files}
    assert names == {"report.md", "report.html", "depth.png", "kv.png", "backends.png"}
    for png in ("depth.png", "kv.png", "backends.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    # provenance heads the report
    assert md.index("**llama.cpp**: 0c1e5709 (b11312)") < md.index("## Prompt processing")
    assert "Mesa 25.0.7-2" in md and "6.12.48+deb13-amd64" in md
    # columns that never vary are hidden and stated once; those that vary are shown
    header = next(line for line in md.splitlines() if line.startswith("| backend"))
    assert "| K | V | fa |" in header and "batch" not in header and "threads" not in header
    assert "batch = `2048`" in md
    # the noisy row is flagged, with the fix
    assert "unstable" in md and "check thermals" in md
    # every tg row carries its bandwidth, explained
    tg = md.split("## Generation")[1].split("##")[0]
    assert "GB/s" in tg and "bytes of weights read per token" in md


def test_tiny_model_row_bandwidth_in_report_matches_formula(results):
    rep = rp.report(results, [DEPTH], write=False)
    r = next(x for x in rep.collected.results if x.test == "tg128" and x.ident["backend"] == "cpu")
    assert r.roofline.value == pytest.approx(8395264 * r.summary.median / 1e9)
    assert r.roofline.share == pytest.approx(r.roofline.value / results.peak_bandwidth_gbs)


def test_html_is_self_contained(results):
    rp.report(results, [DEPTH])
    html = (results.results_dir / DEPTH / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # depth + backends
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "Failures" in html and "n_ctx_train" in html


def test_depth_report_lists_failures_and_few_samples(results):
    rep = rp.report(results, [DEPTH])
    assert len(rep.collected.failures) == 4
    assert any("only 2 samples" in w for w in rep.warnings)
    assert "kv.png" not in {f.name for f in rep.files}  # K and V never vary: no heatmap


def test_imported_log_without_most_fields_does_not_crash(results):
    rep = rp.report(results, [IMPORTED])
    md = (results.results_dir / IMPORTED / "report.md").read_text()
    assert "old-vulkan.md" in md and "880.4" in md
    r = rep.collected.results[0]
    assert r.summary.n is None and "no samples" in tables.flags(r)


def test_run_with_only_failures_says_so(results):
    rep = rp.report(results, [FAILED])
    assert rep.empty and not rep.plots
    md = (results.results_dir / FAILED / "report.md").read_text()
    assert "No successful results" in md and "requires flash_attn" in md


def test_latest_run_is_the_default_and_unknown_ids_name_the_closest(results):
    assert rp.report(results, None, write=False).run_ids == [FAILED]
    with pytest.raises(ToolboxError, match="did you mean 20261126T090000Z-a11a11"):
        rp.report(results, ["20261126T090000Z-a11a12"])


def test_plot_that_cannot_be_written_is_reported_not_fatal(results, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "depth.png").mkdir()  # a directory where the PNG should go
    rep = rp.report(results, [DEPTH], out_dir=out)
    assert any("depth.png could not be written" in p for p in rep.problems)
    assert (out / "report.md").exists() and "depth.png" not in (out / "report.md").read_text()


def test_unwritable_report_directory_is_a_clear_error(results, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ToolboxError, match="pass a writable directory"):
        rp.report(results, [DEPTH], out_dir=blocker / "sub")


def test_quality_shown_next_to_ts_and_several_runs(results):
    rep = rp.report(results, [KV, NEW_KV])
    md = rep.files[-2].read_text()
    assert rep.files[0].parent == results.results_dir / NEW_KV / "reports" / f"{KV}+{NEW_KV}"
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    assert "quality" in header
    assert "| broken |" in md and "output is wrong" in md


def test_rich_console_rendering(results):
    from rich.console import Console

    console = Console(record=True, width=200)
    rp.render_console(rp.report(results, [KV], write=False), console)
    text = console.export_text()
    assert "Generation" in text and "tg128@d4096" in text and "warning" in text


# --- results that do not count (quality.gate): never best, never a scale or ratio, greyed with the reason ----


def _broken(rep):
    return [r for r in rep.collected.results if r.not_counted == "broken"]


def test_broken_configuration_is_never_best_in_plots_on_c33c33(results):
    rep = rp.report(results, [NEW_KV])
    plots = {p.name: p for p in rep.plots}
    broken = _broken(rep)
    # vulkan q4_0/q4_0 fa=on: its verdict is the configuration's, so all four of its tests are out
    assert len(broken) == 4 and {r.ident["backend"] for r in broken} == {"vulkan"}
    kv = plots["kv.png"].texts
    for r in broken:
        assert f"{r.summary.median:.4g}\nbest" not in kv
        assert f"{r.summary.median:.4g}\nbroken" in kv
    # pp512 on vulkan with fa on: the best cell is the fastest that counts, f16/f16 (908.6), not the broken 1044
    assert "908.6\nbest" in kv
    bars = plots["backends.png"].texts
    assert not any(t.startswith(f"{r.summary.median:.4g}") for r in broken for t in bars)
    assert any("not counted (grey): 4 broken" in t for t in bars)
    # and the tables say why, greyed
    md = (results.results_dir / NEW_KV / "report.md").read_text()
    assert md.count("not counted: broken") == 4
    html = (results.results_dir / NEW_KV / "report.html").read_text()
    assert html.count("<tr class=excluded>") == 4 and "tr.excluded td{color:#8a8a8a" in html


def _with_off_device(results, run_id, pick):
    """The run's rows with one row marked as run on another device (device_ok false)."""
    from toolbox.store.runs import load_run

    meta, rows = load_run(results.results_dir, run_id)
    rows = [dict(r) for r in rows]
    victim = max((r for r in rows if pick(r)), key=lambda r: r["avg_ts"])
    victim.update(device_ok=False, samples_ts=[x * 3 for x in victim["samples_ts"]], avg_ts=victim["avg_ts"] * 3)
    return meta, rows, victim


def test_off_device_row_is_greyed_and_never_best(results):
    meta, rows, victim = _with_off_device(
        results, KV, lambda r: r["backend"] == "vulkan" and r["n_prompt"] == 512 and r["n_depth"] == 0 and r["flash_attn"] == 1
    )
    from toolbox.report.plots import plot_backends, plot_kv

    rep = rp.build_report([(meta, rows)], with_plots=False)
    off = [r for r in rep.collected.results if r.not_counted]
    assert [r.not_counted for r in off] == ["off-device"]
    kv = plot_kv(rep.collected).texts
    assert f"{off[0].summary.median:.4g}\noff-device" in kv and f"{off[0].summary.median:.4g}\nbest" not in kv
    bars = plot_backends(rep.collected).texts
    assert not any(t.startswith(f"{off[0].summary.median:.4g}") for t in bars)
    md = rp.render_markdown(rep)
    assert "not counted: off-device" in md and any("ran on another device" in w for w in rep.warnings)


def test_backend_with_nothing_that_counts_gets_a_grey_bar_with_its_reason(results):
    from toolbox.store.runs import load_run

    meta, rows = load_run(results.results_dir, KV)
    from toolbox.analysis.identity import collect
    from toolbox.report.plots import plot_backends

    rows = [dict(r, device_ok=False) if r["backend"] == "vulkan" else r for r in rows]
    bars = plot_backends(collect([(meta, rows)]))
    assert bars.name == "backends.png" and any("not counted: off-device" in t for t in bars.texts)


def test_compare_gives_no_ratio_for_an_off_device_side(results):
    from toolbox.analysis import compare as cmp
    from toolbox.report import compare_view
    from toolbox.store.runs import load_run

    meta, rows, victim = _with_off_device(results, NEW_KV, lambda r: r["backend"] == "cpu" and r["n_gen"] == 128)
    cr = cmp.compare_runs(load_run(results.results_dir, KV), ({**meta, "run_id": "NEWRUN"}, rows))
    off = [ln for ln in cr.lines if ln.new and ln.new.not_counted == "off-device"]
    assert len(off) == 1 and off[0].ratio is None and off[0].mark == "not comparable"
    assert "not counted: NEW off-device" in off[0].note
    assert "[not counted: off-device]" in compare_view.render_markdown(cr)


def test_failures_are_greyed_in_html(results):
    rp.report(results, [DEPTH])
    html = (results.results_dir / DEPTH / "report.html").read_text()
    failures = html.split("<h2>Failures</h2>")[1].split("</table>")[0]
    assert failures.count("<tr class=excluded>") == 4


# --- the end of invoke bench -------------------------------------------------------------------------


def _summary_text(rows, **kw):
    from rich.console import Console

    from toolbox.report.summary import summary_notes, summary_tables

    console = Console(record=True, width=200)
    for t in summary_tables(rows, **kw):
        console.print(t)
    return console.export_text(), summary_notes(rows, **kw)


def test_bench_summary_flags_unstable_rows_and_says_what_to_do():
    row = {"status": "ok", "test": "tg128", "n_prompt": 0, "n_gen": 128, "n_depth": 0, "backend": "cpu"}
    rows = [
        dict(row, avg_ts=105.79, stddev_ts=138.89, samples_ts=[265.9, 25.7, 25.77]),
        dict(row, test="pp512", n_prompt=512, n_gen=0, avg_ts=2000.0, stddev_ts=10.0, samples_ts=[1990.0, 2000.0, 2010.0]),
    ]
    text, notes = _summary_text(rows)
    assert "105.79 ± 138.89" in text and "unstable" in text
    assert len(notes) == 1 and "1 unstable result(s)" in notes[0] and "tg128 105.79 ± 138.89" in notes[0]
    assert "--repetitions" in notes[0]
    # the same rule as the report: a setting, not a constant
    assert not _summary_text(rows, unstable_spread=2.0)[1]


def test_bench_summary_greys_broken_off_device_and_failed_rows(results):
    from toolbox.store.runs import load_run

    _, rows = load_run(results.results_dir, NEW_KV)
    text, notes = _summary_text(rows)  # the fixture's rows carry the verdict on their pp512 tests
    assert text.count("not counted: broken") == 2
    assert notes == ["2 result(s) not counted: " + "output is wrong (quality check: broken): its speed means nothing"]
    _, rows = load_run(results.results_dir, DEPTH)
    rows = [dict(r, device_ok=False) if r.get("backend") == "vulkan" and r.get("status") == "ok" else r for r in rows]
    text, notes = _summary_text(rows)
    assert "not counted: off-device" in text and "failed: " in text
    assert any("not counted: ran on another device" in n for n in notes)


# --- reports on mixed and imported runs stay readable ----------------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The fixture runs plus every llama-bench sample of tests/data imported as one run (many machines, eras and
    formats), and the report on all of them, written once for the tests below."""
    from helpers import DATA, FIXTURE_RUNS

    from toolbox.settings import load_settings
    from toolbox.store.importer import import_files

    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(FIXTURE_RUNS, root / "results", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    s = load_settings(results_dir=root / "results")
    imported = import_files([DATA / "llama-bench"], s.results_dir).run_id
    rep = rp.report(s, [KV, DEPTH, NEW_KV, IMPORTED, imported], out_dir=root / "report")
    return s, imported, rep


def _png_size(png: bytes) -> tuple[int, int]:
    import struct

    return struct.unpack(">II", png[16:24])


def test_report_on_imported_and_mixed_runs_stays_readable(mixed):
    from toolbox.analysis.identity import collect
    from toolbox.report.plots import plot_depth
    from toolbox.store.runs import load_runs

    s, imported, rep = mixed
    assert {p.name for p in rep.plots} == {"depth.png", "kv.png", "backends.png"}
    for p in rep.plots:  # no 5000 x 7000 px figures
        w, h = _png_size(p.png)
        assert w <= 2100 and h <= 2300, (p.name, w, h)
    md = (rep.out_dir / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| ") and "t/s" in line)
    # a column of one value and unknowns is said once above the table, not shown
    assert "cpu moe" not in header and "cpu moe = `0` (where recorded)" in md
    assert header.count("|") < 22
    # no single-point panels: a model measured at one depth only gets no depth panel
    depth = plot_depth(collect(load_runs(s.results_dir, [imported])))
    assert not any("llama 7B mostly Q4_0" in t for t in depth.texts)
    assert any(t.startswith("Prompt processing — model=gpt-oss 120B") for t in depth.texts)


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium (a real browser measures the page)")
def test_html_report_of_mixed_runs_fits_the_page_in_a_browser(mixed, tmp_path):
    import json
    import re
    import subprocess

    out_dir = mixed[2].out_dir
    # a copy with a probe script (the report itself has none): the page's width as Chromium lays it out
    probe = (
        "<script>addEventListener('load',()=>{const d=document.documentElement;"
        "document.body.dataset.m=JSON.stringify({scroll:d.scrollWidth,inner:innerWidth,"
        "tables:Math.max(...[...document.querySelectorAll('table')].map(t=>t.getBoundingClientRect().right))})})</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text((out_dir / "report.html").read_text().replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    m = json.loads(re.search(r'data-m="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert m["inner"] == 1280 and m["scroll"] <= m["inner"] and m["tables"] <= m["inner"], m
