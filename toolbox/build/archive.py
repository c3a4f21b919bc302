"""Pins that never rot: which pinned Debian package versions the configured archive still has
(`invoke pins check`), and the newest versions it offers (`invoke pins bump`).

Both read the archive's package lists (dists/<suite>/main/binary-amd64/Packages.xz) from the mirror
in pins.toml, or a local mirror; the last lists read are kept in the cache so the check also answers
offline (saying how old its lists are). Debian removes a version from a suite at the next point
release or upload, after which a build from the pins fails; the online path resolves the same pins
against a dated snapshot (pins.toml [debian] snapshot), which keeps them.
"""

from __future__ import annotations

import functools
import lzma
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from toolbox.build.pins import Pins
from toolbox.errors import ToolboxError


def _order(c: str) -> int:
    """dpkg's character order: ~ before everything (even the end), then the end, letters, the rest."""
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's comparison of one upstream version or revision (lib/dpkg/version.c verrevcmp)."""
    i = j = 0
    while i < len(a) or j < len(b):
        diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not diff:
                diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if diff:
            return diff
    return 0


def compare_debian_versions(a: str, b: str) -> int:
    """<0, 0, >0 as dpkg --compare-versions orders a and b (epoch, then upstream, then revision)."""

    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision

    (ea, ua, ra), (eb, ub, rb) = split(a), split(b)
    return (ea > eb) - (ea < eb) or _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


debian_version_key = functools.cmp_to_key(compare_debian_versions)


def packages_url(mirror: str, suite: str) -> str:
    return f"{mirror.rstrip('/')}/dists/{suite}/main/binary-amd64/Packages.xz"


def read_package_list(mirror: str, suite: str, cache_dir: Path, max_age_s: float = 6 * 3600) -> tuple[dict[str, set[str]], str]:
    """{package: versions} of one suite, and where it came from (the URL, or the cached copy and its age)."""
    url = packages_url(mirror, suite)
    cached = cache_dir / "archive" / re.sub(r"[^A-Za-z0-9.-]+", "_", url)
    source = url
    fresh = cached.exists() and time.time() - cached.stat().st_mtime < max_age_s
    if not fresh:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url, timeout=120) as resp:
                data = resp.read()
            tmp = cached.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.rename(cached)
        except (urllib.error.URLError, OSError) as exc:
            if not cached.exists():
                raise ToolboxError(f"cannot read {url} ({exc})", "check the network, or the mirror in pins.toml [debian]") from None
            source = f"{url} (cached copy, {(time.time() - cached.stat().st_mtime) / 3600:.0f} h old: the archive is not reachable)"
    else:
        source = f"{url} (read {(time.time() - cached.stat().st_mtime) / 60:.0f} min ago)"
    versions: dict[str, set[str]] = {}
    name = None
    for line in lzma.decompress(cached.read_bytes()).decode(errors="replace").splitlines():
        if line.startswith("Package: "):
            name = line[9:].strip()
        elif line.startswith("Version: ") and name:
            versions.setdefault(name, set()).add(line[9:].strip())
    return versions, source


@dataclass
class PinState:
    image: str
    package: str
    pinned: str
    suite: str | None  # the suite that has the pinned version (None: gone from every suite the image uses)
    newest: str | None  # the newest version in that suite (or, when gone, in the first suite that has the package)


def pinned_packages(pins: Pins) -> dict[str, tuple[list[str], dict[str, str]]]:
    """image -> (suites in apt's preference order, {package: pinned version}) for every Debian-based image."""
    out = {}
    for name in pins.image_names():
        b = pins.backend(name)
        if not b.offline_capable:  # built on another distribution's image (rocm: Ubuntu); its packages are not pinned here
            continue
        suites = [pins.debian.suite, *b.apt_extra_suites, *b.runtime_apt_suites]
        out[name] = (list(dict.fromkeys(suites)), {p: v for p, v in {**b.build_packages, **b.runtime_packages}.items() if v})
    return out


def check_pins(pins: Pins, cache_dir: Path, mirror: str | None = None) -> tuple[list[PinState], list[str]]:
    """Every pinned version of every Debian-based image against the archive's package lists; and the lists read."""
    mirror = mirror or pins.debian.mirror
    lists: dict[str, dict[str, set[str]]] = {}
    sources = []
    states = []
    for image, (suites, packages) in pinned_packages(pins).items():
        for suite in suites:
            if suite not in lists:
                lists[suite], src = read_package_list(mirror, suite, cache_dir)
                sources.append(src)
        for package, pinned in packages.items():
            suite = next((s for s in suites if pinned in lists[s].get(package, ())), None)
            where = suite or next((s for s in suites if lists[s].get(package)), None)
            versions = lists[where].get(package, set()) if where else set()
            newest = max(versions, key=debian_version_key) if versions else None
            states.append(PinState(image, package, pinned, suite, newest))
    return states, sources


def bump_text(text: str, changes: dict[tuple[str, str], str]) -> str:
    """pins.toml with every `package = "old"` (bare or quoted key) set to its new version; comments and layout kept."""
    for (package, old), new in changes.items():
        pattern = rf'((?:^|[{{,\s])"?{re.escape(package)}"?\s*=\s*)"{re.escape(old)}"'
        text = re.sub(pattern, lambda m, new=new: f'{m.group(1)}"{new}"', text, flags=re.M)
    return text


def bump_compose_text(text: str, changes: dict[tuple[str, str], str]) -> str:
    """compose.yaml repeats the runtime packages as `package=version` words: the same changes there."""
    for (package, old), new in changes.items():
        text = re.sub(rf"(?<![\w.+-]){re.escape(package)}={re.escape(old)}(?![\w.+~:-])", f"{package}={new}", text)
    return text


def proposed_bumps(states: list[PinState]) -> dict[tuple[str, str], str]:
    """(package, pinned) -> the newest version of the suite that has it (or, when gone, of the first suite with the package)."""
    out: dict[tuple[str, str], str] = {}
    for s in states:
        if s.newest and compare_debian_versions(s.newest, s.pinned) > 0:
            out.setdefault((s.package, s.pinned), s.newest)
    return out


def bump_snapshot_text(text: str, old: str | None, when: datetime | None = None) -> tuple[str, str | None]:
    """pins.toml with [debian] snapshot moved to `when` (now): bumped versions are in today's archive, not in
    the old snapshot. snapshot.debian.org serves the newest import at or before a timestamp and imports the
    archive every few hours, so `pins check --snapshot` confirms the new one a few hours later."""
    if not old:
        return text, None
    new = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return re.sub(rf'^(snapshot\s*=\s*)"{re.escape(old)}"', rf'\g<1>"{new}"', text, count=1, flags=re.M), new
