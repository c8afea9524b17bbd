"""Visuals generated from the script (picture/generated.py): an equation, a plot, code and a diagram
render into the segment's panel in the theme's colours, are cached by what they show, and are refused in
one line at their field when they cannot be drawn."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageColor

from shortgen.cache import Cache
from shortgen.cli import main
from shortgen.picture import draw, generated
from shortgen.render import render_episode
from shortgen.script.load import load_episode
from shortgen.testing import FakeEngine
from shortgen.timeline import speak_and_plan
from shortgen.video.encode import FfmpegEncoder, ffmpeg_exe

EPISODE = """\
series: Generated Tests
part: 3
settings:
  lead_in_frames: 12
  tail_frames: 6
segments:
  - name: Gradient Descent
    narration: Step against the gradient, scaled by the learning rate.
    one_liner: Downhill in small steps
    visual:
      equation: '\\theta \\leftarrow \\theta - \\eta \\nabla_\\theta L(\\theta)'
  - name: Activations
    narration: Three curves that bend a straight line.
    one_liner: Nonlinearity
    visual:
      plot:
        y: [relu(x), sigmoid(x), tanh(x)]
        x: [-4, 4]
        labels: [ReLU, sigmoid, tanh]
  - name: Training Loop
    narration: Forward, loss, backward, step, and again.
    one_liner: Five lines
    visual:
      code: |
        for x, y in batches:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
      language: python
  - name: Encoders
    narration: An image and a text meet in one shared space.
    one_liner: Two towers
    visual:
      diagram: [[image, text], [encoder], [shared space]]
