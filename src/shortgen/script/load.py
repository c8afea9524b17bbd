"""Stage 1: YAML -> validated Episode model.

Every error names the file, line, column and field (`scripts/part4.yaml:14:7: segments[2].narration: field required`).
We compose the YAML node tree ourselves so each value keeps its position, then validate it against the
rules in schema.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScriptError, Where
from ..picture import media
from ..rules import check_value
from ..settings import Settings, resolve
from . import schema
from .positions import Pos, _fmt, _Positions, _read_yaml, _validate

# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisualSpec:
    """A picture or clip as the script names it, measured (media.py) and placed in the file."""

    media: media.Media
    fit: str = "cover"
    motion: str = "auto"
    start: float = 0.0  # seconds into a clip
    clip_end: str = "loop"
    where: str = ""  # file:line:col: field, for messages
    audio: bool = False  # a clip's own sound, under the voice
    allow_short: bool = False  # a clip that stops short of its header's length is used as far as it goes
    generated: bool = False  # drawn from the script (an equation, a plot, code, a diagram): shown above the captions
    reveal: int = 0  # a generated visual shown in this many steps as the narration goes (0: whole throughout)


@dataclass(frozen=True)
class Segment:
    index: int  # 0-based position in the episode
    name: str
    narration: str
    one_liner: str
    reference: str
    rate: int
    pos: Pos  # where the segment starts in the file
    fields: dict = field(default_factory=dict, compare=False)  # field name -> Pos of its value
    visual: VisualSpec | None = None
    recording: Path | None = None  # the creator's own voice for this segment (resolved, probed at load)
    recording_allow_short: bool = False  # a take that decodes short of its header is used as it decodes


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
    origins: dict  # setting name -> Where it was set (series or episode file)
    places: dict = field(default_factory=dict, compare=False)  # "series", "next", "title" -> Where
    background: VisualSpec | None = None

    def where(self, setting: str) -> Where:
        return self.origins.get(setting) or Where(self.path)

    def segment_where(self, seg: Segment) -> Where:
        return Where(self.path, *seg.pos)

    def field_where(self, seg: Segment, name: str) -> Where:
        return Where(self.path, *(seg.fields.get(name) or seg.pos))

    def locate(self, source: tuple) -> tuple[Where, str]:
        """Where a drawn text came from, and its field's name, from a TextOverflowError's `source`:
        ("segment", plan index, field), ("series",), ("next",) or ("outro_text",)."""
        if source and source[0] == "segment" and len(source) == 3:
            k = source[1] - (1 if self.settings.intro else 0)
            if 0 <= k < len(self.segments):
                return self.field_where(self.segments[k], source[2]), f"segments[{k}].{source[2]}"
            if source[2] == "name":  # the intro or outro card: its name is not from the script
                return Where(self.path), ""
        if source == ("outro_text",):
            return self.where("outro_text"), "settings.outro_text"
        if source and source[0] in self.places:
            return self.places[source[0]], source[0]
        return Where(self.path), ""

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
    name_where: Where | None = None


# ---- narration text ------------------------------------------------------------------------------

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) -> text (images too)
_INLINE_TAG = re.compile(r"</?(?:b|i|u|s|em|strong|span|a|code|mark|small|sub|sup)(?:\s[^<>]*)?>", re.I)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")  # <br/>, <p>: a word boundary
_MARKS = re.compile(r"\*\*|__|~~|`+")  # bold, strike-through, code
_EDGE_STARS = re.compile(r"(?<!\S)[*_]+(?=\S)|(?<=\S)[*_]+(?!\S)")  # *em*, _em_ at a word's edges
_ONLY_MARKUP = re.compile(r"[#*_~`]+|-{2,}|={2,}")  # a heading mark, a rule, a bullet (not "+", "=", ">": said)


def clean_narration(text: str) -> str:
    """What is spoken (and captioned): the narration without Markdown or HTML markup, which a speech
    engine would read out as symbols. Words and their punctuation are kept as written."""
    text = _TAG.sub(" ", _INLINE_TAG.sub("", _LINK.sub(r"\1", text)))
    text = _EDGE_STARS.sub("", _MARKS.sub("", text))
    return " ".join(t for t in text.split() if not _ONLY_MARKUP.fullmatch(t))


def speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _present(d: dict | None) -> dict:
    """The settings a file actually set: unset (None) values dropped, nested ones too."""
    return {k: _present(v) if isinstance(v, dict) else v for k, v in (d or {}).items() if v is not None}


# ---- public -------------------------------------------------------------------------------------


def is_series_file(path: Path) -> bool:
    try:
        data, _ = _read_yaml(path)
    except ScriptError:
        return False
    return "parts" in data and "segments" not in data


def load_series(path: Path) -> Series:
    data, pos = _read_yaml(path)
    m = _validate(schema.SERIES, data, pos, path)
    parts = []
    for i, p in enumerate(m["parts"]):
        full = path.parent / p
        if not full.is_file():
            raise ScriptError(pos.where(path, ("parts", i)), f"parts[{i}]", f"no such episode file: {p}")
        parts.append(full)
    layer = _resolve_fonts(_present(m["settings"]), pos, path)
    return Series(
        path=path,
        name=m["series"],
        parts=tuple(parts),
        settings_layer=layer,
        origins=_origins(layer, pos, path),
        name_where=Where(path, *(pos.find(("series",)) or (None, None))),
    )


def _resolve_fonts(layer: dict, pos: _Positions, path: Path) -> dict:
    """`fonts:` entries (and the `background:`, `music:` and `sting:` files) are relative to the file that
    names them; each font must be one FreeType reads."""
    for key in ("background", "music", "sting"):
        name = layer.get(key)
        if name and name.lower() != "none":
            f = Path(name).expanduser()
            layer = {**layer, key: str(f if f.is_absolute() else (path.parent / f).resolve())}
    if not layer.get("fonts"):
        return layer
    out = []
    for i, name in enumerate(layer["fonts"]):
        f = Path(name).expanduser()
        f = f if f.is_absolute() else (path.parent / f)
        problem = None
        if not f.is_file():
            problem = f"no such font file: {name}"
        else:
            from PIL import ImageFont

            try:
                ImageFont.truetype(str(f), 12)
            except OSError:
                problem = f"not a font FreeType can read: {name}"
        if problem:
            raise ScriptError(pos.where(path, ("settings", "fonts", i)), f"settings.fonts[{i}]", problem)
        out.append(str(f.resolve()))
    return {**layer, "fonts": out}


def _origins(layer: dict, pos: _Positions, path: Path) -> dict:
    return {k: Where(path, *(pos.find(("settings", k)) or (None, None))) for k in layer}


def find_series_for(episode_path: Path) -> Path | None:
    """A series file beside the episode that lists it."""
    for cand in sorted(episode_path.parent.glob("*.y*ml")):
        # cheap text test first: parsing every episode beside this one is most of a no-op render's time
        try:
            head = cand.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if cand == episode_path or "parts" not in head or not is_series_file(cand):
            continue
        data, _ = _read_yaml(cand)
        names = {Path(p).name for p in data.get("parts", []) if isinstance(p, str)}
        if episode_path.name in names:
            return cand
    return None


def check_cli_layer(layer: dict) -> dict:
    """Settings given as command-line flags, held to the same rules as the same keys in a file; an error
    names the flag: `command line: --rate: input should be greater than or equal to 80`."""
    out = dict(layer)
    for key, value in layer.items():
        rule = schema.SETTINGS.get(key)
        if rule is None:
            continue
        try:
            out[key] = check_value(rule, value, (key,))
        except schema.SchemaError as e:
            raise ScriptError(Where("command line"), f"--{key.replace('_', '-')}", e.msg) from None
    if "jobs" in layer and (not isinstance(layer["jobs"], int) or layer["jobs"] < 1):
        raise ScriptError(Where("command line"), "--jobs", "input should be a whole number of at least 1")
    return out


def load_episode(path: Path | str, cli: dict | None = None, base: Settings | None = None, audio: bool = True) -> Episode:
    """An episode script, validated, with its settings resolved. `audio`: its music and sting files are
    checked here (check_audio); a render checks them itself, beside the speech."""
    path = Path(path)
    data, pos = _read_yaml(path)
    if "parts" in data and "segments" not in data:
        raise ScriptError(Where(path, 1, 1), "", "this is a series file; expected an episode with `segments:`")
    m = _validate(schema.EPISODE, data, pos, path)

    series_layer: dict = {}
    origins: dict = {}
    series_name = m["series"]
    series_path = find_series_for(path)
    series_where = None
    if series_path:
        s = load_series(series_path)
        series_layer = s.settings_layer
        origins.update(s.origins)
        series_name = series_name or s.name
        series_where = s.name_where
    if not series_name:
        line, col = pos.find(()) or (1, 1)
        raise ScriptError(Where(path, line, col), "series", "field required (or list this file in a series file beside it)")
    episode_layer = _resolve_fonts(_present(m["settings"]), pos, path)
    origins.update(_origins(episode_layer, pos, path))
    origins.update({k: Where("command line") for k in (cli or {})})
    settings = resolve(series_layer, episode_layer, cli, base=base)
    media.remember_in(Path(settings.cache_dir) / "checks")  # what a visual is, kept: a no-op reads no pixels

    segs = _segments(m, pos, path, settings)
    background = _background(settings, origins.get("background") or Where(path))
    places = {k: Where(path, *pos.values[(k,)]) for k in ("series", "next", "title") if (k,) in pos.values}
    if "series" not in places and series_where is not None:
        places["series"] = series_where
    ep = Episode(
        path=path,
        series=series_name,
        part=m["part"],
        title=m["title"] or f"{series_name} #{m['part']}",
        next=m["next"],
        segments=segs,
        settings=settings,
        source_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        origins=origins,
        places=places,
        background=background,
    )
    if audio:
        check_audio(ep)
    return ep


def _segments(m: dict, pos: _Positions, path: Path, settings: Settings) -> tuple[Segment, ...]:
    """The validated segments, each narration with something to speak, their count as the series asks."""
    if settings.segments_per_part and len(m["segments"]) != settings.segments_per_part:
        raise ScriptError(
            pos.where(path, ("segments",)),
            "segments",
            f"expected {settings.segments_per_part} segments, found {len(m['segments'])}",
        )
    for i, s in enumerate(m["segments"]):
        if not speakable(clean_narration(s["narration"])):
            raise ScriptError(
                pos.where(path, ("segments", i, "narration")),
                f"segments[{i}].narration",
                "no words to speak: only markup or punctuation",
            )
    return tuple(
        Segment(
            index=i,
            name=s["name"],
            narration=clean_narration(s["narration"]),
            one_liner=s["one_liner"] or "",
            reference=s["reference"] or "",
            rate=s["rate"] or settings.rate,
            pos=pos.find(("segments", i)) or (1, 1),
            fields={k: pos.values[("segments", i, k)] for k in s if ("segments", i, k) in pos.values},
            visual=_visual(s["visual"], ("segments", i, "visual"), pos, path, settings) if s["visual"] else None,
            recording=_recording(s["recording"], ("segments", i, "recording"), pos, path, settings) if s["recording"] else None,
            recording_allow_short=bool(s["recording"] and s["recording"]["allow_short"]),
        )
        for i, s in enumerate(m["segments"])
    )


def _background(settings: Settings, where: Where) -> VisualSpec | None:
    """The episode's background picture or clip, measured (and a clip verified) now."""
    if not settings.background or settings.background.lower() == "none":
        return None
    try:
        bg = media.probe(settings.background)
        if bg.kind == "clip":
            media.verify_clip(bg, 0)
    except media.MediaError as e:
        raise ScriptError(where, "settings.background", str(e)) from None
    return VisualSpec(bg, motion="none", where=f"{where}: settings.background")


