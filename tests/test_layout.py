"""The house: imports run one way (no module of the package imports one that imports it back)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "shortgen"


def imports() -> dict[str, set[str]]:
    """Each module -> the package modules it imports, anywhere in it (lazy imports included)."""
    out: dict[str, set[str]] = {}
    for path in PKG.glob("*.py"):
        name = path.stem
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shortgen."):
                deps.add(node.module.split(".")[1])
        out[name] = deps - {name, "__init__"}
    return out


def test_imports_form_no_cycle():
    graph = imports()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*path, m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_only_the_cli_prints_and_the_stages_do_not_import_the_cli():
    graph = imports()
    assert all("cli" not in deps for m, deps in graph.items() if m != "cli")
    for path in PKG.glob("*.py"):
        if path.stem in ("cli", "espeak_worker"):
            continue
        calls = [
            n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
        ]
        assert not calls, f"{path.name} prints"
