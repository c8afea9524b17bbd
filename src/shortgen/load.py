"""Stage 1: YAML -> validated Episode model.

Every error names the file, line, column and field (`scripts/part4.yaml:14:7: segments[2].narration: field required`).
We compose the YAML node tree ourselves so each value keeps its position, then validate with pydantic.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ScriptError, Where
from .settings import Settings, resolve

Pos = tuple[int, int]  # 1-based line, column


# ---- schema -------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ThemeModel(_Strict):
    background: str | None = None
    background2: str | None = None
    accent: str | None = None
    text: str | None = None
    muted: str | None = None
    caption: str | None = None
    highlight: str | None = None
    outline: str | None = None
    font_bold: str | None = None
    font_medium: str | None = None
    font_regular: str | None = None

    @field_validator("background", "background2", "accent", "text", "muted", "caption", "highlight", "outline")
    @classmethod
    def _colour(cls, v: str | None) -> str | None:
        if v is not None:
            from PIL import ImageColor
            try:
                ImageColor.getrgb(v)
            except ValueError:
                raise ValueError(f"not a colour: {v!r}") from None
        return v


class SettingsModel(_Strict):
    fps: int | None = Field(None, ge=1, le=120)
    width: int | None = Field(None, ge=16, le=4096, multiple_of=2)
    height: int | None = Field(None, ge=16, le=4096, multiple_of=2)
    voice: str | None = Field(None, min_length=1)
    rate: int | None = Field(None, ge=80, le=450)
    theme: ThemeModel | None = None
    lead_in_frames: int | None = Field(None, ge=0, le=300)
    tail_frames: int | None = Field(None, ge=0, le=300)
    intro: bool | None = None
    outro: bool | None = None
    outro_text: str | None = None
    segment_budget_frames: int | None = Field(None, ge=1)
    episode_budget_frames: int | None = Field(None, ge=1)
    fit: Literal["none", "rate"] | None = None
    fit_max_rate_factor: float | None = Field(None, ge=1.0, le=2.0)
    segments_per_part: int | None = Field(None, ge=1, le=20)
    loudness_lufs: float | None = Field(None, ge=-40, le=-5)
    true_peak_dbtp: float | None = Field(None, ge=-20, le=0)
    audio_bitrate: str | None = None
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] | None = None
    crf: int | None = Field(None, ge=0, le=51)
    encoder: Literal["skip", "full"] | None = None
    keyint_frames: int | None = Field(None, ge=1, le=3000)


class SegmentModel(_Strict):
    name: str = Field(min_length=1, max_length=80)
    narration: str = Field(min_length=1, max_length=2000)
    one_liner: str = Field(min_length=1, max_length=200)
    reference: str = Field(min_length=1, max_length=300)
    rate: int | None = Field(None, ge=80, le=450)   # per-segment speaking rate override


class EpisodeModel(_Strict):
    series: str | None = Field(None, min_length=1)
    part: int = Field(ge=1, le=999)
    title: str | None = None
    next: str | None = None          # teaser for the outro, e.g. "Part 5"
    settings: SettingsModel | None = None
    segments: list[SegmentModel] = Field(min_length=1, max_length=20)


class SeriesModel(_Strict):
    series: str = Field(min_length=1)
    parts: list[str] = Field(min_length=1)
    settings: SettingsModel | None = None


# ---- results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    index: int              # 0-based position in the episode
    name: str
    narration: str
    one_liner: str
    reference: str
    rate: int
    pos: Pos                # where the segment starts in the file


@dataclass(frozen=True)
class Episode:
    path: Path
    series: str
    part: int
    title: str
    next: str | None
    segments: tuple[Segment, ...]
    settings: Settings
    source_sha256: str
    origins: dict            # setting name -> Where it was set (series or episode file)

    def where(self, setting: str) -> Where:
        return self.origins.get(setting) or Where(self.path)

    def segment_where(self, seg: Segment) -> Where:
        return Where(self.path, *seg.pos)

    @property
    def slug(self) -> str:
        return f"part{self.part}"


@dataclass(frozen=True)
class Series:
    path: Path
    name: str
    parts: tuple[Path, ...]
    settings_layer: dict
    origins: dict


# ---- YAML with positions ------------------------------------------------------------------------

class _Positions:
    """Maps a path like ('segments', 2, 'narration') to the line/col of its value or key."""

    def __init__(self) -> None:
        self.values: dict[tuple, Pos] = {}
        self.keys: dict[tuple, Pos] = {}

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
            if not isinstance(key, str):
                raise ScriptError(Where(file, k.start_mark.line + 1, k.start_mark.column + 1), _fmt(path), "keys must be plain strings")
            if key in out:
                raise ScriptError(Where(file, k.start_mark.line + 1, k.start_mark.column + 1), _fmt(path + (key,)), "duplicate key")
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


def _read_yaml(path: Path) -> tuple[Any, _Positions]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(Where(path), "", "file not found") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise ScriptError(Where(path), "", f"cannot read: {e.__class__.__name__}") from None
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Where(path, mark.line + 1, mark.column + 1) if mark else Where(path)
        raise ScriptError(where, "", f"invalid YAML: {e.problem or e.context}") from None
    pos = _Positions()
    if node is None:
        raise ScriptError(Where(path, 1, 1), "", "the file is empty")
    data = _to_python(node, (), pos, path, yaml.SafeLoader(""))
    if not isinstance(data, dict):
        raise ScriptError(Where(path, 1, 1), "", "expected a mapping at the top level")
    return data, pos


def _validate(model: type[BaseModel], data: dict, pos: _Positions, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]          # the first problem, precisely placed, beats a wall of text
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            line_col = pos.find(loc, key=True)
            msg = "unknown key"
        elif kind == "missing":
            line_col = pos.find(loc[:-1])
            msg = "field required"
        else:
            line_col = pos.find(loc)
            msg = err["msg"].removeprefix("Value error, ")
            msg = msg[0].lower() + msg[1:]
        line, col = line_col or (None, None)
        raise ScriptError(Where(path, line, col), _fmt(loc), msg) from None


# ---- public -------------------------------------------------------------------------------------

def is_series_file(path: Path) -> bool:
    try:
        data, _ = _read_yaml(path)
    except ScriptError:
        return False
    return "parts" in data and "segments" not in data


def load_series(path: Path) -> Series:
    data, pos = _read_yaml(path)
    m: SeriesModel = _validate(SeriesModel, data, pos, path)
    parts = []
    for i, p in enumerate(m.parts):
        full = (path.parent / p)
        if not full.is_file():
            line, col = pos.find(("parts", i)) or (None, None)
            raise ScriptError(Where(path, line, col), f"parts[{i}]", f"no such episode file: {p}")
        parts.append(full)
    layer = m.settings.model_dump(exclude_none=True) if m.settings else {}
    return Series(path=path, name=m.series, parts=tuple(parts), settings_layer=layer,
                  origins=_origins(layer, pos, path))


def _origins(layer: dict, pos: _Positions, path: Path) -> dict:
    return {k: Where(path, *(pos.find(("settings", k)) or (None, None))) for k in layer}


def find_series_for(episode_path: Path) -> Path | None:
    """A series file beside the episode that lists it."""
    for cand in sorted(episode_path.parent.glob("*.y*ml")):
        # cheap text test first: parsing every episode beside this one is most of a no-op render's time
        if cand == episode_path or "parts" not in cand.read_text(encoding="utf-8", errors="replace") \
                or not is_series_file(cand):
            continue
        data, _ = _read_yaml(cand)
        names = {Path(p).name for p in data.get("parts", []) if isinstance(p, str)}
        if episode_path.name in names:
            return cand
    return None


def load_episode(path: Path | str, cli: dict | None = None, base: Settings | None = None) -> Episode:
    path = Path(path)
    data, pos = _read_yaml(path)
    if "parts" in data and "segments" not in data:
        raise ScriptError(Where(path, 1, 1), "", "this is a series file; expected an episode with `segments:`")
    m: EpisodeModel = _validate(EpisodeModel, data, pos, path)

    series_layer: dict = {}
    origins: dict = {}
    series_name = m.series
    series_path = find_series_for(path)
    if series_path:
        s = load_series(series_path)
        series_layer = s.settings_layer
        origins.update(s.origins)
        series_name = series_name or s.name
    if not series_name:
        line, col = pos.find(()) or (1, 1)
        raise ScriptError(Where(path, line, col), "series", "field required (or list this file in a series file beside it)")
    episode_layer = m.settings.model_dump(exclude_none=True) if m.settings else {}
    origins.update(_origins(episode_layer, pos, path))
    origins.update({k: Where("command line") for k in (cli or {})})
    settings = resolve(series_layer, episode_layer, cli, base=base)

    if settings.segments_per_part and len(m.segments) != settings.segments_per_part:
        line, col = pos.find(("segments",)) or (None, None)
        raise ScriptError(Where(path, line, col), "segments",
                          f"expected {settings.segments_per_part} segments, found {len(m.segments)}")
    segs = tuple(
        Segment(index=i, name=s.name, narration=" ".join(s.narration.split()), one_liner=s.one_liner,
                reference=s.reference, rate=s.rate or settings.rate, pos=pos.find(("segments", i)) or (1, 1))
        for i, s in enumerate(m.segments)
    )
    return Episode(
        path=path, series=series_name, part=m.part, title=m.title or f"{series_name} #{m.part}",
        next=m.next, segments=segs, settings=settings,
        source_sha256=hashlib.sha256(path.read_bytes()).hexdigest(), origins=origins,
    )


def expand_targets(paths: list[Path]) -> list[Path]:
    """Directories -> their YAML files; series files -> their parts. Order kept, duplicates dropped."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.glob("*.y*ml")):
                out.extend(expand_targets([f]) if is_series_file(f) else [f])
        elif p.suffix in (".yaml", ".yml") and p.is_file() and is_series_file(p):
            out.extend(load_series(p).parts)
        else:
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq
