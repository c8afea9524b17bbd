"""Captions: a cue laid out in the caption band (largest type that fits, at most two lines), drawn with
its active word highlighted, as tiles per word state (TileCache, shared by a render's painters and warmed
ahead while the speech engine speaks), and painted onto frames (CaptionPainter), with the pop of a word
that appears. check_fits runs every fit rule of an episode (cards, captions, thumbnail, cover) dry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw

from ..errors import TextOverflowError
from ..plan import Plan, SegmentPlan, State
from ..settings import Settings
from . import draw
from .draw import (
    DRAW_VERSION,
    Box,
    Drawn,
    _Canvas,
    _rgb,
    caption_origin,
)
from .typeset import ChainFont, MissingGlyphError, _font, _line_text, balance, draw_runs, fit_tokens, font_path

PILL_PAD = (14, 6)  # the box style's pill reaches this far (x, y) around the active word's ink
CAPTION_SIZES = (68, 52)  # largest and smallest caption type
CAPTION_STROKE = 6


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

    def release(self, texts: list[str], keep: list[str]) -> None:
        """Let these cues' tiles go (their segment is encoded): all of an episode's were 23 MB held through
        the render. A word tile stays while a cue in `keep` (the cues still to come) has the word; a
        released cue asked for again is drawn again."""
        words = {w for t in keep for w in t.split()}
        with self._lock:
            for text in set(texts) - set(keep):
                fut = self._made.get(text)
                if fut is not None and fut.done():  # one still being drawn is left as it is
                    del self._made[text]
            for key in [k for k in self._words if k[0] not in words]:
                self._words.pop(key, None)

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
        run(draw.draw_card, seg, plan, settings, True)
    for seg in plan.segments if captions is None else captions:
        for cue in seg.cues:
            run(layout_caption, cue.text, settings, f"{seg.source}: {seg.name!r}", ("segment", seg.index, "narration"))
    if covers:
        run(draw.draw_thumbnail, plan, settings, True)
        run(draw.draw_cover, plan, settings, True)
    return problems


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
