"""The per-run context: what every group of a run needs, in one object instead of long argument lists."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field

from toolbox.engine.devices import DeviceSetup
from toolbox.run.matrix import Plan
from toolbox.settings import Settings
from toolbox.store.runs import RunWriter


@dataclass
class RunContext:
    """One run in progress: where rows go, which image and devices each backend uses, how to stop.

    images: backend -> image tag; image_ids: backend -> image id (what rows record as image_digest);
    setups: backend -> devices; model_sha: model path -> sha256; advance(n): progress callback;
    telemetry: the sampler that gets marks (container start/end, each row's arrival).
    """

    settings: Settings
    client: object
    writer: RunWriter
    plan: Plan
    images: dict[str, str]
    image_ids: dict[str, str | None]
    setups: dict[str, DeviceSetup]
    model_sha: dict[str, str]
    rpc: dict = field(default_factory=dict)  # run.json's rpc record: the workers as checked, the network they are on
    stop: threading.Event = field(default_factory=threading.Event)
    telemetry: object = None  # toolbox.run.telemetry.Sampler, or None (--no-telemetry)
    advance: object = lambda n: None  # noqa: E731 - progress callback

    def mark(self, event: str, **fields) -> None:
        """A telemetry mark on the samples' clock (container start / end, a row's arrival), when telemetry is on."""
        if self.telemetry is not None:
            self.telemetry.mark(event, **fields)

    def labels(self, backend: str) -> dict:
        """The labels of the image a backend (or image variant) runs, as run.json recorded them."""
        return (self.writer.meta.get("images", {}).get(backend) or {}).get("labels") or {}

    @property
    def run_id(self) -> str:
        return self.writer.run_id


class Stopped(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM, SIGHUP): finished rows are kept, the run is resumable."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, received: list):
    """While a run is in progress, Ctrl-C, SIGTERM and SIGHUP (a closed ssh session, `timeout`, a service
    manager) set `stop` instead of raising where they land: the current container is killed by its
    watchdog, no container is half-created, and the run ends cleanly as interrupted. A second signal
    raises KeyboardInterrupt at once. Outside the main thread (tests) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def make_context(settings: Settings, client, writer: RunWriter, plan: Plan, images: dict, setups: dict, rpc=None) -> RunContext:
    """The context the groups of a run share (image ids and model hashes as run.json recorded them, RPC workers as checked)."""
    return RunContext(
        settings,
        client,
        writer,
        plan,
        images,
        image_ids={b: writer.meta.get("images", {}).get(b, {}).get("id") for b in images},
        setups=setups,
        model_sha={m["path"]: m["sha256"] for m in writer.meta.get("models", [])},
        rpc=rpc or {},
    )
