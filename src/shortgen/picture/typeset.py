"""Fonts and text fitting: the font chain (the theme's fonts, then the bundled fallbacks, chosen per
character by each font's coverage), drawing runs of text through it, and fitting text into a box: wrap,
balance, break a long word where a reader would, shrink to a floor, else TextOverflowError naming the
segment and field (a character no font has: MissingGlyphError). Cards and captions both draw through it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from ..errors import FontError, TextOverflowError
from ..settings import Settings

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
