"""The storyboard: a contact sheet of the episode, a row per segment of small tiles (the card, then
each caption cue at its midpoint), each with its time and caption. The tiles are taken from the pictures
as they are encoded (frames.BoardTap); this draws them into strips and the sheet."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..plan import Plan
from .typeset import _font, draw_runs

TILE_W, TILE_H = 135, 240  # an eighth of the frame
LABEL_H, GAP, HEAD_W = 34, 8, 220


def moments(plan: Plan) -> list[list[tuple[int, str]]]:
    """Per segment, the frames the storyboard shows: the card before its first caption (or its first
    frame), then each caption cue at its midpoint."""
    rows = []
    for seg in plan.segments:
        first = seg.cues[0].start if seg.cues else seg.end
        row = [((seg.start + first) // 2 if first > seg.start else seg.start, "card")]
        row += [((c.start + c.end) // 2, c.text) for c in seg.cues]
        rows.append(row)
    return rows


def yuv420_to_tile(frame: bytes, w: int, h: int) -> np.ndarray:
    """A yuv420p BT.709 tv-range frame as an RGB tile of TILE_W x TILE_H. Each plane is averaged down
    by Pillow's box filter (OpenCV would do the same, but importing it costs a render that has no moving
    picture about 60 MB)."""
    y = Image.frombuffer("L", (w, h), frame, "raw", "L", 0, 1)
    cb = Image.frombuffer("L", (w // 2, h // 2), frame[w * h :], "raw", "L", 0, 1)
    cr = Image.frombuffer("L", (w // 2, h // 2), frame[w * h + w * h // 4 :], "raw", "L", 0, 1)
    size = (TILE_W, TILE_H)

    def down(p: Image.Image) -> Image.Image:  # a whole factor (1080x1920: 8, and 4 for chroma) reduces, 3x faster
        f = p.width // TILE_W
        return p.reduce(f) if p.size == (TILE_W * f, TILE_H * f) else p.resize(size, Image.Resampling.BOX)

    yf, u, v = (np.asarray(down(p), np.float32) for p in (y, cb, cr))
    yy, u, v = 1.164384 * (yf - 16), u - 128, v - 128
    rgb = np.stack([yy + 1.792741 * v, yy - 0.213249 * u - 0.532909 * v, yy + 2.112402 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


BACKGROUND = (18, 18, 24)


def strip(plan: Plan, index: int, tiles: list[np.ndarray], regular) -> np.ndarray:
    """A segment's strip of the storyboard: its tiles, each with its time into the segment and its
    caption under it. It depends on the segment alone, so it is cached beside the segment's tiles (an edit
    draws its own segment's again, and only the rows' headers, which carry the episode's times).
    `regular`: the theme's font spec (typeset.font_path), so a caption's emoji or script draws as in the video."""
    seg, row = plan.segments[index], moments(plan)[index]
    img = Image.new("RGB", (len(row) * (TILE_W + GAP), TILE_H + LABEL_H), BACKGROUND)
    d = ImageDraw.Draw(img)
    small = _font(regular, 12)
    for i, ((frame, text), tile) in enumerate(zip(row, tiles)):
        x = i * (TILE_W + GAP)
        img.paste(Image.fromarray(tile), (x, 0))
        draw_runs(d, (x, TILE_H + 3), f"+{(frame - seg.start) / plan.fps:.2f} s", small, (200, 200, 200))
        draw_runs(d, (x, TILE_H + 17), _clip(text, small, TILE_W), small, (150, 150, 160))
    return np.asarray(img)


def contact_sheet(plan: Plan, strips: list[np.ndarray], bold) -> Image.Image:
    """The storyboard: a row per segment, its name and span in the episode at the left, then its strip."""
    cols = max(len(r) for r in moments(plan))
    width = HEAD_W + cols * (TILE_W + GAP) + GAP
    height = GAP + len(strips) * (TILE_H + LABEL_H + GAP) + 40
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(sheet)
    head = _font(bold, 18)
    fps = plan.fps
    name = plan.title if plan.series in plan.title else f"{plan.series}: {plan.title or f'Part {plan.part}'}"
    draw_runs(d, (GAP, 10), f"{name}  ({plan.total_frames / fps:.1f} s, {plan.total_frames} frames)", head, (240, 240, 240))
    y = 40
    for seg, row in zip(plan.segments, strips):
        label = f"{seg.number}. {seg.name}" if seg.number else seg.kind
        for i, line in enumerate([*_wrap(label, 18), f"{seg.start / fps:.2f}-{seg.end / fps:.2f} s"]):
            draw_runs(d, (GAP, y + i * 24), line, head, (255, 210, 63))
        sheet.paste(Image.fromarray(row), (HEAD_W, y))
        y += TILE_H + LABEL_H + GAP
    return sheet


def _wrap(text: str, n: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > n:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return [*lines, cur][:3]


def _clip(text: str, font, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "\u2026") > width:
        text = text[:-1]
    return text + "\u2026"
