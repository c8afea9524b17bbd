"""Stage 5: ffmpeg command lines are pure functions, tested without running ffmpeg; plus the H.264 rewriter."""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image

from helpers import yuv420
from shortgen.errors import ProbeError
from shortgen.video import h264
from shortgen.video.encode import (
    VideoSettings,
    adts_frames,
    distinct_args,
    join_args,
    loudness_args,
    pcm_args,
    run_args,
    splice,
    voice_args,
)
from shortgen.video.reports import parse_loudness, parse_probe

V = VideoSettings(1080, 1920, 30, "veryfast", 20, threads=1, mode="skip", keyint=60)


def after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_distinct_args_feed_raw_yuv_and_ask_x264_for_a_skippable_stream():
    a = distinct_args("ffmpeg", V, 17, Path("o.h264"))
    assert a[0] == "ffmpeg" and a[-1] == "o.h264"
    assert after(a, "-f") == "rawvideo" and after(a, "-pix_fmt") == "yuv420p" and after(a, "-s") == "1080x1920"
    assert "-vf" not in a  # the pictures arrive converted: ffmpeg does no per-frame scaling
    # ... and labelled as BT.709 tv range, or ffmpeg would insert a BT.601 -> BT.709 conversion of its own
    head = a[: a.index("-i")]
    assert after(head, "-colorspace") == "bt709" and after(head, "-color_range") == "tv"
    assert after(a, "-i") == "-"
    params = dict(kv.split("=") for kv in after(a, "-x264-params").split(":"))
    assert params["bframes"] == "0" and params["ref"] == "1" and params["cabac"] == "0"
    assert params["weightp"] == "0" and params["keyint"] == "17"
    assert after(a, "-preset") == "veryfast" and after(a, "-crf") == "20" and after(a, "-threads") == "1"
    assert after(a, "-colorspace") == "bt709" and after(a, "-color_range") == "tv"
    assert a[a.index("-pix_fmt", a.index("-c:v")) + 1] == "yuv420p"
    # its count of encoded pictures, for pacing.py: progress lines on stdout, often
    assert after(a, "-progress") == "pipe:1" and float(after(a, "-stats_period")) <= 0.05


def test_x264_delay_counts_its_lookahead_and_a_picture_per_thread():
    from shortgen.video import pacing

    assert pacing.x264_delay(distinct_args("ff", V, 17, Path("o"))) == 5 + 1 + 1  # crf: MOVING_X264's lookahead
    cqp = dataclasses.replace(V, rate="cqp", threads=2)
    assert pacing.x264_delay(run_args("ff", cqp, [0], Path("o"))) == 0 + 2 + 1


def test_pace_holds_the_sender_to_what_x264_has_encoded():
    import os
    import threading
    import time

    from shortgen.video import pacing

    r, w = os.pipe()
    with os.fdopen(r, "rb") as progress, os.fdopen(w, "wb", buffering=0) as report:
        pace = pacing.Pace(progress, ahead=3)
        for _ in range(3):
            pace.wait()  # three on their way: allowed
        blocked = threading.Thread(target=pace.wait)
        t0 = time.monotonic()
        blocked.start()
        time.sleep(0.05)
        assert blocked.is_alive()  # the fourth waits ...
        report.write(b"fps=0.00\nframe=1\nprogress=continue\n")
        blocked.join(timeout=2)
        assert not blocked.is_alive() and time.monotonic() - t0 < pacing.PACE_WAIT_S  # ... for the first
        assert (pace.sent, pace.done, pace.ahead) == (4, 1, 3)
        t0 = time.monotonic()
        pace.wait()  # no count comes: it goes on after PACE_WAIT_S, allowing more from then on
        assert time.monotonic() - t0 >= pacing.PACE_WAIT_S * 0.9 and pace.ahead == 5
    # ffmpeg gone: nothing more is waited for
    r, w = os.pipe()
    os.close(w)
    with os.fdopen(r, "rb") as progress:
        pace = pacing.Pace(progress, ahead=1)
        time.sleep(0.05)
        t0 = time.monotonic()
        for _ in range(10):
            pace.wait()
        assert time.monotonic() - t0 < 0.2


