"""Regenerate the screenshots of docs/reports.md: `python3 docs/make_screenshots.py [RESULTS_DIR]`.

Builds the site (invoke site) over the given results directory, by default over the repository's
fixture runs (tests/data/runs: synthetic numbers of the tiny model on a 2-core CI machine without a
GPU) plus one copy of the kv run relabelled as llama 7B Q4_0, so that the published figures for that
model appear on its trend page. Then opens the pages in headless chromium (Debian's chromium and
chromium-driver, selenium) and writes docs/img/site-*.png.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # helpers.relabelled_copy, shared with tests/test_site.py
OUT = REPO / "docs" / "img"
KV, NEW_KV, DEPTH = "20261126T090000Z-a11a11", "20261126T100000Z-c33c33", "20261126T093000Z-b22b22"
RELABELLED = "20261127T080000Z-f66f66"


def fixture_results(root: Path) -> Path:
    """The fixture runs, plus the kv run relabelled as llama 7B Q4_0 on a host named strix-owner."""
    from helpers import relabelled_copy

    results = root / "results"
    shutil.copytree(REPO / "tests" / "data" / "runs", results, ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    relabelled_copy(
        results, KV, RELABELLED, model_type="llama 7B Q4_0", model_file="/models/llama-2-7b.Q4_0.gguf", host="strix-owner",
        started_at="2026-11-27T08:00:00Z",
    )  # fmt: skip
    return results


def browser():
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


def shoot(driver, page: Path, name: str, height: int | None = None) -> Path:
    driver.get(page.as_uri())
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(height or full, 2400))
    path = OUT / name
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    print(f"written {path.relative_to(REPO)}")
    return path


def main() -> None:
    from toolbox.analysis.identity import identity
    from toolbox.settings import load_settings
    from toolbox.site.build import build_site
    from toolbox.site.data import config_key, trend_id

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(sys.argv[1]) if len(sys.argv) > 1 else fixture_results(Path(tmp))
        site = build_site(load_settings(results_dir=results), Path(tmp) / "site").out_dir

        def trend(run_id, test, **match):
            for line in (results / run_id / "rows.jsonl").read_text().splitlines():
                r = json.loads(line)
                if r["test"] == test and all(r.get(k) == v for k, v in match.items()):
                    i = identity(r)
                    return site / "trends" / f"{trend_id(i['model_file'] or i['model'], test, config_key(i))}.html"
            raise SystemExit(f"no row of {test} {match} in {run_id}")

        d = browser()
        try:
            shoot(d, site / "index.html", "site-index.png", 820)
            shoot(d, site / "runs" / f"{DEPTH}.html", "site-run.png", 1500)
            if len(sys.argv) == 1:
                shoot(d, trend(NEW_KV, "tg128", backend="vulkan", type_k="q4_0", type_v="f16"), "site-trend-regression.png", 760)
                shoot(d, trend(RELABELLED, "pp512", backend="vulkan", type_k="f16", type_v="f16"), "site-trend-references.png", 760)
            shoot(d, site / "trends" / "index.html", "site-trends.png", 700)
            d.get((site / "runs" / f"{DEPTH}.html").as_uri())
            figure = d.find_element("css selector", "figure.chart")
            figure.screenshot(str(OUT / "site-run-depth.png"))
            print("written docs/img/site-run-depth.png")
        finally:
            d.quit()


if __name__ == "__main__":
    main()