def check_audio(ep: Episode) -> None:
    """The episode's `music:` and `sting:` files: usable, or a ScriptError naming the setting's place."""
    for key in ("music", "sting"):
        _check_audio(ep.settings, key, ep.where(key))


def _check_audio(settings: Settings, key: str, where: Where) -> None:
    """A `music:` or `sting:` file: readable, with an audio stream, decodable from where it starts, and
    not silent there (the first 30 s are decoded to tell: about 50 ms)."""
    name = getattr(settings, key)
    if not name or name.lower() == "none":
        return
    from ..audio import audiofile  # numpy and the mixer load only when a file is decoded

    try:
        info = audiofile.probe(name, remember=Path(settings.cache_dir) / "checks")
        if key == "music" and settings.music_allow_short:
            info = dataclasses.replace(info, allow_short=True)
        start = settings.music_start_s if key == "music" else 0.0
        if start >= info.duration:
            past = f"starts at {start:g} s, past the end of {Path(name).name} ({info.duration:.2f} s)"
            raise ScriptError(where, "settings.music_start_s", past)
        # a file that decoded once is remembered by its content (every render would otherwise decode it)
        passed = Path(settings.cache_dir) / "checks" / f"{info.digest[:32]}-{start:g}-v2.ok"  # v2: its whole span decoded
        if passed.is_file():
            return
        # a file an episode may play whole (or loop) is decoded whole, so one damaged anywhere is refused
        # here, naming both lengths, not looped from its first seconds; of a longer one, the first 30 s
        # (the bed refuses a span of it that decodes short as it is laid)
        from ..audio import beds

        rest = info.duration - start
        decoded = beds.decode(info, start, rest if rest <= 200.0 else 30.0)
        head = beds.to_array(decoded[:30_000])
        if float(abs(head).max(initial=0.0)) < 1e-4 and info.duration - start <= 30.0:
            raise audiofile.AudioError(f"{Path(name).name} is silent")
        try:
            passed.parent.mkdir(parents=True, exist_ok=True)
            passed.touch()
        except OSError:
            pass  # a cache that cannot be written only costs the decode next time
    except audiofile.AudioError as e:
        raise ScriptError(where, f"settings.{key}", str(e)) from None


