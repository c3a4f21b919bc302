"""invoke site: the static site over every run, built from the fixture runs and opened in a real browser.

The browser tests drive Debian's chromium through chromedriver with selenium, from file:// (no server),
and write screenshots of the index and a run page to test-artifacts/site/. They skip with the reason
when chromium, chromedriver or selenium are missing (./setup.sh installs them).
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
from helpers import FAILED, FIXTURE_RUNS, KV, NEW_KV, relabelled_copy

from toolbox.analysis.identity import identity
from toolbox.settings import load_settings
from toolbox.site import data
from toolbox.site.build import build_site, serve

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "site"
LLAMA7B = "20261127T080000Z-f66f66"  # a copy of the kv run as if measured on llama 7B Q4_0: public figures exist for it


def _copy_runs(root: Path) -> Path:
    results = root / "results"
    shutil.copytree(FIXTURE_RUNS, results, ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.md"))
    relabelled_copy(
        results, KV, LLAMA7B, model_type="llama 7B Q4_0", model_file="/models/llama-2-7b.Q4_0.gguf", host="strix-owner",
        started_at="2026-11-27T08:00:00Z",
    )  # fmt: skip
    return results


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    s = load_settings(results_dir=_copy_runs(root))
    res = build_site(s, root / "site")
    return s, res


def _points_of(results: Path, run_id: str, test: str, **match) -> tuple[str, int]:
    """(trend id, number of runs that have an ok row of this identity), counted from the rows files themselves."""
    first = None
    for line in (results / run_id / "rows.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("status", "ok") == "ok" and r["test"] == test and all(r.get(k) == v for k, v in match.items()):
            first = identity(r)
            break
    assert first
    runs = 0
    for d in results.iterdir():
        rows = [json.loads(x) for x in (d / "rows.jsonl").read_text().splitlines() if x.strip()] if (d / "rows.jsonl").exists() else []
        runs += any(r.get("status", "ok") == "ok" and identity(r) == first for r in rows)
    model = first.get("model_file") or first.get("model")
    return data.trend_id(model, test, data.config_key(first)), runs


# --- without a browser ---------------------------------------------------------------------------


def test_every_run_gets_a_page_and_a_line_and_failed_runs_are_listed(site):
    s, res = site
    out = res.out_dir
    ids = sorted(p.name for p in Path(s.results_dir).iterdir())
    assert sorted(res.rebuilt) == ids and not res.problems
    index = (out / "index.html").read_text()
    for rid in ids:
        assert (out / "runs" / f"{rid}.html").exists() and f"runs/{rid}.html" in index
    failed = (out / "runs" / f"{FAILED}.html").read_text()
    assert "No successful results" in failed
    page = (out / "runs" / f"{NEW_KV}.html").read_text()
    assert page.index("The answer") < page.index("What ran") and "../assets/site.css" in page


def test_incremental_rebuild_reads_only_changed_runs_and_drops_removed_ones(tmp_path):
    s = load_settings(results_dir=_copy_runs(tmp_path))
    out = tmp_path / "site"
    first = build_site(s, out)
    assert len(first.rebuilt) == 6
    again = build_site(s, out)
    assert again.rebuilt == [] and again.kept == 6 and again.pages_written == 0
    rows = Path(s.results_dir) / KV / "rows.jsonl"
    rows.write_text(rows.read_text() + "\n")  # the run changed (a resumed run appends)
    third = build_site(s, out)
    assert third.rebuilt == [KV] and third.kept == 5
    shutil.rmtree(Path(s.results_dir) / FAILED)
    fourth = build_site(s, out)
    assert fourth.removed == [FAILED] and not (out / "runs" / f"{FAILED}.html").exists()
    assert FAILED not in (out / "index.html").read_text()
    (Path(s.results_dir) / NEW_KV / "run.json").write_text("{not json")
    fifth = build_site(s, out)
    assert fifth.problems and NEW_KV in fifth.problems[0] and not (out / "runs" / f"{NEW_KV}.html").exists()
    assert "status-corrupt" in (out / "index.html").read_text()
    full = build_site(s, out, full=True)
    assert len(full.rebuilt) == 4 and full.kept == 0


def test_serve_answers_on_localhost(site):
    _, res = site
    server = serve(res.out_dir, 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        host, port = server.server_address
        assert host == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10).read().decode()
        assert "Benchmark runs" in body and KV in body
    finally:
        server.shutdown()
        server.server_close()


# --- in a real browser ---------------------------------------------------------------------------


def _driver(scripts: bool = True):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra: ./setup.sh)")
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("needs Debian's chromium and chromium-driver (./setup.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    if not scripts:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


@pytest.fixture(scope="module")
def browser():
    d = _driver()
    yield d
    d.quit()


def _visible_ids(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    return [r.find_element(By.CSS_SELECTOR, "td").text for r in rows if r.is_displayed()]


def test_index_sorts_on_a_header_click_and_filters_rows(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, res = site
    browser.get((res.out_dir / "index.html").as_uri())
    before = _visible_ids(browser)
    assert len(before) == 6 and before == sorted(before, reverse=True)  # newest first (run ids sort by start time)
    header = browser.find_element(By.XPATH, "//table[@id='runs']//th[.//button[normalize-space()='rows']]//button")
    header.click()
    ascending = _visible_ids(browser)
    assert ascending != before and ascending[0] == FAILED  # 2 rows, the fewest
    header.click()
    assert _visible_ids(browser)[-1] == FAILED  # descending
    search = browser.find_element(By.CSS_SELECTOR, "[data-filter-for=runs] input[type=search]")
    search.send_keys("c33c33")
    assert _visible_ids(browser) == [NEW_KV]
    assert "1 of 6 shown" in browser.find_element(By.CSS_SELECTOR, "[data-filter-for=runs] .count").text
    search.clear()
    search.send_keys(" ")  # clear() fires no input event; a space matches every row
    Select(browser.find_element(By.CSS_SELECTOR, "select[aria-label='filter by status']")).select_by_value("failed")
    assert _visible_ids(browser) == [FAILED]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    Select(browser.find_element(By.CSS_SELECTOR, "select[aria-label='filter by status']")).select_by_value("")
    browser.save_screenshot(str(ARTIFACTS / "index.png"))
    assert (ARTIFACTS / "index.png").stat().st_size > 20_000


def test_a_run_page_leads_with_the_answer_and_draws_depth_curves(site, browser):
    from selenium.webdriver.common.by import By

    _, res = site
    browser.get((res.out_dir / "runs" / "20261126T093000Z-b22b22.html").as_uri())
    answer = browser.find_element(By.CSS_SELECTOR, "section.answer")
    assert answer.location["y"] < browser.find_element(By.CSS_SELECTOR, "dl.prov").location["y"]
    assert "backend=cpu" in answer.text
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 2  # pp and tg against depth, every backend on shared axes
    assert all(len(c.find_elements(By.CSS_SELECTOR, "g.series")) == 2 for c in charts)
    browser.save_screenshot(str(ARTIFACTS / "run.png"))
    assert (ARTIFACTS / "run.png").stat().st_size > 20_000


def test_a_trend_page_shows_one_point_per_run_and_marks_the_regression(site, browser):
    from selenium.webdriver.common.by import By

    s, res = site
    results = Path(s.results_dir)
    tid, n = _points_of(results, NEW_KV, "tg128", backend="vulkan", type_k="q4_0", type_v="f16")
    assert n == 2  # the kv run and its pin update; the llama 7B copy is another model
    browser.get((res.out_dir / "trends" / f"{tid}.html").as_uri())
    chart = browser.find_element(By.CSS_SELECTOR, "svg#trend-chart")
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle.pt")) == n
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle.regression")) == 1  # -12 % after the pin update
    assert len(browser.find_elements(By.CSS_SELECTOR, "#points tbody tr.regression")) == 1
    (change,) = chart.find_elements(By.CSS_SELECTOR, "g.change")  # the pin update: a new llama.cpp build and image
    assert change.text.startswith("llama.cpp 9f3d2a71 (b11400)")
    assert not chart.find_elements(By.CSS_SELECTOR, "g.ref")  # no public figure for the tiny model


def test_public_figures_are_drawn_where_model_and_test_match(site, browser):
    from selenium.webdriver.common.by import By

    s, res = site
    refs = [r for r in data.references() if r.model == "llama 7B Q4_0" and r.test == "pp512"]
    assert len(refs) == 2 and all(r.source_url.startswith("https://") for r in refs)
    tid, n = _points_of(Path(s.results_dir), LLAMA7B, "pp512", backend="vulkan", type_k="f16", type_v="f16")
    browser.get((res.out_dir / "trends" / f"{tid}.html").as_uri())
    chart = browser.find_element(By.CSS_SELECTOR, "svg#trend-chart")
    assert n == 1 and len(chart.find_elements(By.CSS_SELECTOR, "circle.pt")) == 1
    markers = chart.find_elements(By.CSS_SELECTOR, "g.ref path.ref-marker")
    assert len(markers) == len(refs) and all(m.is_displayed() for m in markers)
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "ul a")}
    assert {r.source_url for r in refs} <= links


def test_with_scripts_off_every_table_is_readable(site):
    from selenium.webdriver.common.by import By

    _, res = site
    d = _driver(scripts=False)
    try:
        d.get((res.out_dir / "index.html").as_uri())
        rows = d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
        assert len(rows) == 6 and all(r.is_displayed() for r in rows)
        assert not d.find_element(By.CSS_SELECTOR, "[data-filter-for=runs]").is_displayed()  # no dead controls
        assert not d.find_elements(By.CSS_SELECTOR, "th button.sort")
        assert KV in d.find_element(By.ID, "runs").text
    finally:
        d.quit()


def test_pages_use_no_external_resources(site):
    _, res = site
    for page in res.out_dir.rglob("*.html"):
        text = page.read_text()
        for bad in ("src='http", 'src="http', "href='//", "stylesheet' href='http"):
            assert bad not in text, f"{page} loads {bad}"


def test_invoke_site_builds_then_serves_on_localhost(tmp_path):
    """`invoke site --out DIR --serve --port P` as a user types it: the summary line, then the site over HTTP until stopped."""
    import os
    import socket
    import subprocess
    import sys

    results = _copy_runs(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "TOOLBOX_RESULTS_DIR": str(results)}
    cmd = [sys.executable, "-m", "invoke", "site", "--out", str(tmp_path / "s"), "--serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("site: ") and "6 run(s) rebuilt" in first, first
        serving = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in serving, serving
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/trends/index.html", timeout=10).read().decode()
        assert "trends: one per model, test and configuration" in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    again = subprocess.run(cmd[:6], cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "0 run(s) rebuilt, 6 unchanged" in again.stdout


def test_a_trend_draws_tokens_per_joule_when_rows_carry_telemetry(tmp_path):
    results = _copy_runs(tmp_path)
    for rid in (KV, NEW_KV):  # telemetry as toolbox/analysis/energy.py stores it: row["energy"]["tokens_per_j"]
        path = results / rid / "rows.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        path.write_text("".join(json.dumps({**r, "energy": {"tokens_per_j": 2.5}}) + "\n" for r in rows))
    res = build_site(load_settings(results_dir=results), tmp_path / "site")
    tid, n = _points_of(results, NEW_KV, "tg128", backend="cpu", type_k="f16", type_v="f16")
    page = (res.out_dir / "trends" / f"{tid}.html").read_text()
    assert n == 3  # the kv runs and the depth run (depth 0) share this configuration; only the kv runs carry energy
    assert page.count("id='energy-chart'") == 1 and page.count("tokens/J</title></circle>") == 2
    other = next(p for p in (res.out_dir / "trends").glob("*.html") if LLAMA7B in p.read_text())
    assert "energy-chart" not in other.read_text()  # that run has no telemetry


@pytest.mark.container
def test_the_site_over_the_fixtures_and_a_run_measured_here(cpu_image, tmp_path, browser):
    """A real `invoke bench` on the cpu image beside the fixture runs: its page, its trend points and the index in a browser."""
    import os
    import subprocess

    from selenium.webdriver.common.by import By

    results = _copy_runs(tmp_path)
    env = {**os.environ, "TOOLBOX_RESULTS_DIR": str(results)}
    bench = subprocess.run(["invoke", "bench", "--backend", "cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    new = sorted(p.name for p in results.iterdir() if p.name > LLAMA7B)[-1]  # run ids sort by time: this one is today's
    site = subprocess.run(["invoke", "site", "--out", str(tmp_path / "s")], cwd=REPO, env=env, capture_output=True, text=True)
    assert site.returncode == 0 and "7 run(s) rebuilt" in site.stdout, site.stdout + site.stderr
    browser.get((tmp_path / "s" / "index.html").as_uri())
    assert _visible_ids(browser)[0] == new  # newest first
    browser.get((tmp_path / "s" / "runs" / f"{new}.html").as_uri())
    answer = browser.find_element(By.CSS_SELECTOR, "section.answer").text
    assert "pp512" in answer and "tg128" in answer and "only configuration that counts" in answer
    # its pp512 joins the fixture runs' cpu f16/f16 trend only if every setting matches: count what the rows say
    tid, n = _points_of(results, new, "pp512")
    browser.get((tmp_path / "s" / "trends" / f"{tid}.html").as_uri())
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg#trend-chart circle.pt")) == n >= 1
