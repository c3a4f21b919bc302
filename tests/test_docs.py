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
