"""Generate synthetic-but-realistic run directories for report/compare/export tests (schema v1)."""

import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from toolbox.results import make_row

OUT = Path(__file__).resolve().parent
for _d in OUT.glob("2*Z-*"):
    shutil.rmtree(_d)


rng = np.random.default_rng(11312)
TYPES = ["f16", "q8_0", "q4_0"]
COMMIT_A, COMMIT_C = "0c1e5709", "9f3d2a71"
MODEL = dict(model_filename="/models/toolbox-tiny-llama-v1.gguf", model_type="llama ?B F16", model_size=8395264, model_n_params=4196864)
MODEL_SHA = "5d1f0c2e" + "0" * 56
BACK = {
    "cpu": dict(
        gpu_info="",
        backends="CPU",
        devices="auto",
        image="strix-toolbox/llama-cpu:b11312-0c1e5709",
        image_digest="sha256:" + "c1" * 32,
        pp=2400.0,
        tg=420.0,
        dpp=3000,
        dtg=6000,
    ),
    "vulkan": dict(
        gpu_info="llvmpipe (LLVM 19.1.7, 256 bits)",
        backends="Vulkan",
        devices="Vulkan0",
        image="strix-toolbox/llama-vulkan:b11312-0c1e5709",
        image_digest="sha256:" + "7a" * 32,
        pp=900.0,
        tg=160.0,
        dpp=2500,
        dtg=5000,
    ),
}
KV = {"f16": 1.0, "q8_0": 0.97, "q4_0": 0.94}


def base_row(
    run_id,
    backend,
    commit,
    build_number,
    n_prompt,
    n_gen,
    depth,
    tk,
    tv,
    fa,
    reps,
    mean,
    spread=0.012,
    t="2026-11-26T09:00:00Z",
    case=None,
):
    b = BACK[backend]
    samples_ts = [float(round(x, 6)) for x in rng.normal(mean, mean * spread, reps)]
    n_tok = n_prompt + n_gen
    samples_ns = [int(n_tok / s * 1e9) for s in samples_ts]
    lb = dict(
        build_commit=commit,
        build_number=build_number,
        cpu_info="AMD EPYC 7763 64-Core Processor",
        gpu_info=b["gpu_info"],
        backends=b["backends"],
        **MODEL,
        n_batch=2048,
        n_ubatch=512,
        n_threads=2,
        cpu_mask="0x0",
        cpu_strict=False,
        poll=50,
        type_k=tk,
        type_v=tv,
        n_gpu_layers=99,
        n_cpu_moe=0,
        split_mode="layer",
        main_gpu=0,
        no_kv_offload=False,
        flash_attn=fa,
        devices=b["devices"],
        tensor_split="0.00",
        tensor_buft_overrides="none",
        load_mode="auto",
        lazy_mode="auto",
        embeddings=False,
        no_op_offload=0,
        no_host=False,
        repack=True,
        fit_target=1024,
        fit_min_ctx=4096,
        n_prompt=n_prompt,
        n_gen=n_gen,
        n_depth=depth,
        test_time=t,
        avg_ns=int(np.mean(samples_ns)),
        stddev_ns=int(np.std(samples_ns, ddof=1)),
        avg_ts=float(np.mean(samples_ts)),
        stddev_ts=float(np.std(samples_ts, ddof=1)),
        samples_ns=samples_ns,
        samples_ts=samples_ts,
    )
    row = make_row(
        lb,
        case_id=case or f"{backend}-{tk}-{tv}-fa{fa}-p{n_prompt}-g{n_gen}-d{depth}",
        group_id=f"{backend}-g1",
        status="ok",
        backend=backend,
        image=b["image"],
        image_digest=b["image_digest"],
        env={},
        model_sha256=MODEL_SHA,
        device_ok=True,
    )
    return {"schema_version": 1, "run_id": run_id, **row}


def failed_row(run_id, backend, n_prompt, n_gen, depth, tk, tv, fa, error):
    lb = dict(**MODEL, type_k=tk, type_v=tv, flash_attn=fa, n_prompt=n_prompt, n_gen=n_gen, n_depth=depth, n_gpu_layers=99)
    row = make_row(
        lb,
        case_id=f"{backend}-{tk}-{tv}-fa{fa}-p{n_prompt}-g{n_gen}-d{depth}",
        group_id=f"{backend}-g2",
        status="failed",
        error=error,
        backend=backend,
        image=BACK[backend]["image"],
        image_digest=BACK[backend]["image_digest"],
        env={},
        model_sha256=MODEL_SHA,
    )
    return {"schema_version": 1, "run_id": run_id, **row}