def test_join_copies_video_at_a_constant_rate_with_bt709_tags_and_moves_the_index_up_front():
    a = join_args("ff", 30, Path("a.aac"), Path("final.mp4"))
    assert (after(a, "-f"), after(a, "-r"), after(a, "-i")) == ("h264", "30", "-")  # segments on stdin
    assert a.index("-r") < a.index("-i")  # an input option: every frame stamped at 1/30 s
    assert after(a, "-max_interleave_delta") == "0"  # the muxer interleaves the two tracks
    assert after(a, "-c") == "copy" and "-nostdin" not in a
    assert "-bsf:v" not in a  # the colour tags are already in each segment's SPS (see test_e2e)
    assert after(a, "-video_track_timescale") == "15360"
    assert a.count("-map") == 2 and "0:v:0" in a and "1:a:0" in a
    assert after(a, "-movflags") == "+faststart" and a[-1] == "final.mp4"
    # the audio starts one AAC frame (1024 samples at 48 kHz) early: the muxer's edit list drops the priming
    assert a.index("-itsoffset") < a.index("a.aac")
    assert round(float(after(a, "-itsoffset")) * 48000) == -1024


def test_voice_chunk_is_aac_48k_stereo_placed_and_cut_to_the_sample():
    a = voice_args("ff", 22050, 3072, 40960, "160k", Path("v.aac"))
    assert (after(a, "-f"), after(a, "-ar"), after(a, "-ac"), after(a, "-i")) == ("f32le", "22050", "1", "-")
    af = after(a, "-af").split(",")
    assert af[0] == "aresample=48000" and af[1] == "adelay=delays=3072S:all=1"
    assert "apad=whole_len=40960" in af and "atrim=end_sample=40960" in af
    assert af[-1] == "pan=stereo|c0=c0|c1=c0"  # both channels at full level (not -ac 2's -3 dB)
    assert (after(a, "-c:a"), after(a, "-b:a"), after(a, "-aac_coder")) == ("aac", "160k", "fast")
    assert a[a.index("-c:a") :].count("-f") == 1 and a[-3:] == ["-f", "adts", "v.aac"]


def test_a_mixed_piece_is_metered_from_its_own_encoded_packets_over_its_frames_only():
    a = pcm_args("ff", "160k", Path("m.aac"))
    assert (after(a, "-f"), after(a, "-ar"), after(a, "-ac"), after(a, "-i")) == ("f32le", "48000", "2", "-")
    assert a[-3:] == ["-f", "adts", "m.aac"] and "-dec" not in a and after(a, "-v") == "error"
    m = pcm_args("ff", "160k", Path("m.aac"), meter=(2048, 2048 + 1024 * 94))
    assert m[: len(a)] == a[: a.index("-v")] + ["-v", "info"] + a[a.index("-v") + 2 :]  # the same encode ...
    # ... its packets decoded back in the same run (a loopback decoder: output lines up with the input)
    assert after(m, "-dec") == "0:0" and m[-3:] == ["-f", "null", "-"]
    assert [m[i + 1] for i, x in enumerate(m) if x == "-map"] == ["0:a", "[m]"]
    graph = after(m, "-filter_complex").split(",")
    assert graph[0] == "[dec:0]atrim=start_sample=2048:end_sample=98304"  # the piece's frames, not its rolls
    assert graph[1].startswith("ebur128=peak=true") and graph[1].endswith("[m]")


def _adts(payload: bytes) -> bytes:
    n = 7 + len(payload)
    return bytes([0xFF, 0xF1, 0x4C, 0x80 | (n >> 11), (n >> 3) & 0xFF, ((n & 7) << 5) | 0x1F, 0xFC]) + payload


def test_adts_frames_split_by_their_own_lengths_and_reject_garbage():
    frames = [_adts(bytes([i]) * (i * 37 % 300)) for i in range(9)]
    assert adts_frames(b"".join(frames)) == frames
    with pytest.raises(ValueError):
        adts_frames(b"".join(frames) + b"\x00\x01")
    with pytest.raises(ValueError):
        adts_frames(b"".join(frames)[:-3])


