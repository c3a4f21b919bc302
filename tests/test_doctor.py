"""invoke doctor and the host collectors, on recorded Strix Halo trees and on this machine.

The trees under tests/data/hosts/ are RECORDED DATA: sysfs / procfs files written only from values
that Strix Halo owners posted publicly (docs/data/strix-halo-host); each tree's README names the
source of every value. This machine has no AMD GPU, so it is the "no GPU" case.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from rich.console import Console

from toolbox.host import checks as hc
from toolbox.host import doctor, memory, versions
from toolbox.host import facts as host
from toolbox.host.verdicts import Check

HOSTS = Path(__file__).parent / "data" / "hosts"
GOOD = HOSTS / "strix-halo-128g-good"
BAD = HOSTS / "strix-halo-128g-96g-carveout-bad"
REPO = Path(__file__).resolve().parent.parent
# recorded host data: docs/data/strix-halo-host/README.md names its source
FIRMWARE_DUMP = Path(__file__).parent.parent / "docs" / "data" / "strix-halo-host" / "amdgpu-firmware-info-onexplayer-apex-395.txt"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# --- collectors on the recorded trees ---------------------------------------------------


def test_snapshot_of_good_tree_reads_the_recorded_values():
    snap = host.snapshot(GOOD)
    json.dumps(snap)  # must be JSON-serialisable: it goes into run.json
    assert snap["machine"]["hostname"] == "strixhalo"
    assert snap["kernel"]["release"] == "7.1.0"
    assert snap["kernel"]["params"]["ttm.pages_limit"] == "25165824"
    assert snap["cpu"]["model"] == "AMD RYZEN AI MAX+ 395 w/ Radeon 8060S"
    assert snap["memory"]["mem_total_bytes"] == 131752264 * 1024
    gpu = snap["gpu"]
    assert gpu["strix_halo_pci"] and gpu["strix_halo_driver"] == "amdgpu"
    assert gpu["card"]["mem_info_vram_total"] == 4294967296
    assert gpu["card"]["mem_info_gtt_total"] == 103079215104 == 25165824 * 4096
    node = gpu["kfd_nodes"][0]
    assert (node["gfx_target"], node["simd_count"], node["device_id"]) == ("gfx1151", 80, 5510)
    assert snap["ttm"]["pages_limit"] == 25165824
    assert snap["firmware"]["linux_firmware_date"] == "20260309"
    assert snap["firmware"]["mes"] == "0x00000086"
    assert snap["firmware"]["amdgpu_loaded"]["VBIOS"] == "113-STRXLGEN-001"
    assert snap["iommu"]["mode"] == "translated"
    assert snap["power"]["tuned"] == "accelerator-performance"


def test_snapshot_of_bad_tree():
    snap = host.snapshot(BAD)
    assert snap["gpu"]["card"]["mem_info_vram_total"] == 103079215104
    assert snap["gpu"]["kfd_nodes"][0]["mem_bank_bytes"] == 16364285952
    assert snap["gpu"]["kfd_nodes"][0]["local_mem_size"] == 0
    assert snap["firmware"]["packages"] == {"linux-firmware": "20251125"}
    assert snap["firmware"]["mes"] == "0x00000083"
    assert snap["iommu"]["mode"] == "pt"


def test_machine_identity_tells_machines_apart(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "etc" / "hostname").write_text("box-a\n")
    ident = host.machine_identity(tmp_path)
    assert ident == {"hostname": "box-a", "machine_id": hashlib.sha256(b"0123456789abcdef0123456789abcdef").hexdigest()[:16]}
    assert host.machine_identity(GOOD)["hostname"] != host.machine_identity(BAD)["hostname"]


def test_device_gids_are_the_files_st_gid():
    gids = host.device_gids(GOOD)
    assert set(gids) == {"/dev/kfd", "/dev/dri/renderD128", "/dev/dri/card1"}
    assert gids["/dev/kfd"] == (GOOD / "dev" / "kfd").stat().st_gid
    devices = host.gpu_devices(GOOD)
    assert devices == {"kfd": True, "render_nodes": ["/dev/dri/renderD128"], "amd_gpu": True, "gfx_target": "gfx1151"}


@pytest.mark.parametrize("version,name", [(110501, "gfx1151"), (90010, "gfx90a"), (110000, "gfx1100"), (0, None)])
def test_gfx_target_names(version, name):
    assert host.gfx_target(version) == name


def test_amdgpu_firmware_info_parses_a_posted_dump(tmp_path):
    """The whole OneXPlayer Apex dump as posted (ROCm/ROCm#6157), minus the command line."""
    posted = FIRMWARE_DUMP
    target = tmp_path / "sys/kernel/debug/dri/1/amdgpu_firmware_info"
    target.parent.mkdir(parents=True)
    target.write_text(posted.read_text())
    fw = host.amdgpu_firmware_info(tmp_path)
    assert fw["MES"] == "0x00000086" and fw["MES_KIQ"] == "0x0000006f" and fw["SMC"] == "0x0a640600"


@pytest.mark.parametrize(
    "version,date",
    [("1:20260309-1", "20260309"), ("20251125", "20251125"), ("20240318.git3b128b60-0ubuntu2", "20240318"), (None, None)],
)
def test_firmware_date(version, date):
    assert host.firmware_date(version) == date


# --- verdicts on the recorded trees ---------------------------------------------------------


def test_good_tree_has_no_warn_or_fail():
    checks = hc.host_checks(host.snapshot(GOOD), image_labels={versions.ROCM_VERSION_LABEL: "7.2.1"})
    c = by_name(checks)
    bad = [x for x in checks if x.status in ("WARN", "FAIL")]
    assert not bad, bad
    for name in (
        "amd gpu",
        "gfx target",
        "device files",
        "vram carve-out",
        "gtt size",
        "ttm pages_limit",
        "kernel",
        "linux-firmware",
        "mes firmware",
        "rocm image vs kernel",
    ):
        assert c[name].status == "OK", c[name]
    assert "96.0 GiB" in c["memory for a model"].detail
    assert "amdgpu.gttsize" not in c


def test_bad_tree_fails_with_fixes_and_sources():
    c = by_name(hc.host_checks(host.snapshot(BAD), image_labels={versions.ROCM_VERSION_LABEL: "7.2.1"}))
    assert c["vram carve-out"].status == "FAIL" and "5444" in c["vram carve-out"].source
    assert c["linux-firmware"].status == "FAIL" and "20251111" in c["linux-firmware"].fix
    assert c["mes firmware"].status == "FAIL"
    assert c["amdgpu.gttsize"].status == "WARN" and "ttm.pages_limit" in c["amdgpu.gttsize"].fix
    assert c["kernel"].status == "WARN"
    assert c["gtt size"].status == "WARN"  # 115 GiB GTT on 31 GiB of OS-managed RAM
    assert c["memory for a model"].status == "WARN" and "15.2 GiB" in c["memory for a model"].detail
    assert c["rocm image vs kernel"].status == "WARN"
    for check in c.values():
        if check.status in ("WARN", "FAIL"):
            assert check.fix and check.source, check


def _with_cmdline(snap: dict, cmdline: str, **ttm) -> dict:
    snap = copy.deepcopy(snap)
    snap["kernel"]["params"] = host.parse_cmdline(cmdline)
    snap["ttm"].update(ttm)
    return snap


def test_posted_misconfigurations_are_caught():
    snap = host.snapshot(GOOD)
    # ROCm/ROCm#5595: misspelled parameter, ignored by the kernel
    c = by_name(memory.kernel_param_checks(_with_cmdline(snap, "ro quiet splash amdgpu.gtt_size=122880 vt.handoff=7")))
    assert c["amdgpu.gtt_size"].status == "FAIL"
    # ROCm/ROCm#5562, Ubuntu 25.10: amdttm.* while only the in-tree ttm is loaded
    c = by_name(
        memory.kernel_param_checks(
            _with_cmdline(snap, "ro transparent_hugepage=always amdttm.pages_limit=32768000 amdttm.page_pool_size=32768000")
        )
    )
    assert c["amdttm parameters"].status == "FAIL"
    # kyuz0's first README: pages_limit 10x too large
    c = by_name(
        memory.memory_checks(_with_cmdline(snap, "amd_iommu=off amdgpu.gttsize=131072 ttm.pages_limit=335544321", pages_limit=335544321))
    )
    assert c["ttm pages_limit"].status == "WARN"
    # nothing configured: GTT at the default half of RAM (AMD doc: 16469033 pages on 125.65 GiB)
    default = _with_cmdline(snap, "ro quiet", pages_limit=16469033, page_pool_size=None)
    default["gpu"]["card"]["mem_info_gtt_total"] = 16469033 * 4096
    assert by_name(memory.memory_checks(default))["gtt size"].status == "WARN"


def test_device_groups_fail_when_user_lacks_the_group():
    snap = host.snapshot(GOOD)
    gid = (GOOD / "dev" / "kfd").stat().st_gid
    failing = hc.device_group_check(snap, uid=1000, user_gids={gid + 12345})
    assert failing.status == "FAIL" and "usermod" in failing.fix
    assert hc.device_group_check(snap, uid=1000, user_gids={gid}).status == "OK"
    assert f"/dev/kfd={gid}" in hc.device_group_check(snap, uid=0, user_gids=set()).detail


@pytest.mark.parametrize(
    "release,rocm,status",
    [
        ("7.1.0", "7.2.1", "OK"),
        ("6.18.9-200.fc43.x86_64", "7.11.0", "OK"),
        ("6.18.4-200.fc43.x86_64", "7.1.1", "FAIL"),  # AMD table: 6.18.4+ breaks older ROCm
        ("7.1.0", "6.4.4", "FAIL"),
        ("6.14.0-36-generic", "7.2.0", "FAIL"),  # generic < 6.18.4 with 7.2.0: AMD table
        ("6.14.0-36-generic", "7.2.1", "WARN"),
        ("6.14.0-1018-oem", "7.2.1", "OK"),
        ("6.14.0-1017-oem", "7.2.0", "OK"),
        ("6.14.0-1017-oem", "7.2.1", "WARN"),
    ],
)
def test_rocm_image_against_kernel(release, rocm, status):
    snap = copy.deepcopy(host.snapshot(GOOD))
    snap["kernel"]["release"] = release
    assert versions.rocm_image_check(snap, {versions.ROCM_VERSION_LABEL: rocm}).status == status


def test_rocm_image_missing_or_unlabelled():
    snap = host.snapshot(GOOD)
    assert versions.rocm_image_check(snap, None) == Check("rocm image vs kernel", "INFO", "no rocm image built", "invoke build rocm")
    assert versions.rocm_image_check(snap, {"org.strix-toolbox.backend": "rocm"}).status == "WARN"


# --- this machine ------------------------------------------------------------------------------


def test_this_machine_snapshot_is_json_and_consistent():
    snap = host.snapshot(Path("/"))
    json.dumps(snap)
    assert snap["gpu"]["devices"]["kfd"] == os.path.exists("/dev/kfd")
    assert snap["kernel"]["release"] == os.uname().release


@pytest.mark.skipif(os.path.exists("/dev/kfd"), reason="this test is for machines without an AMD GPU")
def test_without_amd_gpu_says_so_plainly():
    snap = host.snapshot(Path("/"))
    if snap["gpu"]["devices"]["amd_gpu"]:
        pytest.skip("an AMD GPU without /dev/kfd is here")
    checks = hc.host_checks(snap)
    gpu = by_name(checks)["amd gpu"]
    assert gpu.status == "INFO" and "no AMD GPU" in gpu.detail and "lavapipe" in gpu.detail
    assert not [c for c in checks if c.status == "FAIL"]
    assert "vram carve-out" not in by_name(checks)


def _docker_or_skip():
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        pytest.skip(f"Docker not reachable: {exc}")


def test_docker_checks_against_the_real_daemon():
    client = _docker_or_skip()
    c = by_name(doctor.docker_checks(client))
    assert c["docker daemon"].status == "OK"
    major = int(client.version()["Version"].split(".")[0])
    # BuildKit is the default builder from Engine 23: older engines get a WARN naming the fix
    assert c["docker version"].status == ("OK" if major >= 23 else "WARN"), c["docker version"]
    has_buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
    assert c["docker buildx"].status == ("OK" if has_buildx else "WARN"), c["docker buildx"]
    assert doctor.newest_image_labels(_docker_or_skip(), "no-such-backend") is None


def test_docker_checks_fail_without_a_daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    checks = doctor.docker_checks()
    assert [(c.name, c.status) for c in checks] == [("docker daemon", "FAIL")]
    assert checks[0].fix


def test_render_shows_verdicts_fixes_and_sources():
    console = Console(record=True, width=200)
    console.print(doctor.render(hc.host_checks(host.snapshot(BAD)), host.machine_identity(BAD)))
    text = console.export_text()
    assert "mais-axb3502" in text and "FAIL" in text and "downgrade to 20251111" in text and "ROCm#5444" in text
    assert "3 FAIL" in text


# --- the invoke task -------------------------------------------------------------------------


def _invoke(*args):
    return subprocess.run([sys.executable, "-m", "invoke", "doctor", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_task_exits_1_on_the_bad_tree_and_0_on_the_good_one():
    bad = _invoke("--root", str(BAD), "--json")
    assert bad.returncode == 1, bad.stderr
    statuses = {c["name"]: c["status"] for c in json.loads(bad.stdout)["checks"]}
    assert statuses["linux-firmware"] == "FAIL"
    good = _invoke("--root", str(GOOD), "--json")
    out = json.loads(good.stdout)
    # this machine's Docker daemon is reachable (the docker checks can WARN, never FAIL here)
    assert [c for c in out["checks"] if c["status"] == "FAIL"] == []
    assert good.returncode == 0, good.stderr
    assert out["host"]["machine"]["hostname"] == "strixhalo"


def test_task_here_says_no_amd_gpu_and_exits_0():
    """This machine has no AMD GPU and a working Docker: nothing to fail, the GPU checks say INFO."""
    result = _invoke("--json")
    out = json.loads(result.stdout)
    assert [c for c in out["checks"] if c["status"] == "FAIL"] == []
    assert result.returncode == 0, result.stderr
    assert {c["name"]: c["status"] for c in out["checks"]}["amd gpu"] == "INFO"
    table = _invoke()
    assert "amd gpu" in table.stdout
