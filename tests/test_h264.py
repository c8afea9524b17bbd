"""h264.py against the standard, on its own: small committed x264 streams (tests/fixtures/h264/, made by
make_fixtures.py there) with known parameter-set fields, one stream per rule the rewrite needs, and
expand() checked by a strict decoder frame by frame."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from shortgen.video import h264
from shortgen.video.encode import ffmpeg_exe

FIX = Path(__file__).parent / "fixtures" / "h264"


def nals_of(name: str) -> list[bytes]:
    return h264.split_nals((FIX / f"{name}.h264").read_bytes())


def first(name: str, nal_type: int) -> bytes:
    return h264.unescape(next(n for n in nals_of(name) if n[0] & 0x1F == nal_type))


def test_parameter_sets_of_the_renderers_kind_of_stream():
    # 64x64: 4 x 4 macroblocks; x264 without B-frames: POC type 2, frame_num in 4 bits
    assert h264.parse_sps(first("ok", 7)) == {"log2_max_frame_num": 4, "poc_type": 2, "mbs": 16}
    assert h264.parse_pps(first("ok", 8)) == {"pps_id": 0, "deblocking_control": True}
    assert len(h264._coded_pictures(nals_of("ok"))) == 4


@pytest.mark.parametrize(
    "name, nal_type, message",
    [
        ("cabac", 8, "CABAC streams are not supported (encode with cabac=0)"),
        ("bframes", 7, "need exactly one reference frame, the stream has 4"),  # B-frames need two at least
        ("refs", 7, "need exactly one reference frame, the stream has 3"),
        ("weightp", 8, "weighted prediction is not supported (encode with weightp=0)"),
        ("interlaced", 7, "interlaced streams are not supported"),
        ("redundant", 8, "redundant pictures are not supported (redundant_pic_cnt_present_flag is set)"),
    ],
)
def test_each_stream_expand_cannot_rewrite_is_refused_with_its_reason(name, nal_type, message):
    parse = h264.parse_sps if nal_type == 7 else h264.parse_pps
    with pytest.raises(h264.H264Error) as e:
        parse(first(name, nal_type))
    assert str(e.value) == message
    data = (FIX / f"{name}.h264").read_bytes()
    with pytest.raises(h264.H264Error) as e:
        h264.expand(data, [1] * len(h264._coded_pictures(h264.split_nals(data))))
    assert str(e.value) == message


def test_a_b_slice_and_a_non_reference_picture_are_refused():
    """The B pictures of a B-frame stream, met by the slice rewrite itself."""
    p = h264._params(h264.split_nals((FIX / "ok.h264").read_bytes())[0], h264.split_nals((FIX / "ok.h264").read_bytes())[1])
    b_slices = [n for n in nals_of("bframes") if n[0] & 0x1F == 1 and n[0] >> 5 == 0]
    assert b_slices, "the fixture has non-reference (B) pictures"
    with pytest.raises(h264.H264Error, match="only I and P slices are supported"):
        h264._rewrite_slice(b_slices[0], p, 1)


def test_poc_type_0_is_refused_explicitly():
    sps = bytearray(first("ok", 7))
    w = h264.BitWriter()  # the same SPS with pic_order_cnt_type 0 and a 4-bit POC lsb
    r = h264.BitReader(bytes(sps))
    w.u(8, r.u(8))
    for _ in range(3):
        w.u(8, r.u(8))  # profile, constraints, level
    w.ue(r.ue())  # sps_id
    if sps[1] in (100, 110, 122, 244):
        w.ue(r.ue()), w.ue(r.ue()), w.ue(r.ue()), w.u(1, r.u(1)), w.u(1, r.u(1))
    w.ue(r.ue())  # log2_max_frame_num_minus4
    r.ue()
    w.ue(0)
    w.ue(0)  # pic_order_cnt_type 0, log2_max_pic_order_cnt_lsb_minus4 0
    value = int.from_bytes(sps, "big")
    stop = len(sps) * 8 - ((value & -value).bit_length() - 1) - 1
    while r.pos < stop:
        w.u(1, r.u(1))
    with pytest.raises(h264.H264Error, match="POC type 0 is not supported"):
        h264.parse_sps(w.trailing())


def test_the_picture_count_check_runs():
    data = (FIX / "ok.h264").read_bytes()
    with pytest.raises(h264.H264Error) as e:
        h264.expand(data, [1, 1, 1])
    assert str(e.value) == "expected 3 pictures, the stream has 4"
    with pytest.raises(h264.H264Error, match="no SPS/PPS"):
        h264.expand(b"", [1])


def _decode(path: Path) -> tuple[np.ndarray, bytes]:
    out = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-xerror",
            "-err_detect",
            "explode",
            "-f",
            "h264",
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ],
        capture_output=True,
    )
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, 64 * 64 * 3 // 2), out.stderr


def test_expand_across_frame_num_wraps_decodes_strictly_and_holds_each_picture_exactly(tmp_path):
    """frame_num has 4 bits here: 53 frames wrap it three times. Every held frame is the picture it
    holds, bit for bit, and the original pictures decode as they did."""
    data = (FIX / "ok.h264").read_bytes()
    repeats = [1, 20, 17, 15]
    expanded = tmp_path / "x.h264"
    expanded.write_bytes(h264.expand(data, repeats))
    original = tmp_path / "o.h264"
    original.write_bytes(data)
    frames, err = _decode(expanded)
    assert err == b"" and len(frames) == sum(repeats)
    pictures, _ = _decode(original)
    at = 0
    for pic, n in zip(pictures, repeats):
        for k in range(n):
            assert np.array_equal(frames[at + k], pic), (at, k)
        at += n
    # frame_num really wrapped: the slice headers count 0..15 and start again
    nums = []
    for nal in h264.split_nals(expanded.read_bytes()):
        if nal[0] & 0x1F in (1, 5):
            r = h264.BitReader(h264.unescape(nal))
            r.pos = 8
            r.ue(), r.ue(), r.ue()
            nums.append(r.u(4))
    assert nums[:18] == list(range(16)) + [0, 1] and len(nums) == sum(repeats)


def test_fixtures_are_small():
    assert all(p.stat().st_size < 4096 for p in FIX.glob("*.h264"))