def test_splice_takes_each_chunks_frames_and_pads_with_its_last_silent_frame():
    a = [_adts(b"a%d" % i) for i in range(5)]
    b = [_adts(b"b%d" % i) for i in range(3)]
    out = adts_frames(splice([(a, 0, 4), (b, 1, 5)]))
    assert out == a[:4] + b[1:3] + [b[-1]] * 3


def test_yuv420_is_bt709_tv_range_with_chroma_averaged_per_2x2_block():
    def planes(colours, w=4, h=2):
        img = Image.new("RGB", (w, h))
        img.putdata(colours)
        return [list(p) for p in yuv420(img)]

    # white, black and the primaries land on BT.709's limited-range values (ITU-R BT.709-6 table 3)
    for rgb, want in (
        ((255, 255, 255), (235, 128, 128)),
        ((0, 0, 0), (16, 128, 128)),
        ((255, 0, 0), (63, 102, 240)),
        ((0, 255, 0), (173, 42, 26)),
        ((0, 0, 255), (32, 240, 118)),
    ):
        y, cb, cr = planes([rgb] * 8)
        assert (y, cb, cr) == ([want[0]] * 8, [want[1]] * 2, [want[2]] * 2), rgb
    # a 2x2 block of half red, half blue gives the mean of their chroma; luma stays per pixel
    y, cb, cr = planes([(255, 0, 0), (0, 0, 255), (0, 0, 0), (0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 0, 0), (0, 0, 0)])
    assert y == [63, 32, 16, 16] * 2
    assert abs(cb[0] - (102 + 240) / 2) <= 0.5 and abs(cr[0] - (240 + 118) / 2) <= 0.5 and (cb[1], cr[1]) == (128, 128)


def test_run_args_open_every_run_with_an_idr_picture_and_its_parameter_sets():
    a = run_args("ffmpeg", V, [0, 3, 4, 7], Path("o.h264"))
    # half a frame before each picture (30 fps): ffmpeg keys the first frame at or after each time
    assert after(a, "-force_key_frames") == "0.000000,0.083333,0.116667,0.216667"
    assert after(a, "-forced-idr") == "1"  # IDR, not a mere I picture
    params = dict(kv.split("=") for kv in after(a, "-x264-params").split(":"))
    assert params["repeat-headers"] == "1" and params["scenecut"] == "0"
    assert params["keyint"] == "infinite"  # keyframes where we force them, and nowhere else
    assert params["rc-lookahead"] == "5"  # memory: see run_args
    cqp_args = run_args("ffmpeg", dataclasses.replace(V, rate="cqp"), [0], Path("o"))
    cqp = dict(kv.split("=") for kv in after(cqp_args, "-x264-params").split(":"))
    assert cqp["rc-lookahead"] == "0"  # a constant quantiser: nothing to look ahead for
    assert a.index("-force_key_frames") > a.index("-c:v")  # an output option
    assert a[: a.index("-c:v")] == distinct_args("ffmpeg", V, 60, Path("o.h264"))[: a.index("-c:v")]


def test_cue_runs_take_a_constant_quantiser_above_the_crf_and_moving_runs_keep_crf():
    """A cue run's bytes must be its pictures' alone (x264's CRF carries state from run to run)."""
    import dataclasses

    cqp = dataclasses.replace(V, rate="cqp")
    assert after(run_args("ff", V, [0], Path("o")), "-crf") == "20" and "-qp" not in run_args("ff", V, [0], Path("o"))
    a = run_args("ff", cqp, [0], Path("o"))
    assert after(a, "-qp") == "26" and "-crf" not in a
    assert after(run_args("ff", dataclasses.replace(cqp, crf=0), [0], Path("o")), "-qp") == "0"  # lossless stays lossless
    assert after(run_args("ff", dataclasses.replace(cqp, crf=50), [0], Path("o")), "-qp") == "51"


def test_loudness_meter_asks_for_true_peak():
    assert after(loudness_args("ff", Path("x.mp4")), "-af") == "ebur128=peak=true"
    assert after(loudness_args("ff", Path("x.aac"), 1024), "-af") == "atrim=start_sample=1024,ebur128=peak=true"


