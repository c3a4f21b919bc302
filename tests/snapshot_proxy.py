"""A stand-in for snapshot.debian.org on loopback (this machine reaches Debian's live mirror, not the
snapshot service): it answers snapshot's URL shape, /archive/debian/<timestamp>/<path>, by forwarding
<path> to the live mirror, and records every path asked for. A FAKE of the snapshot service: it proves
which URLs apt and `pins check --snapshot` read, not that the snapshot holds the pinned versions."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
import urllib.error
import urllib.request


@contextlib.contextmanager
def snapshot_proxy(mirror: str, timestamp: str):
    """Yields (the URL template for the debian_snapshot_url setting, the list of paths asked for)."""
    seen: list[str] = []
    prefix = f"/archive/debian/{timestamp}/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(self.path)
            if not self.path.startswith(prefix):
                self.send_error(404, "not a path of this snapshot")
                return
            try:
                with urllib.request.urlopen(f"{mirror.rstrip('/')}/{self.path[len(prefix) :]}", timeout=120) as resp:
                    length = resp.headers.get("Content-Length")
                    body = None if length else resp.read()  # a chunked answer: sent with its length
                    self.send_response(200)
                    self.send_header("Content-Length", length or str(len(body)))
                    self.end_headers()
                    if body is None:
                        shutil.copyfileobj(resp, self.wfile)
                    else:
                        self.wfile.write(body)
            except urllib.error.HTTPError as exc:
                self.send_error(exc.code)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/archive/debian/{{snapshot}}", seen
    finally:
        server.shutdown()
