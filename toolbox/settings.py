"""Settings: one class, env prefix TOOLBOX_, an optional TOML file, built by load_settings()."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "strix-halo-toolbox"


class Settings(BaseSettings):
    """Everything a run depends on that is not a pin. Every field can be set as TOOLBOX_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="TOOLBOX_", toml_file="toolbox.toml", extra="ignore")

    results_dir: Path = Field(REPO_ROOT / "results", description="where runs are written (results/<run_id>/)")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="models, sources, base rootfs")
    pins_file: Path = Field(REPO_ROOT / "containers" / "pins.toml", description="the one file of versions")
    containers_dir: Path = Field(REPO_ROOT / "containers", description="Dockerfiles per backend")
    offline: bool = Field(False, description="build without registry or git: local Debian base, source from PyPI sdist")
    registry: str = Field("", description="registry the online path pulls pinned base images from; empty: as pinned (Docker Hub)")
    llama_source_url: str = Field("", description="online path: llama.cpp comes from <this>/archive/<commit>.tar.gz; empty: pinned repo")
    debian_snapshot_url: str = Field(
        "http://snapshot.debian.org/archive/debian/{snapshot}",
        description="online path: apt reads Debian's archive as of the snapshot timestamp in pins.toml ({snapshot}), so pinned "
        "versions are found after the next point release; `pins check --snapshot` reads it too; empty: the mirror in pins.toml",
    )
    host_root: Path = Field(Path("/"), description="root for host reads (sysfs, procfs): tests point it at a recorded tree")
    group_timeout_s: float = Field(3600.0, description="timeout for one container (one group of cases)")
    peak_bandwidth_gbs: float = Field(256.0, description="memory bandwidth peak, GB/s (Strix Halo theoretical: 256)")
    peak_tflops: float = Field(
        59.4,
        description="GPU FP16 peak, TFLOP/s (Radeon 8060S: 40 CU x 2.9 GHz x 512 FP16 FLOP/clock/CU with WMMA; docs/hardware.md)",
    )
    telemetry: bool = Field(True, description="sample power, clocks and temperatures during bench runs where any sensor exists")
    telemetry_hz: float = Field(10.0, gt=0, le=100, description="telemetry samples per second")
    telemetry_idle_s: float = Field(3.0, ge=0, le=600, description="seconds of idle baseline sampled before each group")
    unstable_spread: float = Field(0.05, description="relative spread above which a result is flagged unstable")
    lock_dir: Path = Field(
        Path("/tmp/strix-halo-toolbox-locks"),
        description="the host-wide directory of device locks (one benchmark per device at a time), shared by every user",
    )
    oplog_file: Path | None = Field(
        None, description="your optimization log, appended by invoke log; default: optimization-log.md in results_dir"
    )

    @field_validator("results_dir", "cache_dir", "pins_file", "containers_dir", "host_root", "oplog_file", "lock_dir")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(**overrides) -> Settings:
    """Build settings from overrides, TOOLBOX_* environment variables and ./toolbox.toml (in that order).

    A value that is not valid (TOOLBOX_PEAK_TFLOPS=fast) is a one-line ToolboxError naming the setting.
    """
    from pydantic import ValidationError

    from toolbox.errors import ToolboxError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else "?"
        raise ToolboxError(
            f"setting {name} (TOOLBOX_{name.upper()} or toolbox.toml): {err['msg']} (got {err.get('input')!r})",
            "fix or unset it (docs/settings.md lists every setting)",
        ) from None