"""


def episode(d: Path, text: str = EPISODE) -> Path:
    p = d / "gen.yaml"
    p.write_text(text)
    return p


def near(img: np.ndarray, colour: str, tol: int = 40) -> np.ndarray:
    """Pixels within `tol` of a colour in every channel."""
    return (np.abs(img.astype(int) - np.array(ImageColor.getrgb(colour))[None, None, :]) <= tol).all(axis=-1)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    layer = {"cache_dir": root / "cache", "output_dir": root / "out"}
    ep = load_episode(episode(root), layer)
    cache = Cache(layer["cache_dir"])
    res = render_episode(ep, FakeEngine(), FfmpegEncoder(), cache)
    plan = speak_and_plan(ep, FakeEngine(), cache).plan
    frames = {}
    for seg in plan.segments:  # each segment's middle frame only: the whole video decoded is 3.5 GB
        n = (seg.start + seg.end) // 2
        args = [ffmpeg_exe(), "-v", "error", "-i", str(res.files["video"]), "-vf", f"select=eq(n\\,{n})", "-frames:v", "1",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
        frames[n] = np.frombuffer(subprocess.run(args, capture_output=True, check=True).stdout, np.uint8).reshape(1920, 1080, 3)
    return ep, plan, frames, layer


def test_each_kind_lands_in_its_panel_in_the_themes_colours(rendered):
    ep, plan, video, _ = rendered
    t = ep.settings.theme
    shown = {}
    for seg in [g for g in plan.segments if g.kind == "concept"]:
        x0, y0, x1, y1 = draw.placed(seg, plan, ep.settings).visual.rect
        frame = video[(seg.start + seg.end) // 2]  # decoded by the fixture
        inside = frame[y0 + 8 : min(y1, draw.caption_origin(ep.settings)[1]) - 8, x0 + 8 : x1 - 8]
        outside = frame[y0 - 60 : y0 - 20, x0:x1]  # above the panel: the card's background
        # the drawing sits on the theme's background, and draws in the theme's text or accent colour
        assert near(inside, t.background, 30).mean() > 0.5, seg.name
        ink = near(inside, t.text, 60) | near(inside, t.accent, 60)
        assert ink.mean() > 0.004, (seg.name, ink.mean())
        assert near(outside, t.accent, 40).mean() < 0.01, seg.name  # none of it spills above the panel
        shown[seg.name] = inside
    assert near(shown["Activations"], t.accent, 60).sum() > 500  # the first curve, in the accent
    assert near(shown["Training Loop"], t.accent, 60).sum() > 100  # its keywords
    assert near(shown["Encoders"], t.accent, 60).sum() > 500  # the boxes' outlines


def test_a_generated_visual_is_drawn_once_and_an_edit_redraws_only_its_own(rendered, tmp_path):
    ep, _, _, layer = rendered
    made = sorted((Path(layer["cache_dir"]) / "visuals").glob("*.png"))
    assert [p.name.split("-")[0] for p in made] == ["code", "diagram", "equation", "plot"]
    stamps = {p: p.stat().st_mtime_ns for p in made}
    p = episode(tmp_path, EPISODE.replace("\\eta", "\\alpha"))
    load_episode(p, layer)  # the edited equation drawn anew; the other three found
    now = sorted((Path(layer["cache_dir"]) / "visuals").glob("*.png"))
    assert len(now) == 5 and all(q.stat().st_mtime_ns == stamps[q] for q in made)


@pytest.mark.parametrize(
    "visual, says",
    [
        ("{equation: '\\\\frac{1}{'}", "segments[0].visual.equation: cannot typeset this TeX"),
        ("{plot: {y: [swish(x)]}}", "segments[0].visual.plot: unknown function 'swish' in 'swish(x)'"),
        ("{plot: {y: [x + z]}}", "segments[0].visual.plot: unknown name 'z'"),
        ("{plot: {y: [log(x)], x: [-3, -1]}}", "segments[0].visual.plot: 'log(x)' is undefined everywhere on [-3, -1]"),
        ("{plot: {y: [x], x: [2, 1]}}", "segments[0].visual.plot: x: [2, 1] is empty"),
        ("{code: 'print(1)', language: klingon}", "segments[0].visual.code: unknown language 'klingon'"),
        ('{code: "' + "x = 1\\n" * 9 + '"}', "segments[0].visual.code: 9 lines: at most 6"),
        ("{code: 'print(\"🎉\")'}", "segments[0].visual.code: the code font has no '🎉' (U+1F389)"),
        ("{equation: 'x', code: 'y'}", "segments[0].visual: give one of file, equation, plot, code or diagram"),
        ("{equation: 'x', language: python}", "segments[0].visual.language: `language` is for `code`"),
        ("{diagram: [[a label far too long for a box], [b]]}", "segments[0].visual.diagram[0][0]: string should have at most 24"),
    ],
)
def test_what_cannot_be_drawn_is_refused_in_one_line_at_its_field(tmp_path, capsys, visual, says):
    text = (
        EPISODE.split("  - name: Activations")[0]
        .replace(EPISODE.split("    visual:\n")[1].split("  - name")[0], "")
        .replace("    visual:\n", f"    visual: {visual}\n")
    )
    p = episode(tmp_path, text)
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and err[0].startswith(f"shortgen: {p}:"), err


def test_formulas_evaluate_as_written():
    x = np.linspace(-2, 2, 5)
    assert np.allclose(generated.evaluate("relu(x)", x), [0, 0, 0, 1, 2])
    assert np.allclose(generated.evaluate("2*x^2 - 1", x), 2 * x**2 - 1)
    assert np.allclose(generated.evaluate("sigmoid(0*x)", x), 0.5)
    with pytest.raises(generated.GenerateError, match="only numbers"):
        generated.evaluate("x.real", x)
    with pytest.raises(generated.GenerateError, match="unknown function '__import__'"):
        generated.evaluate("__import__('os')", x)


def test_the_manifest_names_a_generated_visual_by_its_kind_not_a_cache_path(rendered):
    import json

    ep, plan, _, layer = rendered
    m = json.loads((Path(layer["output_dir"]) / ep.slug / "manifest.json").read_text())
    kinds = [s["visual"].get("generated") for s in m["segments"] if "visual" in s]
    assert kinds == ["equation", "plot", "code", "diagram"]
    assert all(s["visual"]["file"] is None for s in m["segments"] if "visual" in s)


# ---- revealed step by step, timed by the words ----------------------------------------------------

REVEALED = """\
series: Generated Tests
part: 4
settings:
  lead_in_frames: 12
  tail_frames: 6
