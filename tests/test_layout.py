"""The house: the package's folders are its lanes, and imports run one way, between modules (no module
imports one that imports it back) and between lanes (LANE_MAY_IMPORT)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "shortgen"

# What each lane may import besides itself. The shared base (errors, settings, rules, cache, keys, plan)
# imports no lane; the drivers at the top (timeline, check, render, rendered, testing) run the lanes; the
# series lane drives render; only the cli sits above everything.
BASE = {"errors", "settings", "rules", "cache", "keys", "plan"}
DRIVERS = {"timeline", "check", "render", "rendered", "testing", "preview"}
LANE_MAY_IMPORT = {
    "base": set(),
    "video": {"base"},
    "audio": {"base", "video"},
    "picture": {"base", "video", "audio"},
    "speech": {"base", "video", "audio"},
    "script": {"base", "video", "audio", "picture", "speech"},
    "publish": {"base", "video"},
    "drivers": {"base", "video", "audio", "picture", "speech", "script", "publish"},
    "series": {"base", "video", "audio", "picture", "speech", "script", "publish", "drivers"},
    "cli": {"base", "video", "audio", "picture", "speech", "script", "publish", "drivers", "series"},
}


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name under shortgen ("audio.music", "cli")."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        if "__pycache__" not in parts:
            out[".".join(parts)] = path
    return out


def lane_of(module: str) -> str:
    head = module.split(".")[0]
    if "." in module or head in ("audio", "picture", "speech", "script", "publish", "video", "series"):
        return head
    if head in BASE:
        return "base"
    if head in DRIVERS:
        return "drivers"
    return head  # cli, and __init__ (which imports nothing)


def imports() -> dict[str, set[str]]:
    """Each module -> the package modules it imports, anywhere in it (lazy imports included)."""
    mods = modules()
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        here = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[: len(here) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
                if node.module:
                    deps.add(".".join(target))
                for a in node.names:  # `from . import music`, `from .audio import track`
                    if ".".join([*target, a.name]) in mods:
                        deps.add(".".join([*target, a.name]))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shortgen."):
                deps.add(node.module.removeprefix("shortgen."))
        out[name] = {d for d in deps if d in mods and d != name and not d.endswith("__init__")}
    return out


def test_every_module_sits_in_a_lane_or_among_the_shared_and_the_drivers():
    known = BASE | DRIVERS | {"cli", "__init__"}
    stray = [m for m in modules() if "." not in m and m not in known and m not in LANE_MAY_IMPORT]
    assert not stray, f"modules at the top that are neither shared, a driver nor the cli: {stray}"
    for lane in ("audio", "picture", "speech", "script", "publish", "video", "series"):
        doc = ast.get_docstring(ast.parse((PKG / lane / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"{lane}/__init__.py says what the lane does"


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


def test_lanes_import_one_way():
    bad = [
        f"{m} ({lane_of(m)}) imports {d} ({lane_of(d)})"
        for m, deps in imports().items()
        for d in deps
        if lane_of(d) != lane_of(m) and lane_of(d) not in LANE_MAY_IMPORT[lane_of(m)]
    ]
    assert not bad, "\n".join(bad)
    # and the allowed graph itself has no two lanes importing each other
    for a, allowed in LANE_MAY_IMPORT.items():
        for b in allowed:
            assert a not in LANE_MAY_IMPORT[b], f"{a} and {b} may import each other"


def test_the_layout_test_sees_the_imports_it_guards():
    """A check of the checker: real edges of each kind are found (a relative import from a lane to the
    base, one to another lane, one within a lane, and a lazy one inside a function)."""
    g = imports()
    assert "cache" in g["audio.track"] and "audio.music" in g["audio.track"]
    assert "video.encode" in g["audio.music"] or "video.encode" in g["audio.audiofile"]
    assert "audio.audiofile" in g["render"]  # render.key_inputs imports it inside the function
    assert "speech.espeak_worker" in g["speech.narrate"]


def test_only_the_cli_prints_and_the_stages_do_not_import_the_cli():
    graph = imports()
    assert all("cli" not in deps for m, deps in graph.items() if m != "cli")
    for name, path in modules().items():
        if name in ("cli", "speech.espeak_worker"):
            continue
        calls = [
            n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
        ]
        assert not calls, f"{path.name} prints"


def test_no_module_over_600_lines_and_no_function_over_60():
    """Sizes a reader can hold: a module of one job, a function that reads as its steps."""
    long_modules, long_functions = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 600:
            long_modules.append(f"{name} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long_modules and not long_functions, long_modules + long_functions