def _recording(v: dict, at: tuple, pos: _Positions, path: Path, settings: Settings) -> Path:
    """A segment's `recording:`, found relative to the script: an audio file with a stream, not far
    longer than a segment may run (it is decoded, trimmed and aligned when the episode is spoken)."""
    from ..speech import record

    file_at = at if at + ("file",) not in pos.values else at + ("file",)
    f = Path(v["file"]).expanduser()
    f = f if f.is_absolute() else path.parent / f
    try:
        record.probe(f, settings.segment_budget_frames / settings.fps)
    except record.RecordingError as e:
        raise ScriptError(pos.where(path, file_at), _fmt(file_at), str(e)) from None
    return f


def _visual(v: dict, at: tuple, pos: _Positions, path: Path, settings: Settings) -> VisualSpec:
    """A segment's `visual:`, its file found relative to the script (or drawn from what the script says:
    an equation, a plot, code, a diagram) and measured; one clear line for whatever is wrong with it."""
    f, file_at = _visual_file(v, at, pos, path, settings)
    name = _fmt(file_at)
    try:
        m = media.probe(f)
    except media.MediaError as e:
        raise ScriptError(pos.where(path, file_at), name, str(e)) from None
    start = v["start"] or 0.0
    if m.kind == "still":
        for key in ("start", "clip_end", "audio"):
            if v[key] is not None:
                raise ScriptError(pos.where(path, at + (key,)), _fmt(at + (key,)), f"`{key}` is for clips; {f.name} is a picture")
    else:
        first = round(start * m.fps)  # a clip
        if first >= m.frames:
            raise ScriptError(
                pos.where(path, at + ("start",)),
                _fmt(at + ("start",)),
                f"starts at {start:g} s, past the end of {f.name} ({m.duration:.2f} s)",
            )
        try:
            media.verify_clip(m, first, allow_short=bool(v["allow_short"]))
        except media.MediaError as e:
            raise ScriptError(pos.where(path, file_at), name, str(e)) from None
        if v["audio"]:
            from ..audio import audiofile

            try:
                audiofile.probe(m.path, any_type=True)
            except audiofile.AudioError as e:
                raise ScriptError(pos.where(path, at + ("audio",)), _fmt(at + ("audio",)), str(e)) from None
    return VisualSpec(
        media=m,
        fit=v["fit"] or ("cover" if v["file"] else "contain"),
        motion=v["motion"] or ("auto" if v["file"] else "none"),  # a drawing of thin lines and text reads best still
        start=start,
        clip_end=v["clip_end"] or "loop",
        where=f"{pos.where(path, file_at)}: {name}",
        audio=bool(v["audio"]),
        allow_short=bool(v["allow_short"]),
        generated=v["file"] is None,
        reveal=_reveal(v, at, pos, path),
    )