segments:
  - name: Gradient Descent
    narration: Theta next is theta now, minus the learning rate times the gradient of the loss.
    one_liner: Downhill in small steps
    visual:
      equation: '\\theta_{t+1} = \\theta_t - \\eta \\nabla L(\\theta_t)'
      reveal: true
  - name: Dropout
    narration: First a random mask of the units. Then the kept ones scaled up to make up for the rest.
    one_liner: Drop units at random
    visual:
      code: |
        mask = torch.rand_like(h) > p
        h = h * mask / (1 - p)
      reveal: true
"""


def test_an_equation_splits_into_terms_at_its_top_level_operators():
    assert generated.equation_terms("a = b + c_{i+1}") == ["a", "a = b", "a = b + c_{i+1}"]
    assert generated.equation_terms("L(x - y) = -b") == ["L(x - y)", "L(x - y) = -b"]  # not inside brackets, nor a sign
    assert generated.equation_terms("e^{-x}") == ["e^{-x}"]


def test_a_revealed_visual_shows_each_step_as_its_words_are_spoken(tmp_path):
    layer = {"cache_dir": tmp_path / "cache", "output_dir": tmp_path / "out"}
    ep = load_episode(episode(tmp_path, REVEALED), layer)
    cache = Cache(layer["cache_dir"])
    plan = speak_and_plan(ep, FakeEngine(), cache).plan
    eq, code = plan.concepts()
    assert (eq.visual.reveal, code.visual.reveal) == (3, 2)
    for seg in (eq, code):
        n, words = seg.visual.reveal, seg.words
        # step k from the start of the narration's (k/n)-th word, in the plan's integer frames
        assert seg.visual.steps == tuple(words[len(words) * k // n].start - seg.start for k in range(1, n))
        for st in seg.states:
            assert st.vis == sum(st.start - seg.start >= f for f in seg.visual.steps), (seg.name, st)
    # each step's picture: the equation's later terms not yet drawn, drawn where the whole puts them
    whole = np.asarray(Image.open(eq.visual.file).convert("L"), np.int16)
    first = np.asarray(Image.open(generated.step_path(eq.visual.file, 0)).convert("L"), np.int16)
    ink = lambda a: (np.abs(a - a[0, 0]) > 60).sum(axis=0)  # noqa: E731 (ink per column)
    cols = np.flatnonzero(ink(first))
    assert 0 < len(cols) < 0.5 * len(np.flatnonzero(ink(whole)))
    assert np.array_equal(first[:, : cols.max() + 1], whole[:, : cols.max() + 1])  # the same glyphs in the same place
    # rendered: the panel's ink grows at each step of the equation
    res = render_episode(ep, FakeEngine(), FfmpegEncoder(), cache)
    x0, y0, x1, y1 = draw.placed(eq, plan, ep.settings).visual.rect
    inks = []
    for n in (eq.start + 2, *(eq.start + f + 2 for f in eq.visual.steps)):
        args = [ffmpeg_exe(), "-v", "error", "-i", str(res.files["video"]), "-vf", f"select=eq(n\\,{n})", "-frames:v", "1",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
        frame = np.frombuffer(subprocess.run(args, capture_output=True, check=True).stdout, np.uint8).reshape(1920, 1080, 3)
        inks.append(int(near(frame[y0 + 8 : y1 - 8, x0 + 8 : x1 - 8], ep.settings.theme.text, 60).sum()))
    assert inks[0] > 200 and inks[0] < inks[1] < inks[2], inks


def test_reveal_is_refused_on_a_file_and_with_motion(tmp_path, capsys):
    bad = REVEALED.replace("reveal: true\n  - name: Dropout", "reveal: true\n      motion: zoom-in\n  - name: Dropout")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(episode(tmp_path, bad))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segments[0].visual.reveal: a revealed visual does not move as well" in err[0], err
    code = "      code: |\n        mask = torch.rand_like(h) > p\n        h = h * mask / (1 - p)\n"
    on_file = REVEALED.replace(code, "      file: x.png\n")
    Image.new("RGB", (640, 360), "#336699").save(tmp_path / "x.png")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(episode(tmp_path, on_file))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segments[1].visual.reveal: `reveal` is for an equation, plot, code or diagram" in err[0], err
