"""Visuals generated from the script itself: an equation (TeX math, typeset by matplotlib's mathtext, no
TeX installation), a plot of functions of x, a code snippet highlighted by Pygments, and a diagram of
labelled boxes in layers. Each is drawn once into a PNG named by a hash of what it shows and the theme
(cache_dir/visuals/), in the theme's colours, and then is a picture like any other: it fits the panel,
moves gently and is held to the contrast rule. matplotlib loads only when one is drawn, so a render with
nothing new to draw (a no-op) finds the file and imports nothing."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .typeset import _coverage

GEN_VERSION = 2  # bump when a generated picture's look changes: it names the file
W, H = 1800, 600  # 3:1, the band above the captions (888 x 200 to 300 at 1080x1920), drawn twice its size
KINDS = ("equation", "plot", "code", "diagram")
CODE_LINES, CODE_COLUMNS = 6, 46  # the most that stays legible in the band
REVEAL_PLOT = 5  # a revealed plot is drawn on in this many stretches of x


FOLDER = "visuals"  # under the cache: cache_dir/visuals/KIND-HASH.png


def kind_of(path: str | Path, cache_dir: str | Path) -> str | None:
    """The kind of a generated visual's file ("equation", ...), or None for a file the script names."""
    path = Path(path)
    return path.name.split("-")[0] if path.parent == Path(cache_dir) / FOLDER else None


class GenerateError(ValueError):
    """What cannot be drawn, in the creator's terms (the loader adds file:line:col and the field)."""