def _reveal(v: dict, at: tuple, pos: _Positions, path: Path) -> int:
    """How many steps a `reveal: true` visual shows (0 without it); refused on a file, or with motion."""
    from ..picture import generated

    if not v["reveal"]:
        return 0
    where = pos.where(path, at + ("reveal",))
    kind = next((k for k in generated.KINDS if v[k] is not None), None)
    if kind is None:
        raise ScriptError(where, _fmt(at + ("reveal",)), "`reveal` is for an equation, plot, code or diagram, not a file")
    if v["motion"] not in (None, "none"):
        raise ScriptError(where, _fmt(at + ("reveal",)), f"a revealed visual does not move as well (motion: {v['motion']})")
    return generated.reveal_steps(kind, {"code": v["code"]} if kind == "code" else v[kind])


def _visual_file(v: dict, at: tuple, pos: _Positions, path: Path, settings: Settings) -> tuple[Path, tuple]:
    """The visual's picture and the field it comes from: its file, or the one drawn (and cached) for its
    equation, plot, code or diagram."""
    from ..picture import generated

    given = [k for k in ("file", *generated.KINDS) if v[k] is not None]
    if len(given) != 1:
        what = "none" if not given else " and ".join(f"`{k}`" for k in given)
        raise ScriptError(pos.where(path, at), _fmt(at), f"give one of file, equation, plot, code or diagram (found {what})")
    kind = given[0]
    if v["language"] is not None and kind != "code":
        raise ScriptError(pos.where(path, at + ("language",)), _fmt(at + ("language",)), "`language` is for `code`")
    if kind == "file":
        file_at = at if at + ("file",) not in pos.values else at + ("file",)
        f = Path(v["file"]).expanduser()
        return (f if f.is_absolute() else path.parent / f), file_at
    spec = {"code": v["code"], "language": v["language"]} if kind == "code" else v[kind]
    try:
        drawn = generated.generated(kind, spec, settings.theme, settings.fonts_dir, settings.cache_dir, bool(v["reveal"]))
        return drawn, at + (kind,)
    except generated.GenerateError as e:
        raise ScriptError(pos.where(path, at + (kind,)), _fmt(at + (kind,)), str(e)) from None


