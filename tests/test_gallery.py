"""The series gallery in a real browser: a two-part series rendered with the real engine and ffmpeg, its
`output/index.html` opened in headless Chromium (Debian's package, driven over the DevTools protocol)
from the file system and from a static web server."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from browser import Browser, find_chromium, serve
from PIL import Image

from helpers import parse_srt
from shortgen.cli import main
from shortgen.picture import storyboard
from shortgen.publish import outputs
from shortgen.video import mp4
from shortgen.video.encode import ffmpeg_exe

pytestmark = pytest.mark.e2e
FIX = Path(__file__).parent / "fixtures"
SECOND = """  - name: Dropout
    narration: >
      Dropout. Switch off random neurons while the network trains.
    one_liner: Random silence makes robust features
    reference: Srivastava et al. 2014
"""


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    scripts = root / "scripts"
    scripts.mkdir()
    short = (FIX / "short.yaml").read_text().replace("series: Test Series\n", "")
    (scripts / "part9.yaml").write_text(short)
    (scripts / "part10.yaml").write_text(
        short.replace("part: 9", "part: 10").replace('"Test Series #9"', '"Test Series #10"').replace("Part 10", "Part 11")
        + SECOND
    )
    (scripts / "series.yaml").write_text("series: Test Series\nparts:\n  - part9.yaml\n  - part10.yaml\n")
    out = root / "output"
    args = ["--cache-dir", str(root / "cache"), "--output-dir", str(out)]
    assert main(["render", "-q", *args, str(scripts / "series.yaml")]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine: install Debian's `chromium` package (.ci/run does)")
    b = Browser(exe)
    yield b
    b.close()


@pytest.fixture(scope="module", params=["file", "http"])
def page(request, series, browser):
    """The gallery, opened from the file system and from a static web server."""
    stop = None
    if request.param == "file":
        url = (series / "index.html").resolve().as_uri()
    else:
        base, stop = serve(series)
        url = f"{base}/index.html"
    browser.errors.clear()
    browser.open(url)
    yield browser
    if stop:
        stop()


def parts(series: Path) -> list[Path]:
    return sorted((d for d in series.iterdir() if (d / "manifest.json").is_file()), key=lambda d: int(d.name[4:]))


def test_a_series_render_writes_the_gallery_with_every_part(series):
    html = (series / "index.html").read_text()
    for d in parts(series):
        man = json.loads((d / "manifest.json").read_text())
        assert f'src="{d.name}/{d.name}.mp4"' in html and f'{d.name}/thumbnail.jpg"' in html
        assert man["title"] in html and "check passed" in html
        assert f"{man['loudness']['integrated_lufs']:.1f} LUFS" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing fetched


def test_the_page_loads_without_a_console_error(page):
    assert page.evaluate("document.querySelectorAll('section.part video').length") == 2
    page.evaluate("new Promise(r => setTimeout(r, 500))")  # late errors (a track or poster that fails)
    assert page.errors == []


def _video(i: int) -> str:
    return f"document.querySelectorAll('section.part video')[{i}]"


def _ready(i: int) -> str:
    return f"""const v = {_video(i)};
      if (v.readyState < 1) await new Promise((r, e) => {{
        v.addEventListener('loadedmetadata', r, {{once: true}}); v.addEventListener('error', e, {{once: true}}); v.load(); }});"""


def _seek(t: float) -> str:
    """Seek and wait until the frame at `t` is the one shown."""
    return f"""await new Promise(r => {{ v.addEventListener('seeked', r, {{once: true}}); v.currentTime = {t}; }});
      if (v.requestVideoFrameCallback) await Promise.race([new Promise(r => v.requestVideoFrameCallback(r)),
                                                           new Promise(r => setTimeout(r, 300))]);"""


def test_each_video_plays_to_its_end_in_the_browser(page, series):
    for i, d in enumerate(parts(series)):
        man = json.loads((d / "manifest.json").read_text())
        codecs = mp4.codecs(d / f"{d.name}.mp4")
        assert re.fullmatch(r"avc1\.[0-9a-f]{6}, mp4a\.40\.2", codecs), codecs
        assert page.evaluate(f"document.createElement('video').canPlayType('video/mp4; codecs=\"{codecs}\"')") == "probably"
        assert codecs in page.evaluate(f"{_video(i)}.querySelector('source').type")
        got = page.evaluate(f"""(async () => {{ {_ready(i)}
          let errors = 0; v.addEventListener('error', () => errors++);
          v.muted = true; v.playbackRate = 8;
          const ended = new Promise(r => v.addEventListener('ended', r, {{once: true}}));
          await v.play();
          await Promise.race([ended, new Promise(r => setTimeout(r, 20000))]);
          return {{ended: v.ended, error: v.error && v.error.code, errors, duration: v.duration, at: v.currentTime}};
        }})()""")
        assert got["ended"] and got["error"] is None and got["errors"] == 0, got
        fps = man["fps"]
        assert abs(got["duration"] - man["total_frames"] / fps) <= 1 / fps, (got, man["total_frames"])


def test_the_caption_track_shows_each_cue_at_its_time(page, series):
    for i, d in enumerate(parts(series)):
        cues = parse_srt((d / f"{d.name}.srt").read_text())
        got = page.evaluate(f"""(async () => {{ {_ready(i)}
          v.pause(); const tr = v.textTracks[0]; tr.mode = 'hidden';
          while (!tr.cues || tr.cues.length === 0) await new Promise(r => setTimeout(r, 20));
          const out = {{cues: [...tr.cues].map(c => [c.startTime, c.endTime, c.text]), active: []}};
          for (const c of [...tr.cues]) {{
            {_seek("(c.startTime + c.endTime) / 2")}
            // the track's active cues follow the clock a moment after the seek: wait for the change
            for (let k = 0; k < 50 && ![...tr.activeCues].includes(c); k++) await new Promise(r => setTimeout(r, 10));
            out.active.push([...tr.activeCues].map(a => a.text));
          }}
          return out;
        }})()""")
        assert len(got["cues"]) == len(cues)
        for (a, b, text), (ga, gb, gt), active in zip(cues, got["cues"], got["active"]):
            assert abs(ga - a / 1000) < 0.002 and abs(gb - b / 1000) < 0.002 and gt == text
            assert active == [text], (text, active)


def _decoded(video: Path, n: int, w: int, h: int) -> np.ndarray:
    """Frame n as ffmpeg decodes it, turned into RGB with the file's own BT.709 tv-range matrix."""
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(video), "-vf", f"select=eq(n\\,{n})", "-fps_mode", "passthrough",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    buf = np.frombuffer(raw, np.uint8)
    y = buf[: w * h].reshape(h, w).astype(np.float32)
    up = lambda p: np.repeat(np.repeat(p.reshape(h // 2, w // 2), 2, 0), 2, 1).astype(np.float32) - 128  # noqa: E731
    cb, cr = up(buf[w * h : w * h * 5 // 4]), up(buf[w * h * 5 // 4 :])
    yy = 1.164384 * (y - 16)
    rgb = np.stack([yy + 1.792741 * cr, yy - 0.213249 * cb - 0.532909 * cr, yy + 2.112402 * cb], -1)
    return np.clip(rgb, 0, 255)


def _shown(page, i: int, t: float, w: int, h: int) -> np.ndarray:
    """The picture the video shows at `t`: drawn to a canvas where the page may read it back (a page
    from a web server); from a file:// page, whose canvas the video taints, a screenshot of the video
    laid out at its own size with its controls and caption track hidden."""
    if page.evaluate("location.protocol") != "file:":
        url = page.evaluate(f"""(async () => {{ {_ready(i)}
          v.pause(); {_seek(t)}
          const c = document.createElement('canvas'); c.width = {w}; c.height = {h};
          c.getContext('2d').drawImage(v, 0, 0, {w}, {h});
          return c.toDataURL('image/png');
        }})()""")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), np.float32)
    view = page.evaluate("[innerWidth, innerHeight]")
    assert view[0] >= w and view[1] >= h, f"the browser's view {view} is smaller than the video (see browser.py)"
    # laid out at its own size, fixed at the viewport's corner (whole pixels, whatever the page's layout
    # and scrollbars do), before the seek, so that the frame the seek presents is painted at that size;
    # then two animation frames, for the compositor to put it on screen
    page.evaluate(f"""(async () => {{ {_ready(i)}
      v.pause(); v.controls = false; v.removeAttribute('poster');
      const modes = [...v.textTracks].map(t => t.mode); for (const t of v.textTracks) t.mode = 'hidden';  // no cue box
      v.dataset.modes = JSON.stringify(modes);
      Object.assign(v.style, {{position: 'fixed', left: '0px', top: '0px', zIndex: '2147483647',
                               width: '{w}px', height: '{h}px', borderRadius: '0px'}});
      {_seek(t)}
      await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); }})()""")
    try:
        # the screenshot once two in a row agree: a paused video's picture does not change, but the
        # first capture can come before the compositor has drawn it (seen once in CI: a blank picture)
        last = None
        for _ in range(8):
            shot = page.call("Page.captureScreenshot", format="png", clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
            if shot["data"] == last:
                break
            last = shot["data"]
            time.sleep(0.1)
    finally:
        page.evaluate(f"""(() => {{ const v = {_video(i)}; v.controls = true; v.removeAttribute('style');
          JSON.parse(v.dataset.modes || '[]').forEach((m, k) => {{ v.textTracks[k].mode = m; }}); }})()""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(last))).convert("RGB"), np.float32)


def test_a_seek_to_each_segments_midpoint_shows_its_picture(page, series):
    for i, d in enumerate(parts(series)):
        man = json.loads((d / "manifest.json").read_text())
        fps, w, h = man["fps"], man["width"], man["height"]
        video = d / f"{d.name}.mp4"
        shots, frames = [], []
        for seg in man["segments"]:
            n = (seg["start_frame"] + seg["end_frame"]) // 2
            shots.append(_shown(page, i, (n + 0.5) / fps, w, h))
            frames.append(_decoded(video, n, w, h))
        for k, shot in enumerate(shots):
            err = [float(np.abs(shot - f).mean()) for f in frames]
            # the browser shows the decoded frame (within the rounding of two YCbCr conversions), and
            # no other segment's
            assert err[k] < 2.0, (d.name, k, err)
            others = [e for j, e in enumerate(err) if j != k and man["segments"][j]["kind"] == man["segments"][k]["kind"]]
            assert all(e > 4 * err[k] + 1.0 for e in others), err


def test_the_upload_package_follows_the_platforms_rules(series):
    for d in parts(series):
        man = json.loads((d / "manifest.json").read_text())
        up = json.loads((d / "upload.json").read_text())
        assert up["title"] == man["title"] and len(up["title"]) <= 100 and "<" not in up["description"]
        assert (d / "description.txt").read_text() == up["description"]
        for seg in man["segments"]:
            if seg["kind"] == "concept":
                assert seg["name"] in up["description"]
        assert len(up["description"].encode()) <= 5000
        # two short concepts: no three chapters of 10 s, so none are given, and the reason is said
        assert up["chapters"] == [] and "chapters" in up["chapters_note"]
        # the storyboard: a row per segment, a tile per moment (its card, each cue's middle), each tile
        # the frame the video shows then
        with Image.open(d / "storyboard.png") as im:
            assert im.format == "PNG"
            sheet = np.asarray(im.convert("RGB"), np.float32)
        plan_rows = [[(seg["start_frame"] + seg["end_frame"]) // 2] for seg in man["segments"]]
        assert sheet.shape[0] >= len(plan_rows) * storyboard.TILE_H
        moments = _moments(d)
        assert [len(r) for r in moments] == [1 + n for n in _cue_counts(d, man)]
        y = 40
        for row in moments:
            for i, frame in enumerate(row[:3]):
                x = storyboard.HEAD_W + i * (storyboard.TILE_W + storyboard.GAP)
                tile = sheet[y : y + storyboard.TILE_H, x : x + storyboard.TILE_W]
                want = Image.fromarray(_decoded(d / f"{d.name}.mp4", frame, man["width"], man["height"]).astype(np.uint8))
                want_a = np.asarray(want.resize((storyboard.TILE_W, storyboard.TILE_H), Image.BOX), np.float32)
                assert np.abs(tile - want_a).mean() < 4.0, (d.name, frame)
            y += storyboard.TILE_H + storyboard.LABEL_H + storyboard.GAP
        names = set(outputs.file_names(d.name).values())
        assert names <= {p.name for p in d.iterdir()}


def _cue_counts(d: Path, man: dict) -> list[int]:
    cues = parse_srt((d / f"{d.name}.srt").read_text())
    fps = man["fps"]
    return [
        sum(1 for a, _, _ in cues if seg["start_frame"] <= round(a * fps / 1000) < seg["end_frame"]) for seg in man["segments"]
    ]


def _moments(d: Path) -> list[list[int]]:
    """The storyboard's moments, from the plan the render made (`plan --json`)."""
    from shortgen.cache import Cache
    from shortgen.script.load import load_episode
    from shortgen.speech.narrate import EspeakEngine
    from shortgen.timeline import speak_and_plan

    man = json.loads((d / "manifest.json").read_text())
    cache = d.parent.parent / "cache"
    plan = speak_and_plan(load_episode(man["inputs"]["script"], {"cache_dir": cache}), EspeakEngine(), Cache(cache)).plan
    return [[f for f, _ in row] for row in storyboard.moments(plan)]
