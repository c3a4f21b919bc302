"""Matrix expansion: presets, user TOML, rejected combinations, grouping into exact cross products."""

from __future__ import annotations

import itertools

import pytest

from toolbox.errors import ToolboxError
from toolbox.llamacpp import PARAM_FLAGS
from toolbox.run.compose import render_matrices
from toolbox.run.matrix import expand, group_cases, load_matrix, preset_descriptions, presets, reject_reason
from toolbox.settings import REPO_ROOT


def plan_of(name_or_path, backends=("cpu",), models=("m.gguf",)):
    spec, source, text = load_matrix(str(name_or_path))
    return expand(spec, source, text, list(backends), list(models))


def test_every_preset_is_documented_and_expands():
    assert {"default", "kv", "fa", "batch", "depth", "load", "threads", "hipblaslt", "backend"} <= set(presets())
    for name, desc in preset_descriptions().items():
        assert desc, f"preset {name} has no description"
        plan = plan_of(name)
        assert plan.cases and plan.groups


def test_kv_removes_quantized_v_without_flash_attention_and_keeps_the_rest():
    plan = plan_of("kv")
    kept = {(c.p["type_k"], c.p["type_v"], c.p["flash_attn"]) for c in plan.cases}
    # every K x V pair with fa on; only f16 V with fa off
    assert {(k, v, "on") for k in ("f16", "q8_0", "q4_0") for v in ("f16", "q8_0", "q4_0")} <= kept
    assert all(v == "f16" for k, v, fa in kept if fa == "off")
    assert all("needs flash attention" in why for _, why in plan.removed)
    assert len(plan.removed) == 6 * 2 * 2  # 6 quantized-V pairs x (pp, tg) x 2 depths


def test_groups_are_exact_cross_products_covering_every_case_once():
    plan = plan_of("kv")
    seen = []
    for g in plan.groups:
        dims = {k: v for k, v in g.lists.items()}
        depths = sorted({c.p["n_depth"] for c in g.cases})
        tests = sorted({(c.p["n_prompt"], c.p["n_gen"]) for c in g.cases})
        assert len(g.cases) == len(depths) * len(tests) * (len(list(itertools.product(*dims.values()))) or 1)
        seen += [c.case_id for c in g.cases]
        for c in g.cases:
            assert reject_reason(c.backend, c.p) is None
    assert sorted(seen) == sorted(c.case_id for c in plan.cases)
    assert len(plan.groups) == 2  # fa on x all types, fa off x f16 V: two processes, two model loads


def test_command_line_is_what_llama_bench_takes():
    plan = plan_of("kv")
    argv = plan.groups[0].args("/models/m.gguf", 3, True)
    assert argv[:3] == ["llama-bench", "-m", "/models/m.gguf"]
    assert "-o" in argv and argv[argv.index("-o") + 1] == "jsonl"
    assert argv[argv.index("-d") + 1] == "0,4096"
    assert "-mmp" not in argv


def test_env_dimensions_and_backends_split_groups():
    plan = plan_of("hipblaslt", backends=("rocm", "vulkan"))
    assert len(plan.groups) == 4
    assert {g.env["ROCBLAS_USE_HIPBLASLT"] for g in plan.groups} == {"", "1"}


def test_user_matrix_with_zip_env_and_pg(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(
        'description = "mine"\nrepetitions = 2\n[params]\nn_prompt = [256]\nn_gen = [0]\nn_pg = [[128, 32]]\ntype_k = ["q8_0"]\n'
        '[[zip]]\nn_batch = [512, 2048]\nn_ubatch = [128, 512]\n[env]\nRADV_PERFTEST = ["", "nogttspill"]\n'
    )
    plan = plan_of(f)
    assert plan.repetitions == 2
    pairs = {(c.p["n_batch"], c.p["n_ubatch"]) for c in plan.cases}
    assert pairs == {(512, 128), (2048, 512)}, "zipped values are paired, not crossed"
    assert len(plan.groups) == 4  # 2 zip pairs x 2 env values
    tests = {c.test for c in plan.cases}
    assert tests == {"pp256", "pp128+tg32"}
    argv = plan.groups[0].args("/models/m.gguf", 2, True)
    assert "-pg" in argv and argv[argv.index("-pg") + 1] == "128,32"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[params]\nn_promt = [512]\n", "unknown llama-bench parameter 'n_promt' (did you mean 'n_prompt'?)"),
        ('[params]\ntype_k = ["q9_0"]\n', "type_k 'q9_0' is not a KV cache type"),
        ("repetitons = 3\n", "unknown key 'repetitons'"),
        ("[[zip]]\nn_batch = [1, 2]\nn_ubatch = [1]\n", "different lengths"),
        ('backends = ["metal"]\n', "unknown backend 'metal'"),
        ("[params\n", "not valid TOML"),
    ],
)
def test_bad_matrix_files_are_one_line_errors(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ToolboxError) as exc:
        load_matrix(str(f))
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_matrix_name_suggests_the_closest():
    with pytest.raises(ToolboxError, match=r"unknown matrix 'kvv'.*did you mean 'kv'"):
        load_matrix("kvv")


def test_every_param_maps_to_a_flag_the_pinned_llama_bench_documents():
    """The flag table is checked against the pinned llama-bench source's help text."""
    from toolbox.build.pins import load_pins
    from toolbox.build.source import sdist_source
    from toolbox.settings import load_settings

    s = load_settings()
    tree = sdist_source(load_pins(s.pins_file), s.cache_dir)
    help_src = (tree / "tools" / "llama-bench" / "llama-bench.cpp").read_text()
    for name, flag in PARAM_FLAGS.items():
        assert f'"  {flag}' in help_src or f", {flag}" in help_src or f"{flag}, " in help_src, f"{name}: {flag} not in llama-bench's help"
    assert '"-mmp"' not in help_src and "--load-mode" in help_src


def test_compose_matrices_are_generated_from_the_presets():
    for fname, text in render_matrices().items():
        path = REPO_ROOT / "containers" / "compose" / "matrices" / fname
        assert path.read_text() == text, f"{path} is stale: invoke compose-env --write-matrices"


def test_group_cases_of_a_partial_set_never_runs_a_case_twice_or_extra():
    plan = plan_of("kv")
    partial = plan.cases[::3]
    groups = group_cases(partial)
    ran = [c.case_id for g in groups for c in g.cases]
    assert sorted(ran) == sorted(c.case_id for c in partial)
