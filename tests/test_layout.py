"""The package's shape: imports only go down the layers of docs/architecture.md, no import circle,
no module over the size a reader can hold in their head, and ruff finds nothing."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "toolbox"

# Lowest first; a module may import its own layer and the layers below it (docs/architecture.md).
LAYERS = [
    {"errors", "settings", "files", "llamacpp"},
    {"engine"},
    {"build"},
    {"parse", "model", "host"},
    {"store"},
    {"run"},
    {"quality"},
    {"analysis"},
    {"tune"},
    {"report"},
    {"site"},
    {"cli"},
]
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """toolbox modules `name` imports, at any depth of the file (lazy imports count too)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("toolbox")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("toolbox"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    mods = _modules()
    return {m for m in found if m in mods and m != name}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")


def test_every_module_belongs_to_a_layer_and_imports_only_downwards():
    wrong = []
    for name, path in _modules().items():
        own = _layer(name)
        if own is None:
            continue
        for dep in _imports(name, path):
            theirs = _layer(dep)
            if theirs is not None and theirs > own:
                wrong.append(f"{name} (layer {own}) imports {dep} (layer {theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    mods = _modules()
    graph = {
        n: {d for d in _imports(n, p) if d in mods and not n.startswith(d + ".") and not d.startswith(n + ".")} for n, p in mods.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in graph[n]:
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n)


def test_the_store_never_reaches_up():
    for name, path in _modules().items():
        if name.startswith("toolbox.store"):
            ups = [d for d in _imports(name, path) if d.count(".") and d.split(".")[1] in ("analysis", "report", "quality", "run", "cli")]
            assert not ups, f"{name} imports {ups}"


def test_no_module_is_too_long_to_hold_in_your_head():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_tasks_py_is_a_thin_namespace():
    text = (REPO / "tasks.py").read_text()
    assert len(text.splitlines()) < 30 and "def " not in text


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed: ./setup.sh installs the test dependencies")
    return [exe]


def test_ruff_lint_is_clean():
    p = subprocess.run([*_ruff(), "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff_format_is_clean():
    p = subprocess.run([*_ruff(), "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
