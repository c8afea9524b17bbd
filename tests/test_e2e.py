"""End to end with the real engine and the real ffmpeg: render the short fixture and probe what came out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers
from helpers import yuv420
from shortgen.cache import Cache
from shortgen.cli import main
from shortgen.picture import draw
from shortgen.publish import outputs
from shortgen.script.load import load_episode
from shortgen.speech.narrate import EspeakEngine
from shortgen.timeline import speak_and_plan
from shortgen.video.encode import FfmpegEncoder, VideoSettings, ffmpeg_exe

pytestmark = pytest.mark.e2e
FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    layer = {"cache_dir": root / "cache", "output_dir": root / "out"}
    args = ["--cache-dir", str(layer["cache_dir"]), "--output-dir", str(layer["output_dir"])]
    assert main(["render", "-q", *args, str(FIX / "short.yaml")]) == 0
    ep = load_episode(FIX / "short.yaml", layer)
    plan = speak_and_plan(ep, EspeakEngine(), Cache(layer["cache_dir"])).plan
    return {"dir": layer["output_dir"] / "part9", "plan": plan, "ep": ep, "args": args, "layer": layer}


def frame_rgb(video: Path, n: int, w=1080, h=1920) -> np.ndarray:
    out = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(video),
            "-vf",
            f"select=eq(n\\,{n})",
            "-fps_mode",
            "passthrough",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(out.stdout, np.uint8).reshape(h, w, 3)


def test_video_facts(rendered):
    d, plan = rendered["dir"], rendered["plan"]
    p = FfmpegEncoder().probe(d / "part9.mp4")
    assert (p.width, p.height, p.fps, p.codec, p.pix_fmt) == (1080, 1920, 30, "h264", "yuv420p")
    assert p.profile == "High" and p.colour.startswith("tv, bt709")
    assert p.frames == plan.total_frames
    assert abs(p.duration - plan.total_frames / 30) <= 1 / 30
    assert (p.audio, p.audio_rate, p.audio_channels) == ("aac", 48000, "stereo")
    # the render reads its file's header and sample table only: what it reports is what counting says
    assert FfmpegEncoder().probe(d / "part9.mp4", count=False) == p


def test_an_independent_reader_agrees(rendered):
    from moviepy import VideoFileClip

    with VideoFileClip(str(rendered["dir"] / "part9.mp4")) as clip:
        assert tuple(clip.size) == (1080, 1920) and clip.fps == 30
        assert abs(clip.duration - rendered["plan"].total_frames / 30) <= 1 / 30
        assert clip.audio is not None


def test_audio_and_video_end_together(rendered):
    out = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(rendered["dir"] / "part9.mp4"),
            "-map",
            "0:a",
            "-f",
            "s16le",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-",
        ],
        capture_output=True,
        check=True,
    )
    audio_s = len(out.stdout) / 2 / 48000
    assert abs(audio_s - rendered["plan"].total_frames / 30) <= 1 / 30


def test_loudness_and_true_peak(rendered):
    lufs, tp = FfmpegEncoder().loudness(rendered["dir"] / "part9.mp4")
    assert abs(lufs - -14.0) <= 1.0 and tp <= -1.0
    man = json.loads((rendered["dir"] / "manifest.json").read_text())
    assert man["loudness"]["integrated_lufs"] == pytest.approx(lufs, abs=0.05)
    # the manifest's peak is the largest of the chunks' peaks, each measured alone: the same number
    assert man["loudness"]["true_peak_dbtp"] == pytest.approx(tp, abs=0.1)


def test_each_narration_plays_where_the_plan_puts_it_and_the_splices_are_silent(rendered):
    """The spliced AAC track, decoded: every narration sits within half an AAC frame (512 samples) of
    its planned frame, matches its mastered speech, and the chunk joins are digital silence."""
    from shortgen.audio import sound

    plan, s = rendered["plan"], rendered["ep"].settings
    ff = ffmpeg_exe()
    out = subprocess.run(
        [ff, "-v", "error", "-i", str(rendered["dir"] / "part9.mp4"), "-map", "0:a", "-af", "pan=mono|c0=c0", "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    )
    pad = 2048
    track = np.concatenate([np.zeros(pad, np.float32), np.frombuffer(out.stdout, np.float32)])
    m = speak_and_plan(rendered["ep"], EspeakEngine(), Cache(rendered["layer"]["cache_dir"]))
    for seg, narration, ch in zip(plan.segments, m.narrations, sound.chunks(plan)):
        x, rate = sound.load_speech(narration.wav)
        y = sound.master(x, s.loudness_lufs, s.true_peak_dbtp, rate).samples
        y48 = np.frombuffer(
            subprocess.run(
                [
                    ff,
                    "-v",
                    "error",
                    "-f",
                    "f32le",
                    "-ar",
                    str(rate),
                    "-ac",
                    "1",
                    "-i",
                    "-",
                    "-af",
                    "aresample=48000",
                    "-f",
                    "f32le",
                    "-",
                ],
                input=y.tobytes(),
                capture_output=True,
                check=True,
            ).stdout,
            np.float32,
        )
        at = pad + seg.narration_start * 1600
        window = track[at - 1024 : at + len(y48) + 1024]
        n = 1 << (len(window) + len(y48)).bit_length()
        xc = np.fft.irfft(np.fft.rfft(window, n) * np.conj(np.fft.rfft(y48, n)), n)[:2049]
        lag = int(np.argmax(xc)) - 1024
        assert abs(lag) <= 512, (seg.name, lag)
        got = track[at + lag : at + lag + len(y48)]
        # 160 kb/s AAC keeps the speech to within a few percent (signal-to-noise over 20 dB)
        assert 10 * np.log10(np.sum(y48**2) / np.sum((got - y48) ** 2)) > 20, seg.name
        if ch.first:
            join = pad + ch.first * 1024
            assert np.abs(track[join - 1024 : join + 1024]).max() < 1e-4, seg.name


def test_srt_and_vtt_match_the_plan(rendered):
    plan = rendered["plan"]
    want = [(outputs.frames_to_ms(c.start, 30), outputs.frames_to_ms(c.end, 30), c.text) for s in plan.segments for c in s.cues]
    assert helpers.parse_srt((rendered["dir"] / "part9.srt").read_text()) == want
    assert (rendered["dir"] / "part9.vtt").read_text().count(" --> ") == len(want)


def test_frames_show_the_planned_state_from_its_first_frame(rendered):
    """Decode the frames either side of caption changes and compare with the drawn pictures."""
    plan, s = rendered["plan"], rendered["ep"].settings
    seg = plan.concepts()[0]
    card = draw.draw_card(seg, plan, s)
    x0, y0, x1, y1 = draw.caption_origin(s)
    checked = 0
    for prev, cur in zip(seg.states, seg.states[1:]):
        if cur.cue is None or prev.cue is None or checked >= 3:
            continue
        want_prev = np.asarray(helpers.draw_state(card, seg, prev, s).image)[y0:y1, x0:x1].astype(int)
        want_cur = np.asarray(helpers.draw_state(card, seg, cur, s).image)[y0:y1, x0:x1].astype(int)
        for n, want, other in ((cur.start, want_cur, want_prev), (cur.start - 1, want_prev, want_cur)):
            got = frame_rgb(rendered["dir"] / "part9.mp4", n)[y0:y1, x0:x1].astype(int)
            assert np.abs(got - want).mean() < np.abs(got - other).mean(), f"frame {n}"
            assert np.abs(got - want).mean() < 4
        checked += 1
    assert checked == 3


def test_thumbnail_cover_and_manifest(rendered):
    d = rendered["dir"]
    with Image.open(d / "thumbnail.jpg") as im:
        assert im.size == (1280, 720)
    assert (d / "thumbnail.jpg").stat().st_size < 2_000_000
    with Image.open(d / "cover.jpg") as im:
        assert im.size == (1080, 1920)
    man = json.loads((d / "manifest.json").read_text())
    assert man["tool"]["name"] == "shortgen" and man["video"]["profile"] == "High"
    segs = man["segments"]
    assert [x["start_frame"] for x in segs[1:]] == [x["end_frame"] for x in segs[:-1]]
    assert all(x["duration_s"] == round((x["end_frame"] - x["start_frame"]) / 30, 3) for x in segs)
    assert len(man["inputs"]["script_sha256"]) == 64 and man["inputs"]["tts_engine"].startswith("pyttsx3-")


def test_rendered_check_passes(rendered, capsys):
    assert main(["check", "--cache-dir", str(rendered["layer"]["cache_dir"]), str(rendered["dir"])]) == 0
    assert "BAD" not in capsys.readouterr().out


def test_plan_json_command(rendered, capsys):
    assert main(["plan", "--json", "--cache-dir", str(rendered["layer"]["cache_dir"]), str(FIX / "short.yaml")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_frames"] == rendered["plan"].total_frames


def _decode(path: Path, w: int, h: int, fmt: str = "rgb24") -> np.ndarray:
    out = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", fmt, "-"], capture_output=True, check=True
    ).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, h * 3 // 2 if fmt == "yuv420p" else h, w, *(() if fmt == "yuv420p" else (3,)))


def test_our_yuv_conversion_agrees_with_ffmpegs(rendered, tmp_path):
    """The renderer converts pictures itself; ffmpeg's own BT.709 conversion of the same card agrees."""
    plan, s = rendered["plan"], rendered["ep"].settings
    card = draw.draw_card(plan.concepts()[0], plan, s).image.convert("RGB")
    png = tmp_path / "card.png"
    card.save(png)
    theirs = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(png),
            "-vf",
            "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    ours = b"".join(yuv420(card))
    assert len(ours) == len(theirs) == 1080 * 1920 * 3 // 2
    a, b = np.frombuffer(ours, np.uint8).astype(int), np.frombuffer(theirs, np.uint8).astype(int)
    n = 1080 * 1920
    assert np.abs(a[:n] - b[:n]).max() <= 1  # luma: the same up to rounding
    assert np.abs(a[n:] - b[n:]).mean() < 0.5  # chroma: their filter is softer at sharp edges


