"""Stage 4, for segments with a picture: the layers of a frame, and the contrast rule.

Bottom to top: the backdrop (the gradient, or the `background:` image or clip), the segment's visual in
its rect (the panel, or full-bleed), the scrims, the card's text, then the captions (captions.CaptionPainter)
and the progress bar. A scrim is laid behind text only where the contrast of the text's colour against
what is actually behind it (every pixel under its ink box, over every sampled moment of moving imagery)
falls short of WCAG's 4.5:1; its opacity is the least that meets the rule, found by bisection.

Moving layers are made here, fast: a still's motion is one Pillow resize per step from a canvas made
once (already converted to the encoder's YCbCr: the conversion is affine, so it commutes with
resampling); a clip's frames come from media.ClipReader, scaled by ffmpeg as they are decoded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import MediaReadError
from ..plan import Plan, SegmentPlan, Visual
from ..settings import Settings
from . import captions, draw, media, typeset

CONTRAST = 4.5  # WCAG 2 AA, for text of any size
SAMPLED_MARGIN = 1.2  # footage is judged on sampled frames: the rule with room for the frames between
PANEL_RADIUS = 28  # the panel's rounded corners, at 1080 wide
SCRIM_PAD = 18  # a scrim reaches this far around the text it is behind
BAR_ROWS = (1488, 1496)  # the progress bar, just under the safe zone (at 1920 high)
CLIP_SAMPLES = 6  # frames of a clip the contrast rule looks at


# ---- contrast -----------------------------------------------------------------------------------


def luminance(rgb: np.ndarray) -> np.ndarray:
    """WCAG relative luminance of sRGB values (0..255), over the last axis."""
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def contrast_ratio(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return (hi + 0.05) / (lo + 0.05)


def worst_contrast(text: tuple, pixels: np.ndarray, scrim: tuple = (0, 0, 0), alpha: float = 0.0) -> float:
    """The lowest contrast between a text colour and any backdrop pixel (N x 3), under a scrim of this
    colour and opacity composited as Pillow composites (in sRGB values, rounded)."""
    if len(pixels) == 0:
        return math.inf
    seen = np.rint(pixels.astype(np.float32) * (1 - alpha) + np.asarray(scrim, np.float32) * alpha)
    return float(contrast_ratio(luminance(np.asarray(text)), luminance(seen)).min())


def scrim_alpha(colours: list[tuple], pixels: np.ndarray, scrim: tuple, target: float) -> float:
    """The least opacity (in 1/255 steps) of a scrim that gives every text colour `target` contrast
    against every pixel; 1.0 if even an opaque scrim cannot (the caller picks the scrim colour)."""
    if len(pixels) == 0 or all(worst_contrast(c, pixels) >= target for c in colours):
        return 0.0
    lo, hi = 0, 255
    while lo < hi:
        mid = (lo + hi) // 2
        if all(worst_contrast(c, pixels, scrim, mid / 255) >= target for c in colours):
            hi = mid
        else:
            lo = mid + 1
    return lo / 255


def scrim_colour(colours: list[tuple], settings: Settings) -> tuple:
    """Dark behind light text, light behind dark: the theme's background or white, whichever gives the
    text the better worst-case contrast."""
    dark = draw._rgb(settings.theme.background)
    lt = [float(luminance(np.asarray(c))) for c in colours]
    ok_dark = min(float(contrast_ratio(x, float(luminance(np.asarray(dark))))) for x in lt)
    ok_light = min(float(contrast_ratio(x, 1.0)) for x in lt)
    return dark if ok_dark >= ok_light else (255, 255, 255)


# ---- visual layers ------------------------------------------------------------------------------


def _size(v: Visual) -> tuple[int, int]:
    return v.rect[2] - v.rect[0], v.rect[3] - v.rect[1]


def canvas_size(v: Visual) -> tuple[int, int]:
    """A still's canvas: its rect, enlarged by the zoom when it moves (the room a motion moves in)."""
    w, h = _size(v)
    z = v.zoom if v.motion != "none" else 1.0
    return max(w, round(w * z)), max(h, round(h * z))


