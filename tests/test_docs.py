"""The docs and the tasks cannot drift apart: every `invoke ...` command shown in README.md and docs/
is run with --help (the task exists, the command line parses) and its flags must be the task's own;
`invoke bench` commands that need no GPU or model file also run with --dry-run."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# `invoke task ...` up to the end of the code span / line; alternatives like `rocm|vulkan|cpu` are expanded.
COMMAND = re.compile(r"(?:^|`|\$ |\s{4})(invoke [a-z][\w-]*(?: [^`\n#]*)?)", re.M)


def doc_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for m in COMMAND.finditer(doc.read_text()):
            cmd = m.group(1).strip().rstrip(".,:;)")
            cmd = re.split(r"\s(?:>>?|\||&&|;)\s", cmd)[0]  # the invoke part of a shell line
            # synopsis notation: [optional parts] are shown, `...` repeats
            cmd = " ".join(w for w in cmd.replace("[", "").replace("]", "").split() if w != "...")
            if cmd.startswith("invoke --"):
                continue
            for expanded in _expand_alternatives(cmd):
                found.append((doc.relative_to(REPO).as_posix(), expanded))
    return sorted(set(found))


def _expand_alternatives(cmd: str) -> list[str]:
    words = cmd.split()
    for i, w in enumerate(words):
        if "|" in w and not w.startswith("-"):
            return [c for alt in w.split("|") for c in _expand_alternatives(" ".join(words[:i] + [alt] + words[i + 1 :]))]
    return [cmd]


COMMANDS = doc_commands()


def task_options(task: str) -> set[str]:
    out = subprocess.run(["invoke", "--help", task], cwd=REPO, capture_output=True, text=True).stdout
    return set(re.findall(r"(--[a-z][\w-]*)", out))


def test_docs_show_commands():
    assert len(COMMANDS) > 20
    assert {c.split()[1] for _, c in COMMANDS} >= {"bench", "build", "doctor", "report", "compare"}


@pytest.mark.parametrize("doc,cmd", COMMANDS, ids=[f"{d}: {c}" for d, c in COMMANDS])
def test_every_documented_command_parses_with_help(doc, cmd):
    argv = shlex.split(cmd)
    # a bare mention in prose (`invoke build`) must name a task; a command line must parse
    full = ["invoke", "--help", argv[1]] if len(argv) == 2 else argv + ["--help"]
    p = subprocess.run(full, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{doc}: `{cmd} --help` failed: {p.stdout[-300:]}{p.stderr[-300:]}"
    known = task_options(argv[1])
    for flag in [a.split("=")[0] for a in argv[2:] if a.startswith("--")]:
        assert flag in known, f"{doc}: `{cmd}` uses {flag}, which `invoke {argv[1]}` does not have ({sorted(known)})"


DRY = [
    (d, c)
    for d, c in COMMANDS
    if c.startswith("invoke bench ")
    and "--model" not in c
    and "--resume" not in c
    and not re.search(r"--backend (rocm|vulkan)\b", c)
    and "--matrix" in c
]


@pytest.mark.container
@pytest.mark.parametrize("doc,cmd", DRY, ids=[f"{d}: {c}" for d, c in DRY])
def test_documented_bench_commands_plan_with_dry_run(cpu_image, doc, cmd, tmp_path):
    import os

    argv = shlex.split(cmd) + ["--dry-run", "--backend", "cpu"]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, env=os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)})
    assert p.returncode == 0, f"{doc}: `{cmd} --dry-run` failed: {p.stderr[-400:]}"
    assert "llama-bench -m" in p.stdout


# --- the repository stands alone: every file a doc or a comment points at exists in it ------------------

# Our own text: the docs, the test data's notes and the code (docs/data/ holds verbatim copies of posted
# text, whose paths are the posters'; this file holds the patterns themselves).
TEXT_FILES = [
    REPO / "README.md",
    REPO / "tasks.py",
    REPO / "setup.sh",
    REPO / "compose.yaml",
    *sorted(p for p in (REPO / "docs").rglob("*.md") if "data" not in p.relative_to(REPO / "docs").parts[:1]),
    REPO / "docs" / "data" / "README.md",
    *sorted((REPO / "toolbox").rglob("*.py")),
    *sorted(p for p in (REPO / "tests").glob("*.py") if p.name != "test_docs.py"),
    *sorted((REPO / "tests" / "data").rglob("*.md")),
    *sorted((REPO / "benchmarks").rglob("*.py")),
    *sorted(p for p in (REPO / "containers").rglob("*") if p.is_file() and p.suffix in ("", ".sh", ".toml", ".md", ".py")),
]
# Places outside the repository that once stood in for files it did not have.
OUTSIDE = re.compile(r"shared/(?:data|seed)|\bDESIGN\.md|\bSTYLE\.md|(?<!\[)data README")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
REPO_PATH = re.compile(r"(?<![\w./<-])((?:docs|tests|toolbox|containers|benchmarks|\.ci)/[\w./-]*[\w/])")
BARE_FILE = re.compile(r"(?<![\w./<-])([\w][\w.-]*\.(?:txt|log|json|jsonl|csv|sql|md))(?![\w/-])")
# Files the toolbox writes at run time (results/<run_id>/...), and llama.cpp's and posters' own files
# (named in prose about them; paths into llama.cpp's tree are written llama.cpp/...).
NOT_IN_REPO = {
    "report.md",
    "run.json",
    "rows.jsonl",
    "quality.jsonl",
    "telemetry.jsonl",
    "energy.json",
    "CMakeLists.txt",
    "system_info.json",
    "raw_runs.jsonl",
    "memtest_vulkan.log",
}


def referenced_paths(path: Path) -> list[tuple[str, Path | None]]:
    """(reference as written, where it must be) for every file reference in one text file; None = found by name."""
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    if path.suffix == ".md":
        for target in LINK.findall(text):
            if not re.match(r"[a-z]+:", target):
                out.append((target, (path.parent / target).resolve()))
    for ref in REPO_PATH.findall(text):
        out.append((ref, REPO / ref))
    if path.suffix == ".md":  # in prose a bare file name is a reference; in code it is mostly an example
        for name in BARE_FILE.findall(text):
            if name not in NOT_IN_REPO:
                out.append((name, None))
    return out


def test_every_referenced_file_exists_in_the_repository():
    names = {p.name for p in REPO.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts}
    missing = []
    for path in TEXT_FILES:
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in OUTSIDE.finditer(text):
            missing.append(f"{rel}: refers to {m.group(0)!r}, which is outside the repository")
        for ref, where in referenced_paths(path):
            if (where is not None and not where.exists()) or (where is None and ref not in names):
                missing.append(f"{rel}: {ref}")
    assert not missing, "references to files the repository does not have:\n" + "\n".join(missing)


def test_the_reference_check_finds_a_missing_file(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("See [the dump](data/nope.txt), docs/none.md and lspci-lscpu-gmktec-395.txt.\n")
    refs = dict(referenced_paths(doc))
    assert not refs["data/nope.txt"].exists() and not refs["docs/none.md"].exists()
    assert refs["lspci-lscpu-gmktec-395.txt"] is None  # found by name: it is in docs/data/strix-halo-host/
    outside = "/".join(["shared", "data", "x.txt"])  # made up, outside the repository; built so no checker reads it as a reference
    assert OUTSIDE.search(f"from {outside}") and OUTSIDE.search("(data README §3)")
    assert not OUTSIDE.search("([data README](data/strix-halo-host/README.md) §3)")


def test_every_setting_and_environment_variable_is_documented():
    from toolbox.settings import Settings

    doc = (REPO / "docs" / "settings.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{name}` | `TOOLBOX_{name.upper()}` |" in doc, f"docs/settings.md: add a row for the setting {name}"
    used = set()
    for path in TEXT_FILES:
        used |= set(re.findall(r"\bTOOLBOX_[A-Z][A-Z0-9_]*", path.read_text(encoding="utf-8", errors="replace")))
    undocumented = sorted(v for v in used if f"`{v}`" not in doc)
    assert not undocumented, f"docs/settings.md: document {undocumented}"
    assert "toolbox.toml" in doc and "docs/settings.md" in (REPO / "toolbox" / "settings.py").read_text()
