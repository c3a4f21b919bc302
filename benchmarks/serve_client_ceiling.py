"""How fast can the serving load generator go? Its ceiling in requests/s and streamed tokens/s on this machine.

A trivial streaming server written for this benchmark (asyncio, loopback only, no model: it answers
every /v1/completions request at once with N tokens in llama-server's streamed format, as fast as
the socket takes them) stands in for llama-server, so that the only limit left is the client:
toolbox.run.loadgen, the same code `invoke serve-bench` uses. The server runs in a child process so
client and server do not share one core's event loop.

    python3 benchmarks/serve_client_ceiling.py [--tokens 32] [--concurrency 1,8,64] [--requests 400]

The figures go to docs/serving.md beside what the embedded model reaches, so a reader can see the
load generator is not what limits a sweep (target: at least 10x the highest rate measured there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = {"choices": [{"text": " ab", "index": 0, "logprobs": None, "finish_reason": None}], "object": "text_completion", "model": "fake"}


def _chunk(data: bytes) -> bytes:
    """One piece of an HTTP/1.1 chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(obj) -> bytes:
    return _chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tokens: int, delay_s: float = 0.0) -> None:
    token = _event(CHUNK)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            n = int(body.get("max_tokens", tokens))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(n):
                writer.write(token)
                await writer.drain()
                if delay_s:
                    await asyncio.sleep(delay_s)
            final = dict(CHUNK, choices=[{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}])
            final["usage"] = {"completion_tokens": n, "prompt_tokens": 8, "total_tokens": n + 8}
            final["timings"] = {"predicted_n": n, "prompt_n": 8}
            writer.write(_event(final) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve(port: int, tokens: int, ready, delay_s: float = 0.0) -> None:
    """Run the fake streaming server on 127.0.0.1:port until killed (delay_s: a pause after each token, for tests)."""

    async def main():
        server = await asyncio.start_server(lambda r, w: _handle(r, w, tokens, delay_s), "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_fake_server(tokens: int = 32, delay_s: float = 0.0) -> tuple[multiprocessing.Process, str]:
    """The fake server in a child process: (process, base url)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=serve, args=(port, tokens, ready, delay_s), daemon=True)
    proc.start()
    if not ready.wait(10):
        proc.kill()
        raise RuntimeError("the fake server did not start")
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    from toolbox.run import loadgen
    from toolbox.run.serve_stats import summarize_level

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32, help="tokens streamed per request")
    ap.add_argument("--concurrency", default="1,8,64", help="closed-loop levels")
    ap.add_argument("--requests", type=int, default=400, help="requests per level")
    args = ap.parse_args()
    proc, url = start_fake_server(args.tokens)
    try:
        loadgen.run_level(f"{url}/v1/completions", [loadgen.payload("warm", args.tokens)] * 8, concurrency=4)  # warm-up
        print(f"client ceiling against a no-model streaming server on loopback, {args.tokens} tokens per request")
        print("wall: what this machine gave now; cpu: the client's own CPU time, so 'one free core' is the ceiling")
        print("on an idle core whatever else runs (the CI machine is shared: compare the two)")
        print(
            f"{'concurrency':>11} {'requests':>8} {'req/s':>9} {'tokens/s':>10} {'cpu ms/req':>10} "
            f"{'one free core: req/s':>20} {'tokens/s':>9} {'errors':>6}"
        )
        for c in (int(x) for x in args.concurrency.split(",")):
            bodies = [loadgen.payload(f"prompt {i}", args.tokens) for i in range(args.requests)]
            cpu0 = time.process_time()
            records, wall = loadgen.run_level(f"{url}/v1/completions", bodies, concurrency=c)
            cpu = (time.process_time() - cpu0) / len(records)
            s = summarize_level(records, wall, {})
            print(
                f"{c:>11} {len(records):>8} {s['req_per_s']:>9.1f} {s['output_tps']:>10.0f} {cpu * 1000:>10.2f} "
                f"{1 / cpu:>20.0f} {args.tokens / cpu:>9.0f} {s['n_errors']:>6}"
            )
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        proc.kill()
        proc.join()


if __name__ == "__main__":
    main()
