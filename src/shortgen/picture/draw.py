"""Stage 4: every picture, drawn with Pillow from fonts shipped in the package (assets/fonts).

All text goes through `_Canvas.text`, which records its bounding box, so tests can prove every text
element lies inside the platform safe zone. Text that does not fit its box shrinks down to a floor,
then fails with TextOverflowError naming the segment and field; it never overflows.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from ..errors import FontError, TextOverflowError
from ..plan import Plan, SegmentPlan, State
from ..settings import Settings

DRAW_VERSION = 2  # bump when the look changes: it is part of every frame's cache key
SAFE = (96, 240, 984, 1480)  # x0, y0, x1, y1 for 1080x1920: the platforms' UI-free zone
CAPTION_BOX = (96, 1130, 984, 1470)
CAPTION_BOXES = {"bottom": CAPTION_BOX, "middle": (96, 900, 984, 1240)}  # by settings.caption_position
PILL_PAD = (14, 6)  # the box style's pill reaches this far (x, y) around the active word's ink
CAPTION_SIZES = (68, 52)  # largest and smallest caption type
CAPTION_STROKE = 6
INSET = 8  # card text keeps this far inside the safe zone


@dataclass(frozen=True)
class Box:
    what: str
    x0: int
    y0: int
    x1: int
    y1: int
    fill: tuple | None = None  # the text's colour, for the contrast rule


@dataclass
class Drawn:
    image: Image.Image | None  # None for a dry run (the layout alone)
    boxes: list[Box] = field(default_factory=list)

    def painted(self) -> Image.Image:
        assert self.image is not None, "a dry run has no picture"
        return self.image


def safe_zone(width: int, height: int) -> tuple[int, int, int, int]:
    """The safe zone scaled to the frame (the reference numbers are for 1080x1920)."""
    sx, sy = width / 1080, height / 1920
    return (round(SAFE[0] * sx), round(SAFE[1] * sy), round(SAFE[2] * sx), round(SAFE[3] * sy))


# ---- fonts and text fitting ---------------------------------------------------------------------

# Fallbacks after the theme's fonts (and the creator's `fonts:`), chosen by size against coverage: Noto
# Emoji (2.0 MB, 1,489 code points: nearly every single-code-point emoji, monochrome, so it takes the
# text colour and outline) and DejaVu Sans Bold (0.7 MB, 5,898: arrows, check marks, stars, maths,
# Greek, Cyrillic, Hebrew and more). CJK is not bundled (Noto Sans CJK is 16 to 20 MB a weight): name a
# font that has it under `fonts:`, or shortgen refuses the character by name, never drawing tofu.
BUNDLED_FALLBACKS = ("NotoEmoji.ttf", "DejaVuSans-Bold.ttf")


class MissingGlyphError(TextOverflowError):
    """No font in the chain has a character of the text."""


@dataclass(frozen=True)
class FontSpec:
    """A font and the fonts that stand in for characters it lacks, in order."""

    primary: str
    fallbacks: tuple[str, ...] = ()

    def files(self) -> tuple[str, ...]:
        return (self.primary, *self.fallbacks)


@lru_cache(maxsize=64)
def _freetype(path: str, size: int, heavy: bool = False) -> ImageFont.FreeTypeFont:
    try:
        font = ImageFont.truetype(path, size)
    except OSError:
        raise FontError(f"font not found or unreadable: {path}") from None
    if heavy:  # a variable fallback (Noto Emoji) at its boldest, to sit beside our heavy type
        try:
            axes = font.get_variation_axes()
            weights = [a["maximum"] if a.get("name") in (b"Weight", "Weight") else a["default"] for a in axes]
            font.set_variation_by_axes([float(w or 0) for w in weights])
        except (OSError, AttributeError, ValueError):
            pass
    return font


@lru_cache(maxsize=16)
def _coverage(path: str) -> frozenset[int]:
    """The code points a font maps to glyphs (its cmap): what it can draw without tofu. The usual cmap
    formats (4 and 12) are read directly, in about a millisecond; fontTools, which reads them all, costs
    130 ms to import and parse, on every render whose text is not plain ASCII (a card's "·" is not)."""
    try:
        return _read_cmap(Path(path).read_bytes())
    except (ValueError, IndexError, struct.error):
        pass
    from fontTools.ttLib import TTFont, TTLibError  # other formats, collections

    try:
        with TTFont(path, lazy=True, fontNumber=0) as f:
            return frozenset(f.getBestCmap() or ())
    except (OSError, TTLibError, AssertionError) as e:
        raise FontError(f"font unreadable: {path} ({e})") from None


def _read_cmap(data: bytes) -> frozenset[int]:
    """Code points of a TrueType/OpenType font's Unicode cmap subtable (format 12, else format 4)."""
    num = struct.unpack_from(">H", data, 4)[0]
    cmap = next(off for tag, _, off, _ in (struct.unpack_from(">4sIII", data, 12 + 16 * i) for i in range(num)) if tag == b"cmap")
    n = struct.unpack_from(">H", data, cmap + 2)[0]
    subtables = {}
    for i in range(n):
        platform, encoding, off = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
        fmt = struct.unpack_from(">H", data, cmap + off)[0]
        if (platform, encoding) in ((3, 10), (0, 4), (0, 6)) and fmt == 12:
            subtables[12] = cmap + off
        elif (platform, encoding) in ((3, 1), (0, 3), (0, 1), (0, 0)) and fmt == 4:
            subtables.setdefault(4, cmap + off)
    out: set[int] = set()
    if 12 in subtables:
        t = subtables[12]
        groups = struct.unpack_from(">I", data, t + 12)[0]
        for g in range(groups):
            start, end, glyph = struct.unpack_from(">III", data, t + 16 + 12 * g)
            out.update(range(start, end + 1) if glyph else range(start + 1, end + 1))
        return frozenset(out)
    t = subtables[4]
    segs = struct.unpack_from(">H", data, t + 6)[0] // 2
    ends = struct.unpack_from(f">{segs}H", data, t + 14)
    starts = struct.unpack_from(f">{segs}H", data, t + 16 + 2 * segs)
    deltas = struct.unpack_from(f">{segs}h", data, t + 16 + 4 * segs)
    ro_at = t + 16 + 6 * segs
    offsets = struct.unpack_from(f">{segs}H", data, ro_at)
    for k in range(segs):
        for c in range(starts[k], min(ends[k], 0xFFFE) + 1):
            if offsets[k] == 0:
                glyph = (c + deltas[k]) & 0xFFFF
            else:
                at = ro_at + 2 * k + offsets[k] + 2 * (c - starts[k])
                glyph = struct.unpack_from(">H", data, at)[0]
                glyph = (glyph + deltas[k]) & 0xFFFF if glyph else 0
            if glyph:
                out.add(c)
    return frozenset(out)


def _invisible(ch: str) -> bool:
    """Joiners, variation selectors and combining marks attached to emoji: drawn as nothing."""
    import unicodedata

    return (
        unicodedata.category(ch) in ("Mn", "Me", "Cf")
        or 0xFE00 <= ord(ch) <= 0xFE0F
        or 0xE0100 <= ord(ch) <= 0xE01EF
        or 0x1F3FB <= ord(ch) <= 0x1F3FF
    )


class ChainFont:
    """A FontSpec at one size: measures and splits text into runs, each in the first font that has
    its characters. ASCII text takes the primary font alone, as before (the fast, common path)."""

    def __init__(self, spec: FontSpec, size: int):
        self.spec: FontSpec = spec
        self.size: int = size
        self.primary = _freetype(spec.primary, size)

    def runs(self, text: str) -> list[tuple[str, ImageFont.FreeTypeFont]]:
        if text.isascii():
            return [(text, self.primary)]
        out: list[tuple[str, ImageFont.FreeTypeFont]] = []
        files = self.spec.files()
        for ch in text:
            if _invisible(ch):
                continue
            i = next((i for i, f in enumerate(files) if ord(ch) in _coverage(f)), None)
            if i is None:
                raise MissingGlyphError(
                    f"no font has the character {ch!r} (U+{ord(ch):04X})",
                    detail=f"no font has the character {ch!r} (U+{ord(ch):04X}); name a font that has it under settings.fonts",
                )
            font = self.primary if i == 0 else _freetype(files[i], self.size, True)
            if out and out[-1][1] is font:
                out[-1] = (out[-1][0] + ch, font)
            else:
                out.append((ch, font))
        return out

    def getlength(self, text: str) -> float:
        if text.isascii():
            return self.primary.getlength(text)
        return sum(f.getlength(t) for t, f in self.runs(text))

    def getmetrics(self) -> tuple[int, int]:
        return self.primary.getmetrics()


@lru_cache(maxsize=128)
def _font(spec: FontSpec | str, size: int) -> ChainFont:
    return ChainFont(spec if isinstance(spec, FontSpec) else FontSpec(spec), size)


def font_path(settings: Settings, role: str) -> FontSpec:
    """The theme's font for a role, with the creator's `fonts:` and then the bundled fallbacks."""
    name = getattr(settings.theme, f"font_{role}")
    p = Path(name)
    p = p if p.is_absolute() else settings.fonts_dir / p
    if not p.is_file():
        raise FontError(f"font not found: {p} (theme.font_{role})")
    bundled = [settings.fonts_dir / n for n in BUNDLED_FALLBACKS]
    return FontSpec(str(p), tuple(str(f) for f in (*settings.fonts, *bundled) if Path(f).is_file()))


def _baseline(font: ChainFont, xy, anchor: str, length: float) -> tuple[float, float]:
    """The left end of the baseline for text of `length` placed at xy with a Pillow anchor."""
    ascent, descent = font.getmetrics()
    x, y = xy
    x -= {"l": 0, "m": length / 2, "r": length}[anchor[0]]
    y += {"a": ascent, "t": ascent, "m": (ascent - descent) / 2, "s": 0, "d": -descent, "b": -descent}[anchor[1]]
    return x, y


def draw_runs(
    draw, xy, text: str, font: ChainFont, fill, anchor: str = "la", stroke: int = 0, stroke_fill=None, measure=None
) -> tuple[int, int, int, int]:
    """Draw text through its font chain, run after run on one baseline; returns the inked box. A text
    in one font is drawn as ImageDraw draws it (the same pixels); `draw` may be None to only measure."""
    runs = font.runs(text)
    measure = measure or draw
    if len(runs) == 1:
        t, f = runs[0]
        if draw is not None:
            draw.text(xy, t, font=f, fill=fill, stroke_width=stroke, stroke_fill=stroke_fill, anchor=anchor)
        x0, y0, x1, y1 = measure.textbbox(xy, t, font=f, stroke_width=stroke, anchor=anchor)
        return int(x0), int(y0), int(x1), int(y1)
    x, y = _baseline(font, xy, anchor, sum(f.getlength(t) for t, f in runs))
    box: tuple | None = None
    for t, f in runs:
        if draw is not None:
            draw.text((x, y), t, font=f, fill=fill, stroke_width=stroke, stroke_fill=stroke_fill, anchor="ls")
        b = measure.textbbox((x, y), t, font=f, stroke_width=stroke, anchor="ls")
        box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
        x += f.getlength(t)
    assert box is not None  # there are two runs at least
    return int(box[0]), int(box[1]), int(box[2]), int(box[3])


def _break_points(word: str) -> list[tuple[str, str]]:
    """Where a reader would break a word too long for its line, best first: after a slash, hyphen,
    underscore or dot inside it (URLs, paths, compounds), at a lower-to-upper case change, then at the
    syllables an English hyphenation dictionary allows (pyphen), each as (head shown with its hyphen, tail)."""
    out: list[tuple[str, str]] = []
    for i in range(len(word) - 2, 1, -1):
        if word[i - 1] in "/-_." and word[i].isalnum():
            out.append((word[:i], word[i:]))
    for i in range(len(word) - 2, 1, -1):
        if word[i - 1].islower() and word[i].isupper():
            out.append((word[:i] + "-", word[i:]))
    import pyphen  # only a word too long for a whole line needs it

    for head, tail in pyphen.Pyphen(lang="en_US").iterate(word):
        out.append((head + "-", tail))
    return out


def break_word(word: str, font: ChainFont, width: int) -> list[str]:
    """A word as pieces that each fit `width`: split at the latest break a reader would accept, and
    failing those, hyphenated at the last character that fits (two letters at least on each side)."""
    pieces: list[str] = []
    rest = word
    while font.getlength(rest) > width:
        cut = next(((h, t) for h, t in _break_points(rest) if font.getlength(h) <= width), None)
        if cut is None:
            k = len(rest) - 2
            while k > 2 and font.getlength(rest[:k] + "-") > width:
                k -= 1
            if k <= 2:
                return pieces + [rest]  # cannot be shown at this size: the caller refuses it
            cut = (rest[:k] + "-", rest[k:])
        pieces.append(cut[0])
        rest = cut[1]
    return pieces + [rest]


def wrap_tokens(text: str, font: ChainFont, width: int, breaks: bool = True) -> list[list[tuple[str, int]]]:
    """Greedy wrap by words; each line a list of (piece, index of its word in the text). With `breaks`, a
    word wider than a whole line is broken (see `break_word`), so it may span lines as several pieces."""
    lines: list[list[tuple[str, int]]] = []
    for k, word in enumerate(text.split()):
        pieces = break_word(word, font, width) if breaks and font.getlength(word) > width else [word]
        for j, piece in enumerate(pieces):
            if j == 0 and lines and font.getlength(_line_text(lines[-1]) + " " + piece) <= width:
                lines[-1].append((piece, k))
            else:
                lines.append([(piece, k)])
    return lines


def _line_text(line: list[tuple[str, int]]) -> str:
    return " ".join(p for p, _ in line)


def wrap(text: str, font: ChainFont, width: int) -> list[str]:
    """Greedy wrap by words (see `wrap_tokens`) as lines of text."""
    return [_line_text(ln) for ln in wrap_tokens(text, font, width)]


def balance(lines: list[list[tuple[str, int]]], font: ChainFont, width: int) -> list[list[tuple[str, int]]]:
    """Two greedy lines -> the split that minimises the longer line, so a cue never ends on a lone word
    (only between whole words: a broken word stays as it was broken)."""
    if len(lines) != 2:
        return lines
    tokens = lines[0] + lines[1]
    best = max(font.getlength(_line_text(lines[0])), font.getlength(_line_text(lines[1]))), lines
    for i in range(1, len(tokens)):
        if tokens[i][1] == tokens[i - 1][1]:
            continue  # the two pieces of one broken word
        a, b = tokens[:i], tokens[i:]
        longer = max(font.getlength(_line_text(a)), font.getlength(_line_text(b)))
        if longer <= width and longer < best[0]:
            best = longer, [a, b]
    return best[1]


def fit_tokens(
    text: str,
    path: FontSpec | str,
    sizes: tuple[int, int],
    width: int,
    max_lines: int,
    what: str,
    stroke: int = 0,
    source: tuple = (),
) -> tuple[ChainFont, list[list[tuple[str, int]]]]:
    """The largest size in [min, max] at which text wraps into max_lines within width: with whole words
    if any size allows it (a smaller type reads better than a broken word), else with long words broken."""
    hi, lo = sizes
    try:
        _font(path, hi).runs(text)
    except MissingGlyphError as e:
        raise MissingGlyphError(f"{what}: {e.detail}", source, e.detail) from None
    for breaks in (False, True):
        for size in range(hi, lo - 1, -2):
            f = _font(path, size)
            lines = wrap_tokens(text, f, width - 2 * stroke, breaks)
            if len(lines) <= max_lines and all(f.getlength(_line_text(ln)) + 2 * stroke <= width for ln in lines):
                return f, lines
    detail = f"text too long for its box even at {lo}px ({max_lines} line{'s' * (max_lines > 1)} of {width}px): {text!r}"
    raise TextOverflowError(f"{what}: {detail}", source, detail)


def fit(
    text: str,
    path: FontSpec | str,
    sizes: tuple[int, int],
    width: int,
    max_lines: int,
    what: str,
    stroke: int = 0,
    source: tuple = (),
) -> tuple[ChainFont, list[str]]:
    f, lines = fit_tokens(text, path, sizes, width, max_lines, what, stroke, source)
    return f, [_line_text(ln) for ln in lines]


def _rgb(c: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(c)[:3]


class _NoPaint:
    """Stands in for ImageDraw where only the layout is wanted: shapes are not drawn."""

    def __getattr__(self, name):
        return lambda *a, **k: None


class _Canvas:
    """Draws text and records its boxes. With no image it only lays out (a dry run): the same code,
    so the fit rules that `check` runs are the ones a render meets."""

    def __init__(self, image: Image.Image | None):
        self.image = image
        self.draw = ImageDraw.Draw(image) if image is not None else _NoPaint()
        self._measure = ImageDraw.Draw(image) if image is not None else ImageDraw.Draw(Image.new("L", (1, 1)))
        self.boxes: list[Box] = []

    def text(self, xy, text: str, font: ChainFont, fill, what: str, stroke: int = 0, stroke_fill=None, anchor="la") -> Box:
        b = draw_runs(
            self.draw if self.image is not None else None, xy, text, font, fill, anchor, stroke, stroke_fill, self._measure
        )
        box = Box(what, *b, fill=tuple(fill) if isinstance(fill, (tuple, list)) else None)
        self.boxes.append(box)
        return box

    def lines(
        self, x: int, y: int, lines: list[str], font, fill, what: str, spacing: float = 1.18, center_width: int | None = None
    ) -> int:
        """Draw lines top-down from y; returns the y below the last line."""
        step = round(font.size * spacing)
        for i, ln in enumerate(lines):
            if center_width is not None:
                self.text((x + center_width // 2, y + i * step), ln, font, fill, what, anchor="ma")
            else:
                self.text((x, y + i * step), ln, font, fill, what)
        return y + len(lines) * step


@lru_cache(maxsize=8)
def _background(width: int, height: int, top: str, bottom: str, accent: str) -> Image.Image:
    """A vertical gradient with a brand stripe at the top edge."""
    a, b = _rgb(top), _rgb(bottom)
    grad = Image.linear_gradient("L").resize((width, height))
    img = Image.composite(Image.new("RGB", (width, height), b), Image.new("RGB", (width, height), a), grad)
    ImageDraw.Draw(img).rectangle((0, 0, width, max(6, height // 160)), fill=_rgb(accent))
    return img


def _base(settings: Settings, dry: bool = False, layer: bool = False) -> _Canvas:
    """The card's canvas: the gradient, or with `layer` a transparent one for text that goes over a
    picture (compose.py lays it on the backdrop)."""
    t = settings.theme
    if dry:
        return _Canvas(None)
    if layer:
        return _Canvas(Image.new("RGBA", (settings.width, settings.height), (0, 0, 0, 0)))
    return _Canvas(_background(settings.width, settings.height, t.background, t.background2, t.accent).copy())


# ---- segment cards ------------------------------------------------------------------------------


def _badge(c: _Canvas, settings: Settings, label: str, x: int, y: int, width: int) -> int:
    t = settings.theme
    pad = 18
    f, _ = fit(label, font_path(settings, "medium"), (34, 24), width - 2 * pad, 1, "badge", source=("series",))
    w = int(f.getlength(label))
    c.draw.rounded_rectangle((x, y, x + w + 2 * pad, y + 60), radius=30, fill=_rgb(t.accent))
    c.text((x + pad, y + 30), label, f, _rgb(t.background), "badge", anchor="lm")
    return y + 60


PANEL_MIN = 400  # a panel visual keeps at least this many rows (at 1920 high) below the card's text
PANEL_GAP = 28  # ... and starts this far below it


def text_limit(seg: SegmentPlan, plan: Plan, settings: Settings) -> int:
    """How far down the card's text may reach: above the captions, and above a panel visual's least height."""
    limit = caption_origin(settings)[1]
    if seg.visual is not None and seg.visual.rect[1] > 0:
        limit = min(limit, seg.visual.rect[3] - round((PANEL_MIN + PANEL_GAP) * settings.height / 1920))
    return limit - 10


def placed(seg: SegmentPlan, plan: Plan, settings: Settings) -> SegmentPlan:
    """The segment with its panel visual starting below the card's text (the plan's panel is the most it
    may have): a card with a longer name or one-liner gets a shorter panel, never an overlap."""
    v = seg.visual
    if v is None or v.rect[1] == 0:
        return seg
    bottom = max((b.y1 for b in draw_card(seg, plan, settings, dry=True).boxes), default=0)
    top = max(v.rect[1], 2 * -(-(bottom + round(PANEL_GAP * settings.height / 1920)) // 2))
    if top == v.rect[1]:
        return seg
    return dataclasses.replace(seg, visual=dataclasses.replace(v, rect=(v.rect[0], top, v.rect[2], v.rect[3])))


def draw_card(seg: SegmentPlan, plan: Plan, settings: Settings, dry: bool = False, layer: bool = False) -> Drawn:
    """The segment's background: it carries the concept for the whole segment, so any paused frame says
    which. `dry` lays it out without painting (Drawn.image is None): the fit rules alone. `layer` draws
    the text alone on transparency, for a card over a picture (compose.py)."""
    c = _base(settings, dry, layer)
    t = settings.theme
    x0, y0, x1, _ = safe_zone(settings.width, settings.height)
    x0, x1 = x0 + INSET, x1 - INSET  # glyph side bearings can reach a few pixels outside the pen position
    width = x1 - x0
    where = f"{seg.source}: {seg.name!r}"
    src = ("segment", seg.index)
    y = _badge(c, settings, f"{plan.series.upper()}  ·  PART {plan.part}", x0, y0 + 20, width) + 40
    if seg.kind == "concept":
        total = len(plan.concepts())
        f_num = _font(font_path(settings, "bold"), 110)
        box = c.text((x0, y), f"{seg.number}", f_num, _rgb(t.accent), "number")
        c.text(
            (box.x1 + 14, box.y1), f"/ {total}", _font(font_path(settings, "medium"), 54), _rgb(t.muted), "number", anchor="ls"
        )
        y = box.y1 + 40
        f, lines = fit(seg.name, font_path(settings, "bold"), (92, 56), width, 2, f"{where}: name", source=src + ("name",))
        y = c.lines(x0, y, lines, f, _rgb(t.text), "name") + 24
        c.draw.rectangle((x0, y, x0 + 120, y + 8), fill=_rgb(t.accent))
        y += 40
        blame: tuple = src + ("name",)
        if seg.one_liner:  # optional: an imported article may lack its quick-reference row
            f, lines = fit(
                seg.one_liner,
                font_path(settings, "medium"),
                (52, 38),
                width,
                3,
                f"{where}: one_liner",
                source=src + ("one_liner",),
            )
            y = c.lines(x0, y, lines, f, _rgb(t.text), "one_liner") + 24
            blame = src + ("one_liner",)
        if seg.reference:
            f, lines = fit(
                seg.reference,
                font_path(settings, "regular"),
                (32, 26),
                width,
                2,
                f"{where}: reference",
                source=src + ("reference",),
            )
            y = c.lines(x0, y, lines, f, _rgb(t.muted), "reference")
            blame = src + ("reference",)
    elif seg.kind == "intro":
        f, lines = fit(plan.series, font_path(settings, "bold"), (120, 72), width, 2, f"{where}: series", source=("series",))
        y = c.lines(x0, y + 20, lines, f, _rgb(t.text), "series") + 10
        y = c.lines(x0, y, [f"Part {plan.part}"], _font(font_path(settings, "bold"), 80), _rgb(t.accent), "part") + 30
        concepts = plan.concepts()
        longest = max(concepts, key=lambda g: len(g.name), default=None)
        f, _ = fit(
            longest.name if longest else "-",
            font_path(settings, "medium"),
            (44, 30),
            width - 70,
            1,
            f"{where}: concept list",
            source=("segment", longest.index, "name") if longest else (),
        )
        for i, g in enumerate(concepts):
            c.text((x0, y), f"{i + 1}", _font(font_path(settings, "bold"), f.size), _rgb(t.accent), "list")
            c.text((x0 + 70, y), g.name, f, _rgb(t.text), "list")
            y += round(f.size * 1.45)
        blame = ("segment", longest.index, "name") if longest else ("series",)
    else:  # outro
        f, lines = fit(
            settings.outro_text, font_path(settings, "bold"), (96, 60), width, 3, f"{where}: outro", source=("outro_text",)
        )
        y = c.lines(x0, y + 120, lines, f, _rgb(t.text), "outro") + 30
        blame = ("outro_text",)
        if plan.extra.get("next"):
            nxt = f"Next: {plan.extra['next']}"
            f, lines = fit(nxt, font_path(settings, "bold"), (72, 48), width, 2, f"{where}: next", source=("next",))
            y = c.lines(x0, y, lines, f, _rgb(t.accent), "next")
            blame = ("next",)
    if y > text_limit(seg, plan, settings):
        into = "the caption area"
        if seg.visual is not None and seg.visual.rect[1] > 0:
            into = "the visual's panel (it needs 400 pixels below the text)"
        detail = f"the card's text runs into {into}; shorten it"
        raise TextOverflowError(f"{where}: {detail}", blame, detail)
    return Drawn(c.image, c.boxes)


# ---- captions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionLayout:
    size: int
    words: tuple[tuple[str, int, int, int], ...]  # (text, x, y, word index) of each piece, top-left;
    # a word broken across lines is several pieces


def layout_caption(text: str, settings: Settings, what: str, source: tuple = ()) -> CaptionLayout:
    """Place the cue's words on at most two centred lines; fixed positions, so the highlight never jiggles."""
    try:
        return _layout_caption(text, settings, CAPTION_STROKE)
    except MissingGlyphError as e:
        raise MissingGlyphError(f"{what}: caption: {e.detail}", source, e.detail) from None
    except TextOverflowError as e:
        # the cached layout knows no names
        raise TextOverflowError(f"{what}: caption{e}", source, f"caption {e.detail}") from None


@lru_cache(maxsize=1024)  # the check before rendering, the tiles and the fallback all ask for it
def _layout_caption(text: str, settings: Settings, stroke: int) -> CaptionLayout:
    x0, y0, x1, y1 = caption_origin(settings)
    path = font_path(settings, "bold")
    f, lines = fit_tokens(text, path, CAPTION_SIZES, x1 - x0, 2, "", stroke=stroke)
    lines = balance(lines, f, x1 - x0 - 2 * stroke)
    step = round(f.size * 1.25)
    block = step * (len(lines) - 1) + f.size
    top = y0 + ((y1 - y0) - block) // 2
    space = f.getlength(" ")
    placed = []
    for li, ln in enumerate(lines):
        x = (x0 + x1) / 2 - f.getlength(_line_text(ln)) / 2
        for piece, k in ln:
            placed.append((piece, round(x), top + li * step, k))
            x += f.getlength(piece) + space
    return CaptionLayout(f.size, tuple(placed))


def draw_caption(canvas: _Canvas, layout: CaptionLayout, highlight: int | None, settings: Settings) -> None:
    """The cue's words, the active one lit: in the highlight colour, or (the box style) in the card's
    dark colour on a pill of the highlight colour, drawn last so that its pill lies over its neighbours."""
    t = settings.theme
    f = _font(font_path(settings, "bold"), layout.size)
    box = settings.caption_style == "box"
    for w, x, y, k in layout.words:
        if k == highlight and box:
            continue
        fill = _rgb(t.highlight) if k == highlight else _rgb(t.caption)
        canvas.text((x, y), w, f, fill, "caption", stroke=CAPTION_STROKE, stroke_fill=_rgb(t.outline))
    if box and highlight is not None:
        for w, x, y, k in layout.words:
            if k == highlight:
                b = draw_runs(None, (x, y), w, f, None, "la", CAPTION_STROKE, measure=canvas._measure)
                canvas.draw.rounded_rectangle(_pill(b), radius=(b[3] - b[1]) // 3, fill=_rgb(t.highlight))
                canvas.text((x, y), w, f, _rgb(t.background), "caption")


def _pill(ink: tuple) -> tuple[int, int, int, int]:
    return ink[0] - PILL_PAD[0], ink[1] - PILL_PAD[1], ink[2] + PILL_PAD[0], ink[3] + PILL_PAD[1]


def caption_origin(settings: Settings) -> tuple[int, int, int, int]:
    """The caption band in frame pixels. Its rows are even: yuv420p pairs rows for chroma, so the band
    converts on its own and the card's rows around it are reused as they are."""
    sx, sy = settings.width / 1080, settings.height / 1920
    box = CAPTION_BOXES[settings.caption_position]
    return (
        round(box[0] * sx),
        2 * round(box[1] * sy / 2),
        round(box[2] * sx),
        2 * round(box[3] * sy / 2),
    )


def draw_overlay(seg: SegmentPlan, cue_index: int, highlight: int | None, settings: Settings) -> Drawn:
    """The caption band alone, on transparency: small to store, and composited onto the card at encode time.
    Box coordinates are in frame space."""
    x0, y0, x1, y1 = caption_origin(settings)
    cue = seg.cues[cue_index]
    layout = layout_caption(cue.text, settings, f"{seg.source}: {seg.name!r}")
    shifted = CaptionLayout(layout.size, tuple((w, x - x0, y - y0, k) for w, x, y, k in layout.words))
    c = _Canvas(Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0)))
    draw_caption(c, shifted, highlight, settings)
    boxes = [Box(b.what, b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0) for b in c.boxes]
    return Drawn(c.image, boxes)


def cue_tiles(text: str, settings: Settings, tile_map: Callable, what: str, words: dict | None = None) -> list | None:
    """Per word (piece) of a cue: ((x, y), plain tile, highlighted tile, word index) in caption-band coordinates, each tile
    passed through `tile_map`; None if two words' ink boxes touch (pasting would then differ). A word's
    tiles do not depend on where it sits (positions are whole pixels), so `words` may keep them by
    (word, size) for the next cue that uses the word: a fifth of an episode's caption words repeat."""
    t = settings.theme
    _, y0, _, _ = caption_origin(settings)
    layout = layout_caption(text, settings, what)
    f = _font(font_path(settings, "bold"), layout.size)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    placed = []
    for w, x, y, k in layout.words:
        xy = (x, y - y0)  # the band spans the frame's full width
        b = list(draw_runs(None, xy, w, f, None, "la", CAPTION_STROKE, measure=probe))
        placed.append((w, xy, b, k))
    for i, (_, _, a, _) in enumerate(placed):
        for _, _, b, _ in placed[i + 1 :]:
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                return None
    if settings.caption_style == "box":
        return _box_tiles(placed, f, settings, tile_map)
    # A word's two tiles share their masks: FreeType renders the stroked outline and the fill once, and
    # each colour is laid through them by the same C call ImageDraw.text makes (so pixels are identical).
    inks = (_rgb(t.outline), _rgb(t.caption)), (_rgb(t.outline), _rgb(t.highlight))
    words = {} if words is None else words
    tiles = []
    for w, (x, y), b, k in placed:
        pair = words.get((w, f.size))
        if pair is None:
            runs = f.runs(w)
            pair = []
            if len(runs) == 1:
                masks = [
                    runs[0][1].getmask2(runs[0][0], "L", stroke_width=sw, stroke_filled=True, anchor="la", start=(0.0, 0.0))
                    for sw in (CAPTION_STROKE, 0)
                ]
            for outline, colour in inks:
                tile = Image.new("RGBA", (b[2] - b[0], b[3] - b[1]), (0, 0, 0, 0))
                if len(runs) == 1:
                    d = ImageDraw.Draw(tile).draw
                    for (mask, (ox, oy)), ink in zip(masks, (outline, colour)):
                        d.draw_bitmap((x - b[0] + ox, y - b[1] + oy), mask, d.draw_ink(ink))
                else:  # a word in several fonts (an emoji, say): drawn as draw_caption draws it
                    draw_runs(ImageDraw.Draw(tile), (x - b[0], y - b[1]), w, f, colour, "la", CAPTION_STROKE, outline)
                pair.append(tile_map(tile))
            words[(w, f.size)] = pair
        tiles.append(((b[0], b[1]), *pair, k, (b[0], b[1])))
    return tiles


def _box_tiles(placed: list, f: ChainFont, settings: Settings, tile_map: Callable) -> list:
    """The box style's tiles: each word plain (as drawn by draw_caption), and lit: its pill with the
    word on it, placed where the pill starts (the painter lays it over its neighbours)."""
    t = settings.theme
    tiles = []
    for w, (x, y), b, k in placed:
        plain = Image.new("RGBA", (b[2] - b[0], b[3] - b[1]), (0, 0, 0, 0))
        draw_runs(ImageDraw.Draw(plain), (x - b[0], y - b[1]), w, f, _rgb(t.caption), "la", CAPTION_STROKE, _rgb(t.outline))
        p = _pill(b)
        lit = Image.new("RGBA", (p[2] - p[0] + 1, p[3] - p[1] + 1), (0, 0, 0, 0))  # Pillow's boxes include x1, y1
        d = ImageDraw.Draw(lit)
        d.rounded_rectangle((0, 0, p[2] - p[0], p[3] - p[1]), radius=(b[3] - b[1]) // 3, fill=_rgb(t.highlight))
        draw_runs(d, (x - p[0], y - p[1]), w, f, _rgb(t.background), "la")
        tiles.append(((b[0], b[1]), tile_map(plain), tile_map(lit), k, (p[0], p[1])))
    return tiles


class TileCache:
    """Caption tiles by cue text, shared by a render's painters, and warmed ahead: while the speech
    engine speaks a new narration, the main process is idle, and that narration's cues are known from
    its words alone. Pillow holds the GIL while it renders, so the fonts are never used by two threads
    at once."""

    _RETRY = object()

    def __init__(self, settings: Settings, tile_map: Callable | None = None):
        import threading

        self.settings, self.tile_map = settings, tile_map or (lambda im: im)
        self._lock = threading.Lock()
        self._made: dict = {}  # cue text -> Future of its tiles
        self._words: dict = {}  # (word, size) -> its two tiles (read only); dict get/set are atomic

    def warm(self, texts: list[str]) -> None:
        """Draw these cues' tiles now (meant for a background thread); a failure is left for `get` to
        meet again and report in its own words."""
        from concurrent.futures import Future

        for text in texts:
            with self._lock:
                if text in self._made:
                    continue
                fut = self._made[text] = Future()
            try:
                fut.set_result(cue_tiles(text, self.settings, self.tile_map, "caption", self._words))
            except Exception:
                fut.set_result(self._RETRY)

    def get(self, text: str, what: str) -> list | None:
        from concurrent.futures import Future

        with self._lock:
            known = self._made.get(text)
            mine = known is None or (known.done() and known.result() is self._RETRY)
            fut = self._made[text] = Future() if mine else known
        assert fut is not None
        if mine:
            try:
                fut.set_result(cue_tiles(text, self.settings, self.tile_map, what, self._words))
            except BaseException as e:
                fut.set_exception(e)
        got = fut.result()
        return cue_tiles(text, self.settings, self.tile_map, what) if got is self._RETRY else got


class CaptionPainter:
    """Paints a segment's caption states onto its card's caption band, fast.

    A cue with n words has n highlight states, and drawing each state in full draws n^2 stroked words.
    Instead every word is drawn once per colour onto a small transparent tile (see `cue_tiles`), and a
    state is the band with its words' tiles pasted. Where no two words' ink boxes touch (the usual case:
    a space is wider than two strokes) this is pixel-identical to `draw_overlay` + `compose`, which the
    tests prove; a cue whose boxes do touch falls back to drawing the state in full.
    """

    def __init__(self, seg: SegmentPlan, settings: Settings, tile_map: Callable | None = None, tiles: TileCache | None = None):
        self.seg, self.settings = seg, settings
        self.x0, self.y0, _, self.y1 = caption_origin(settings)
        self._tiles: dict[int, list | None] = {}
        self.cues_drawn = 0
        # `tile_map` is applied to every RGBA tile once, e.g. into YCbCr: then the band is painted in the
        # encoder's colour space. A per-pixel affine map commutes with alpha blending, so the result is
        # the same picture (up to rounding) without converting each painted band.
        self.tiles = tiles or TileCache(settings, tile_map)
        self.tile_map = self.tiles.tile_map
        self._pops: dict = {}

    def paint(
        self, band: Image.Image, cue_index: int, highlight: int | None, pop: int = 0, copy: bool = True, dy: int = 0
    ) -> Image.Image:
        """A copy of the card's caption band (RGB, or whatever space `tile_map` maps into) with this cue
        drawn and word `highlight` lit; `pop` > 0 draws the lit word at its pop step's size. With
        `copy=False` the band itself is painted; `dy` says where the band's rows start in that image."""
        if cue_index not in self._tiles:
            text, what = self.seg.cues[cue_index].text, f"{self.seg.source}: {self.seg.name!r}"
            self._tiles[cue_index] = self.tiles.get(text, what)
            self.cues_drawn += 1
        tiles = self._tiles[cue_index]
        out = band.copy() if copy else band
        if tiles is None:
            layer = self.tile_map(draw_overlay(self.seg, cue_index, highlight, self.settings).image)
            out.paste(layer, (self.x0, dy), layer)
            return out
        lit_one = None
        for xy, plain, lit, k, lit_xy in tiles:
            if k == highlight:
                lit_one = (lit, lit_xy)
            else:
                out.paste(plain, (xy[0], xy[1] + dy), plain)
        if lit_one is not None:  # last: a pill or a pop may reach over its neighbours
            tile, xy = lit_one
            if pop:
                key = (id(tile), pop)
                if key not in self._pops:
                    self._pops[key] = (tile, *_popped(tile, xy, pop))  # the tile kept: its id stays its own
                _, tile, xy = self._pops[key]
            out.paste(tile, (xy[0], xy[1] + dy), tile)
        return out


def _popped(tile: Image.Image, xy: tuple[int, int], step: int) -> tuple[Image.Image, tuple[int, int]]:
    """A lit word's tile at its pop step's scale, about its centre."""
    from ..plan import POP_SCALES

    sc = POP_SCALES[step - 1]
    w, h = tile.size
    big = tile.resize((round(w * sc), round(h * sc)), Image.Resampling.BICUBIC)
    return big, (xy[0] - (big.width - w) // 2, xy[1] - (big.height - h) // 2)


def check_fits(
    plan: Plan, settings: Settings, captions: list[SegmentPlan] | None = None, cards: list[SegmentPlan] | None = None,
    covers: bool = True,
) -> list[TextOverflowError]:  # fmt: skip
    """Every fit rule of every text box, laid out and not painted: each card (of `cards`, default all
    segments), the captions (of `captions`, default all), the thumbnail and the cover (unless `covers`
    is False). `check` and `render` both run this, so a script that passes one passes the other; a
    render leaves out what it will not draw (its cached pictures passed when they were drawn). Returns
    every problem, not just the first."""
    problems: list[TextOverflowError] = []

    def run(fn, *args) -> None:
        try:
            fn(*args)
        except TextOverflowError as e:
            if not any(p.source == e.source and p.detail == e.detail for p in problems):
                problems.append(e)

    for seg in plan.segments if cards is None else cards:
        run(draw_card, seg, plan, settings, True)
    for seg in plan.segments if captions is None else captions:
        for cue in seg.cues:
            run(layout_caption, cue.text, settings, f"{seg.source}: {seg.name!r}", ("segment", seg.index, "narration"))
    if covers:
        run(draw_thumbnail, plan, settings, True)
        run(draw_cover, plan, settings, True)
    return problems


# ---- thumbnail and cover ------------------------------------------------------------------------


def draw_thumbnail(plan: Plan, settings: Settings, dry: bool = False) -> Drawn:
    """1280x720: series name, part number and the five concept names, readable at phone size."""
    t = settings.theme
    w, h = 1280, 720
    c = _Canvas(None if dry else _background(w, h, t.background, t.background2, t.accent).copy())
    bold, medium = font_path(settings, "bold"), font_path(settings, "medium")
    f, lines = fit(plan.series, bold, (96, 56), 520, 3, "thumbnail: series", source=("series",))
    y = c.lines(60, 80, lines, f, _rgb(t.text), "series") + 20
    pf = _font(bold, 84)
    c.draw.rounded_rectangle((60, y, 60 + pf.getlength(f"PART {plan.part}") + 48, y + 120), radius=24, fill=_rgb(t.accent))
    c.text((84, y + 60), f"PART {plan.part}", pf, _rgb(t.background), "part", anchor="lm")
    concepts = plan.concepts()
    names = [g.name for g in concepts]
    longest = max(range(len(names)), key=lambda i: len(names[i]), default=None)
    src = ("segment", concepts[longest].index, "name") if longest is not None else ()
    try:
        f, _ = fit(max(names, key=len, default="-"), medium, (46, 30), 1220 - 680, 1, "thumbnail: concept list", source=src)
    except TextOverflowError:
        # "GANs (Generative Adversarial Networks)" -> "GANs": the short form reads better than tiny type
        names = [n.split(" (")[0] for n in names]
        longest = max(range(len(names)), key=lambda i: len(names[i]), default=None)
        src = ("segment", concepts[longest].index, "name") if longest is not None else ()
        f, _ = fit(max(names, key=len, default="-"), medium, (46, 30), 1220 - 680, 1, "thumbnail: concept list", source=src)
    step = round(f.size * 1.9)
    y = (h - step * len(names)) // 2 + (step - f.size) // 2
    for i, n in enumerate(names):
        c.text((620, y), f"{i + 1}", _font(bold, f.size), _rgb(t.accent), "list")
        c.text((680, y), n, f, _rgb(t.text), "list")
        y += step
    return Drawn(c.image, c.boxes)


def draw_cover(plan: Plan, settings: Settings, dry: bool = False) -> Drawn:
    """The vertical cover: the intro card's content, without captions."""
    intro = next((s for s in plan.segments if s.kind == "intro"), None)
    if intro is None:
        intro = SegmentPlan(0, "intro", "Cover", "", "", None, 0, 1, 0, 0, 0, 0, 1, 0, "", "", "cover", (), (), ())
    return draw_card(intro, plan, settings, dry)


def card_key_inputs(seg: SegmentPlan, plan: Plan, settings: Settings, fonts: dict) -> dict:
    """Everything a card's pixels depend on: texts, layout, theme, fonts and the drawing code's version."""
    return {
        "v": DRAW_VERSION,
        "size": [settings.width, settings.height],
        "theme": settings.theme.__dict__,
        "fonts": fonts,
        "series": plan.series,
        "part": plan.part,
        "kind": seg.kind,
        "name": seg.name,
        "one_liner": seg.one_liner,
        "reference": seg.reference,
        "number": seg.number,
        "concepts": [s.name for s in plan.concepts()] if seg.kind == "intro" else None,
        "outro": [settings.outro_text, plan.extra.get("next")] if seg.kind == "outro" else None,
        "total": len(plan.concepts()),
        **look_key_inputs(seg, plan, settings),
    }


def look_key_inputs(seg: SegmentPlan, plan: Plan, settings: Settings) -> dict:
    """What a card's look takes beyond today's: its picture, the background, the caption settings that
    move the text or its scrim. Empty for a plain card with the default captions (its key is unchanged)."""
    from dataclasses import asdict

    out: dict = {}
    if settings.caption_position != "bottom":
        out["caption_position"] = settings.caption_position
    if seg.visual is not None or plan.background is not None:
        # by content, not by where the file is: moving the project keeps its cache
        def media(v) -> dict | None:
            return {k: x for k, x in asdict(v).items() if k not in ("file", "source")} if v else None

        out["visual"] = media(seg.visual)
        out["background"] = media(plan.background)
        out["first"] = [seg.states[0].vis, seg.states[0].bg] if seg.states else None
        out["captions"] = [settings.caption_style, [c.text for c in seg.cues]]  # their scrim
        out["compose"] = 1  # compose.py's version
    return out


def overlay_key_inputs(seg: SegmentPlan, state: State, settings: Settings, fonts: dict) -> dict | None:
    """What a caption overlay's pixels depend on; None for a state without a caption."""
    if state.cue is None:
        return None
    cue = seg.cues[state.cue]
    # The whole theme, not just the caption colours: a theme edit is a look change, and redrawing
    # everything is the predictable rule (it costs about a second of drawing per episode).
    out = {
        "v": DRAW_VERSION,
        "size": [settings.width, settings.height],
        "fonts": fonts,
        "cue": cue.text,
        "hl": None if state.word is None else state.word - cue.first,
        "theme": settings.theme.__dict__,
    }
    if settings.caption_style != "highlight" or settings.caption_position != "bottom":
        out["style"] = [settings.caption_style, settings.caption_position]
    if state.pop:
        out["pop"] = state.pop
    return out


def font_digests(settings: Settings) -> dict:
    """Every font file a picture may draw with, by role (the theme's, then the fallback chain)."""
    return {role: [_digest(f) for f in font_path(settings, role).files()] for role in ("bold", "medium", "regular")}


def _digest(path: str) -> str:
    st = os.stat(path)
    return _digest_of(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    from ..cache import file_digest

    return file_digest(Path(path))[:16]
