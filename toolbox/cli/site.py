"""Task: site (toolbox.site): the static site over every run."""

from __future__ import annotations

from toolbox.cli import flags as f
from toolbox.cli.common import console, settings


def _writable_dir(path: str) -> None:
    from toolbox.files import check_writable

    check_writable(path, directory=True)


@f.command(
    out=f.Path("directory of the site; default: site/ in the results directory", placeholder="DIR", check=_writable_dir),
    serve=f.Switch("then serve it on 127.0.0.1 for a quick look (Ctrl-C stops); the site itself needs no server"),
    port=f.Int("port for --serve (default 8000)", low=1, high=65535, placeholder="PORT"),
    full=f.Switch("rebuild every page, not only the runs that changed"),
)
def site(c, out=None, serve=False, port=8000, full=False):
    """invoke site [--out DIR] [--serve]: a static site over every run: index, run reports, trends, hosts, campaigns, public figures.

    Opens from file:// or any static host (no CDN, no server). Incremental: only runs whose files changed are read again.
    """
    from toolbox.site.build import build_site
    from toolbox.site.build import serve as make_server

    screen = console()
    s = settings()
    res = build_site(s, out, full=full)
    screen.print(
        f"site: {res.out_dir / 'index.html'}: {len(res.rebuilt)} run(s) rebuilt, {res.kept} unchanged, "
        f"{len(res.removed)} removed, {res.pages_written} file(s) written in {res.seconds:.2f} s",
        markup=False,
    )
    for p in res.problems:
        screen.print(f"warning: run not readable, listed without a page: {p}", markup=False, style="yellow")
    if serve:
        server = make_server(res.out_dir, port)
        screen.print(f"serving {res.out_dir} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", markup=False)
        try:
            server.serve_forever()
        finally:
            server.server_close()
