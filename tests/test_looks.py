"""Caption styles (box, pop), the caption position, the progress bar and the background: what each
draws, checked on pixels and on the plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import helpers
from shortgen.cache import Cache, Stats
from shortgen.picture import captions, draw, frames
from shortgen.render import key_inputs, render_episode
from shortgen.script.load import load_episode
from shortgen.testing import FakeEncoder, FakeEngine
from shortgen.timeline import speak_and_plan

FIX = Path(__file__).parent / "fixtures"


def measured(tmp_path: Path, extra: str):
    p = tmp_path / "short.yaml"
    p.write_text((FIX / "short.yaml").read_text().replace("settings:\n", f"settings:\n{extra}"))
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    ep = load_episode(p, layer)
    return ep, speak_and_plan(ep, FakeEngine(), Cache(layer["cache_dir"])).plan, layer


def test_box_style_tiles_paint_what_a_full_draw_draws(tmp_path):
    ep, plan, _ = measured(tmp_path, "  caption_style: box\n")
    s = ep.settings
    seg = plan.segments[1]
    card = draw.draw_card(seg, plan, s).painted()
    _, y0, _, y1 = draw.caption_origin(s)
    band = card.crop((0, y0, s.width, y1))
    painter = captions.CaptionPainter(seg, s)
    lit_somewhere = False
    for st in seg.states:
        if st.cue is None:
            continue
        hl = None if st.word is None else st.word - seg.cues[st.cue].first
        fast = np.asarray(painter.paint(band, st.cue, hl))
        full = np.asarray(helpers.draw_state(draw.Drawn(card), seg, st, s).painted().crop((0, y0, s.width, y1)))
        assert np.abs(fast.astype(int) - full.astype(int)).max() <= 1
        if hl is not None:  # the pill: the highlight colour behind the spoken word
            pill = np.all(np.abs(fast.astype(int) - draw._rgb(s.theme.highlight)) <= 2, axis=2)
            lit_somewhere |= pill.sum() > 500
    assert lit_somewhere


def test_pop_draws_the_spoken_word_larger_on_its_first_frames(tmp_path):
    ep, plan, _ = measured(tmp_path, "  caption_pop: true\n")
    s = ep.settings
    seg = plan.segments[1]
    popped = [st for st in seg.states if st.pop]
    assert popped and {st.pop for st in popped} == {1, 2, 3}
    assert all(st.end - st.start == 1 for st in popped)  # each pop step is one frame
    card = draw.draw_card(seg, plan, s).painted()
    _, y0, _, y1 = draw.caption_origin(s)
    band = card.crop((0, y0, s.width, y1))
    painter = captions.CaptionPainter(seg, s)
    st = popped[0]
    hl = st.word - seg.cues[st.cue].first
    inked = [
        int((np.asarray(painter.paint(band, st.cue, hl, pop)).astype(int) != np.asarray(band).astype(int)).any(axis=2).sum())
        for pop in (1, 2, 3, 0)
    ]
    assert inked[0] > inked[1] > inked[2] > inked[3]  # the word shrinks back to its size


def test_the_caption_position_moves_the_band_and_the_card_makes_room(tmp_path):
    ep, plan, _ = measured(tmp_path, "  caption_position: middle\n")
    _, y0, _, y1 = draw.caption_origin(ep.settings)
    assert (y0, y1) == (900, 1240)
    seg = plan.segments[1]
    boxes = draw.draw_card(seg, plan, ep.settings, dry=True).boxes
    assert max(b.y1 for b in boxes) < y0


def test_the_progress_bar_fills_over_each_segment(tmp_path):
    ep, plan, layer = measured(tmp_path, "  progress_bar: true\n")
    s = ep.settings
    cache = Cache(layer["cache_dir"])
    from shortgen import keys
    from shortgen.picture import compose

    ek = keys.episode(plan, s, key_inputs())
    for seg, k in zip(plan.segments[:2], ek.segments):
        bars = [st.bar for st in seg.states]
        assert bars == sorted(bars) and bars[0] == 0 and bars[-1] >= 888 * (seg.frames - 1) // seg.frames - 1
        card = frames.ensure_card(plan, seg, k.card, s, cache, Stats())
        painter = captions.CaptionPainter(seg, s, tile_map=frames.ycc)
        pics = list(frames.pictures(card, seg, s, painter, [seg.states[0], seg.states[-1]], plan))
        last = b"".join(bytes(p) for p in pics[-1])
        y = np.frombuffer(last[: s.width * s.height], np.uint8).reshape(s.height, s.width)
        x0, by0, x1, by1 = compose.bar_box(s, seg.states[-1].bar)
        accent_y = np.asarray(frames.ycc(Image.new("RGB", (1, 1), draw._rgb(s.theme.accent))))[0, 0, 0]
        assert abs(int(y[(by0 + by1) // 2, x0 + 5]) - int(accent_y)) <= 2
        assert abs(int(y[(by0 + by1) // 2, x1 - 5]) - int(accent_y)) <= 2


@pytest.fixture
def texture(tmp_path: Path) -> Path:
    img = Image.new("RGB", (540, 960), (200, 60, 40))
    d = ImageDraw.Draw(img)
    for i in range(0, 540, 60):
        d.rectangle((i, 0, i + 30, 960), fill=(230, 120, 40))
    img.save(tmp_path / "texture.jpg")
    return tmp_path / "texture.jpg"


def test_a_background_picture_shows_behind_every_card_and_the_text_stays_legible(tmp_path, texture):
    ep, plan, layer = measured(tmp_path, "  background: texture.jpg\n")
    s = ep.settings
    assert plan.background is not None and plan.background.kind == "still"
    for seg in plan.segments:
        lay = frames.Layers(plan, seg, s)
        try:
            card = np.asarray(lay.card())
            # below the safe zone nothing is drawn over it: the texture's warm colours
            r, g, b = card[1700:1900, 100:980].reshape(-1, 3).mean(axis=0)
            assert r > 150 and b < 80
            assert lay.look.contrast["card"] is None or lay.look.contrast["card"] >= 4.5
        finally:
            lay.close()
    res = render_episode(ep, FakeEngine(), FakeEncoder(), Cache(layer["cache_dir"]))
    assert res.rendered


def test_a_background_clip_keeps_moving_across_segments(tmp_path):
    import subprocess

    from shortgen.video.encode import ffmpeg_exe

    clip = tmp_path / "waves.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=d=1:s=270x480:r=10", "-c:v", "libx264",
                    str(clip)], check=True)  # fmt: skip
    ep, plan, _ = measured(tmp_path, "  background: waves.mp4\n")
    assert plan.background.kind == "clip"
    prev = None
    for seg in plan.segments:
        bgs = [st.bg for st in seg.states]
        assert min(bgs) >= 0
        if seg.frames >= 30:  # a second at 30 fps shows every frame of the 10 fps, 1 s clip
            assert set(bgs) == set(range(10))
        if prev is not None:  # counted from the episode's start: no jump back at the cut
            assert bgs[0] == (prev + 1) % 10 or bgs[0] == prev
        prev = bgs[-1]