def test_skip_and_full_modes_encode_the_same_frames(tmp_path):
    """Skip mode (distinct pictures + P-skip frames) and full mode (every frame through x264) agree."""
    w, h = 64, 48
    pics = []
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        img = Image.new("RGB", (w, h), colour)
        img.paste((255, 255, 255), (8 * i, 8, 8 * i + 16, 24))
        pics.append(img)
    repeats = [2, 1, 3]
    got = {}
    for mode in ("skip", "full"):
        v = VideoSettings(w, h, 30, "veryfast", 18, threads=1, mode=mode, keyint=60)
        out, enc = tmp_path / f"{mode}.h264", FfmpegEncoder()
        if mode == "skip":
            enc.assemble(enc.encode_runs([yuv420(p) for p in pics], [(3, ())], v, tmp_path / "s.h264"), [repeats], out)
        else:
            enc.encode_frames([yuv420(p) for p in pics], repeats, v, out)
        got[mode] = _decode(out, w, h).astype(int)
    assert len(got["skip"]) == len(got["full"]) == sum(repeats)
    want = [np.asarray(p).astype(int) for p, n in zip(pics, repeats) for _ in range(n)]
    for i, frame in enumerate(want):
        for mode in ("skip", "full"):
            assert np.abs(got[mode][i] - frame).mean() < 3, (mode, i)


