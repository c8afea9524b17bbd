"""Visuals: pictures and clips per segment, a background, motion, caption styles, the contrast rule.

The rendering tests run the real encoder on generated media (a busy picture, a clip whose frames carry
their own number in big binary blocks) and read pixels back; the fakes stand in for speech only.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shortgen.cache import Cache, Stats
from shortgen.cli import main
from shortgen.picture import captions, compose, draw, frames
from shortgen.plan import Motion, Visual, clip_frame, motion_hold, split_states
from shortgen.render import render_episode
from shortgen.script.load import load_episode
from shortgen.testing import FakeEncoder, FakeEngine
from shortgen.timeline import speak_and_plan
from shortgen.video.encode import FfmpegEncoder, ffmpeg_exe

BITS = 6  # a clip frame's number, in blocks across its top
CLIP = (320, 200)


def counter_clip(path: Path, frames_: int = 12, fps: int = 10) -> Path:
    """A clip whose frame k shows k in binary: BITS white (1) or black (0) blocks on grey, big enough
    to survive scaling and compression."""
    args = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{CLIP[0]}x{CLIP[1]}",
            "-r", str(fps), "-i", "-", "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    proc = subprocess.Popen(args, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for k in range(frames_):
        im = Image.new("RGB", CLIP, (128, 128, 128))
        d = ImageDraw.Draw(im)
        for b in range(BITS):
            d.rectangle((40 + 40 * b, 10, 79 + 40 * b, 50), fill=(255, 255, 255) if k >> b & 1 else (0, 0, 0))
        proc.stdin.write(im.tobytes())
    proc.stdin.close()
    assert proc.wait() == 0
    return path


def busy_image(path: Path, size=(900, 700), seed=1) -> Path:
    """Noise in every colour, bright and dark: the worst backdrop for text."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8)
    Image.fromarray(arr).resize(size, Image.Resampling.NEAREST).save(path)
    return path


def green_image(path: Path) -> Path:
    img = Image.new("RGB", (900, 600), (40, 200, 90))
    ImageDraw.Draw(img).rectangle((300, 200, 600, 400), fill=(230, 240, 60))
    img.save(path)
    return path


EPISODE = """\
series: Visual Tests
part: 7
settings:
  lead_in_frames: 12
  tail_frames: 6
segments:
  - name: Still
    narration: A still picture that moves slowly.
    one_liner: Zooms in
    reference: Test
    visual: {still}
  - name: Clip
    narration: A clip that starts late and loops round again and again.
    one_liner: Loops
    reference: Test
    visual:
      file: {clip}
      start: 0.3
  - name: Held
    narration: A clip that stops on its last frame and stays there a while.
    one_liner: Holds
    reference: Test
    visual:
      file: {clip}
      clip_end: hold
  - name: Plain
    narration: No picture at all here.
    one_liner: As before
    reference: Test
"""


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    counter_clip(d / "counter.mp4")
    green_image(d / "green.png")
    busy_image(d / "busy.png")
    return d


def write_episode(d: Path, **kw) -> Path:
    p = d / "ep.yaml"
    p.write_text(EPISODE.format(still=kw.get("still", "green.png"), clip=kw.get("clip", "counter.mp4")) + kw.get("extra", ""))
    return p


