"""Fleets: the same plan on several machines at once, each through its own Docker engine, grouped by a campaign.

`invoke bench --host strix1 --host ssh://me@strix2 ...` starts one bench per host in parallel from
this machine (toolbox.run.bench with that host's engine: toolbox.run.hosts prepares it). Every run
lands in this machine's results/ with that host's identity and the campaign id; a host that cannot
be reached, refuses the plan or drops mid-run is reported with its error and the others finish.
"""

from __future__ import annotations

import io
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from toolbox.errors import ToolboxError


@dataclass
class HostOutcome:
    host: str
    run_id: str | None = None
    status: str = "failed"
    ok: int = 0
    failed: int = 0
    error: str | None = None


def new_campaign_id() -> str:
    """'c' + UTC time + 4 random hex digits: sorts by time, cannot collide."""
    return f"c{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def run_fleet(settings, hosts: list[str], *, on_done=None, **bench_args) -> tuple[str, list[HostOutcome]]:
    """Run the plan on every host in parallel; (campaign id, one outcome per host in the order given)."""
    from rich.console import Console

    from toolbox.run.bench import bench

    if len(set(hosts)) != len(hosts):
        raise ToolboxError("a host is named twice", "give each --host once")
    campaign = new_campaign_id()
    outcomes = [HostOutcome(h) for h in hosts]
    engines = _engine_locks(hosts)

    def one(out: HostOutcome) -> None:
        try:
            with engines[out.host]:
                r = bench(settings, host=out.host, campaign=campaign, console=Console(file=io.StringIO(), width=160), **bench_args)
            out.run_id, out.status, out.ok, out.failed = r.run_id, r.status, r.ok, r.failed
        except ToolboxError as exc:
            out.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a host that drops mid-run must not take the others down
            out.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        if on_done:
            on_done(out)

    threads = [threading.Thread(target=one, args=(o,), name=f"fleet-{o.host}") for o in outcomes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return campaign, outcomes


def _engine_locks(hosts: list[str]) -> dict:
    """One lock per Docker engine: two names for one machine (contexts, ssh and tcp URLs) measure one
    after the other, never at once on the same device. A host whose engine does not answer here gets
    its own lock and fails on its own in bench."""
    from contextlib import nullcontext

    from toolbox.engine.client import docker_client

    by_engine: dict[str, threading.Lock] = {}
    locks = {}
    for h in hosts:
        try:
            engine_id = docker_client(h, timeout=10).info()["ID"]
        except Exception:  # noqa: BLE001 - unreachable: bench says why, in one line
            locks[h] = nullcontext()
            continue
        locks[h] = by_engine.setdefault(engine_id, threading.Lock())
    return locks


def fleet_exit(outcomes: list[HostOutcome]) -> tuple[int, str] | None:
    """Exit 1 when any host failed or measured nothing; None when every host completed."""
    bad = [o for o in outcomes if o.error or o.status != "complete"]
    if not bad:
        return None
    return 1, f"{len(bad)} of {len(outcomes)} hosts did not complete: " + ", ".join(o.host for o in bad)
