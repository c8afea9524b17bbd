"""The rule engine that checks script files by hand: one small Rule per field (a validation library's
import cost more than a whole no-op render). `validate` returns a plain dict with every field present
(None where unset), strings stripped, and raises SchemaError(location, kind, message) at the first
problem: unknown keys first (naming the closest known key), then fields in the order declared."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any


class SchemaError(ValueError):
    def __init__(self, loc: tuple, kind: str, msg: str):
        super().__init__(msg)
        self.loc, self.kind, self.msg = loc, kind, msg


class Rule:
    """One field: its type ("str", "int", "float", "bool", "choice", "model", "list"), whether it must be
    given, and its limits. `of` is the nested model (for "model") or the item rule (for "list")."""

    __slots__ = ("kind", "required", "ge", "le", "multiple_of", "min_len", "max_len", "choices", "of", "check", "shorthand")

    def __init__(
        self,
        kind: str,
        required: bool = False,
        ge: float | None = None,
        le: float | None = None,
        multiple_of: int | None = None,
        min_len: int | None = None,
        max_len: int | None = None,
        choices: tuple = (),
        of: Any = None,
        check: Callable | None = None,
        shorthand: str | None = None,
    ):
        self.kind, self.required, self.ge, self.le, self.multiple_of = kind, required, ge, le, multiple_of
        self.min_len, self.max_len, self.choices, self.of, self.check = min_len, max_len, choices, of, check
        self.shorthand = shorthand  # a model given as a plain string means {shorthand: that string}


def _colour(v: str) -> None:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(v)
    except ValueError:
        raise ValueError(f"not a colour: {v!r}") from None


def validate(model: dict, data: Any, loc: tuple = ()) -> dict:
    if not isinstance(data, dict):
        raise SchemaError(loc, "type", "input should be a mapping")
    for name in data:  # first: a misspelt key is the cause of the "missing" one it was meant to be
        if name not in model:
            close = difflib.get_close_matches(str(name), list(model), n=1, cutoff=0.75)
            raise SchemaError(loc + (name,), "extra_forbidden", "unknown key" + (f"; did you mean {close[0]}?" if close else ""))
    out = {}
    for name, rule in model.items():
        if name in data and data[name] is not None:
            out[name] = _value(rule, data[name], loc + (name,))
        elif rule.required:
            if name in data:  # `name:` with nothing after it
                raise SchemaError(loc + (name,), "empty", "a value is required")
            raise SchemaError(loc + (name,), "missing", "field required")
        else:
            out[name] = None
    return out


def check_value(rule: Rule, v: Any, loc: tuple = ()) -> Any:
    """One value held to its rule (a command-line flag, say); raises SchemaError."""
    return _value(rule, v, loc)


def _value(rule: Rule, v: Any, loc: tuple) -> Any:
    k = rule.kind
    if k == "model":
        if rule.shorthand and isinstance(v, str):
            return validate(rule.of, {rule.shorthand: v}, loc)
        if rule.shorthand and not isinstance(v, dict):
            raise SchemaError(loc, "type", f"input should be a file name or a mapping with `{rule.shorthand}:`")
        return validate(rule.of, v, loc)
    if k == "list":
        if not isinstance(v, list):
            raise SchemaError(loc, "type", "input should be a valid list")
        _length(rule, len(v), loc, "list", "item")
        return [_value(rule.of, x, loc + (i,)) for i, x in enumerate(v)]
    if k in ("str", "choice"):
        if not isinstance(v, str):
            raise SchemaError(loc, "type", "input should be a valid string")
        v = v.strip()
        if k == "choice" and v not in rule.choices:
            options = [repr(c) for c in rule.choices]
            raise SchemaError(loc, "choice", f"input should be {', '.join(options[:-1])} or {options[-1]}")
        _length(rule, len(v), loc, "string", "character")
    elif k == "bool":
        if not isinstance(v, bool):
            raise SchemaError(loc, "type", "input should be a valid boolean")
    else:
        # YAML gives real numbers; 2.0 is accepted as an integer, True is not a number, nor are .inf and .nan
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or (isinstance(v, float) and not (v.is_integer() if k == "int" else abs(v) < float("inf")))
        ):
            raise SchemaError(loc, "type", f"input should be a valid {'integer' if k == 'int' else 'finite number'}")
        v = int(v) if k == "int" else float(v)
        if rule.ge is not None and v < rule.ge:
            raise SchemaError(loc, "range", f"input should be greater than or equal to {rule.ge}")
        if rule.le is not None and v > rule.le:
            raise SchemaError(loc, "range", f"input should be less than or equal to {rule.le}")
        if rule.multiple_of and v % rule.multiple_of:
            raise SchemaError(loc, "range", f"input should be a multiple of {rule.multiple_of}")
    if rule.check:
        try:
            rule.check(v)
        except ValueError as e:
            raise SchemaError(loc, "value", str(e)) from None
    return v


def _length(rule: Rule, n: int, loc: tuple, what: str, unit: str) -> None:
    if rule.min_len is not None and n < rule.min_len:
        raise SchemaError(loc, "length", f"{what} should have at least {rule.min_len} {unit}{'s' * (rule.min_len != 1)}")
    if rule.max_len is not None and n > rule.max_len:
        raise SchemaError(loc, "length", f"{what} should have at most {rule.max_len} {unit}{'s' * (rule.max_len != 1)}")
