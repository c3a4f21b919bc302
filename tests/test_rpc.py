"""llama.cpp RPC clusters: worker addresses, the rpc dimension of matrices, and (container tests) a real
worker on a user-defined Docker network serving llama-bench in another container, a worker of another
build refused before anything runs, and a worker killed mid-run."""

from __future__ import annotations

import json
import secrets
import threading

import pytest

from toolbox.engine.container import find_containers
from toolbox.engine.devices import row_device_ok
from toolbox.engine.rpc import Endpoint, parse_endpoint, parse_workers
from toolbox.errors import ToolboxError
from toolbox.run.matrix import expand, validate_spec


def test_worker_addresses_parse_and_bad_ones_say_how():
    assert parse_endpoint("10.0.0.2:50052") == Endpoint("10.0.0.2", 50052)
    assert parse_endpoint("strix2:50052@ssh://me@strix2") == Endpoint("strix2", 50052, "ssh://me@strix2")
    assert parse_endpoint("[fe80::1]:50052").address == "[fe80::1]:50052"
    assert [str(e) for e in parse_workers("a:1, b:2@ctx")] == ["a:1", "b:2@ctx"]
    assert parse_workers("none") == [] and parse_workers("local") == []
    for bad in ("10.0.0.2", "host:0", "host:70000", "a b:1", ""):
        with pytest.raises(ToolboxError, match="HOST:PORT"):
            parse_endpoint(bad)
    with pytest.raises(ToolboxError, match="twice"):
        parse_workers("a:1,a:1")


SPEC = {"params": {"n_prompt": [64], "n_gen": [16], "n_threads": [2]}}


def test_the_rpc_dimension_measures_one_two_and_three_nodes_in_separate_processes():
    plain = expand(SPEC, "m.toml", "", ["cpu"], ["/m/a.gguf"])
    spec = SPEC | {"rpc": [[], ["w1:50052"], "w1:50052,w2:50052"]}
    validate_spec(spec, "m.toml")
    plan = expand(spec, "m.toml", "", ["cpu"], ["/m/a.gguf"])
    assert len(plan.cases) == 3 * len(plain.cases)
    assert {c.rpc for c in plan.cases} == {(), ("w1:50052",), ("w1:50052", "w2:50052")}
    # the one-node cases keep the ids they had before the rpc dimension existed (old runs resume and compare)
    assert {c.case_id for c in plain.cases} == {c.case_id for c in plan.cases if not c.rpc}
    assert len(plan.groups) == 3  # -rpc registers workers for the whole llama-bench process
    argvs = sorted(" ".join(g.args("/models/a.gguf", 1, True)) for g in plan.groups)
    assert sum("-rpc" in a for a in argvs) == 2
    assert any(a.endswith("-rpc w1:50052,w2:50052") for a in argvs)
    assert plan.to_json()["groups"][0].get("rpc") in (None, ["w1:50052"], ["w1:50052", "w2:50052"])


def test_a_worker_on_another_engine_keeps_its_engine_out_of_llama_bench_argv():
    plan = expand(SPEC | {"rpc": [["strix2:50052@ssh://me@strix2"]]}, "m.toml", "", ["cpu"], ["/m/a.gguf"])
    assert plan.groups[0].args("/models/a.gguf", 1, True)[-2:] == ["-rpc", "strix2:50052"]


@pytest.mark.parametrize("rpc", ["w1:50052", [["nohost"]], [1]])
def test_a_wrong_rpc_dimension_is_one_line(rpc):
    with pytest.raises(ToolboxError):
        validate_spec(SPEC | {"rpc": rpc}, "m.toml")


def test_rows_of_a_cpu_client_with_workers_say_RPC_and_count_as_on_device():
    assert row_device_ok({"backends": "RPC", "gpu_info": ""}, "cpu")
    assert row_device_ok({"backends": "CPU,RPC"}, "cpu")
    assert row_device_ok({"backends": "Vulkan,RPC", "gpu_info": "Radeon 8060S"}, "gpu")


# --- real workers -----------------------------------------------------------------------------------

MATRIX = """
name = "rpc-test"
repetitions = 2
[params]
n_prompt = [64]
n_gen = [16]
n_threads = [1]
"""