@pytest.fixture(scope="module")
def rendered(media_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    layer = {"cache_dir": root / "cache", "output_dir": root / "out"}
    ep = load_episode(write_episode(media_dir), layer)
    cache = Cache(layer["cache_dir"])
    res = render_episode(ep, FakeEngine(), FfmpegEncoder(), cache)
    plan = speak_and_plan(ep, FakeEngine(), cache).plan
    return res, plan, ep


def decode(video: Path, w=1080, h=1920) -> np.ndarray:
    args = [ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(args, capture_output=True, check=True)
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="module")
def video(rendered) -> np.ndarray:
    return decode(rendered[0].files["video"])


def panel(plan, seg, settings):
    return draw.placed(seg, plan, settings).visual.rect


# ---- planning: pure -----------------------------------------------------------------------------


def clip_visual(**kw) -> Visual:
    base = dict(file="c.mp4", digest="x", kind="clip", width=320, height=200, rect=(0, 0, 100, 100), fps_num=10, frames=12)
    return Visual(**{**base, **kw})


def test_clip_frames_follow_offset_loop_and_hold():
    loop = clip_visual(start=3)
    # 10 fps source under 30 fps output: each source frame shows 3 output frames; from frame 3 to 11, then 3 again
    assert [clip_frame(loop, n, 30) for n in range(0, 30, 3)] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 3]
    hold = clip_visual(clip_end="hold")
    assert [clip_frame(hold, n, 30) for n in (33, 36, 90, 3000)] == [11, 11, 11, 11]
    fast = clip_visual(fps_num=60, frames=600)
    assert [clip_frame(fast, n, 30) for n in range(4)] == [0, 2, 4, 6]  # 60 fps: every other frame
    ntsc = clip_visual(fps_num=30000, fps_den=1001, frames=100)
    assert clip_frame(ntsc, 1000, 30) == 999 % 100  # exact: 1000 output frames are 999 source frames


def test_motion_steps_stay_under_half_a_pixel():
    v = Visual("s.png", "x", "still", 900, 600, (96, 880, 984, 1480), motion="zoom-in", zoom=1.1)
    for frames_ in (90, 300, 900):
        hold = motion_hold(v, frames_, 3, 0.5)
        # the fastest point (a corner) moves at most half a pixel a step
        box0, box1 = compose.motion_box(v, 0, frames_), compose.motion_box(v, hold, frames_)
        scale = (v.rect[2] - v.rect[0]) / (box0[2] - box0[0])
        assert abs(box1[0] - box0[0]) * scale <= 0.5 + 1e-9 or hold == 1
        assert 1 <= hold <= 3


def test_states_split_only_where_the_picture_changes():
    from shortgen.plan import FrameWord, State

    words = (FrameWord("a", 10, 20),)
    states = [State(0, 10, None, None), State(10, 30, 0, 0)]
    still = Visual("s.png", "x", "still", 900, 600, (96, 880, 984, 1480))
    assert split_states(states, 0, 30, words, 30, still, None, Motion()) == states  # nothing moves: unchanged
    moving = dataclasses.replace(still, motion="pan-right")
    out = split_states(states, 0, 30, words, 30, moving, None, Motion(hold_max=3))
    assert [s.start for s in out] == list(range(0, 30, 3)) or all(b.start - a.start <= 3 for a, b in zip(out, out[1:]))
    assert out[0].start == 0 and out[-1].end == 30 and all(a.end == b.start for a, b in zip(out, out[1:]))
    popped = split_states(states, 0, 30, words, 30, None, None, Motion(pop=True))
    assert [s.pop for s in popped if s.cue is not None][:4] == [1, 2, 3, 0]


# ---- rendering: real frames ---------------------------------------------------------------------


