"""Every picture but the captions, drawn with Pillow from fonts shipped in the package (assets/fonts):
the segment cards, the thumbnail and the cover, on a canvas that records where each text went; and what
each card's pixels depend on (its cache key's inputs). Text goes through typeset.py; captions are captions.py.

All text goes through `_Canvas.text`, which records its bounding box, so tests can prove every text
element lies inside the platform safe zone. Text that does not fit its box shrinks down to a floor,
then fails with TextOverflowError naming the segment and field; it never overflows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache

from PIL import Image, ImageColor, ImageDraw

from ..errors import TextOverflowError
from ..plan import Plan, SegmentPlan
from ..settings import Settings
from .typeset import ChainFont, _font, draw_runs, fit, font_path

DRAW_VERSION = 2  # bump when the look changes: it is part of every frame's cache key
SAFE = (96, 240, 984, 1480)  # x0, y0, x1, y1 for 1080x1920: the platforms' UI-free zone
CAPTION_BOX = (96, 1130, 984, 1470)
CAPTION_BOXES = {"bottom": CAPTION_BOX, "middle": (96, 900, 984, 1240)}  # by settings.caption_position
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


def _background(width: int, height: int, top: str, bottom: str, accent: str) -> Image.Image:
    """A vertical gradient with a brand stripe at the top edge: a new picture, widened from its cached
    column (1 ms, where drawing it is 19 ms; the whole picture cached was 8 MB held through a render)."""
    return _background_column(height, top, bottom, accent).resize((width, height), Image.Resampling.NEAREST)


@lru_cache(maxsize=8)
def _background_column(height: int, top: str, bottom: str, accent: str) -> Image.Image:
    """One column of the background: every column is the same (the gradient runs top to bottom and the
    stripe spans the width)."""
    a, b = _rgb(top), _rgb(bottom)
    grad = Image.linear_gradient("L").resize((1, height))
    img = Image.composite(Image.new("RGB", (1, height), b), Image.new("RGB", (1, height), a), grad)
    ImageDraw.Draw(img).rectangle((0, 0, 1, max(6, height // 160)), fill=_rgb(accent))
    return img


def _base(settings: Settings, dry: bool = False, layer: bool = False) -> _Canvas:
    """The card's canvas: the gradient, or with `layer` a transparent one for text that goes over a
    picture (compose.py lays it on the backdrop)."""
    t = settings.theme
    if dry:
        return _Canvas(None)
    if layer:
        return _Canvas(Image.new("RGBA", (settings.width, settings.height), (0, 0, 0, 0)))
    return _Canvas(_background(settings.width, settings.height, t.background, t.background2, t.accent))


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
BAND_MIN = 130  # a generated visual, above the captions, keeps at least this many rows


def text_limit(seg: SegmentPlan, plan: Plan, settings: Settings) -> int:
    """How far down the card's text may reach: above the captions, and above a panel visual's least height."""
    limit = caption_origin(settings)[1]
    if seg.visual is not None and seg.visual.rect[1] > 0:
        least = BAND_MIN if seg.visual.rect[3] < caption_origin(settings)[3] else PANEL_MIN  # a generated visual's band
        limit = min(limit, seg.visual.rect[3] - round((least + PANEL_GAP) * settings.height / 1920))
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
    x0, y0, x1, _ = safe_zone(settings.width, settings.height)
    x0, x1 = x0 + INSET, x1 - INSET  # glyph side bearings can reach a few pixels outside the pen position
    width = x1 - x0
    where = f"{seg.source}: {seg.name!r}"
    y = _badge(c, settings, f"{plan.series.upper()}  ·  PART {plan.part}", x0, y0 + 20, width) + 40
    kind = {"concept": _concept_text, "intro": _intro_text}.get(seg.kind, _outro_text)
    y, blame = kind(c, seg, plan, settings, (x0, y, width), where)
    if y > text_limit(seg, plan, settings):
        into = "the caption area"
        if seg.visual is not None and seg.visual.rect[1] > 0:
            need = BAND_MIN if seg.visual.rect[3] < caption_origin(settings)[3] else PANEL_MIN
            into = f"the visual's panel (it needs {need} pixels below the text)"
        detail = f"the card's text runs into {into}; shorten it"
        raise TextOverflowError(f"{where}: {detail}", blame, detail)
    return Drawn(c.image, c.boxes)


def _concept_text(
    c: _Canvas, seg: SegmentPlan, plan: Plan, settings: Settings, at: tuple[int, int, int], where: str
) -> tuple[int, tuple]:
    """A concept's card: its number of the episode's, name, a rule, one-liner and reference. Returns where
    the text ends and the field to blame if it runs too far."""
    x0, y, width = at
    t = settings.theme
    src = ("segment", seg.index)
    total = len(plan.concepts())
    f_num = _font(font_path(settings, "bold"), 110)
    box = c.text((x0, y), f"{seg.number}", f_num, _rgb(t.accent), "number")
    c.text((box.x1 + 14, box.y1), f"/ {total}", _font(font_path(settings, "medium"), 54), _rgb(t.muted), "number", anchor="ls")
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
    return y, blame


def _intro_text(
    c: _Canvas, seg: SegmentPlan, plan: Plan, settings: Settings, at: tuple[int, int, int], where: str
) -> tuple[int, tuple]:
    """The intro's card: the series, the part, and the episode's concepts listed."""
    x0, y, width = at
    t = settings.theme
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
    return y, blame


def _outro_text(
    c: _Canvas, seg: SegmentPlan, plan: Plan, settings: Settings, at: tuple[int, int, int], where: str
) -> tuple[int, tuple]:
    """The outro's card: its text and what comes next."""
    x0, y, width = at
    t = settings.theme
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
    return y, blame


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


# ---- thumbnail and cover ------------------------------------------------------------------------


def draw_thumbnail(plan: Plan, settings: Settings, dry: bool = False) -> Drawn:
    """1280x720: series name, part number and the five concept names, readable at phone size."""
    t = settings.theme
    w, h = 1280, 720
    c = _Canvas(None if dry else _background(w, h, t.background, t.background2, t.accent))
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