def test_runs_stand_alone_and_follow_one_another_in_any_order(tmp_path):
    """Runs cut from one x264 stream are cached apart and later joined in other orders and with other
    durations (an edit retimes a segment): every such stream decodes to the right pictures."""
    w, h = 64, 48
    pics = []
    for i in range(6):
        img = Image.new("RGB", (w, h), (40 * i, 200 - 30 * i, 90))
        img.paste((255, 255, 255), (8 * i, 8, 8 * i + 12, 30))
        pics.append(img)
    v = VideoSettings(w, h, 30, "veryfast", 18, threads=1, keyint=60)
    runs = FfmpegEncoder().encode_runs([yuv420(p) for p in pics], [(1, ()), (3, (2,)), (2, ())], v, tmp_path / "scratch.h264")
    assert len(runs) == 3 and not (tmp_path / "scratch.h264").exists()
    members = [pics[0:1], pics[1:4], pics[4:6]]
    for order, repeats in (([0, 1, 2], [[2], [1, 1, 1], [3, 1]]), ([2, 0, 1], [[1, 2], [4], [2, 1, 2]])):
        out = tmp_path / "seg.h264"
        FfmpegEncoder().assemble([runs[k] for k in order], repeats, out)
        want = [np.asarray(p).astype(int) for k, reps in zip(order, repeats) for p, n in zip(members[k], reps) for _ in range(n)]
        got = _decode(out, w, h).astype(int)
        assert len(got) == len(want)
        for i, frame in enumerate(want):
            assert np.abs(got[i] - frame).mean() < 3, (order, i)