PROBE = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'out.mp4':
  Duration: 00:01:44.90, start: 0.000000, bitrate: 1200 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1080x1920, 1000 kb/s, \
30 fps, 30 tbr, 15360 tbn (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 160 kb/s (default)
frame= 3147 fps=0.0 q=-1.0 Lsize=N/A time=00:01:44.86 bitrate=N/A speed= 4e+03x
"""


def test_parse_probe_reads_every_fact():
    p = parse_probe(PROBE)
    assert (p.width, p.height, p.fps, p.codec, p.profile, p.pix_fmt) == (1080, 1920, Fraction(30), "h264", "High", "yuv420p")
    assert p.colour == "tv, bt709, progressive" and p.frames == 3147 and abs(p.duration - 104.9) < 1e-9
    assert (p.audio, p.audio_rate, p.audio_channels) == ("aac", 48000, "stereo")


def test_parse_probe_turns_a_broken_file_into_one_clear_line():
    with pytest.raises(ProbeError) as e:
        parse_probe("[in#0 @ 0x5555] moov atom not found\nError opening input file x.mp4.\n", "x.mp4")
    assert str(e.value) == "x.mp4: not a readable video (moov atom not found)"


def test_parse_loudness_summary():
    text = "Summary:\n  Integrated loudness:\n    I:         -14.1 LUFS\n  True peak:\n    Peak:       -1.7 dBFS\n"
    assert parse_loudness(text) == (-14.1, -1.7)
    with pytest.raises(ProbeError):
        parse_loudness("nothing")


# ---- the bitstream rewriter --------------------------------------------------------------------


def test_exp_golomb_round_trip():
    rnd = random.Random(1)
    vals = [rnd.randrange(0, 5000) for _ in range(200)]
    svals = [rnd.randrange(-300, 300) for _ in range(200)]
    w = h264.BitWriter()
    for u, s in zip(vals, svals):
        w.ue(u)
        w.se(s)
        w.u(3, u & 7)
    r = h264.BitReader(w.trailing())
    for u, s in zip(vals, svals):
        assert (r.ue(), r.se(), r.u(3)) == (u, s, u & 7)


def test_emulation_prevention_round_trip():
    raw = bytes([0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 7, 0, 0])
    esc = h264.escape(raw)
    assert b"\x00\x00\x00" not in esc and b"\x00\x00\x01" not in esc
    assert h264.unescape(esc) == raw


def test_escape_matches_the_standards_byte_by_byte_rule():
    def reference(rbsp: bytes) -> bytes:  # H.264 7.4.1: after two zeros, a byte <= 3 is escaped
        out, zeros = bytearray(), 0
        for b in rbsp:
            if zeros >= 2 and b <= 3:
                out.append(3)
                zeros = 0
            out.append(b)
            zeros = zeros + 1 if b == 0 else 0
        return bytes(out)

    rng = random.Random(7)
    for _ in range(2000):
        raw = bytes(rng.choice((0, 0, 0, 1, 2, 3, 4, 255)) for _ in range(rng.randrange(1, 40)))
        assert h264.escape(raw) == reference(raw)
        assert h264.unescape(h264.escape(raw)) == raw


def test_split_nals_handles_3_and_4_byte_start_codes():
    stream = b"\x00\x00\x00\x01\x67\xaa" + b"\x00\x00\x01\x68\xbb" + b"\x00\x00\x01\x65\xcc\xdd"
    assert h264.split_nals(stream) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]


def test_the_bundled_ffmpeg_is_found_without_importing_imageio_ffmpeg_and_its_variable_is_honoured(tmp_path):
    import os
    import subprocess
    import sys

    import imageio_ffmpeg

    code = "import sys; from shortgen.video.encode import ffmpeg_exe; print(ffmpeg_exe()); print('imageio_ffmpeg' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "IMAGEIO_FFMPEG_EXE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == [imageio_ffmpeg.get_ffmpeg_exe(), "False"]
    mine = tmp_path / "my-ffmpeg"
    mine.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    env["IMAGEIO_FFMPEG_EXE"] = str(mine)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out[0] == str(mine)