def _fitted(img: Image.Image, size: tuple[int, int], fit: str, fill: tuple) -> Image.Image:
    """`img` scaled to cover `size` (centre-cropped) or to fit inside it, on a blurred cover of itself."""
    w, h = size
    sw, sh = img.size
    cover = max(w / sw, h / sh)
    if fit == "cover":
        # only the centred part that covers the box is scaled (Pillow's resize with a source box): the work
        # and the memory are the box's, whatever the picture's shape (a 4 x 11000 strip scaled whole to
        # cover a panel would be 888 x 2.4 million pixels). Bicubic, with Pillow's reducing gap for big
        # downscales: as sharp as Lanczos at these ratios and a third of its time
        bw, bh = w / cover, h / cover
        x0, y0 = (sw - bw) / 2, (sh - bh) / 2
        return img.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + bw, y0 + bh), reducing_gap=2.0)
    inside = min(w / sw, h / sh)
    fw, fh = max(1, round(sw * inside)), max(1, round(sh * inside))
    small = img.resize((max(1, w // 16), max(1, h // 16)), Image.Resampling.BILINEAR, reducing_gap=2.0)
    back = small.filter(ImageFilter.GaussianBlur(2)).resize((w, h), Image.Resampling.BILINEAR)
    back = Image.blend(back, Image.new("RGB", (w, h), fill), 0.45)  # calmer than the picture itself
    back.paste(img.resize((fw, fh), Image.Resampling.LANCZOS, reducing_gap=3.0), ((w - fw) // 2, (h - fh) // 2))
    return back


@lru_cache(maxsize=2)
def still_canvas(v: Visual, fill: tuple) -> Image.Image:
    """A still, decoded, oriented, fitted to its canvas, in RGB (cached: it serves every step). Two: a
    card's and its encode's; eight held every picture of an episode through its render (Part 4: four
    canvases, 20 MB), for no hit (Part 4 cold: four misses either way)."""
    from PIL import ImageOps

    with Image.open(v.file) as im:
        im = ImageOps.exif_transpose(im)
        rgb = _flatten(im, fill)
    return _fitted(rgb, canvas_size(v), v.fit, fill)


def _flatten(im: Image.Image, fill: tuple) -> Image.Image:
    """Any mode to RGB; transparency over the theme's background colour; 16-bit and float greys scaled to
    8 bits (Pillow's own conversion clips them: a 16-bit PNG showed white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0 if a.max(initial=0) <= 1 else 255.0
        im = Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, fill)
        out.paste(rgba, (0, 0), rgba)
        return out
    return im.convert("RGB")


def motion_box(v: Visual, offset: int, frames: int) -> tuple[float, float, float, float]:
    """The part of the canvas shown `offset` frames into a segment of `frames`: a linear zoom or pan
    over the whole segment (constant speed: no step is bigger than the planned one)."""
    cw, ch = canvas_size(v)
    w, h = _size(v)
    t = min(max(offset / max(frames - 1, 1), 0.0), 1.0)
    if v.motion in ("zoom-in", "zoom-out"):
        z = 1 + (v.zoom - 1) * (t if v.motion == "zoom-in" else 1 - t)  # 1: the whole canvas
        bw, bh = cw / z, ch / z
        return (cw - bw) / 2, (ch - bh) / 2, (cw + bw) / 2, (ch + bh) / 2
    x = (cw - w) * (t if v.motion == "pan-right" else 1 - t if v.motion == "pan-left" else 0.5)
    y = (ch - h) * (t if v.motion == "pan-down" else 1 - t if v.motion == "pan-up" else 0.5)
    return x, y, x + w, y + h


def rounded_mask(size: tuple[int, int], radius: int) -> Image.Image:
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).rounded_rectangle((0, 0, size[0] - 1, size[1] - 1), radius=radius, fill=255)
    return m


class VisualLayer:
    """A visual's picture in its rect at any of its samples (a State's `vis` or `bg`), mapped into the
    encoder's colour space by `tile_map` (frames.ycc) once, on the canvas, not per frame."""

    def __init__(self, v: Visual, frames: int, settings: Settings, tile_map=None):
        self.v, self.frames, self.size, self.fps = v, frames, _size(v), settings.fps
        self.fill = draw._rgb(settings.theme.background)
        self.map = tile_map or (lambda im: im)
        self._canvas = self.map(still_canvas(v, self.fill)) if v.kind == "still" else None
        self._array: np.ndarray | None = None
        self._steps: dict[int, Image.Image] = {}
        self._reader: media.ClipReader | None = None
        self._clip_size: tuple[int, int] | None = None
        r = round(PANEL_RADIUS * settings.width / 1080)
        self.mask = rounded_mask(self.size, r) if v.rect[:2] != (0, 0) or self.size != (settings.width, settings.height) else None

    def at(self, sample: int) -> Image.Image:
        try:
            return self._at(sample)
        except (media.MediaError, OSError, ValueError, SyntaxError, EOFError) as e:
            where = self.v.source or self.v.file
            raise MediaReadError(f"{where}: {Path(self.v.file).name}: {str(e).strip() or 'it could not be read'}") from None

    def _at(self, sample: int) -> Image.Image:
        v = self.v
        if v.kind == "still":
            assert self._canvas is not None
            if v.reveal > 1 and 0 <= sample < v.reveal - 1:
                return self._revealed(sample)
            if v.motion == "none" or sample < 0:
                return self._canvas if v.motion == "none" else self._step(0)
            return self._step(sample)
        return self.map(self._clip_frame(max(sample, 0)))

    def _revealed(self, k: int) -> Image.Image:
        """Step k of a revealed visual (its last step is the whole picture, the canvas)."""
        from .generated import step_path

        if k not in self._steps:
            self._steps[k] = self.map(still_canvas(dataclasses.replace(self.v, file=str(step_path(self.v.file, k))), self.fill))
        return self._steps[k]

    def _step(self, offset: int) -> Image.Image:
        """One motion step: the canvas's moving box, resampled to the rect by OpenCV's bilinear warp
        (1.4 ms for the panel, against 8.6 ms for Pillow's resize with a box: measured, and a moving
        still makes a picture every few frames)."""
        import cv2

        assert self._canvas is not None
        if self._array is None:
            cv2.setNumThreads(1)  # x264 has the other cores
            self._array = np.asarray(self._canvas)
        x0, y0, x1, y1 = motion_box(self.v, offset, self.frames)
        w, h = self.size
        sx, sy = (x1 - x0) / w, (y1 - y0) / h
        # output pixel centre (x + 0.5) samples the canvas at x0 + (x + 0.5) * sx, in pixel-centre terms
        m = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]], np.float64)
        out = cv2.warpAffine(
            self._array, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )
        return Image.fromarray(out)  # 3 bands of uint8: RGB, or YCbCr carried as RGB (see frames.ycc)

    def _clip_frame(self, k: int) -> Image.Image:
        v, (w, h) = self.v, self.size
        if self._reader is None:
            m = media.Media(v.file, v.digest, "clip", v.width, v.height, _fps(v), v.frames)
            scale = max(w / v.width, h / v.height) if v.fit == "cover" else min(w / v.width, h / v.height)
            cw, ch = max(2, 2 * math.ceil(v.width * scale / 2)), max(2, 2 * math.ceil(v.height * scale / 2))
            if v.fit == "cover":
                cw, ch = max(cw, w), max(ch, h)
            self._clip_size = (cw, ch)
            self._reader = media.ClipReader(m, (cw, ch))
        frame = self._reader.frame(k)
        assert self._clip_size is not None
        cw, ch = self._clip_size
        if v.fit == "cover":
            x, y = (cw - w) // 2, (ch - h) // 2
            return frame.crop((x, y, x + w, y + h))
        out = Image.new("RGB", (w, h), self.fill)
        out.paste(frame, ((w - cw) // 2, (h - ch) // 2))
        return out

    def samples(self) -> list[int]:
        """The moments the contrast rule looks at: a still's motion from end to end, a clip's frames
        spread over what the segment shows."""
        v = self.v
        if v.kind == "still":
            return [-1] if v.motion == "none" else [round(self.frames * i / 4) for i in range(5)]
        from ..plan import clip_frame

        return sorted({clip_frame(v, round(self.frames * i / (CLIP_SAMPLES - 1)), self.fps) for i in range(CLIP_SAMPLES)})

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _fps(v: Visual):
    from fractions import Fraction

    return Fraction(v.fps_num, v.fps_den) if v.fps_num else Fraction(0)


# ---- a segment's look ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrim:
    box: tuple[int, int, int, int]
    colour: tuple
    alpha: float  # 0..1
    what: str  # "card" | "caption"


@dataclass(frozen=True)
class Look:
    """What a segment with a picture looks like beyond its layers: the scrims, and the contrast its
    text gets (the worst over all sampled moments, after the scrims): the manifest reports it."""

    scrims: tuple[Scrim, ...]
    contrast: dict  # "card" | "caption" -> the worst contrast ratio of that text, or None if not over imagery


def has_imagery(seg: SegmentPlan, plan: Plan) -> bool:
    return seg.visual is not None or plan.background is not None


def backdrop(plan: Plan, settings: Settings, bg_sample: int = 0, layer: VisualLayer | None = None) -> Image.Image:
    """The frame under everything: the gradient (with its brand stripe), or the background picture."""
    if plan.background is None:
        t = settings.theme
        return draw._background(settings.width, settings.height, t.background, t.background2, t.accent)
    bg = layer or VisualLayer(plan.background, plan.total_frames, settings)
    try:
        return bg.at(bg_sample).copy()
    finally:
        if layer is None:
            bg.close()


def caption_ink(seg: SegmentPlan, settings: Settings) -> list[tuple[int, int, int, int]]:
    """The ink box of every caption word of the segment, in frame pixels."""
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    out = []
    for cue in seg.cues:
        layout = captions.layout_caption(cue.text, settings, f"{seg.source}: {seg.name!r}")
        f = typeset._font(typeset.font_path(settings, "bold"), layout.size)
        for w, x, y, _ in layout.words:
            b = typeset.draw_runs(None, (x, y), w, f, None, "la", captions.CAPTION_STROKE, measure=probe)
            if settings.caption_style == "box":
                b = captions._pill(b)
            out.append(b)
    return out


def _union(boxes: list, pad: int, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0 = min(b[0] for b in boxes) - pad, min(b[1] for b in boxes) - pad
    x1, y1 = max(b[2] for b in boxes) + pad, max(b[3] for b in boxes) + pad
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _pixels(images: list[Image.Image], boxes: list, keep: int = 4096) -> np.ndarray:
    """The backdrop pixels under any of these boxes, in every sample: the brightest and the darkest
    `keep` of them. Compositing a scrim is monotonic in each channel, so the worst case for the contrast
    rule lies among the extremes (tests/test_visuals.py checks it against the full set)."""
    return _extremes([under_boxes(im, boxes) for im in images], keep)


def under_boxes(image: Image.Image, boxes: list) -> np.ndarray:
    """The pixels of `image` under any of these boxes, (n, 3) RGB, row by row within their bounds."""
    if not boxes:
        return np.zeros((0, 3), np.uint8)
    w, h = image.size
    x0, y0 = max(0, min(b[0] for b in boxes)), max(0, min(b[1] for b in boxes))
    x1, y1 = min(w, max(b[2] for b in boxes)), min(h, max(b[3] for b in boxes))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 3), np.uint8)
    mask = np.zeros((y1 - y0, x1 - x0), bool)  # within the boxes' bounds only
    for b in boxes:
        mask[max(b[1] - y0, 0) : max(b[3] - y0, 0), max(b[0] - x0, 0) : max(b[2] - x0, 0)] = True
    return np.asarray(image.crop((x0, y0, x1, y1)).convert("RGB"))[mask]


def _extremes(parts: list[np.ndarray], keep: int = 4096) -> np.ndarray:
    """Of these pixels, the brightest and the darkest `keep` (all, where there are few)."""
    px = np.concatenate(parts) if parts else np.zeros((0, 3), np.uint8)
    if len(px) <= 2 * keep:
        return px
    lum = px.astype(np.uint32) @ np.array([54, 183, 19], np.uint32)  # Rec. 709 weights in 1/256: an order only
    idx = np.argpartition(lum, (keep, len(lum) - keep))
    return px[np.concatenate([idx[:keep], idx[-keep:]])]


def look_groups(seg: SegmentPlan, plan: Plan, settings: Settings, text_boxes: list) -> list[tuple[str, list, list]]:
    """What over imagery needs a contrast look: (what, its boxes, its text colours), for the card's text
    (over a background, or a full-bleed visual) and the captions (over the visual or a background)."""
    t = settings.theme
    over = [b for b in text_boxes if b.what != "badge" and _over_imagery(seg, plan, (b.x0, b.y0, b.x1, b.y1))]
    groups = []
    if over:
        groups.append(("card", [(b.x0, b.y0, b.x1, b.y1) for b in over], sorted({b.fill for b in over if b.fill})))
    ink = [b for b in caption_ink(seg, settings) if _over_imagery(seg, plan, b)]
    if ink:
        colours = [draw._rgb(t.caption)] + ([] if settings.caption_style == "box" else [draw._rgb(t.highlight)])
        groups.append(("caption", ink, colours))
    return groups


def make_look(
    seg: SegmentPlan, plan: Plan, settings: Settings, text_boxes: list, samples: Iterable[Image.Image], sampled: bool
) -> Look:
    """Scrims for the segment's text over imagery (look_groups). `samples` are the frames under the text
    (backdrop and visual, no text) at the moments that matter, taken one at a time (only the pixels under
    the text are kept of each: six full frames of a clip held together were 37 MB); `sampled` says they
    are a sample of footage, not every moment, and asks for the margin."""
    w, h = settings.width, settings.height
    target = CONTRAST * (SAMPLED_MARGIN if sampled else 1.0)
    groups = look_groups(seg, plan, settings, text_boxes)
    under: list[list[np.ndarray]] = [[] for _ in groups]
    for im in samples:  # all drawn, as before, even with no text over imagery: a clip that fails, fails here
        for got, (_, boxes, _) in zip(under, groups):
            got.append(under_boxes(im, boxes))
        del im  # freed before the next is made (a full frame)
    scrims: list[Scrim] = []
    report: dict[str, float | None] = {"card": None, "caption": None}
    for (what, boxes, colours), got in zip(groups, under):
        pixels = _extremes(got)
        colour = scrim_colour(colours, settings)
        a = scrim_alpha(colours, pixels, colour, target)
        if a > 0:
            scrims.append(Scrim(_union(boxes, SCRIM_PAD, w, h), colour, a, what))
        report[what] = round(min(worst_contrast(c, pixels, colour, a) for c in colours), 2)
    return Look(tuple(scrims), report)


def _over_imagery(seg: SegmentPlan, plan: Plan, box: tuple) -> bool:
    if plan.background is not None:
        return True
    if seg.visual is None:
        return False
    r = seg.visual.rect
    return box[0] < r[2] and r[0] < box[2] and box[1] < r[3] and r[1] < box[3]


def scrim_layer(look: Look, size: tuple[int, int]) -> Image.Image | None:
    """The scrims as one RGBA layer (None if there are none)."""
    if not look.scrims:
        return None
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for s in look.scrims:
        d.rounded_rectangle(s.box, radius=24, fill=(*s.colour, round(s.alpha * 255)))
    return layer


def bar_box(settings: Settings, length: int) -> tuple[int, int, int, int]:
    x0, _, x1, _ = draw.safe_zone(settings.width, settings.height)
    sy = settings.height / 1920
    return x0, 2 * round(BAR_ROWS[0] * sy / 2), x0 + length, 2 * round(BAR_ROWS[1] * sy / 2)
