"""Pictures as the encoder takes them: raw yuv420p, BT.709 tv range, made by us.

Converting a full RGB frame in ffmpeg costs about as much CPU as x264's own work on a still, while only
the caption band changes from one picture to the next. So a segment's card is converted once and cached
as its yuv420p planes plus its caption band in full-resolution YCbCr (the painter's canvas); each
picture is then, plane by plane, the card's rows above the band (a shared view), the band with the cue
painted (in YCbCr: the painter's tiles are converted once), and the rows below.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..cache import Cache, Stats
from ..errors import EncodeError
from ..plan import Plan, SegmentPlan, State
from ..settings import Settings
from . import captions, draw, typeset

if TYPE_CHECKING:
    from . import compose


def _compose():
    """compose.py, imported on first use: it loads numpy, which a no-op render never needs (150 ms)."""
    from . import compose

    return compose


# BT.709 in limited ("tv") range, as rows of (r, g, b, offset) for Pillow's matrix conversion: the
# output's "R, G, B" bands are Y, Cb, Cr.
def _bt709_rows() -> tuple[float, ...]:
    kr, kb = 0.2126, 0.0722
    kg = 1 - kr - kb
    ys, cs = 219 / 255, 224 / 255
    return (
        ys * kr,
        ys * kg,
        ys * kb,
        16.0,
        -cs * kr / (2 - 2 * kb),
        -cs * kg / (2 - 2 * kb),
        cs / 2,
        128.0,
        cs / 2,
        -cs * kg / (2 - 2 * kr),
        -cs * kb / (2 - 2 * kr),
        128.0,
    )


BT709 = _bt709_rows()


def ycc(img: Image.Image) -> Image.Image:
    """An RGB or RGBA picture with its colour bands turned into BT.709 tv-range Y, Cb, Cr (alpha kept).
    Pillow's C loops do it; the matrix conversion rounds each sample."""
    out = img.convert("RGB").convert("RGB", BT709)
    return Image.merge("RGBA", (*out.split(), img.getchannel("A"))) if img.mode == "RGBA" else out


def planes420(img: Image.Image) -> tuple[bytes, bytes, bytes]:
    """A YCbCr picture (see `ycc`; even width and height) as the Y, Cb and Cr planes of yuv420p: each
    chroma sample the mean of its 2x2 block (centre siting, as ffmpeg's own rgb24 -> yuv420p)."""
    y, cb, cr = img.split()[:3]
    return y.tobytes(), cb.reduce(2).tobytes(), cr.reduce(2).tobytes()