def generated(kind: str, spec, theme, fonts_dir: Path, cache_dir: Path, reveal: bool = False) -> Path:
    """The PNG of a generated visual, drawn now unless it is cached; revealed, the whole of it is the last
    step and the steps before it lie beside it (`step_path`). Raises GenerateError."""
    colours = {k: getattr(theme, k) for k in ("background", "background2", "accent", "text", "muted", "highlight")}
    font = str(Path(fonts_dir) / theme.font_bold)
    key = hashlib.sha256(json.dumps([GEN_VERSION, kind, spec, colours, font, reveal], sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir) / FOLDER / f"{kind}-{key}.png"
    if path.is_file():
        return path
    draw: dict[str, Callable[..., list[Image.Image]]] = {"equation": _equation, "plot": _plot, "code": _code, "diagram": _diagram}
    n = reveal_steps(kind, spec) if reveal else 1
    try:
        images = draw[kind](spec, colours, font, n)
    except GenerateError:
        raise
    except (ValueError, RuntimeError, OverflowError, MemoryError) as e:  # what the parse let through, met drawing
        raise GenerateError(f"cannot draw it: {' '.join(str(e).split())[:160]}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    # the whole picture last: its file standing means every step's does
    for k, image in [*enumerate(images[:-1]), (n - 1, images[-1])]:
        out = step_path(path, k) if k < n - 1 else path
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        image.save(tmp, "PNG")
        os.replace(tmp, out)  # whole or not at all: a render killed here leaves no half a picture
    return path


def step_path(path: str | Path, k: int) -> Path:
    """Step k's picture of a revealed visual whose whole picture is `path` (the last step is `path`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{k}.png")


def reveal_steps(kind: str, spec) -> int:
    """How many steps a revealed visual shows: an equation's terms, a plot's REVEAL_PLOT stretches of x,
    a code snippet's lines (each highlighted in turn), a diagram's layers. Known without drawing."""
    if kind == "equation":
        return len(equation_terms(spec))
    if kind == "code":
        return max(1, min(CODE_LINES, len(spec["code"].expandtabs(4).rstrip("\n").split("\n"))))
    if kind == "diagram":
        return len(spec)
    return REVEAL_PLOT


# a term starts at one of these at the top level of the formula (not inside braces)
_TERM_OPS = ("=", "+", "-", "\\approx", "\\leq", "\\geq", "\\neq", "\\to", "\\cdot", "\\times", "<", ">")


def _op_at(tex: str, i: int) -> str | None:
    """The operator starting at tex[i], if any (a command only as a whole word: \\to, not \\top)."""
    for o in _TERM_OPS:
        if tex.startswith(o, i) and not (o[0] == "\\" and tex[i + len(o) : i + len(o) + 1].isalpha()):
            return o
    return None


def equation_terms(tex: str) -> list[str]:
    """The formula's prefixes, one per term: "a = b + c" -> ["a", "a = b", "a = b + c"]."""
    tex = tex.strip().strip("$")
    cuts, depth, i = [], 0, 0
    while i < len(tex):
        ch = tex[i]
        if ch == "\\" and i + 1 < len(tex) and not tex[i + 1].isalpha():
            i += 2  # an escaped character: \{ \, \!
            continue
        depth += ch in "{(["
        depth -= ch in "})]"
        op = _op_at(tex, i) if depth == 0 and i > 0 else None
        if op is not None and tex[:i].strip() and tex[:i].rstrip()[-1] not in "=+-<>({[^_":  # not a sign
            cuts.append(i)
            i += len(op)
            continue
        i += 1
    return [tex[:c].rstrip() for c in cuts if tex[:c].strip()] + [tex]


def _figure(colours: dict):
    """A matplotlib figure of W x H pixels on the theme's background, drawn by Agg (no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(W / 100, H / 100), dpi=100, facecolor=colours["background"])
    FigureCanvasAgg(fig)
    return fig


def _image(fig) -> Image.Image:
    fig.canvas.draw()
    return Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")


# ---- equation -----------------------------------------------------------------------------------


def _equation(tex: str, colours: dict, font: str, n: int = 1) -> list[Image.Image]:
    """The formula centred, as large as fits 90% of the width and 70% of the height; in n steps, step k
    shows its first k + 1 terms where the whole formula puts them (the rest painted over: typeset once)."""
    from matplotlib.mathtext import MathTextParser

    math = f"${tex.strip().strip('$')}$"
    try:
        MathTextParser("path").parse(math)
    except ValueError as e:
        reason = " ".join(str(e).split())
        raise GenerateError(f"cannot typeset this TeX: {reason[:160]}") from None
    fig = _figure(colours)
    size = 90.0
    text = fig.text(0.5, 0.5, math, color=colours["text"], fontsize=size, ha="center", va="center")
    renderer = fig.canvas.get_renderer()
    box = text.get_window_extent(renderer)
    text.set_fontsize(size * min(2.0, 0.9 * W / max(box.width, 1), 0.6 * H / max(box.height, 1)))
    image = _image(fig)
    whole = text.get_window_extent(renderer)
    steps = []
    for prefix in equation_terms(tex)[: n - 1]:
        text.set_text(f"${prefix}$")
        step = image.copy()
        ImageDraw.Draw(step).rectangle((round(whole.x0 + text.get_window_extent(renderer).width) + 6, 0, W, H),
                                       fill=colours["background"])  # fmt: skip
        steps.append(step)
    return [*steps, image]


# ---- plot ---------------------------------------------------------------------------------------

FUNCTIONS: dict[str, Callable] = {
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
    "softplus": lambda v: np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0.0),
    "gelu": lambda v: 0.5 * v * (1 + np.tanh(0.7978845608 * (v + 0.044715 * v**3))),
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sin": np.sin,
    "cos": np.cos,
}
CONSTANTS = {"pi": np.pi, "e": np.e}
_OPS: dict[type, Callable] = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide, ast.Pow: np.power}


def evaluate(formula: str, x: np.ndarray) -> np.ndarray:
    """A formula in x (numbers, + - * / **, the FUNCTIONS, pi and e), at each x. Raises GenerateError."""
    try:
        tree = ast.parse(formula.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise GenerateError(f"{formula!r} is not a formula in x (write it as in Python: 2*x**2 - 1)") from None

    def value(n: ast.AST):
        if isinstance(n, ast.Expression):
            return value(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
            return float(n.value)
        if isinstance(n, ast.Name):
            if n.id == "x":
                return x
            if n.id in CONSTANTS:
                return CONSTANTS[n.id]
            raise GenerateError(f"unknown name {n.id!r} in {formula!r}: a formula is in x alone")
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](value(n.left), value(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            return -value(n.operand) if isinstance(n.op, ast.USub) else value(n.operand)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and len(n.args) == 1 and not n.keywords:
            if n.func.id not in FUNCTIONS:
                raise GenerateError(f"unknown function {n.func.id!r} in {formula!r} (known: {', '.join(FUNCTIONS)})")
            return FUNCTIONS[n.func.id](value(n.args[0]))
        raise GenerateError(f"{formula!r}: only numbers, x, + - * / ** and the known functions may be used")

    with np.errstate(all="ignore"):
        y = np.broadcast_to(np.asarray(value(tree), dtype=np.float64), x.shape).copy()
    y[~np.isfinite(y)] = np.nan
    if np.isnan(y).all():
        raise GenerateError(f"{formula!r} is undefined everywhere on [{x[0]:g}, {x[-1]:g}]")
    return y


def _plot(spec: dict, colours: dict, font: str, n: int = 1) -> list[Image.Image]:
    """Each function of x as a thick line in the theme's colours, on muted axes, with a legend. In n steps,
    step k draws the lines over the first (k + 1) / n of x: the plot drawn twice, with its lines and
    without, and each step the first left of its x and the second right of it."""
    lo, hi = spec.get("x") or (-4.0, 4.0)
    if not lo < hi:
        raise GenerateError(f"x: [{lo:g}, {hi:g}] is empty: the first value must be below the second")
    labels = list(spec.get("labels") or [])
    x = np.linspace(lo, hi, 800)
    curves = [evaluate(f, x) for f in spec["y"]]
    fig = _figure(colours)
    ax = fig.add_axes((0.07, 0.16, 0.9, 0.78), facecolor=colours["background"])
    palette = [colours["accent"], colours["text"], colours["muted"], colours["highlight"]]
    lines = []
    for i, (formula, y) in enumerate(zip(spec["y"], curves)):
        label = labels[i] if i < len(labels) else formula
        lines += ax.plot(x, y, color=palette[i % len(palette)], linewidth=9, label=label)
    ax.axhline(0, color=colours["muted"], linewidth=1.5, alpha=0.6)
    ax.axvline(0, color=colours["muted"], linewidth=1.5, alpha=0.6) if lo < 0 < hi else None
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(colours["muted"])
        ax.spines[side].set_linewidth(2)
    ax.tick_params(colors=colours["muted"], labelsize=40, width=3, length=10)
    ax.set_xlim(lo, hi)
    legend = ax.legend(fontsize=46, frameon=False, loc="best", handlelength=1.2)
    for t in legend.get_texts():
        t.set_color(colours["text"])
    whole = _image(fig)
    if n == 1:
        return [whole]
    for line in lines:
        line.set_visible(False)
    bare = _image(fig)
    full, empty = np.asarray(whole), np.asarray(bare)
    steps = []
    for k in range(n - 1):
        upto = lo + (hi - lo) * (k + 1) / n
        px = int(ax.transData.transform((upto, 0))[0])  # the pixel column of x = upto (the image's x runs the same way)
        step = empty.copy()
        step[:, :px] = full[:, :px]
        steps.append(Image.fromarray(step))
    return [*steps, whole]


# ---- code ---------------------------------------------------------------------------------------


def _mono() -> str:
    """DejaVu Sans Mono, as matplotlib ships it (OFL-like licence: see its mpl-data)."""
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf")


def _code(spec: dict, colours: dict, font: str, n: int = 1) -> list[Image.Image]:
    """The snippet; in n steps (one per line), step k with line k lit."""
    return [_code_lit(spec, colours, (k, n)) for k in range(n)]


def _code_lit(spec: dict, colours: dict, lit: tuple[int, int]) -> Image.Image:
    """The snippet in a monospace font, coloured by Pygments' token types in the theme's colours, as large
    as fits, at most CODE_LINES lines of CODE_COLUMNS characters. Revealed (n > 1), step k lights line k."""
    from pygments.lexers import get_lexer_by_name
    from pygments.token import Comment, Keyword, Name, Number, Operator, String
    from pygments.util import ClassNotFound

    code = spec["code"].expandtabs(4).rstrip("\n")
    lines = code.split("\n")
    if len(lines) > CODE_LINES:
        raise GenerateError(f"{len(lines)} lines: at most {CODE_LINES} stay legible in the panel; show the heart of it")
    widest = max(len(ln) for ln in lines)
    if widest > CODE_COLUMNS:
        raise GenerateError(f"a line of {widest} characters: at most {CODE_COLUMNS} stay legible in the panel")
    try:
        lexer = get_lexer_by_name(spec.get("language") or "python")
    except ClassNotFound:
        raise GenerateError(f"unknown language {spec.get('language')!r} (Pygments' names: python, js, bash, sql ...)") from None
    mono = _mono()
    missing = sorted({ch for ch in code if not ch.isspace() and ord(ch) not in _coverage(mono)})
    if missing:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in missing[:3])
        raise GenerateError(f"the code font has no {shown}: it would draw a box; write it without")
    size = int(min(84, 0.9 * W / (0.6 * max(widest, 16)), 0.85 * H / (1.3 * max(len(lines), 3))))
    face = ImageFont.truetype(mono, size)
    img = Image.new("RGB", (W, H), colours["background"])
    d = ImageDraw.Draw(img)
    step = round(size * 1.3)
    x0 = (W - face.getlength("M" * widest)) // 2
    y = (H - step * len(lines)) // 2
    if lit[1] > 1:  # the line being spoken: a band of the card's second colour, an accent mark before it
        top = y + step * lit[0] - round(size * 0.15)
        d.rounded_rectangle((x0 - 40, top, W - x0 + 40, top + step), radius=14, fill=colours["background2"])
        d.rectangle((x0 - 40, top, x0 - 30, top + step), fill=colours["accent"])
    x = x0
    styles = [(Comment, colours["muted"]), (Keyword, colours["accent"]), (String, colours["highlight"]),
              (Number, colours["highlight"]), (Name.Function, colours["accent"]), (Operator, colours["muted"])]  # fmt: skip
    for kind, text in lexer.get_tokens(code):
        colour = next((c for t, c in styles if kind in t), colours["text"])
        for i, part in enumerate(text.split("\n")):
            if i:
                x, y = x0, y + step
            if part:
                d.text((x, y), part, font=face, fill=colour)
                x += face.getlength(part)
    return img


# ---- diagram ------------------------------------------------------------------------------------


def _diagram(layers: list, colours: dict, font: str, n: int = 1) -> list[Image.Image]:
    """The diagram; in n steps (one per layer), step k with its first k + 1 layers."""
    return [_diagram_upto(layers, colours, font, (k, n)) for k in range(n)]


def _diagram_upto(layers: list, colours: dict, font: str, step: tuple[int, int]) -> Image.Image:
    """Labelled boxes in layers, left to right, each box joined by an arrow to every box of the next
    layer (a network, a pipeline). The labels share one size, the largest at which every one fits.
    Revealed, step k shows the first k + 1 layers, where the whole diagram puts them."""
    n = len(layers)
    img = Image.new("RGB", (W, H), colours["background"])
    d = ImageDraw.Draw(img)
    col_w = W / n
    box_w = min(520, col_w * 0.8)
    tallest = max(len(layer) for layer in layers)
    box_h = min(300, H * 0.85 / tallest * 0.75)
    labels = [label for layer in layers for label in layer]
    size = 96
    while size > 18 and any(ImageFont.truetype(font, size).getlength(t) > box_w - 24 for t in labels):
        size -= 2
    face = ImageFont.truetype(font, size)
    if any(face.getlength(t) > box_w - 24 for t in labels):
        raise GenerateError("a label too long for its box: keep each to a few words")
    boxes = []
    for i, layer in enumerate(layers):
        cx = col_w * (i + 0.5)
        gap = H / (len(layer) + 1)
        ys = [gap * (j + 1) for j in range(len(layer))]
        boxes.append([(cx - box_w / 2, y - box_h / 2, cx + box_w / 2, y + box_h / 2) for y in ys])
    shown = step[0] + 1 if step[1] > 1 else n
    for left, right in zip(boxes[:shown], boxes[1:shown]):
        for a in left:
            for b in right:
                _arrow(d, (a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2), colours["muted"])
    for layer, row in zip(layers[:shown], boxes):
        for label, (x0, y0, x1, y1) in zip(layer, row):
            d.rounded_rectangle((x0, y0, x1, y1), radius=22, fill=colours["background2"], outline=colours["accent"], width=5)
            d.text(((x0 + x1) / 2, (y0 + y1) / 2), label, font=face, fill=colours["text"], anchor="mm")
    return img


def _arrow(d: ImageDraw.ImageDraw, a: tuple, b: tuple, colour: str) -> None:
    d.line((a, b), fill=colour, width=4)
    v = np.subtract(b, a)
    v = v / (np.hypot(*v) or 1)
    left = (b[0] - 26 * v[0] - 12 * v[1], b[1] - 26 * v[1] + 12 * v[0])
    right = (b[0] - 26 * v[0] + 12 * v[1], b[1] - 26 * v[1] - 12 * v[0])
    d.polygon((b, left, right), fill=colour)
