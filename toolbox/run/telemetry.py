"""The telemetry sampler: a host thread that reads the sensors 10-20 times a second while a run goes on.

It needs no privileges and no container: it reads sysfs files (toolbox.host.sensors) and appends
every sample to results/<run_id>/telemetry.jsonl (toolbox.store.telemetry). bench drives it:

    sampler = start_sampler(settings, run_path, enabled)   # header line; thread only if a sensor exists
    sampler.idle(stop, group_id)                           # a few seconds with no model loaded: idle power
    sampler.mark("container_start", group=...)             # events on the samples' clock
    sampler.mark("row", case_id=...)                       # each result row as it arrives
    sampler.close()                                        # last batch, `end` line

Times are `time.monotonic()` (for windows: never jumps) and `time.time()` (to line up with logs).
The thread wakes on a fixed schedule (sample k at t0 + k / rate), so a slow read delays one sample,
not every later one; a sample that falls too far behind is skipped, never squeezed in.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from toolbox.host.sensors import Reader, SensorSet, discover
from toolbox.store.telemetry import FILE, append_records

FLUSH_EVERY_S = 1.0


class Sampler:
    """Samples a SensorSet into a run directory. With no sensors it only writes its header and marks."""

    def __init__(self, sensors: SensorSet, run_path: Path, rate_hz: float = 10.0, idle_s: float = 3.0):
        self.sensors = sensors
        self.run_path = Path(run_path)
        self.rate_hz = rate_hz
        self.idle_s = idle_s
        self.reader = Reader(sensors)
        self.phase, self.group = "between", None
        self.count = 0
        self._buf: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """True when there is anything to sample."""
        return bool(self.sensors.sensors)

    def start(self) -> Sampler:
        append_records(
            self.run_path,
            [
                {
                    "kind": "header",
                    "t0": round(time.monotonic(), 4),
                    "wall0": round(time.time(), 4),
                    "rate_hz": self.rate_hz,
                    "idle_s": self.idle_s,
                    "sensor_names": self.sensors.names(),
                    **self.sensors.to_json(),
                }
            ],
        )
        if self.active:
            self._thread = threading.Thread(target=self._loop, name="telemetry-sampler", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        t0 = time.monotonic()
        k, last_flush = 0, t0
        while not self._stop.is_set():
            now = time.monotonic()
            values = self.reader.read()
            sample = {"kind": "sample", "t": round(now, 4), "wall": round(time.time(), 4), "phase": self.phase, "group": self.group}
            with self._lock:
                self._buf.append(sample | {"v": values})
                self.count += 1
            if now - last_flush >= FLUSH_EVERY_S:
                self.flush()
                last_flush = now
            k += 1
            nxt = t0 + k * period
            after = time.monotonic()
            if nxt < after:  # fell behind (a slow read, a busy machine): skip the missed ticks
                k = int((after - t0) / period) + 1
                nxt = t0 + k * period
            self._stop.wait(nxt - after)

    def flush(self) -> None:
        with self._lock:
            batch, self._buf = self._buf, []
        try:
            append_records(self.run_path, batch)
        except OSError:  # a full disk: sampling stops quietly; the rows' writer ends the run and says so
            self._stop.set()

    def mark(self, event: str, **fields) -> None:
        """Record an event on the samples' clock (and set the phase/group the next samples carry)."""
        now = time.monotonic()
        if event == "container_start":
            self.phase, self.group = "group", fields.get("group")
        elif event == "container_end":
            self.phase = "between"
        elif event == "idle_start":
            self.phase, self.group = "idle", fields.get("group")
        with self._lock:
            self._buf.append({"kind": "mark", "event": event, "t": round(now, 4), "wall": round(time.time(), 4), **fields})

    def idle(self, stop: threading.Event, group: str | None = None) -> None:
        """The idle baseline before a group: idle_s seconds of samples with no model loaded (skipped without sensors)."""
        if not self.active or self.idle_s <= 0:
            return
        self.mark("idle_start", group=group)
        stop.wait(self.idle_s)
        self.mark("idle_end", group=group)
        self.phase = "between"

    def close(self) -> None:
        """Stop the thread, write the last batch and the `end` line (warnings raised while sampling)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        end = {"kind": "end", "t": round(time.monotonic(), 4), "samples": self.count, "warnings": self.reader.warnings}
        with self._lock:
            self._buf.append(end)
        self.flush()


def start_sampler(root: Path, run_path: Path, *, rate_hz: float, idle_s: float) -> Sampler:
    """Discover the sensors under root and start sampling into run_path/telemetry.jsonl."""
    return Sampler(discover(root), run_path, rate_hz, idle_s).start()


def start_for_run(settings, writer, enabled: bool) -> Sampler | None:
    """Start the sampler (its header says which sensors exist, none included) and note it in run.json."""
    if not enabled:
        writer.update(telemetry={"enabled": False})
        return None
    sampler = start_sampler(settings.host_root, writer.path, rate_hz=settings.telemetry_hz, idle_s=settings.telemetry_idle_s)
    found = sampler.sensors
    writer.update(
        telemetry={
            "enabled": True,
            "file": FILE,
            "sensors": found.names(),
            "gpu_metrics_version": found.facts.get("gpu_metrics_version"),
            "warnings": found.warnings,
        }
    )
    return sampler