@pytest.fixture(scope="module")
def compute_model():
    """A 64 MB random-weight llama: enough work per token that compute, not the link's round trips, sets the pace
    (the embedded tiny model generates a token in about a millisecond, where each RPC round trip counts)."""
    from toolbox.model.tiny import write_synthetic_model
    from toolbox.settings import load_settings

    path = load_settings().cache_dir / "models" / "synthetic-rpc-64mb.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_model(path.with_suffix(".tmp"), 64_000_000)
        path.with_suffix(".tmp").rename(path)
    return path


@pytest.fixture
def network():
    import docker

    client = docker.from_env()
    net = client.networks.create(f"strix-rpc-test-{secrets.token_hex(3)}", driver="bridge", labels={"org.strix-toolbox.test": "rpc"})
    yield net.name
    for c in find_containers(client, network=net.name):
        c.remove(force=True)
    net.remove()


def _worker(bench_settings, network, name="worker", image=None):
    from toolbox.engine.client import docker_client
    from toolbox.engine.devices import DeviceSetup
    from toolbox.engine.rpc import server_binary, start_worker, worker_spec
    from toolbox.run import rpc

    name = f"{network}-{name}"
    if image is None:
        return rpc.start_worker(bench_settings, "cpu", network=network, name=name, threads=1)
    client = docker_client()
    spec = worker_spec(image, server_binary(client, image), DeviceSetup(), network=network, name=name, publish=False, threads=1)
    return {"name": name, "container": start_worker(client, spec).container}


@pytest.mark.container
def test_llama_bench_with_a_worker_on_a_docker_network(cpu_image, compute_model, bench_settings, network, tmp_path):
    import docker

    from toolbox.run.bench import bench
    from toolbox.store.runs import load_run

    w = _worker(bench_settings, network)
    assert w["binary"] == "ggml-rpc-server" and w["devices"] and w["devices"][0].startswith("CPU")
    matrix = tmp_path / "m.toml"
    matrix.write_text(f'rpc = [[], ["{w["name"]}:50052"]]\n' + MATRIX.replace("repetitions = 2", "repetitions = 3"))
    r = bench(bench_settings, matrix=str(matrix), backend="cpu", models=[str(compute_model)])
    assert r.status == "complete" and r.failed == 0
    meta, rows = load_run(bench_settings.results_dir, r.run_id)
    link = meta["rpc"]["workers"][f"{w['name']}:50052"]
    assert meta["rpc"]["network"] == network
    assert link["llama_build_number"] == "11312" and link["backend"] == "cpu" and link["server_devices"]
    assert link["link"]["protocol"] == "7.0.0" and link["link"]["upload_mbs"] > 0 and link["link"]["download_mbs"] > 0
    remote = [x for x in rows if x.get("rpc")]
    local = [x for x in rows if not x.get("rpc")]
    assert len(remote) == len(local) == 2
    assert {x["backends"] for x in remote} <= {"RPC", "CPU,RPC"} and all(x["device_ok"] for x in remote)
    assert all(x["backends"] == "CPU" for x in local)
    assert all(x["load_s"] is not None for x in rows if x["test"] == "pp64") or all(
        x["load_s"] is not None for x in rows if x["test"] == "tg16"
    )
    worker_log = docker.from_env().containers.get(w["name"]).logs().decode()
    assert "Accepted client connection" in worker_log  # llama-bench computed on the worker, not beside it
    for test in ("pp64", "tg16"):
        a = next(x["median_ts"] for x in local if x["test"] == test)
        b = next(x["median_ts"] for x in remote if x["test"] == test)
        print(f"{test}: local {a:.1f} t/s, through the worker {b:.1f} t/s ({b / a:.2f}x); link {link['link']}")
        # The same 1-thread CPU computes both. On this 2-core machine shared with other jobs (load 10-12 while
        # images build) two groups a few seconds apart differ by up to 2.7x (measured): "within noise" here is
        # a factor of 3 either way. A broken link (the tiny model's tg fell to 0.1x once) still fails.
        assert 1 / 3 < b / a < 3.0, (test, a, b)


