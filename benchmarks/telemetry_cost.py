"""What the telemetry sampler costs: CPU time per second of sampling, and per sample.

1. One read of every sensor of a FAKE Strix Halo tree (tests/fake_sysfs.py: amdgpu hwmon and card
   files, gpu_metrics v3.0, k10temp, RAPL, platform profile; 17 files), median over N reads.
2. The sampler thread at 10 Hz (the default; --hz 20 for the top of the range) for D seconds, writing telemetry.jsonl as in a run:
   the process's CPU time (user + system, getrusage) over that wall time, as a share of one core.
   The main thread only sleeps meanwhile.
3. The same on this machine's own root (what it has; a host with no sensor samples nothing).

    python3 benchmarks/telemetry_cost.py [--seconds 20] [--reads 2000] [--hz 10]

The fake tree lives on an ordinary file system: on a real Strix Halo, reading amdgpu's power and
gpu_metrics files also costs the kernel a message to the SMU firmware, which this cannot measure.
Not a test: a benchmark that prints figures (docs/energy.md quotes them).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fake_sysfs import fake_strix_halo  # noqa: E402

from toolbox.host.sensors import Reader, discover  # noqa: E402
from toolbox.run.telemetry import start_sampler  # noqa: E402
from toolbox.store.telemetry import read_sessions  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_read(root: Path, reads: int) -> tuple[int, float]:
    reader = Reader(discover(root))
    times = []
    for _ in range(reads):
        t = time.perf_counter()
        reader.read()
        times.append(time.perf_counter() - t)
    return len(reader.sensors), statistics.median(times)


def sampling(root: Path, seconds: float, hz: float) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as run:
        c0, t0 = cpu_seconds(), time.monotonic()
        sampler = start_sampler(root, Path(run), rate_hz=hz, idle_s=0)
        time.sleep(seconds)
        sampler.close()
        c1, t1 = cpu_seconds(), time.monotonic()
        n = sum(len(s["samples"]) for s in read_sessions(Path(run)))
    return (c1 - c0) / (t1 - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--hz", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = fake_strix_halo(Path(tmp) / "host")
        files, one = per_read(root, args.reads)
        print(f"one read of all {files} sensor files (fake Strix Halo tree): median {one * 1e6:.0f} µs over {args.reads}")
        share, n = sampling(root, args.seconds, args.hz)
        print(
            f"sampler at {args.hz:g} Hz for {args.seconds:g} s, fake Strix Halo tree: {n} samples, "
            f"CPU {share * 1000:.1f} ms per second = {share:.2%} of one core"
        )
    here = discover(Path("/"))
    share, n = sampling(Path("/"), min(args.seconds, 10), args.hz)
    print(f"this machine's root: {len(here.sensors)} sensors, {n} samples, CPU {share * 1000:.2f} ms per second = {share:.3%} of one core")


if __name__ == "__main__":
    main()