def meta(run_id, kind, matrix, backends, started, ended, status="complete", commit=COMMIT_A, build=11312):
    images = {
        b: {
            "tag": BACK[b]["image"].replace("0c1e5709", commit),
            "id": BACK[b]["image_digest"],
            "repo_digest": None,
            "labels": {
                "org.strix-toolbox.backend": b,
                "org.strix-toolbox.llama-commit": commit + "bba43ac29e6e3b677cdceebdd22334f"[: 40 - len(commit)],
                "org.strix-toolbox.llama-build-number": str(build),
                **({"org.strix-toolbox.mesa-version": "25.0.7-2"} if b == "vulkan" else {}),
            },
        }
        for b in backends
    }
    return dict(
        schema_version=1,
        run_id=run_id,
        kind=kind,
        started_at=started,
        ended_at=ended,
        status=status,
        toolbox={"version": "0.1.0", "git_commit": "b194508", "git_dirty": False},
        argv=["invoke", "bench", "--matrix", matrix, "--backend", ",".join(backends), "--allow-cpu-vulkan"],
        settings={"peak_bandwidth_gbs": 256.0, "peak_tflops": 59.4, "unstable_spread": 0.05},
        matrix={"name": matrix, "backends": backends, "repetitions": 3},
        images=images,
        models=[
            {
                "path": "/root/.cache/strix-halo-toolbox/models/toolbox-tiny-llama-v1.gguf",
                "name": "toolbox-tiny-llama-v1.gguf",
                "size": 8411456,
                "sha256": MODEL_SHA,
            }
        ],
        host={
            "machine": {"hostname": "ci-runner"},
            "kernel": {"release": "6.12.48+deb13-amd64", "cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro", "params": {}},
            "cpu": {"model": "AMD EPYC 7763 64-Core Processor", "governor": None},
            "memory": {"mem_total_bytes": 8331001856},
            "gpu": {"strix_halo_pci": False, "kfd_nodes": []},
            "firmware": {"linux_firmware_date": None},
            "iommu": {"mode": None},
            "power": {"tuned": None},
            "transparent_hugepages": "madvise",
        },
        sources=[],
    )