def test_each_segment_shows_its_visual_at_its_midpoint(rendered, video):
    res, plan, ep = rendered
    s = ep.settings
    for seg in plan.segments:
        mid = video[(seg.start + seg.end) // 2]
        if seg.visual is None:
            if seg.kind == "concept":  # the plain one: the gradient's dark blue where a panel would be
                x0, y0, x1, _ = (96, 880, 984, 1480)
                assert mid[y0 : y0 + 200, x0:x1].mean(axis=(0, 1))[2] < 90
            continue
        x0, y0, x1, y1 = panel(plan, seg, s)
        top = mid[y0 + 20 : min(y1, draw.caption_origin(s)[1]) - 10, x0 + 20 : x1 - 20].astype(float)
        if seg.visual.kind == "still":  # mostly green, some yellow: green dominates everywhere
            r, g, b = top.mean(axis=(0, 1))
            assert g > 150 and g > r + 40 and g > b + 60, (r, g, b)
        else:  # the counter clip: grey with black and white blocks
            assert top.std() > 40 and abs(top.mean() - 128) < 60


def test_a_still_span_is_identical_and_motion_changes_as_planned(rendered, video):
    res, plan, ep = rendered
    seg = plan.segments[1]  # the still, zooming in
    assert seg.visual.motion == "zoom-in"
    x0, y0, x1, y1 = panel(plan, seg, ep.settings)
    changes = 0
    for a, b in zip(seg.states, seg.states[1:]):
        if a.end - a.start >= 2:
            assert np.array_equal(video[a.start], video[a.end - 1]), "frames of one picture differ"
        if a.vis != b.vis:
            before, after = video[b.start - 1][y0:y1, x0:x1], video[b.start][y0:y1, x0:x1]
            assert not np.array_equal(before, after), f"motion step at frame {b.start} changed nothing"
            changes += 1
    assert changes >= seg.frames // 3 - 2


def read_counter(frame: np.ndarray, rect: tuple) -> int:
    """The source frame number the counter clip shows in this output frame (cover fit: see counter_clip)."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    scale = max(w / CLIP[0], h / CLIP[1])
    cw, ch = 2 * -(-round(CLIP[0] * scale * 1000) // 2000), 2 * -(-round(CLIP[1] * scale * 1000) // 2000)
    ox, oy = (max(cw, w) - w) // 2, (max(ch, h) - h) // 2
    k = 0
    for b in range(BITS):
        cx = x0 + int((60 + 40 * b) * scale) - ox
        cy = y0 + int(30 * scale) - oy
        k |= (frame[cy - 4 : cy + 4, cx - 4 : cx + 4].mean() > 128) << b
    return k


def test_every_parameter_set_in_the_samples_is_the_sample_entrys(rendered):
    """Cue runs (a constant quantiser), moving runs (CRF) and the footage all carry their SPS and PPS
    in-band; each must be byte-equal to the one in the track's avcC with the same id, so a decoder or
    remuxer that takes the sample entry's sets alone decodes every run with the right quantiser."""
    from shortgen.video import mp4

    entry, inband = mp4.parameter_sets(rendered[0].files["video"])
    assert {t for t, _ in entry} == {7, 8} and len(inband) > 10  # every run opens with its sets
    differ = [(k, t, i) for k, t, i, nal in inband if entry.get((t, i)) != nal]
    assert not differ, f"{len(differ)} in-band parameter sets differ from the sample entry's, first {differ[:3]}"


def test_the_storyboard_taken_from_the_encode_is_the_one_composed_on_its_own(rendered, tmp_path):
    """Its tiles are taken from the pictures the encode makes (frames.BoardTap); composed again on their
    own (the board lane, when an edit left the encode's runs cached) they are the same pixels."""
    res, _, ep = rendered
    cache_dir = Path(ep.settings.cache_dir)
    boards = {p.name: np.load(p)["strip"] for p in cache_dir.rglob("*.board*.npz")}
    assert len(boards) >= 3
    for p in cache_dir.rglob("*.board*.npz"):
        p.unlink()
    again = render_episode(ep, FakeEngine(), FfmpegEncoder(), Cache(cache_dir))  # segments cached: no encode, no tap
    assert again.files["video"].exists()
    for p in cache_dir.rglob("*.board*.npz"):
        assert np.array_equal(np.load(p)["strip"], boards[p.name]), p.name


def test_clip_frames_land_where_planned(rendered, video):
    res, plan, ep = rendered
    for seg in plan.segments[2:4]:
        rect = panel(plan, seg, ep.settings)
        picks = range(seg.start, seg.end, 7)
        got = [read_counter(video[n], rect) for n in picks]
        want = [clip_frame(seg.visual, n - seg.start, 30) for n in picks]
        assert got == want, seg.name
    assert plan.segments[2].visual.start == 3  # 0.3 s at 10 fps
    assert max(clip_frame(plan.segments[3].visual, n, 30) for n in range(plan.segments[3].frames)) == 11


def test_captions_over_the_picture_meet_the_contrast_rule(rendered):
    import json

    res, plan, ep = rendered
    m = json.loads(res.files["manifest"].read_text())
    looks = {s["index"]: s.get("look") for s in m["segments"]}
    for seg in plan.segments:
        if seg.visual is not None:
            assert looks[seg.index]["contrast"]["caption"] >= 4.5


def test_a_plain_segment_renders_as_before(media_dir, tmp_path):
    """No visual: the same card and the same caption pictures as a script without the feature."""
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    ep = load_episode(write_episode(media_dir), layer)
    plan = speak_and_plan(ep, FakeEngine(), Cache(layer["cache_dir"])).plan
    plain = plan.segments[4]
    assert plain.visual is None and all((st.vis, st.bg, st.pop, st.bar) == (-1, -1, 0, -1) for st in plain.states)
    assert draw.look_key_inputs(plain, plan, ep.settings) == {}


# ---- the contrast rule over a busy picture ------------------------------------------------------


@pytest.mark.parametrize("layout", ["full", "panel"])
def test_text_over_a_busy_picture_stays_safe_and_legible(media_dir, tmp_path, layout):
    extra = f"  visual_layout: {layout}\n"
    text = EPISODE.format(still="busy.png", clip="counter.mp4").replace("  tail_frames: 6\n", "  tail_frames: 6\n" + extra)
    (media_dir / "busy.yaml").write_text(text)
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    ep = load_episode(media_dir / "busy.yaml", layer)
    plan = speak_and_plan(ep, FakeEngine(), Cache(layer["cache_dir"])).plan
    s = ep.settings
    seg = plan.segments[1]
    layers = frames.Layers(plan, seg, s)
    try:
        under = layers.under(0, seg.states[0].vis)
        shown = under.convert("RGBA")
        scrims = compose.scrim_layer(layers.look, (s.width, s.height))
        if scrims is not None:
            shown.alpha_composite(scrims)
        backdrop = np.asarray(shown.convert("RGB"))
        sx0, sy0, sx1, sy1 = draw.safe_zone(s.width, s.height)
        texts = [b for b in layers.text.boxes if b.what != "badge"]
        for cue in seg.cues:
            texts += captions.draw_overlay(seg, seg.cues.index(cue), None, s).boxes
        for b in texts:
            assert sx0 <= b.x0 and b.x1 <= sx1 and sy0 <= b.y0 and b.y1 <= sy1, b
            colours = [b.fill] if b.fill else [draw._rgb(s.theme.caption), draw._rgb(s.theme.highlight)]
            if layout == "panel" and b.what != "caption":
                continue  # the card's text is over the gradient, not the picture
            px = backdrop[b.y0 : b.y1, b.x0 : b.x1].reshape(-1, 3)
            for c in colours:
                assert compose.worst_contrast(c, px) >= 4.5, (b, c)
    finally:
        layers.close()


def test_the_scrim_found_on_the_extremes_is_the_one_the_full_set_needs(media_dir):
    img = Image.open(media_dir / "busy.png").convert("RGB")
    boxes = [(0, 0, 900, 300), (100, 350, 800, 700)]
    full = np.concatenate([np.asarray(img)[b[1] : b[3], b[0] : b[2]].reshape(-1, 3) for b in boxes])
    some = compose._pixels([img], boxes, keep=2000)
    assert len(some) < len(full)
    for colour in [(255, 255, 255), (255, 210, 63), (184, 192, 224)]:
        a = compose.scrim_alpha([colour], some, (16, 20, 38), 4.5)
        assert a == compose.scrim_alpha([colour], full, (16, 20, 38), 4.5)
        assert compose.worst_contrast(colour, full, (16, 20, 38), a) >= 4.5


# ---- caching and edits --------------------------------------------------------------------------


def test_changing_one_visual_re_encodes_that_segment_only(media_dir, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for f in ("green.png", "counter.mp4", "busy.png"):
        (d / f).write_bytes((media_dir / f).read_bytes())
    p = write_episode(d)
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    cache = Cache(layer["cache_dir"])
    render_episode(load_episode(p, layer), FakeEngine(), FakeEncoder(), cache)
    # same name, new content: the content hash is what counts
    busy_image(d / "green.png", seed=3)
    st = Stats()
    render_episode(load_episode(p, layer), FakeEngine(), FakeEncoder(), cache, stats=st)
    assert st.encodes == 1
    # an option of another segment's visual
    p.write_text(p.read_text().replace("clip_end: hold", "clip_end: loop"))
    st = Stats()
    render_episode(load_episode(p, layer), FakeEngine(), FakeEncoder(), cache, stats=st)
    assert st.encodes == 1


# ---- bad input ----------------------------------------------------------------------------------


def bad_files(d: Path) -> dict[str, str]:
    """name -> a phrase the one-line error must contain."""
    Image.new("RGB", (100, 100), "red").save(d / "ok.png")
    (d / "corrupt.png").write_bytes((d / "ok.png").read_bytes()[:60])
    (d / "fake.jpg").write_bytes(b"not a picture" * 20)
    Image.new("1", (20000, 20000)).save(d / "huge.png")
    Image.new("L", (9000, 9000)).save(d / "big.png")
    tone = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(d / "sound.mp4")]
    subprocess.run(tone, check=True)
    (d / "cut.mp4").write_bytes((Path(__file__).parent.parent / "assets/part4/adam-path.mp4").read_bytes()[:4000])
    (d / "x.bmp").write_bytes(b"BM")
    (d / "empty.png").write_bytes(b"")
    (d / "folder.png").mkdir()
    return {
        "missing.png": "no such file",
        "corrupt.png": "corrupt or truncated",
        "fake.jpg": "not a readable JPEG",
        "huge.png": "huge.png is 20000 x 20000 pixels",
        "big.png": "9000 x 9000 pixels",
        "sound.mp4": "no video stream",
        "cut.mp4": "cut.mp4",
        "x.bmp": "unsupported file type",
        "empty.png": "is empty",
        "folder.png": "is a folder",
    }


def test_bad_visual_files_fail_in_one_line_naming_the_place(tmp_path, capsys):
    bad = bad_files(tmp_path)
    for name, phrase in bad.items():
        p = tmp_path / "ep.yaml"
        p.write_text(EPISODE.format(still=name, clip="ok.png").split("  - name: Clip")[0])
        assert main(["check", str(p)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"{p}:11:13: segments[0].visual: " in err[0] and phrase in err[0], err[0]


def test_clip_options_on_a_picture_and_a_start_past_the_end_are_refused(media_dir, tmp_path, capsys):
    p = tmp_path / "ep.yaml"
    base = EPISODE.split("  - name: Held")[0].replace("{still}", str(media_dir / "green.png"))
    p.write_text(base.replace("{clip}", str(media_dir / "counter.mp4")).replace("start: 0.3", "start: 9"))
    assert main(["check", str(p)]) == 2
    assert "segments[1].visual.start: starts at 9 s, past the end of counter.mp4 (1.20 s)" in capsys.readouterr().err
    p.write_text(base.replace("{clip}", str(media_dir / "green.png")))
    assert main(["check", str(p)]) == 2
    assert "segments[1].visual.start: `start` is for clips; green.png is a picture" in capsys.readouterr().err


def test_a_failed_visual_leaves_the_earlier_render_intact(media_dir, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for f in ("green.png", "counter.mp4"):
        (d / f).write_bytes((media_dir / f).read_bytes())
    p = write_episode(d)
    args = ["--cache-dir", str(tmp_path / "c"), "--output-dir", str(tmp_path / "o")]
    assert main(["render", "-q", *args, str(p)]) == 0
    out = tmp_path / "o" / "part7"
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    (d / "green.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["render", "-q", *args, str(p)]) == 2
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before


# ---- a clip's own sound -------------------------------------------------------------------------


def sounding_clip(path: Path, seconds: float = 2.0, freq: int = 1000) -> Path:
    picture, sound = f"testsrc=d={seconds}:s=320x200:r=25", f"sine=f={freq}:d={seconds}"
    args = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", picture, "-f", "lavfi", "-i", sound,
            "-c:v", "libx264", "-c:a", "aac", "-shortest", str(path)]  # fmt: skip
    subprocess.run(args, check=True)
    return path


def test_clip_sound_is_muted_unless_asked_for(media_dir, tmp_path):
    sounding_clip(tmp_path / "noisy.mp4")
    (tmp_path / "green.png").write_bytes((media_dir / "green.png").read_bytes())
    (tmp_path / "counter.mp4").write_bytes((media_dir / "counter.mp4").read_bytes())
    p = write_episode(tmp_path)
    text = (
        p.read_text()
        .replace("      start: 0.3\n", "      start: 0.3\n      audio: true\n")
        .replace("file: counter.mp4\n      start", "file: noisy.mp4\n      start")
    )
    text = text.replace("file: counter.mp4\n      clip_end", "file: noisy.mp4\n      clip_end")  # muted: no `audio:`
    p.write_text(text)
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    ep = load_episode(p, layer)
    res = render_episode(ep, FakeEngine(), FfmpegEncoder(), Cache(layer["cache_dir"]))
    plan = res.plan
    pcm = [ffmpeg_exe(), "-v", "error", "-i", str(res.files["video"]), "-f", "f32le", "-ac", "1", "-ar", "48000", "-"]
    raw = subprocess.run(pcm, capture_output=True, check=True).stdout
    x = np.frombuffer(raw, np.float32)
    f = np.fft.rfftfreq(len(x), 1 / 48000)
    tone = np.fft.irfft(np.fft.rfft(x) * ((f > 900) & (f < 1100)), len(x))

    def level(seg) -> float:
        a, b = seg.start * 1600, seg.end * 1600  # 48000 / 30 samples a frame
        return 20 * np.log10(np.sqrt((tone[a:b] ** 2).mean()) + 1e-12)

    loud, muted = plan.segments[2], plan.segments[3]
    assert loud.visual.audio and not muted.visual.audio
    assert level(loud) > -45 and level(muted) < level(loud) - 30
    lufs, tp = FfmpegEncoder().loudness(res.files["video"])
    assert abs(lufs + 14) <= 0.5 and tp <= -1.0


def test_clip_audio_on_a_silent_clip_is_refused(media_dir, tmp_path, capsys):
    p = tmp_path / "ep.yaml"
    text = EPISODE.split("  - name: Held")[0].replace("{still}", str(media_dir / "green.png"))
    p.write_text(text.replace("{clip}", str(media_dir / "counter.mp4")).replace("start: 0.3", "start: 0.3\n      audio: true"))
    assert main(["check", str(p)]) == 2
    assert "segments[1].visual.audio: counter.mp4 has no audio stream" in capsys.readouterr().err


def test_an_animated_gif_is_a_clip_and_a_webp_a_still(tmp_path):
    from shortgen.picture import media

    frames_ = [Image.new("RGB", (200, 150), (i * 30, 100, 200 - i * 20)) for i in range(8)]
    frames_[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames_[1:], duration=100, loop=0)
    m = media.probe(tmp_path / "anim.gif")
    assert (m.kind, m.frames, m.fps) == ("clip", 8, 10)
    reader = media.ClipReader(m, (100, 76))
    try:
        r, g, b = reader.frame(7).getpixel((50, 38))
    finally:
        reader.close()
    assert abs(r - 210) <= 12 and abs(b - 60) <= 12  # the eighth frame's colour, not the first's
    Image.new("RGB", (300, 200), "blue").save(tmp_path / "x.webp")
    assert media.probe(tmp_path / "x.webp").kind == "still"


def test_clip_read_args_seek_to_a_second_before_and_decode_on_one_thread():
    from shortgen.picture.media import clip_read_args

    a = clip_read_args("ffmpeg", "c.mp4", 2.5, (1080, 1920))
    i = a.index("-i")
    assert a[i - 4 : i + 4] == ["-threads", "1", "-ss", "1.500000", "-i", "c.mp4", "-ss", "1.000000"]
    assert a[a.index("-vf") + 1] == "scale=1080:1920" and a[-5:] == ["-pix_fmt", "rgb24", "-thread_queue_size", "1", "-"]
    assert a.count("-threads") == 2  # the decoder's and the output's: one each
    b = clip_read_args("ffmpeg", "c.mp4", 0.0, (64, 64))
    assert "-ss" not in b and b[b.index("-i") + 1] == "c.mp4"


def test_clip_reader_reads_forward_seeks_back_and_holds_the_last_frame(tmp_path):
    from shortgen.picture import media

    m = media.probe(counter_clip(tmp_path / "c.mp4"))

    def number(img) -> int:  # the frame's number, from its blocks (see counter_clip)
        return sum(1 << b for b in range(BITS) if img.getpixel((60 + 40 * b, 30))[0] > 128)

    reader = media.ClipReader(m, CLIP)
    try:
        assert [number(reader.frame(k)) for k in (0, 1, 2, 5, 3, 11)] == [0, 1, 2, 5, 3, 11]  # 3: back, by a new seek
        assert number(reader.frame(15)) == 11  # past the end: the last frame, as long as asked
        assert number(reader.frame(4)) == 4
    finally:
        reader.close()
    assert reader._proc is None


def test_display_rotation_is_read_from_the_video_stream_alone():
    from shortgen.picture.media import display_rotation

    head = "  Stream #0:0[0x1]: Video: h264 (High), yuv420p, 1920x1080, 30 fps\n      Side data:\n"
    assert display_rotation(head + "        displaymatrix: rotation of -90.00 degrees\n") == 270
    assert display_rotation(head + "      Display Matrix: rotation of 90.00 degrees\n") == 90
    assert display_rotation(head + "    Metadata:\n      rotate          : 180\n") == 180
    cover_art = "  Stream #0:1: Video: mjpeg (attached pic)\n    displaymatrix: rotation of 90.00 degrees"
    assert display_rotation(head + cover_art) == 0  # another stream's turn is not the clip's
    assert display_rotation("Input #0, wav, from 'a.wav':\n  Stream #0:0: Audio: pcm_s16le") == 0


def test_a_portrait_phone_clip_is_measured_and_read_as_shown(tmp_path):
    """Phones store a portrait clip as landscape pictures and a display matrix turning them: measured
    landscape, it was scaled to the wrong shape and shown squashed."""
    from shortgen.picture import media

    flat = counter_clip(tmp_path / "flat.mp4")
    turned = tmp_path / "turned.mp4"  # the same pictures, turned a quarter on display
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90", "-i", str(flat), "-c", "copy",
                    str(turned)], check=True)  # fmt: skip
    m = media.probe(turned)
    assert (m.width, m.height) == (CLIP[1], CLIP[0])
    readers = [media.ClipReader(media.probe(flat), CLIP), media.ClipReader(m, (m.width, m.height))]
    try:
        a, b = (np.asarray(r.frame(5), np.float32) for r in readers)
    finally:
        for r in readers:
            r.close()
    assert b.shape[:2] == (CLIP[0], CLIP[1])  # rows, columns: as tall as the clip is wide
    # the picture turned, not squashed: one quarter turn matches it closely, nothing else does
    errors = sorted(float(np.abs(np.rot90(a, k) - b).mean()) for k in (1, 3))
    assert errors[0] < 3 and errors[1] > 20, errors


def test_a_clip_of_pixels_not_square_is_measured_as_wide_as_shown(tmp_path):
    """A widescreen DVD's 720 x 576 pixels are 1024 x 576 on screen; ffmpeg's scaler ignores the ratio."""
    from shortgen.picture import media

    line = "  Stream #0:0: Video: mpeg2video, yuv420p(tv, top first), 720x576 [SAR 64:45 DAR 16:9], 25 fps\n"
    assert media.shown_width(line, 720) == 1024
    assert media.shown_width(line.replace("64:45", "1:1"), 720) == 720
    assert media.shown_width("  Stream #0:0: Video: h264, yuv420p, 720x576, 25 fps\n", 720) == 720
    wide = tmp_path / "wide.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(counter_clip(tmp_path / "c.mp4")), "-vf", "setsar=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(wide)], check=True)  # fmt: skip
    m = media.probe(wide)
    assert (m.width, m.height) == (2 * CLIP[0], CLIP[1])
