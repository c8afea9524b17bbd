"""Draw the demo visuals for Five ML Concepts Part 4 into assets/part4/, with Pillow and the fonts shipped
in the package: a diagram per concept, and one short clip (Adam's path over a loss surface).

    python assets/make_assets.py

The output is committed (a few hundred kB) under the project's licence (MIT), like the code that
makes it; rerunning it gives the same pictures.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent / "part4"
FONTS = Path(__file__).parent.parent / "src" / "shortgen" / "assets" / "fonts"
W, H = 1332, 900  # 1.5x the panel (888 x 600): crisp after the motion's zoom
BG, GRID, AXIS = (14, 19, 40), (36, 44, 82), (120, 130, 170)
AMBER, TEAL, PINK, WHITE, MUTED = (255, 176, 0), (64, 210, 200), (255, 96, 150), (240, 242, 250), (170, 180, 215)


def font(size: int, weight: str = "Bold") -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / f"Roboto-{weight}.ttf"), size)


def canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (W, H), BG)
    return img, ImageDraw.Draw(img)


def grid(d: ImageDraw.ImageDraw, box: tuple, step: int = 60) -> None:
    x0, y0, x1, y1 = box
    for x in range(x0, x1 + 1, step):
        d.line((x, y0, x, y1), fill=GRID, width=2)
    for y in range(y0, y1 + 1, step):
        d.line((x0, y, x1, y), fill=GRID, width=2)


def activation() -> Image.Image:
    img, d = canvas()
    box = (120, 90, 1240, 700)
    grid(d, box)
    cx, cy, sx, sy = 680, 420, 110, 250  # origin and scale: x in [-5, 5], y in [-1.2, 1.2]
    d.line((box[0], cy, box[2], cy), fill=AXIS, width=4)
    d.line((cx, box[1], cx, box[3]), fill=AXIS, width=4)
    curves = [
        ("ReLU", AMBER, lambda x: max(0.0, x) / 4),
        ("sigmoid", TEAL, lambda x: 1 / (1 + math.exp(-x))),
        ("tanh", PINK, math.tanh),
    ]
    for _, colour, f in curves:
        pts = [(cx + x * sx, cy - max(-1.25, min(1.25, f(x))) * sy) for x in (i / 20 for i in range(-100, 101))]
        d.line(pts, fill=colour, width=12, joint="curve")
    for i, (name, colour, _) in enumerate(curves):
        x = 150 + i * 380
        d.rounded_rectangle((x, 760, x + 56, 800), radius=10, fill=colour)
        d.text((x + 76, 780), name, font=font(56), fill=WHITE, anchor="lm")
    return img


def network(d: ImageDraw.ImageDraw, x0: int, layers: list[int], colours: list, top: int = 120, height: int = 560) -> list:
    cols = []
    for i, n in enumerate(layers):
        x = x0 + i * 150
        ys = [top + height * (k + 0.5) / n for k in range(n)]
        cols.append([(x, y) for y in ys])
    for a, b in zip(cols, cols[1:]):
        for p in a:
            for q in b:
                d.line((p, q), fill=GRID, width=3)
    for i, col in enumerate(cols):
        for x, y in col:
            d.ellipse((x - 26, y - 26, x + 26, y + 26), fill=colours[i], outline=WHITE, width=3)
    return cols


def transfer() -> Image.Image:
    img, d = canvas()
    network(d, 110, [4, 5, 5, 3], [AMBER, AMBER, AMBER, MUTED])
    network(d, 780, [4, 5, 5, 2], [AMBER, AMBER, AMBER, TEAL])
    d.line((600, 400, 720, 400), fill=WHITE, width=10)
    d.polygon([(740, 400), (705, 375), (705, 425)], fill=WHITE)
    d.text((300, 790), "task A", font=font(54), fill=MUTED, anchor="mm")
    d.text((985, 790), "task B", font=font(54), fill=TEAL, anchor="mm")
    d.text((660, 330), "reuse", font=font(44), fill=WHITE, anchor="mm")
    return img


def vlm() -> Image.Image:
    img, d = canvas()
    # a picture (mountains and sun) and a sentence, meeting in one embedding space
    d.rounded_rectangle((80, 110, 480, 410), radius=24, fill=(40, 60, 120))
    d.ellipse((370, 140, 440, 210), fill=AMBER)
    d.polygon([(90, 400), (230, 200), (330, 330), (390, 260), (470, 400)], fill=(70, 150, 130))
    d.rounded_rectangle((80, 500, 480, 780), radius=24, fill=(30, 36, 70), outline=MUTED, width=3)
    for i, line in enumerate(["a sunny", "mountain", "landscape"]):
        d.text((110, 530 + i * 80), line, font=font(56), fill=WHITE)
    d.ellipse((760, 180, 1260, 680), outline=AXIS, width=4)
    d.text((1010, 740), "shared space", font=font(48), fill=MUTED, anchor="mm")
    for p, c in [((930, 420), AMBER), ((990, 450), TEAL), ((1120, 300), PINK), ((880, 580), MUTED)]:
        d.ellipse((p[0] - 22, p[1] - 22, p[0] + 22, p[1] + 22), fill=c)
    for start, c in [((490, 260), AMBER), ((490, 640), TEAL)]:
        d.line((start, (900, 430)), fill=c, width=8)
    return img


def loss(x: float, y: float) -> float:
    return 0.35 * x * x + 2.2 * y * y + 0.4 * math.sin(2 * x)


def contours(d: ImageDraw.ImageDraw) -> None:
    """A long narrow valley: the shape where plain gradient descent zig-zags and Adam goes straight."""
    for level in [0.2, 0.6, 1.2, 2.0, 3.0, 4.2, 5.6, 7.2]:
        pts = []
        for i in range(0, 360, 3):
            a = math.radians(i)
            # the level set of the quadratic part, radius solved for this angle
            r = math.sqrt(level / (0.35 * math.cos(a) ** 2 + 2.2 * math.sin(a) ** 2))
            pts.append(to_px(r * math.cos(a), r * math.sin(a)))
        d.line(pts + pts[:1], fill=(50, 70 + int(level * 14), 130), width=4)


def to_px(x: float, y: float) -> tuple[float, float]:
    return 666 + x * 118, 430 - y * 190


def adam_path(steps: int = 120) -> list[tuple[float, float]]:
    x, m, v = [-4.6, 1.5], [0.0, 0.0], [0.0, 0.0]
    path = []
    for t in range(1, steps + 1):
        path.append((x[0], x[1]))
        g = [0.7 * x[0] + 0.8 * math.cos(2 * x[0]), 4.4 * x[1]]
        for k in range(2):
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
            x[k] -= 0.12 * (m[k] / (1 - 0.9**t)) / (math.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
    return path


def adam_frame(n: int, total: int) -> Image.Image:
    img, d = canvas()
    contours(d)
    path = adam_path()
    k = max(1, round(len(path) * min(1.0, (n + 1) / (total * 0.8))))
    pts = [to_px(*p) for p in path[:k]]
    if len(pts) > 1:
        d.line(pts, fill=AMBER, width=8, joint="curve")
    x, y = pts[-1]
    d.ellipse((x - 20, y - 20, x + 20, y + 20), fill=WHITE, outline=AMBER, width=6)
    d.text((90, 800), "Adam", font=font(60), fill=AMBER, anchor="lm")
    d.text((1240, 800), f"step {k}", font=font(48, "Regular"), fill=MUTED, anchor="rm")
    return img


def superposition() -> Image.Image:
    img, d = canvas()
    cx, cy, r = 666, 430, 330
    d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=GRID, width=4)
    colours = [AMBER, TEAL, PINK, WHITE, MUTED, (130, 200, 90), (150, 120, 255)]
    for i, c in enumerate(colours):  # seven features in two dimensions
        a = 2 * math.pi * i / len(colours) + 0.3
        x, y = cx + r * math.cos(a), cy - r * math.sin(a)
        d.line((cx, cy, x, y), fill=c, width=10)
        d.ellipse((x - 18, y - 18, x + 18, y + 18), fill=c)
    d.text((cx, 840), "7 features, 2 dimensions", font=font(54), fill=WHITE, anchor="mm")
    return img


def clip(out: Path, seconds: int = 5, fps: int = 30) -> None:
    """The Adam clip, encoded small with the ffmpeg shortgen already uses."""
    import imageio_ffmpeg

    total = seconds * fps
    size = (888, 600)
    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryslow",
            "-crf", "30", "-pix_fmt", "yuv420p", "-x264-params", "threads=1", "-movflags", "+faststart", str(out)]  # fmt: skip
    proc = subprocess.Popen(args, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for n in range(total):
        proc.stdin.write(adam_frame(n, total).resize(size, Image.Resampling.LANCZOS).tobytes())
    proc.stdin.close()
    if proc.wait():
        sys.exit("ffmpeg failed")


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for name, make in [
        ("activation-functions", activation),
        ("transfer-learning", transfer),
        ("vision-language", vlm),
        ("superposition", superposition),
    ]:
        make().save(HERE / f"{name}.png", optimize=True)
    clip(HERE / "adam-path.mp4")
    print(f"wrote {len(list(HERE.iterdir()))} files to {HERE}")


if __name__ == "__main__":
    main()