def write(run_id, m, rows):
    d = OUT / run_id
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps(m, indent=2) + "\n")
    with open(d / "rows.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def kv_rows(run_id, commit, build, tweak):
    rows = []
    for backend in ("cpu", "vulkan"):
        b = BACK[backend]
        for depth in (0, 4096):
            for tk, tv, fa in itertools.product(TYPES, TYPES, (1, 0)):
                if fa == 0 and tv != "f16":
                    continue
                for p, g in ((512, 0), (0, 128)):
                    if p:
                        mean = b["pp"] / (1 + depth / b["dpp"]) * KV[tk] * KV[tv] * (1.0 if fa else 0.9)
                    else:
                        mean = b["tg"] / (1 + depth / b["dtg"]) * (KV[tk] * KV[tv]) ** (0.5 if depth else 0.1) * (1.0 if fa else 0.97)
                    spread = 0.012
                    mean, spread, extra = tweak(backend, depth, tk, tv, fa, p, g, mean, spread)
                    r = base_row(run_id, backend, commit, build, p, g, depth, tk, tv, fa, 3, mean, spread)
                    r.update(extra)
                    rows.append(r)
    return rows


def no_tweak(backend, depth, tk, tv, fa, p, g, mean, spread):
    # one noisy result (thermals on the CI box): the report must flag it
    if backend == "cpu" and depth == 4096 and tk == "q8_0" and tv == "q8_0" and fa == 1 and g:
        spread = 0.09
    return mean, spread, {}


def pin_update(backend, depth, tk, tv, fa, p, g, mean, spread):
    extra = {}
    if backend == "cpu" and p:
        mean *= 1.08  # faster pp on cpu
    if backend == "vulkan" and g and tk == "q4_0":
        mean *= 0.88  # slower tg with q4_0 K on vulkan: a regression
    if backend == "vulkan" and tk == "q4_0" and tv == "q4_0" and fa == 1 and p:
        mean *= 1.3  # "faster", but the output is wrong
        extra["quality"] = {"verdict": "broken", "ppl": 9.1e4, "kld_mean": 7.2, "top1_agree": 0.04}
    elif backend == "vulkan" and tk == "q8_0" and tv == "q8_0" and fa == 1 and p:
        extra["quality"] = {"verdict": "same", "ppl": 2051.3, "kld_mean": 0.0004, "top1_agree": 0.998}
    return mean, spread, extra


write(
    "20261126T090000Z-a11a11",
    meta("20261126T090000Z-a11a11", "bench", "kv", ["cpu", "vulkan"], "2026-11-26T09:00:00Z", "2026-11-26T09:21:40Z"),
    kv_rows("20261126T090000Z-a11a11", COMMIT_A, 11312, no_tweak),
)
write(
    "20261126T100000Z-c33c33",
    meta(
        "20261126T100000Z-c33c33",
        "bench",
        "kv",
        ["cpu", "vulkan"],
        "2026-11-26T10:00:00Z",
        "2026-11-26T10:22:05Z",
        commit=COMMIT_C,
        build=11400,
    ),
    kv_rows("20261126T100000Z-c33c33", COMMIT_C, 11400, pin_update),
)

# depth run
rid = "20261126T093000Z-b22b22"
rows = []
for backend in ("cpu", "vulkan"):
    b = BACK[backend]
    for depth in (0, 1024, 4096, 8192, 16384):
        for p, g in ((512, 0), (0, 128)):
            if depth == 16384:
                rows.append(
                    failed_row(
                        rid,
                        backend,
                        p,
                        g,
                        depth,
                        "f16",
                        "f16",
                        1,
                        "llama-bench exited 1: failed to create context with model (n_ctx 16896 > n_ctx_train 8192)",
                    )
                )
                continue
            mean = b["pp"] / (1 + depth / b["dpp"]) if p else b["tg"] / (1 + depth / b["dtg"])
            rows.append(base_row(rid, backend, COMMIT_A, 11312, p, g, depth, "f16", "f16", 1, 2, mean))
write(rid, meta(rid, "bench", "depth", ["cpu", "vulkan"], "2026-11-26T09:30:00Z", "2026-11-26T09:41:13Z"), rows)

# an old imported markdown log: no samples, no toolbox fields, most llama-bench fields missing
rid = "20261120T080000Z-d44d44"
rows = []
for tk, tv in (("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0")):
    for p, g, ts, sd in ((512, 0, 880.4 * KV[tk] * KV[tv], 9.1), (0, 128, 158.7, 1.2)):
        raw = {
            "model": "llama ?B F16",
            "size": "8.01 MiB",
            "params": "4.20 M",
            "backend": "Vulkan",
            "ngl": "99",
            "type_k": tk,
            "type_v": tv,
            "fa": "1",
            "test": f"pp{p}" if p else f"tg{g}",
            "t/s": f"{ts:.2f} ± {sd:.2f}",
        }
        lb = dict(
            model_type="llama ?B F16",
            model_size=8399093,
            model_n_params=4200000,
            backends="Vulkan",
            n_gpu_layers=99,
            type_k=tk,
            type_v=tv,
            flash_attn=1,
            n_prompt=p,
            n_gen=g,
            n_depth=0,
            avg_ts=round(ts, 2),
            stddev_ts=sd,
        )
        row = make_row(lb, source={"path": "old-vulkan.md", "sha256": "ab" * 32, "format": "md"})
        row["raw"] = raw
        rows.append({"schema_version": 1, "run_id": rid, **row})
m = meta(rid, "imported", "kv", [], "2026-11-20T08:00:00Z", "2026-11-20T08:00:00Z")
m.update(
    images={},
    models=[],
    host={},
    argv=["invoke", "import", "old-vulkan.md"],
    matrix={},
    sources=[{"path": "old-vulkan.md", "sha256": "ab" * 32, "format": "md", "rows": 6, "errors": []}],
)
write(rid, m, rows)

# a run where everything failed
rid = "20261126T110000Z-e55e55"
rows = [
    failed_row(
        rid,
        "vulkan",
        p,
        g,
        0,
        "f16",
        "q8_0",
        0,
        "llama-bench exited 1: failed to create context with model (V cache quantization requires flash_attn)",
    )
    for p, g in ((512, 0), (0, 128))
]
write(rid, meta(rid, "bench", "kv", ["vulkan"], "2026-11-26T11:00:00Z", "2026-11-26T11:00:09Z", status="failed"), rows)
print("ok")