def test_a_segment_of_more_than_a_hundred_runs_encodes(tmp_path):
    """One-word sentences at 450 wpm make over a hundred cues in 30 s, each run opened by a forced IDR
    picture: ffmpeg's keyframe expression failed past a hundred terms ("Cannot allocate memory")."""
    w, h = 32, 32
    pics = [yuv420(Image.new("RGB", (w, h), (i % 256, (7 * i) % 256, (31 * i) % 256))) for i in range(130)]
    v = VideoSettings(w, h, 30, "ultrafast", 18, threads=1, keyint=60)
    runs = FfmpegEncoder().encode_runs(pics, [(1, ())] * 120 + [(10, (5,))], v, tmp_path / "scratch.h264")
    assert len(runs) == 121  # split_runs found an IDR picture opening each run, where it was forced


def _textured(seed: int, w: int = 128, h: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 255, h)[:, None, None]
    return Image.fromarray(np.clip(y * 0.6 + rng.normal(60, 25, (h, w, 3)), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("rate", ["cqp", "crf"])
def test_a_cue_run_is_the_same_bytes_whatever_is_encoded_before_it(tmp_path, rate):
    """A cached run is reused by any render that shows its pictures, so its bytes must be its pictures'
    alone: a cold render and an edit (which encodes fewer runs in one go) then give the same file. At a
    constant quantiser they are; x264's CRF carries its rate control from run to run, and is not."""
    runs = {k: [yuv420(_textured(10 * k + i)) for i in range(3)] for k in range(4)}
    v = VideoSettings(128, 96, 30, "veryfast", 20, threads=1, keyint=60, rate=rate)

    def last_run(order: list[int]) -> bytes:
        """The last run, as a segment of its own (assembling numbers its IDR pictures afresh)."""
        enc, out = FfmpegEncoder(), tmp_path / "seg.h264"
        pics = [p for k in order for p in runs[k]]
        enc.assemble(enc.encode_runs(pics, [(3, ())] * len(order), v, tmp_path / "scratch.h264")[-1:], [[1, 2, 1]], out)
        return out.read_bytes()

    alone, after = last_run([3]), {tuple(o): last_run(o) for o in ([0, 3], [1, 2, 3], [0, 1, 2, 3])}
    same = all(b == alone for b in after.values())
    assert same if rate == "cqp" else not same  # the CRF case shows the test can tell
    assert b"\x00\x00\x01\x06" not in alone  # no SEI: x264 writes its own into an encode's first picture only


def test_an_edited_render_is_the_cold_render_of_the_edited_script_byte_for_byte(rendered, tmp_path):
    """After an edit, shortgen reuses what the cache holds and makes only what the edit touched; what it
    writes must not depend on that history. Edit a word in the rendered fixture and render it with the
    warm cache, then render the same edited script cold: every file of the two sets is the same bytes."""
    edited = tmp_path / "short.yaml"
    edited.write_text((FIX / "short.yaml").read_text().replace("Memorising the noise", "Learning the noise"))
    warm = ["--cache-dir", str(rendered["layer"]["cache_dir"]), "--output-dir", str(tmp_path / "warm")]
    assert main(["render", "-q", *warm, str(edited)]) == 0
    cold = ["--cache-dir", str(tmp_path / "cold-cache"), "--output-dir", str(tmp_path / "cold")]
    assert main(["render", "-q", *cold, str(edited)]) == 0
    a, b = tmp_path / "warm" / "part9", tmp_path / "cold" / "part9"
    names = sorted(f.name for f in a.iterdir())
    assert names == sorted(f.name for f in b.iterdir()) and "part9.mp4" in names
    assert [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()] == []
    assert (a / "part9.mp4").read_bytes() != (rendered["dir"] / "part9.mp4").read_bytes()  # the edit is in it


def test_the_file_streams_constant_rate_and_interleaved(rendered):
    """Read from the MP4's own sample tables, not ffmpeg's summary: one stts entry (every frame 1/30 s),
    moov before mdat, and audio and video never more than half a second apart along the file."""
    from shortgen.video.mp4 import interleave_gap, read_tracks

    tracks, mdat = read_tracks(rendered["dir"] / "part9.mp4")
    video = next(t for t in tracks if t.kind == "vide")
    audio = next(t for t in tracks if t.kind == "soun")
    assert video.stts == [(rendered["plan"].total_frames, video.timescale // 30)]
    assert len(audio.stts) == 1 and audio.stts[0][1] == 1024
    assert interleave_gap(tracks) <= 0.5
    assert 0 < mdat <= min(off for t in tracks for off, _, _ in t.chunks)  # moov first: the index up front


def test_consecutive_idr_pictures_never_share_an_idr_pic_id(tmp_path):
    """Runs of one picture shown one frame each are IDR after IDR, from separate x264 calls; segments
    joined in any order meet IDR to IDR too. Every such pair differs, and the stream decodes strictly."""
    from shortgen.video import h264

    enc = FfmpegEncoder()
    v = VideoSettings(64, 64, 30, "veryfast", 20, keyint=60)
    rng = np.random.default_rng(1)
    pics = [(rng.integers(16, 235, 64 * 64 * 3 // 2, dtype=np.uint8).tobytes(),) for _ in range(6)]
    segs = []
    for half in (pics[:3], pics[3:]):
        runs = [enc.encode_runs([p], [(1, ())], v, tmp_path / "scratch.h264")[0] for p in half]
        out = tmp_path / f"seg{len(segs)}.h264"
        enc.assemble(runs, [[1]] * len(runs), out)
        segs.append(out.read_bytes())
    stream = segs[0] + segs[1] + segs[0]  # segment after segment, as the join puts them

    def idr_ids(data):
        sps = None
        out = []
        for nal in h264.split_nals(data):
            t = nal[0] & 0x1F
            if t == 7:
                sps = h264.parse_sps(h264.unescape(nal))
            elif t == 8:
                h264.parse_pps(h264.unescape(nal))  # refused if the stream breaks expand's rules
            elif t in (1, 5):
                r = h264.BitReader(h264.unescape(nal))
                r.pos = 8
                r.ue(), r.ue(), r.ue()
                r.pos += sps["log2_max_frame_num"]
                out.append(r.ue() if t == 5 else None)
        return out

    ids = idr_ids(stream)
    assert len(ids) == 9 and all(i is not None for i in ids)
    assert all(a != b for a, b in zip(ids, ids[1:])), ids
    path = tmp_path / "all.h264"
    path.write_bytes(stream)
    strict = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-xerror", "-err_detect", "explode", "-f", "h264", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
    )
    assert strict.returncode == 0 and not strict.stderr, strict.stderr[-300:]


def test_an_independent_h264_decoder_gives_the_same_frames(rendered):
    """openh264 (built into imageio-ffmpeg's ffmpeg) against libavcodec: every frame, bit for bit, so the
    skip frames, the rewritten slice headers and the IDR numbering hold for a second implementation."""

    def frames(*decoder):
        out = subprocess.run([ffmpeg_exe(), "-v", "error", *decoder, "-i", str(rendered["dir"] / "part9.mp4"),
                              "-map", "0:v", "-f", "framemd5", "-"], capture_output=True, text=True)  # fmt: skip
        return out.returncode, [ln.split(",")[-1].strip() for ln in out.stdout.splitlines() if not ln.startswith("#")]

    code, theirs = frames("-c:v", "libopenh264")
    if code != 0:
        pytest.skip("this ffmpeg has no openh264 decoder")
    assert theirs == frames()[1] and len(theirs) == rendered["plan"].total_frames


def test_the_storyboard_lane_runs_below_the_render_priority():
    """The storyboard waits for no one: its thread yields the cores to the lanes the join waits for."""
    import os
    import threading

    from shortgen.render import _background

    got = {}

    def lane():
        _background()
        got["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=lane)
    t.start()
    t.join()
    assert got["nice"] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)
