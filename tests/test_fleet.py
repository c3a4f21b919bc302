"""Fleets: the same plan through several Docker engines at once. Here two Docker contexts under different
names both point at this machine's engine (the only engine this machine has), and a third points nowhere:
both runs land under one campaign and report side by side; the third fails alone with one line."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from toolbox.engine.client import engine_url
from toolbox.errors import ToolboxError

MATRIX = """
name = "fleet-test"
repetitions = 2
[params]
n_prompt = [32]
n_gen = [8]
n_threads = [1]
"""


def test_an_unknown_context_and_a_url_are_told_apart():
    assert engine_url("ssh://me@strix2") == ("ssh://me@strix2", False)
    with pytest.raises(ToolboxError, match="no Docker context named 'surely-not-a-context'"):
        engine_url("surely-not-a-context")


@pytest.fixture
def contexts():
    tag = secrets.token_hex(3)
    made = {
        f"strix-fleet-a-{tag}": "unix:///var/run/docker.sock",
        f"strix-fleet-b-{tag}": "unix:///var/run/docker.sock",
        f"strix-fleet-nowhere-{tag}": "tcp://127.0.0.1:9",  # nothing listens on the discard port
    }
    for name, host in made.items():
        subprocess.run(["docker", "context", "create", name, "--docker", f"host={host}"], check=True, capture_output=True)
    yield list(made)
    for name in made:
        subprocess.run(["docker", "context", "rm", "-f", name], capture_output=True)


@pytest.mark.container
def test_a_fleet_of_two_contexts_lands_one_campaign_and_a_dead_host_fails_alone(cpu_image, tiny_model, bench_settings, contexts, tmp_path):
    from toolbox.report.campaign import campaign_report, campaign_run_ids, load_run
    from toolbox.run.fleet import fleet_exit, run_fleet

    a, b, nowhere = contexts
    matrix = tmp_path / "fleet.toml"
    matrix.write_text(MATRIX)
    campaign, outcomes = run_fleet(bench_settings, [a, b, nowhere], matrix=str(matrix), backend="cpu", models=[str(tiny_model)])
    by_host = {o.host: o for o in outcomes}
    assert by_host[a].status == by_host[b].status == "complete" and by_host[a].ok == by_host[b].ok == 2, [by_host[a], by_host[b]]
    dead = by_host[nowhere]
    assert dead.run_id is None and "is not reachable" in dead.error and "\n" not in dead.error
    assert fleet_exit(outcomes)[0] == 1 and nowhere in fleet_exit(outcomes)[1]

    ids = campaign_run_ids(bench_settings.results_dir, campaign)
    assert sorted(ids) == sorted([by_host[a].run_id, by_host[b].run_id])
    for rid in ids:
        meta, rows = load_run(bench_settings.results_dir, rid)
        assert meta["campaign"] == campaign and meta["engine"] in (a, b) and meta["host"]["engine"] == meta["engine"]
        assert meta["host"]["machine"]["hostname"] and meta["image_transfer"] == {"cpu": "present"}
        assert {r["backends"] for r in rows} == {"CPU"}

    rep, hosts, comparisons = campaign_report(bench_settings, campaign, write=True)
    assert {h[0].split()[0] for h in hosts} == {a, b}
    ((title, cr),) = comparisons
    assert not isinstance(cr, str) and len(cr.lines) == 2 and all(ln.p_value is not None for ln in cr.lines)
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(bench_settings.results_dir)}
    p = subprocess.run(["invoke", "report", "--campaign", campaign, "--no-files"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and a in p.stdout and b in p.stdout and "against" in p.stdout, p.stdout + p.stderr