def expand_targets(paths: list[Path], rendering: bool = True) -> list[Path]:
    """Directories -> their YAML files; series files -> their parts. Order kept, duplicates dropped.
    Finding no script at all is an error (a CI gate pointed at the wrong folder must fail), and so are
    two parts of one number in a series, or among the scripts to render (both would render into one
    folder)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.y*ml"))
            if not found:
                raise ScriptError(Where(p), "", "no episode or series scripts (*.yaml) in this folder")
            for f in found:
                out.extend(expand_targets([f]) if is_series_file(f) else [f])
        elif p.suffix in (".yaml", ".yml") and p.is_file() and is_series_file(p):
            parts = list(load_series(p).parts)
            _unique_parts(parts)
            out.extend(parts)
        else:
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    if not uniq:
        raise ScriptError(Where(", ".join(map(str, paths)) or "."), "", "no scripts to work on")
    if rendering and len(uniq) > 1:
        _unique_parts(uniq)
    return uniq


def _unique_parts(paths: list[Path]) -> None:
    first: dict[int, Path] = {}
    for p in paths:
        try:
            data, pos = _read_yaml(p)
        except ScriptError:
            continue  # reported when the script itself is loaded
        part = data.get("part")
        if isinstance(part, int) and not isinstance(part, bool):
            if part in first:
                line, col = pos.find(("part",)) or (None, None)
                raise ScriptError(
                    Where(p, line, col),
                    "part",
                    f"part {part} again: {first[part]} is part {part} too (both would render "
                    f"into part{part}/); give each part its own number",
                )
            first[part] = p
