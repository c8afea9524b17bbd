"""The episode and series file schema: one small rule per field, checked by hand.

A model is a mapping of field name -> Rule. `validate` returns a plain dict with every field present
(None where unset), strings stripped, and raises SchemaError(location, kind, message) at the first
problem, fields in the order declared and unknown keys last. (pydantic did this before; importing it
and building the models took 100 ms, more than a whole no-op render.)
"""
from __future__ import annotations

from typing import Any, Callable


class SchemaError(ValueError):
    def __init__(self, loc: tuple, kind: str, msg: str):
        super().__init__(msg)
        self.loc, self.kind, self.msg = loc, kind, msg


class Rule:
    """One field: its type ("str", "int", "float", "bool", "choice", "model", "list"), whether it must be
    given, and its limits. `of` is the nested model (for "model") or the item rule (for "list")."""

    __slots__ = ("kind", "required", "ge", "le", "multiple_of", "min_len", "max_len", "choices", "of", "check")

    def __init__(self, kind: str, required: bool = False, ge: float | None = None, le: float | None = None,
                 multiple_of: int | None = None, min_len: int | None = None, max_len: int | None = None,
                 choices: tuple = (), of: Any = None, check: Callable | None = None):
        self.kind, self.required, self.ge, self.le, self.multiple_of = kind, required, ge, le, multiple_of
        self.min_len, self.max_len, self.choices, self.of, self.check = min_len, max_len, choices, of, check


def _colour(v: str) -> None:
    from PIL import ImageColor
    try:
        ImageColor.getrgb(v)
    except ValueError:
        raise ValueError(f"not a colour: {v!r}") from None


THEME = {**{k: Rule("str", check=_colour) for k in ("background", "background2", "accent", "text", "muted",
                                                    "caption", "highlight", "outline")},
         **{k: Rule("str") for k in ("font_bold", "font_medium", "font_regular")}}

SETTINGS = {
    "fps": Rule("int", ge=1, le=120),
    "width": Rule("int", ge=16, le=4096, multiple_of=2),
    "height": Rule("int", ge=16, le=4096, multiple_of=2),
    "voice": Rule("str", min_len=1),
    "speech_library": Rule("str", min_len=1),      # "wheel" (default), "system", or a path
    "rate": Rule("int", ge=80, le=450),
    "theme": Rule("model", of=THEME),
    "fonts": Rule("list", max_len=20, of=Rule("str", min_len=1)),   # font files, relative to the file
    "lead_in_frames": Rule("int", ge=0, le=300),
    "tail_frames": Rule("int", ge=0, le=300),
    "intro": Rule("bool"),
    "outro": Rule("bool"),
    "outro_text": Rule("str"),
    "segment_budget_frames": Rule("int", ge=1),
    "episode_budget_frames": Rule("int", ge=1),
    "fit": Rule("choice", choices=("none", "rate")),
    "fit_max_rate_factor": Rule("float", ge=1.0, le=2.0),
    "segments_per_part": Rule("int", ge=1, le=20),
    "loudness_lufs": Rule("float", ge=-40, le=-5),
    "true_peak_dbtp": Rule("float", ge=-20, le=0),
    "audio_bitrate": Rule("str"),
    "preset": Rule("choice", choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")),
    "crf": Rule("int", ge=0, le=51),
    "encoder": Rule("choice", choices=("skip", "full")),
    "keyint_frames": Rule("int", ge=1, le=3000),
}

# The length limits are the most that can fit the field's box on the card with ordinary words (measured
# with Roboto at the box's smallest size: a name holds 45 to 64 characters in two lines, a one-liner 115
# to 146 in three, a reference 120 to 145 in two). They catch the hopeless case early; whether a given
# text fits is decided by the same fit rules a render draws with (draw.check_fits), in `check` too.
SEGMENT = {
    "name": Rule("str", required=True, min_len=1, max_len=64),
    "narration": Rule("str", required=True, min_len=1, max_len=2000),
    "one_liner": Rule("str", required=True, min_len=1, max_len=150),
    "reference": Rule("str", required=True, min_len=1, max_len=150),
    "rate": Rule("int", ge=80, le=450),            # per-segment speaking rate override
}

EPISODE = {
    "series": Rule("str", min_len=1),
    "part": Rule("int", required=True, ge=1, le=999),
    "title": Rule("str"),
    "next": Rule("str"),                           # teaser for the outro, e.g. "Part 5"
    "settings": Rule("model", of=SETTINGS),
    "segments": Rule("list", required=True, min_len=1, max_len=20, of=Rule("model", of=SEGMENT)),
}

SERIES = {
    "series": Rule("str", required=True, min_len=1),
    "parts": Rule("list", required=True, min_len=1, of=Rule("str")),
    "settings": Rule("model", of=SETTINGS),
}


def validate(model: dict, data: Any, loc: tuple = ()) -> dict:
    if not isinstance(data, dict):
        raise SchemaError(loc, "type", "input should be a mapping")
    out = {}
    for name, rule in model.items():
        if name in data and data[name] is not None:
            out[name] = _value(rule, data[name], loc + (name,))
        elif rule.required:
            if name in data:            # `name:` with nothing after it
                raise SchemaError(loc + (name,), "empty", "a value is required")
            raise SchemaError(loc + (name,), "missing", "field required")
        else:
            out[name] = None
    for name in data:
        if name not in model:
            raise SchemaError(loc + (name,), "extra_forbidden", "unknown key")
    return out


def _value(rule: Rule, v: Any, loc: tuple) -> Any:
    k = rule.kind
    if k == "model":
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
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not (
                v.is_integer() if k == "int" else abs(v) < float("inf"))):
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
