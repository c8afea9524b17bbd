"""YAML with positions: the node tree composed by hand so that each value keeps its line and column,
a file read as UTF-8 with a byte's line:col named where it is not, YAML's own errors placed where the
author went wrong (an unclosed quote or bracket, found where it opened), and a mapping validated against
its rules (schema.py) with every error at file:line:col: field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ScriptError, Where, byte_position
from . import schema

Pos = tuple[int, int]  # 1-based line, column


class _Positions:
    """Maps a path like ('segments', 2, 'narration') to the line/col of its value or key."""

    def __init__(self) -> None:
        self.values: dict[tuple, Pos] = {}
        self.keys: dict[tuple, Pos] = {}

    def where(self, file: Path, path: tuple, key: bool = False) -> Where:
        """The file:line:col of a value (or its key), as close as the file records it."""
        found = self.find(path, key)
        return Where(file, *found) if found else Where(file)

    def find(self, path: tuple, key: bool = False) -> Pos | None:
        table = self.keys if key else self.values
        while path:
            if path in table:
                return table[path]
            path = path[:-1]
            table = self.values
        return self.values.get(())


def _to_python(node: yaml.Node, path: tuple, pos: _Positions, file: Path, loader: yaml.SafeLoader) -> Any:
    pos.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for k, v in node.value:
            key = loader.construct_object(k) if isinstance(k, yaml.ScalarNode) else None
            at = Where(file, k.start_mark.line + 1, k.start_mark.column + 1)
            if not isinstance(key, str):
                raise ScriptError(at, _fmt(path), "keys must be plain strings")
            if key in out:
                raise ScriptError(at, _fmt(path + (key,)), "duplicate key")
            pos.keys[path + (key,)] = (k.start_mark.line + 1, k.start_mark.column + 1)
            out[key] = _to_python(v, path + (key,), pos, file, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, path + (i,), pos, file, loader) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _fmt(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# libyaml when the wheel has it (it does on the usual platforms): 10x faster, and its nodes carry the
# same line/column marks that error messages need
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: Path) -> str:
    """A script file's text, or one clear line: missing, a folder, unreadable, binary or not UTF-8."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScriptError(Where(path), "", "file not found") from None
    except IsADirectoryError:
        raise ScriptError(Where(path), "", "is a directory; expected an episode or series file (.yaml)") from None
    except PermissionError:
        raise ScriptError(Where(path), "", "permission denied") from None
    except OSError as e:
        raise ScriptError(Where(path), "", f"cannot read: {e.strerror or e}") from None
    if b"\0" in data:
        raise ScriptError(Where(path, *byte_position(data, data.index(b"\0"))), "", "a binary file, not a YAML script")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = Where(path, *byte_position(data, e.start))
        raise ScriptError(where, "", f"not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is fine


def _opened_far_away(text: str, mark) -> str:
    """Where an error's cause began, when that is lines before it: a quote left open runs on to the
    next quote (often many lines down), and a bracket left open to the file's end. "" otherwise."""
    if mark is None:
        return ""
    last, opened = None, []
    try:
        for tok in yaml.scan(text, Loader=yaml.SafeLoader):
            if tok.start_mark.index >= mark.index:
                break
            if isinstance(tok, yaml.ScalarToken) and tok.style in ('"', "'") and tok.end_mark.line > tok.start_mark.line:
                last = tok
            elif isinstance(tok, (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken)):
                opened.append(tok)
            elif isinstance(tok, (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken)) and opened:
                opened.pop()
    except yaml.YAMLError:
        pass  # the scan stops at the same error: what it saw before it is what counts
    if last is not None and mark.line - last.end_mark.line <= 1:
        at = last.start_mark
        return f" (the quoted text that opens at line {at.line + 1}, column {at.column + 1} runs to here: a quote left open?)"
    if opened and mark.line > opened[-1].start_mark.line:
        at = opened[-1].start_mark
        return f" (the bracket opened at line {at.line + 1}, column {at.column + 1} is not closed)"
    return ""


def _read_yaml(path: Path) -> tuple[Any, _Positions]:
    text = read_text(path)
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Where(path, mark.line + 1, mark.column + 1) if mark else Where(path)
        raise ScriptError(where, "", f"invalid YAML: {e.problem or e.context}{_opened_far_away(text, mark)}") from None
    pos = _Positions()
    if node is None:
        raise ScriptError(Where(path, 1, 1), "", "the file is empty")
    data = _to_python(node, (), pos, path, yaml.SafeLoader(""))
    if not isinstance(data, dict):
        raise ScriptError(Where(path, 1, 1), "", "expected a mapping at the top level")
    return data, pos


def _validate(model: dict, data: dict, pos: _Positions, path: Path) -> dict:
    """The file's data checked against a schema model, as a plain mapping (every field present, None
    where unset; strings stripped). The first problem is raised, placed precisely: that beats a wall of text."""
    try:
        return schema.validate(model, data)
    except schema.SchemaError as e:
        if e.kind in ("extra_forbidden", "empty"):
            line_col = pos.find(e.loc, key=True)
        elif e.kind == "missing":
            line_col = pos.find(e.loc[:-1])
        else:
            line_col = pos.find(e.loc)
        line, col = line_col or (None, None)
        raise ScriptError(Where(path, line, col), _fmt(e.loc), e.msg) from None
