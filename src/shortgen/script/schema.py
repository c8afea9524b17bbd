"""The episode and series file schema: one small rule per field (rules.py), the settings' rules taken
from their declarations in settings.py. `json_schema` turns the same rules into a JSON Schema for
editors (the YAML language server), printed by `shortgen schema`.
"""

from __future__ import annotations

from typing import Any

from ..rules import Rule, SchemaError, validate  # noqa: F401 - the loader's entry points
from ..settings import Settings, rules_of

SETTINGS = rules_of(Settings)

# The length limits are the most that can fit the field's box on the card with ordinary words (measured
# with Roboto at the box's smallest size: a name holds 45 to 64 characters in two lines, a one-liner 115
# to 146 in three, a reference 120 to 145 in two). They catch the hopeless case early; whether a given
# text fits is decided by the same fit rules a render draws with (captions.check_fits), in `check` too.
# A segment's picture or footage: a file name, or a mapping with options (see docs/scripts.md, "Visuals").
# A visual generated from the script (picture/generated.py), in place of `file:`.
PLOT = {
    "y": Rule("list", of=Rule("str", min_len=1, max_len=120), min_len=1, max_len=4, required=True),  # functions of x
    "x": Rule("list", of=Rule("float", ge=-1e6, le=1e6), min_len=2, max_len=2),  # [from, to], default [-4, 4]
    "labels": Rule("list", of=Rule("str", min_len=1, max_len=30), max_len=4),  # the legend, default the formulas
}
VISUAL = {
    "file": Rule("str", min_len=1, max_len=1000),  # one of file, equation, plot, code and diagram
    "equation": Rule("str", min_len=1, max_len=300),  # TeX math, as between $...$
    "plot": Rule("model", of=PLOT),
    "code": Rule("str", min_len=1, max_len=1000),
    "language": Rule("str", min_len=1, max_len=30),  # the code's (Pygments' name), default python
    "diagram": Rule("list", of=Rule("list", of=Rule("str", min_len=1, max_len=24), min_len=1, max_len=5), min_len=2, max_len=5),
    "reveal": Rule("bool"),  # a generated visual shown step by step as the narration goes (terms, lines, layers)
    "fit": Rule("choice", choices=("cover", "contain")),
    "motion": Rule("choice", choices=("auto", "none", "zoom-in", "zoom-out", "pan-left", "pan-right", "pan-up", "pan-down")),
    "start": Rule("float", ge=0, le=86400),  # seconds into a clip
    "clip_end": Rule("choice", choices=("loop", "hold")),  # a clip shorter than its segment
    "audio": Rule("bool"),  # a clip's own sound, under the voice at the music's level (muted by default)
    "allow_short": Rule("bool"),  # a clip that stops short of its header's length is used as far as it goes
}

# A segment's take: a file name, or a mapping with options (see docs/scripts.md, "Your own voice").
RECORDING = {
    "file": Rule("str", required=True, min_len=1, max_len=1000),
    "allow_short": Rule("bool"),  # a take that decodes short of its header's length is used as it decodes
}

SEGMENT = {
    "name": Rule("str", required=True, min_len=1, max_len=64),
    "narration": Rule("str", required=True, min_len=1, max_len=2000),
    "one_liner": Rule("str", min_len=1, max_len=150),  # optional: the card then shows none
    "reference": Rule("str", min_len=1, max_len=150),
    "rate": Rule("int", ge=80, le=450),  # per-segment speaking rate override
    "visual": Rule("model", of=VISUAL, shorthand="file"),
    "recording": Rule("model", of=RECORDING, shorthand="file"),  # the creator's own voice, relative to the script
}

EPISODE = {
    "series": Rule("str", min_len=1),
    "part": Rule("int", required=True, ge=1, le=999),
    "title": Rule("str"),
    "next": Rule("str"),  # teaser for the outro, e.g. "Part 5"
    "settings": Rule("model", of=SETTINGS),
    "segments": Rule("list", required=True, min_len=1, max_len=20, of=Rule("model", of=SEGMENT)),
}

SERIES = {
    "series": Rule("str", required=True, min_len=1),
    "parts": Rule("list", required=True, min_len=1, of=Rule("str")),
    "settings": Rule("model", of=SETTINGS),
}


def json_schema(model: dict, title: str) -> dict:
    """A JSON Schema (draft 2020-12) of a model: the same limits the loader checks, for editors."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **_object(model)}


def _object(model: dict) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _json(rule) for name, rule in model.items()},
        "required": [name for name, rule in model.items() if rule.required],
    }


def _json(rule: Rule) -> dict[str, Any]:
    k = rule.kind
    if k == "model":
        if rule.shorthand:
            return {"oneOf": [{"type": "string", "minLength": 1}, _object(rule.of)]}
        return _object(rule.of)
    if k == "list":
        out: dict[str, Any] = {"type": "array", "items": _json(rule.of)}
        if rule.min_len is not None:
            out["minItems"] = rule.min_len
        if rule.max_len is not None:
            out["maxItems"] = rule.max_len
        return out
    if k in ("str", "choice"):
        out = {"type": "string"}
        if k == "choice":
            out["enum"] = list(rule.choices)
        if rule.min_len is not None:
            out["minLength"] = rule.min_len
        if rule.max_len is not None:
            out["maxLength"] = rule.max_len
        return out
    if k == "bool":
        return {"type": "boolean"}
    out = {"type": "integer" if k == "int" else "number"}
    if rule.ge is not None:
        out["minimum"] = rule.ge
    if rule.le is not None:
        out["maximum"] = rule.le
    if rule.multiple_of:
        out["multipleOf"] = rule.multiple_of
    return out
