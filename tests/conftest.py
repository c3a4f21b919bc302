"""Shared fixtures. Container tests are marked `container`; GPU tests `gpu` (skipped without /dev/kfd)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# testcontainers' reaper (Ryuk) is an image from a registry, which CI and air-gapped machines can't
# pull; the tests stop their own containers.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
# Tests run `invoke` as a user would: the one installed beside this Python (a venv's bin/ too).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# Device locks (one benchmark per device) of this test session only: a test's benches must not wait for
# runs of another checkout on the same machine. Tests of the lock itself use their own directories.
if "TOOLBOX_LOCK_DIR" not in os.environ:
    import tempfile

    os.environ["TOOLBOX_LOCK_DIR"] = tempfile.mkdtemp(prefix="toolbox-test-locks-")

import pytest
from helpers import FIXTURE_RUNS

from toolbox.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def settings(tmp_path):
    """Settings whose results go to a temporary directory; caches stay shared (models, sources)."""
    return load_settings(results_dir=tmp_path / "results")


def pytest_collection_modifyitems(config, items):
    if os.path.exists("/dev/kfd"):
        return
    skip_gpu = pytest.mark.skip(reason="needs an AMD Strix Halo GPU (/dev/kfd not present)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _offline_image(backend: str) -> str:
    """Build (or find up to date) a real image the way a user would, offline (CI has no registry)."""
    from toolbox.build.images import build

    return build(load_settings(offline=True), backend, offline=True).tag


@pytest.fixture(scope="session")
def cpu_image() -> str:
    return _offline_image("cpu")


@pytest.fixture(scope="session")
def vulkan_image() -> str:
    return _offline_image("vulkan")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from toolbox.model import ensure_default_model

    return ensure_default_model(load_settings())


@pytest.fixture
def bench_settings(tmp_path):
    """Settings for a real bench run: results in a temporary directory, shared caches."""
    return load_settings(results_dir=tmp_path / "results", offline=True)


@pytest.fixture
def results(settings):
    """A copy of the fixture runs in the test's results directory (reports are written beside the run)."""
    import shutil

    shutil.copytree(FIXTURE_RUNS, settings.results_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return settings