def row_cuts(w: int, r0: int, r1: int) -> list[tuple[int, int]]:
    """Where rows [r0, r1) of a w-wide yuv420p frame lie in each plane: Y has w bytes a row, Cb and Cr
    w/2 bytes every 2 rows."""
    return [(r0 * w, r1 * w), (r0 * w // 4, r1 * w // 4), (r0 * w // 4, r1 * w // 4)]


def spliced(planes, cuts: list[tuple[int, int]], fresh) -> tuple:
    """A frame's planes with the rows at `cuts` replaced by `fresh`, as pieces that concatenate to it."""
    return tuple(part for p, (a, b), f in zip(planes, cuts, fresh) for part in (p[:a], f, p[b:]))


def card_layout(settings: Settings) -> tuple[list[int], int, int]:
    """Where a cached card's parts end: Y, Cb, Cr planes, then the caption band in YCbCr; and the band's rows."""
    _, y0, _, y1 = draw.caption_origin(settings)  # even rows
    w, h = settings.width, settings.height
    return list(itertools.accumulate((w * h, w * h // 4, w * h // 4, w * (y1 - y0) * 3))), y0, y1


def ensure_card(plan: Plan, seg: SegmentPlan, key: str, settings: Settings, cache: Cache, stats: Stats) -> Path:
    """Make sure the segment's card is cached as the encoder takes it. Raw, not PNG: a card takes ~10 ms
    to draw and ~15 ms to convert, while writing and reading back a PNG took ~35 ms (measured). A card
    over a picture keeps its look (scrims, contrast) beside it."""
    ends, y0, y1 = card_layout(settings)
    path = cache.path("frames", key, ".yuv")
    look_path = path.with_suffix(".look.json")
    imagery = seg.visual is not None or plan.background is not None
    if cache.has(path) and path.stat().st_size == ends[-1] and (not imagery or cache.has(look_path)):
        stats.hits["frames"] += 1
    else:
        if imagery:
            img, look = card_over_imagery(plan, seg, settings)
            with cache.writing(look_path) as tmp:
                tmp.write_text(json.dumps(_look_json(look)))
        else:
            img = draw.draw_card(seg, plan, settings).painted()
        base = ycc(img)
        with cache.writing(path) as tmp:
            tmp.write_bytes(b"".join((*planes420(base), base.crop((0, y0, settings.width, y1)).tobytes())))
        stats.draws += 1
    return path


def read_look(card: Path) -> compose.Look | None:
    """The look cached beside a card over a picture (None for a plain card)."""
    p = card.with_suffix(".look.json")
    if not p.is_file():
        return None
    d = json.loads(p.read_text())
    return _compose().Look(
        tuple(_compose().Scrim(tuple(x["box"]), tuple(x["colour"]), x["alpha"], x["what"]) for x in d["scrims"]), d["contrast"]
    )


def _look_json(look: compose.Look) -> dict:
    return {"scrims": [{"box": list(s.box), "colour": list(s.colour), "alpha": s.alpha, "what": s.what} for s in look.scrims],
            "contrast": look.contrast}  # fmt: skip


def card_over_imagery(plan: Plan, seg: SegmentPlan, settings: Settings) -> tuple[Image.Image, compose.Look]:
    """A card over a picture, as its first frame shows it (without captions), and its look."""
    layers = Layers(plan, seg, settings)
    try:
        return layers.card(), layers.look
    finally:
        layers.close()


class Layers:
    """A segment's layers under the captions: backdrop, visual, scrims, the card's text (compose.py)."""

    def __init__(self, plan: Plan, seg: SegmentPlan, settings: Settings, look: compose.Look | None = None):
        seg = draw.placed(seg, plan, settings)
        self.plan, self.seg, self.settings = plan, seg, settings
        self.bg = _compose().VisualLayer(plan.background, plan.total_frames, settings) if plan.background else None
        self.vis = _compose().VisualLayer(seg.visual, seg.frames, settings) if seg.visual else None
        self.text = draw.draw_card(seg, plan, settings, layer=True)
        self.look = look or self._measure()

    def under(self, bg: int, vis: int, bg_layer=None, vis_layer=None) -> Image.Image:
        """Backdrop and visual at these samples, RGB (or mapped, with mapped layers)."""
        base = _compose().backdrop(self.plan, self.settings, bg, bg_layer or self.bg)
        lay = vis_layer or self.vis
        if self.seg.visual is not None and lay is not None:
            base.paste(lay.at(vis), self.seg.visual.rect[:2], lay.mask)
        return base

    def _measure(self) -> compose.Look:
        bgs = self.bg.samples() if self.bg and self.plan.background and self.plan.background.kind == "clip" else [0]
        viss = self.vis.samples() if self.vis else [-1]
        n = max(len(bgs), len(viss))
        samples = (self.under(bgs[i * len(bgs) // n], viss[i * len(viss) // n]) for i in range(n))  # one at a time
        sampled = any(v is not None and v.kind == "clip" for v in (self.plan.background, self.seg.visual))
        return _compose().make_look(self.seg, self.plan, self.settings, self.text.boxes, samples, sampled)

    def over(self) -> Image.Image:
        """Scrims and the card's text, RGBA."""
        size = (self.settings.width, self.settings.height)
        out = _compose().scrim_layer(self.look, size) or Image.new("RGBA", size, (0, 0, 0, 0))
        out.alpha_composite(self.text.painted())
        return out

    def card(self) -> Image.Image:
        st = self.seg.states[0]
        img = self.under(max(st.bg, 0), st.vis).convert("RGBA")
        img.alpha_composite(self.over())
        return img.convert("RGB")

    def close(self) -> None:
        for layer in (self.bg, self.vis):
            if layer is not None:
                layer.close()


def load_card(path: Path, settings: Settings) -> tuple:
    """A cached card, read when its segment is encoded (so only one is held at a time)."""
    ends, y0, y1 = card_layout(settings)
    mv = memoryview(path.read_bytes())
    if len(mv) != ends[-1]:
        raise EncodeError(f"{path}: a card of {len(mv)} bytes, expected {ends[-1]}")
    planes = tuple(mv[a:b] for a, b in zip([0] + ends[:2], ends[:3]))
    return planes, Image.frombytes("RGB", (settings.width, y1 - y0), bytes(mv[ends[2] :]))


def moving(seg: SegmentPlan) -> bool:
    """Whether a segment's pictures change outside its caption band (motion, footage, the bar)."""
    return any(st.vis >= 0 or st.bg >= 0 or st.bar >= 0 for st in seg.states)


def pictures(
    card: Path,
    seg: SegmentPlan,
    settings: Settings,
    painter: captions.CaptionPainter,
    states: list[State] | tuple[State, ...],
    plan: Plan | None = None,
) -> Iterator[tuple]:
    """Raw yuv420p pictures of these states of a segment, each as pieces that concatenate to a frame."""
    if plan is not None and moving(seg):
        yield from _moving_pictures(card, plan, seg, settings, painter, states)
        return
    planes, band = load_card(card, settings)
    w = settings.width
    _, y0, _, y1 = draw.caption_origin(settings)
    cuts = row_cuts(w, y0, y1)  # where the caption band lies in each plane
    for st in states:
        if st.cue is None:
            yield planes
            continue
        hl = None if st.word is None else st.word - seg.cues[st.cue].first
        fresh = planes420(painter.paint(band, st.cue, hl, st.pop))
        yield spliced(planes, cuts, fresh)


def _moving_pictures(
    card: Path, plan: Plan, seg: SegmentPlan, settings: Settings, painter: captions.CaptionPainter, states
) -> Iterator[tuple]:
    """Pictures of a segment where more than the captions change. Only the rows that change are made
    per picture (the region: the visual's panel, the captions and the bar; the whole frame under a
    moving background), in YCbCr; the card's own planes serve the rest."""
    (planes, _), w = load_card(card, settings), settings.width
    _, y0, _, y1 = draw.caption_origin(settings)
    seg = draw.placed(seg, plan, settings)
    vis, bgv = seg.visual, plan.background
    vis_moves, bg_moves = vis is not None and vis.moving, bgv is not None and bgv.moving
    r0, r1 = _changing_rows(seg, settings, (y0, y1), bg_moves)
    vis_layer = _compose().VisualLayer(vis, seg.frames, settings, ycc) if vis is not None else None
    bg_layer = _compose().VisualLayer(bgv, plan.total_frames, settings, ycc) if bgv is not None else None
    try:
        still_under, over_y, over_box = _fixed_layers(plan, seg, settings, card, (r0, r1), bg_moves)
        corners = _panel_corners(vis, vis_layer, still_under, r0, w) if vis_moves else []
        bar_colour = ycc(Image.new("RGB", (1, 1), draw._rgb(settings.theme.accent)))  # pasted as a tile
        cuts = row_cuts(w, r0, r1)
        parts = (vis, vis_layer, still_under, corners, over_y, over_box)
        if vis is not None and vis.reveal > 1 and vis.motion == "none" and not bg_moves and all(st.bar < 0 for st in states):
            return (yield from _revealed_pictures(planes, cuts, (r0, y0, y1), parts, painter, seg, states))
        for st in states:
            if bg_moves:
                assert bg_layer is not None
                region = bg_layer.at(max(st.bg, 0)).crop((0, r0, w, r1))
                if vis is not None and not vis_moves and vis_layer is not None:
                    region.paste(vis_layer.at(-1), (vis.rect[0], vis.rect[1] - r0), vis_layer.mask)
            else:
                assert still_under is not None
                region = still_under.copy()
            if vis_moves and vis_layer is not None and vis is not None:
                # unmasked, then the rounded corners put back: a masked paste of the whole panel cost 1 ms
                region.paste(vis_layer.at(st.vis), (vis.rect[0], vis.rect[1] - r0))
                for xy, patch, mask in corners:
                    region.paste(patch, xy, mask)
            if over_y is not None and over_box is not None:
                region.paste(over_y, over_box[:2], over_y)
            if st.cue is not None:
                hl = None if st.word is None else st.word - seg.cues[st.cue].first
                painter.paint(region, st.cue, hl, st.pop, copy=False, dy=y0 - r0)
            if st.bar > 0:
                bx = _compose().bar_box(settings, st.bar)
                region.paste(bar_colour.resize((bx[2] - bx[0], bx[3] - bx[1])), (bx[0], bx[1] - r0))
            fresh = planes420(region)
            yield spliced(planes, cuts, fresh)
    finally:
        for lay in (vis_layer, bg_layer):
            if lay is not None:
                lay.close()


def _fixed_layers(plan: Plan, seg: SegmentPlan, settings: Settings, card: Path, rows: tuple[int, int],
                  bg_moves: bool) -> tuple:  # fmt: skip
    """What stays put in the changing rows, in YCbCr: the backdrop with a still visual (None under a
    moving background), and the scrims and card text over everything, cropped to what they cover (and
    that box). Made here, so the full-frame layers they come from are freed before the pictures start
    (they were 25 MB held through every moving segment's encode)."""
    r0, r1 = rows
    w, vis = settings.width, seg.visual
    layers = Layers(plan, seg, settings, read_look(card))
    try:
        over = layers.over().crop((0, r0, w, r1))
        over_box = over.getchannel("A").getbbox()
        over_y = ycc(over.crop(over_box)) if over_box else None
        if bg_moves:
            return None, over_y, over_box
        base = _compose().backdrop(plan, settings, 0)
        if vis is not None and not vis.moving and layers.vis is not None:
            base.paste(layers.vis.at(-1), vis.rect[:2], layers.vis.mask)
        return ycc(base.crop((0, r0, w, r1))), over_y, over_box
    finally:
        layers.close()


def _revealed_pictures(planes, cuts, rows, parts, painter, seg, states):
    """Pictures of a segment where only a revealed visual's step and the captions change: each step's
    frame made once (its panel composed, as for motion), then per picture only the caption band, as for a
    still. Composing the whole changing region per picture cost a revealed series 12% of its render."""
    r0, y0, y1 = rows
    vis, vis_layer, still_under, corners, over_y, over_box = parts
    band_cuts = row_cuts(still_under.width, y0, y1)
    made: dict[int, tuple] = {}
    for st in states:
        if st.vis not in made:
            region = still_under.copy()
            region.paste(vis_layer.at(st.vis), (vis.rect[0], vis.rect[1] - r0))
            for xy, patch, mask in corners:
                region.paste(patch, xy, mask)
            if over_y is not None and over_box is not None:
                region.paste(over_y, over_box[:2], over_y)
            whole = tuple(b"".join((p[:a], f, p[b:])) for p, (a, b), f in zip(planes, cuts, planes420(region)))
            made[st.vis] = (whole, region.crop((0, y0 - r0, region.width, y1 - r0)))
        whole, band = made[st.vis]
        if st.cue is None:
            yield whole
            continue
        hl = None if st.word is None else st.word - seg.cues[st.cue].first
        yield spliced(whole, band_cuts, planes420(painter.paint(band, st.cue, hl, st.pop)))


def _changing_rows(seg: SegmentPlan, settings: Settings, band: tuple[int, int], bg_moves: bool) -> tuple[int, int]:
    """The rows a moving segment's pictures change [r0, r1): the caption band, a moving visual's panel,
    the progress bar; every row under a moving background."""
    if bg_moves:
        return 0, settings.height
    rows = list(band)
    if seg.visual is not None and seg.visual.moving:
        rows += [seg.visual.rect[1], seg.visual.rect[3]]
    if any(st.bar >= 0 for st in seg.states):
        bx = _compose().bar_box(settings, 0)
        rows += [bx[1], bx[3]]
    return min(rows), max(rows)


def _panel_corners(vis, vis_layer, still_under, r0: int, w: int) -> list:
    """A moving panel's rounded corners, to put back over it: (where, the still picture there, the
    inverse of the panel's mask). Pasting the whole panel through its mask cost 1 ms a picture."""
    if vis is None or vis_layer is None or vis_layer.mask is None or still_under is None:
        return []
    corners = []
    r = round(_compose().PANEL_RADIUS * w / 1080) + 1
    vw, vh = vis_layer.size
    for cx, cy in ((0, 0), (vw - r, 0), (0, vh - r), (vw - r, vh - r)):
        xy = (vis.rect[0] + cx, vis.rect[1] - r0 + cy)
        inverse = vis_layer.mask.crop((cx, cy, cx + r, cy + r)).point(lambda a: 255 - a)
        corners.append((xy, still_under.crop((*xy, xy[0] + r, xy[1] + r)), inverse))
    return corners


def board_tiles(
    card: Path, plan: Plan, seg: SegmentPlan, segment_key: str, settings: Settings, tiles: captions.TileCache, cache: Cache
) -> Path:
    """The segment's storyboard strip (storyboard.moments: its tiles, made by the same composer as its
    frames, with their labels), cached beside its encoded segment: an edit makes only its own again.
    Where the segment's encode passed its pictures by (BoardTap), the strip is made already."""
    from . import storyboard

    path = board_path(cache, segment_key)
    if cache.has(path):
        return path
    states = board_states(plan, seg)
    painter = captions.CaptionPainter(seg, settings, tiles=tiles)
    w, h = settings.width, settings.height
    made = [storyboard.yuv420_to_tile(b"".join(pic), w, h) for pic in pictures(card, seg, settings, painter, states, plan)]
    save_board(path, plan, seg, made, settings, cache)
    return path


def board_path(cache: Cache, segment_key: str) -> Path:
    """Where a segment's storyboard strip is kept: the segment's key covers its pictures; the tiles' size
    is in the suffix."""
    from . import storyboard

    return cache.path("segments", segment_key, f".board{storyboard.TILE_W}x{storyboard.TILE_H}-v2.npz")  # v2: its strip


def board_states(plan: Plan, seg: SegmentPlan) -> list[State]:
    """The states the storyboard shows of a segment (storyboard.moments), in its order."""
    import bisect

    from . import storyboard

    starts = [st.start for st in seg.states]
    return [seg.states[max(0, bisect.bisect_right(starts, f) - 1)] for f, _ in storyboard.moments(plan)[seg.index]]


def save_board(path: Path, plan: Plan, seg: SegmentPlan, made: list, settings: Settings, cache: Cache) -> None:
    import numpy as np

    from . import storyboard

    strip = storyboard.strip(plan, seg.index, made, typeset.font_path(settings, "regular"))
    with cache.writing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, strip=strip)


class BoardTap:
    """The storyboard's tiles taken from the pictures a segment's encode makes anyway (each one it needs,
    scaled down as it passes), instead of composing them all again: that second pass was the largest item
    of a cold render's Python time (Part 4: about 3 CPU-s of 22)."""

    def __init__(self, plan: Plan, seg: SegmentPlan, settings: Settings):
        self.plan, self.seg, self.settings = plan, seg, settings
        self.wanted = board_states(plan, seg)
        self.tiles: dict[int, object] = {}  # a state's start frame -> its tile

    def watch(self, states, pics: Iterator[tuple]) -> Iterator[tuple]:
        """`pics` (the pictures of `states`, in order) passed through, the wanted ones kept as tiles."""
        from . import storyboard

        need = {st.start for st in self.wanted}
        w, h = self.settings.width, self.settings.height
        for st, pic in zip(states, pics):
            if st.start in need and st.start not in self.tiles:
                self.tiles[st.start] = storyboard.yuv420_to_tile(b"".join(pic), w, h)
            yield pic

    def save(self, path: Path, cache: Cache) -> bool:
        """The strip, if every tile it needs passed by (an edit may encode only some runs)."""
        if any(st.start not in self.tiles for st in self.wanted):
            return False
        save_board(path, self.plan, self.seg, [self.tiles[st.start] for st in self.wanted], self.settings, cache)
        return True