@pytest.mark.container
def test_a_worker_of_another_build_is_refused_before_anything_runs(cpu_image, tiny_model, bench_settings, network):
    """The fake: a tagged copy of the cpu image whose labels say another llama.cpp build (the check reads them)."""
    import docker

    from toolbox.run.bench import bench

    client = docker.from_env()
    tmp = client.containers.create(cpu_image, ["true"], labels={"org.strix-toolbox.test": "rpc"})
    fake = "strix-toolbox/fake-other-build:rpc-test"
    try:
        tmp.commit(
            *fake.split(":"),
            changes=['LABEL org.strix-toolbox.llama-build-number="99999"', 'LABEL org.strix-toolbox.llama-commit="fakefakefake"'],
        )
    finally:
        tmp.remove(force=True)
    try:
        w = _worker(bench_settings, network, "fake", image=fake)
        with pytest.raises(ToolboxError, match=r"runs llama.cpp fakefake \(b99999\), the client 0c1e5709 \(b11312\)"):
            bench(bench_settings, matrix="default", backend="cpu", models=[str(tiny_model)], rpc=[f"{w['name']}:50052"])
        assert not bench_settings.results_dir.exists() or not any(bench_settings.results_dir.iterdir())
    finally:
        for c in find_containers(client, ancestor=fake):
            c.remove(force=True)
        client.images.remove(fake, force=True)


@pytest.mark.container
def test_a_worker_killed_mid_run_fails_clearly_and_keeps_the_finished_rows(
    cpu_image, tiny_model, bench_settings, network, tmp_path, monkeypatch
):
    import docker

    from toolbox.run.bench import bench
    from toolbox.store.runs import RunWriter, load_run

    w = _worker(bench_settings, network)
    container = docker.from_env().containers.get(w["name"])
    append = RunWriter.append
    killed = threading.Event()

    def append_then_kill(self, row):
        append(self, row)
        if not killed.is_set():  # the first row is on disk: the worker dies before the next test
            killed.set()
            container.kill()

    monkeypatch.setattr(RunWriter, "append", append_then_kill)
    matrix = tmp_path / "m.toml"
    matrix.write_text(f'rpc = ["{w["name"]}:50052"]\n' + MATRIX.replace("n_prompt = [64]", "n_prompt = [32, 64, 128]"))
    r = bench(bench_settings, matrix=str(matrix), backend="cpu", models=[str(tiny_model)])
    meta, rows = load_run(bench_settings.results_dir, r.run_id)
    ok = [x for x in rows if x["status"] == "ok"]
    failed = [x for x in rows if x["status"] == "failed"]
    # the kill lands while llama-bench measures: the tiny model may finish one more test before the link breaks
    assert len(ok) >= 1 and failed and len(ok) + len(failed) == 4, [(x["status"], x.get("error")) for x in rows]
    assert all(f"RPC worker {w['name']}:50052 stopped answering" in x["error"] for x in failed)
    print(json.dumps(failed[0]["error"]))


def _row(ts: float, rpc: list[str] | None, load: float | None = None) -> dict:
    from toolbox.store.rows import make_row

    lb = {"model_filename": "/models/m.gguf", "model_type": "llama 1B", "backends": "RPC" if rpc else "CPU", "n_prompt": 0, "n_gen": 16}
    lb |= {"n_depth": 0, "n_threads": 1, "avg_ts": ts, "samples_ts": [ts * 0.99, ts, ts * 1.01], "samples_ns": [1e8, 1e8, 1e8]}
    return make_row(lb, backend="cpu", status="ok", device_ok=True, **({"rpc": rpc} if rpc else {}), load_s=load)


def test_scaling_gives_efficiency_against_one_node_with_the_link_and_load_time_beside_it():
    from toolbox.analysis.identity import collect
    from toolbox.report.scaling_view import scaling_section

    meta = {"run_id": "r1", "rpc": {"workers": {"a:1": {"address": "a:1", "link": {"upload_mbs": 900.0, "rtt_ms": 0.2}}}}}
    meta["rpc"]["workers"]["b:1"] = {"address": "b:1", "link": {"upload_mbs": 110.0, "rtt_ms": 0.9}}
    rows = [_row(10.0, None, 1.0), _row(8.0, ["a:1"], 2.0), _row(6.0, ["a:1", "b:1"], 3.0)]
    title, header, cells = scaling_section(collect([(meta, rows)]))
    table = {c[header.index("nodes")]: dict(zip(header, c)) for c in cells}
    assert table["1"]["efficiency"] == "1.00" and table["2"]["efficiency"] == "0.80" and table["3"]["efficiency"] == "0.60"
    assert table["3"]["link MB/s"] == "110" and table["3"]["rtt ms"] == "0.90" and table["3"]["load s"] == "3.0"
    assert table["1"]["workers"] == "—" and table["3"]["workers"] == "a:1, b:1"
    assert scaling_section(collect([(meta, rows[:1])])) is None  # one node count: nothing to scale
