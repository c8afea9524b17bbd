"""Pictures as the encoder takes them: raw yuv420p, BT.709 tv range, made by us.

Converting a full RGB frame in ffmpeg costs about as much CPU as x264's own work on a still, while only
the caption band changes from one picture to the next. So a segment's card is converted once and cached
as its yuv420p planes plus its caption band in full-resolution YCbCr (the painter's canvas); each
picture is then, plane by plane, the card's rows above the band (a shared view), the band with the cue
painted (in YCbCr: the painter's tiles are converted once), and the rows below.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from . import draw
from .cache import Cache, Stats
from .errors import EncodeError
from .plan import Plan, SegmentPlan, State
from .settings import Settings


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


def card_layout(settings: Settings) -> tuple[list[int], int, int]:
    """Where a cached card's parts end: Y, Cb, Cr planes, then the caption band in YCbCr; and the band's rows."""
    _, y0, _, y1 = draw.caption_origin(settings)  # even rows
    w, h = settings.width, settings.height
    return list(itertools.accumulate((w * h, w * h // 4, w * h // 4, w * (y1 - y0) * 3))), y0, y1


def ensure_card(plan: Plan, seg: SegmentPlan, key: str, settings: Settings, cache: Cache, stats: Stats) -> Path:
    """Make sure the segment's card is cached as the encoder takes it. Raw, not PNG: a card takes ~10 ms
    to draw and ~15 ms to convert, while writing and reading back a PNG took ~35 ms (measured)."""
    ends, y0, y1 = card_layout(settings)
    path = cache.path("frames", key, ".yuv")
    if cache.has(path) and path.stat().st_size == ends[-1]:
        stats.hits["frames"] += 1
    else:
        base = ycc(draw.draw_card(seg, plan, settings).painted())
        with cache.writing(path) as tmp:
            tmp.write_bytes(b"".join((*planes420(base), base.crop((0, y0, settings.width, y1)).tobytes())))
        stats.draws += 1
    return path


def load_card(path: Path, settings: Settings) -> tuple:
    """A cached card, read when its segment is encoded (so only one is held at a time)."""
    ends, y0, y1 = card_layout(settings)
    mv = memoryview(path.read_bytes())
    if len(mv) != ends[-1]:
        raise EncodeError(f"{path}: a card of {len(mv)} bytes, expected {ends[-1]}")
    planes = tuple(mv[a:b] for a, b in zip([0] + ends[:2], ends[:3]))
    return planes, Image.frombytes("RGB", (settings.width, y1 - y0), bytes(mv[ends[2] :]))


def pictures(
    card: Path, seg: SegmentPlan, settings: Settings, painter: draw.CaptionPainter, states: list[State] | tuple[State, ...]
) -> Iterator[tuple]:
    """Raw yuv420p pictures of these states of a segment, each as pieces that concatenate to a frame."""
    planes, band = load_card(card, settings)
    w = settings.width
    _, y0, _, y1 = draw.caption_origin(settings)
    # where the band starts and ends in each plane: Y has w bytes a row, Cb and Cr w/2 bytes every 2 rows
    cuts = [(y0 * w, y1 * w), (y0 * w // 4, y1 * w // 4), (y0 * w // 4, y1 * w // 4)]
    for st in states:
        if st.cue is None:
            yield planes
            continue
        hl = None if st.word is None else st.word - seg.cues[st.cue].first
        fresh = planes420(painter.paint(band, st.cue, hl))
        yield tuple(part for p, (a, b), f in zip(planes, cuts, fresh) for part in (p[:a], f, p[b:]))
