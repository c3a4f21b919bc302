"""The load generator: streamed requests to an OpenAI-compatible /v1/completions endpoint, timed per token.

asyncio + httpx: one event loop holds every open stream, so a 2-core machine keeps hundreds of
requests in flight without threads (benchmarks/serve_client_ceiling.py measures how many). Two shapes
of load, as vLLM's `bench serve` and GuideLLM have them:

- closed loop at a concurrency C: C workers, each sends its next request when the last one ended;
- open loop at a rate R: requests arrive as a Poisson process (exponential gaps, seeded), whether or
  not earlier ones have finished.

Each request records its time to first token, the gaps between streamed tokens, its end-to-end time,
tokens in and out (the server's `usage`), the server's own `timings`, the text, and any error. A
request that takes longer than its timeout is cut off and recorded as an error ("timeout").
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Record:
    """One request as the client saw it. Times in seconds; start is relative to the level's start."""

    index: int
    start: float = 0.0
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    e2e: float | None = None
    tokens_in: int | None = None
    tokens_out: int = 0
    chunks: int = 0
    text: str = ""
    error: str | None = None
    timings: dict | None = None  # llama-server's own timings of this request

    def to_json(self, keep_text: bool = False) -> dict:
        d = asdict(self)
        d["itl"] = [round(x, 6) for x in self.itl]
        if not keep_text:
            d.pop("text")
        return d


def payload(prompt: str, max_tokens: int, *, seed: int = 0, cache_prompt: bool = True) -> dict:
    """The request body: greedy (temperature 0, fixed seed), exactly max_tokens tokens (EOS ignored), streamed."""
    return {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": seed,
        "ignore_eos": True,
        "stream": True,
        "cache_prompt": cache_prompt,
    }


async def one_request(client, url: str, body: dict, index: int, t0: float, timeout_s: float) -> Record:
    """Send one streamed completion; time every chunk that carries text."""
    rec = Record(index)
    start = time.perf_counter()
    rec.start = start - t0
    last = None
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode(errors="replace")
                    rec.error = f"HTTP {resp.status_code}: {_error_message(text)}"
                    return rec
                buf = b""
                async for data in resp.aiter_raw():
                    buf += data
                    *events, buf = buf.split(b"\n\n")
                    now = time.perf_counter()
                    for event in events:
                        if not event.startswith(b"data:") or event.startswith(b"data: [DONE]"):
                            continue  # read on to the end of the body: the connection is then reused
                        chunk = json.loads(event[5:])
                        if "error" in chunk:
                            rec.error = f"server error: {_error_message(json.dumps(chunk))}"
                            continue
                        choice = (chunk.get("choices") or [{}])[0]
                        piece = choice.get("text") or ""
                        if piece:
                            rec.chunks += 1
                            rec.text += piece
                            if last is None:
                                rec.ttft = now - start
                            else:
                                rec.itl.append(now - last)
                            last = now
                        usage = chunk.get("usage")
                        if usage:
                            rec.tokens_in = usage.get("prompt_tokens")
                            rec.tokens_out = usage.get("completion_tokens") or rec.tokens_out
                        if chunk.get("timings") and choice.get("finish_reason"):
                            rec.timings = chunk["timings"]
    except TimeoutError:
        rec.error = f"timeout after {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - httpx's transport errors: the server went away or refused
        rec.error = f"{type(exc).__name__}: {str(exc)[:160] or 'connection failed'}"
    end = time.perf_counter()
    rec.e2e = end - start
    if not rec.tokens_out:
        rec.tokens_out = rec.chunks
    return rec


def _error_message(text: str) -> str:
    try:
        err = json.loads(text).get("error")
        return str(err.get("message") if isinstance(err, dict) else err)[:200]
    except (ValueError, AttributeError):
        return text.strip()[:200]


def _client(limit: int):
    import httpx

    # A fresh connection per request: llama-server (cpp-httplib) closes kept-alive connections after a few
    # requests, and a request sent on one it just closed fails ("Server disconnected"). On loopback a
    # connection costs well under a millisecond (benchmarks/serve_client_ceiling.py measures the whole client).
    # No read timeout of its own: ours is per request.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10.0), limits=httpx.Limits(max_connections=limit + 4, max_keepalive_connections=0)
    )


async def closed_loop(url: str, bodies: list[dict], concurrency: int, timeout_s: float) -> tuple[list[Record], float]:
    """C workers send `bodies` in order, each its next when its last ended. Returns the records and the wall time."""
    queue = list(enumerate(bodies))
    queue.reverse()
    out: list[Record] = []
    async with _client(concurrency) as client:
        t0 = time.perf_counter()

        async def worker():
            while queue:
                i, body = queue.pop()
                out.append(await one_request(client, url, body, i, t0, timeout_s))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return sorted(out, key=lambda r: r.index), wall


def poisson_gaps(rate: float, n: int, seed: int) -> list[float]:
    """n gaps between arrivals of a Poisson process at `rate` requests/s (seeded: the same every run)."""
    rng = random.Random(seed)
    return [rng.expovariate(rate) for _ in range(n)]


async def open_loop(url: str, bodies: list[dict], rate: float, seed: int, timeout_s: float) -> tuple[list[Record], float]:
    """Requests arrive as a Poisson process at `rate` per second, whether or not earlier ones ended."""
    gaps = poisson_gaps(rate, len(bodies), seed)
    async with _client(len(bodies)) as client:
        t0 = time.perf_counter()
        tasks = []
        due = 0.0
        for i, (body, gap) in enumerate(zip(bodies, gaps, strict=True)):
            due += gap if i else 0.0
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_request(client, url, body, i, t0, timeout_s)))
        out = list(await asyncio.gather(*tasks))
        wall = time.perf_counter() - t0
    return out, wall


def run_level(
    url: str, bodies: list[dict], *, concurrency: int | None = None, rate: float | None = None, seed: int = 0, timeout_s: float = 120.0
):
    """One load level, closed loop (concurrency) or open loop (rate): (records, wall seconds)."""
    if rate:
        return asyncio.run(open_loop(url, bodies, rate, seed, timeout_s))
    return asyncio.run(closed_loop(url, bodies, concurrency or 1, timeout_s))


def fetch_metrics(base_url: str) -> dict[str, float]:
    """llama-server's /metrics (started with --metrics) as {name: value}, 'llamacpp:' dropped; {} when unavailable."""
    import httpx

    try:
        text = httpx.get(f"{base_url}/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:") and "{" not in line:
            name, _, value = line.partition(" ")
            try:
                out[name.removeprefix("llamacpp:")] = float(value)
            except ValueError:
                continue
    return out
