"""Hold still pictures for many frames without re-encoding them: H.264 P-skip frame insertion.

A short is mostly still: ~250 distinct pictures over ~3,100 frames. x264 encodes only the distinct
pictures (one frame each); between them we insert P frames whose macroblocks are all skipped, which
decoders show as an exact copy of the previous picture. Each costs a few bytes and no encoding time.

To keep the stream valid we renumber `frame_num` (and `idr_pic_id`) of every slice, writing each slice
header afresh up to those fields and copying the rest bit for bit. Requirements on the x264 stream,
checked here: CAVLC (cabac=0), no B-frames, one reference frame, no weighted prediction, progressive,
POC type 2 (what x264 writes without B-frames: order follows frame_num, so there is no POC field to
renumber), no redundant pictures. Anything else is refused with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


class H264Error(ValueError):
    pass


# ---- bit I/O ------------------------------------------------------------------------------------


class BitReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, v: int) -> None:
        self.bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, v: int) -> None:
        n = (v + 1).bit_length()
        self.u(n - 1, 0)
        self.u(n, v + 1)

    def se(self, v: int) -> None:
        self.ue(2 * v - 1 if v > 0 else -2 * v)

    def trailing(self) -> bytes:
        self.bits.append(1)
        while len(self.bits) % 8:
            self.bits.append(0)
        return bytes(int("".join(map(str, self.bits[i : i + 8])), 2) for i in range(0, len(self.bits), 8))


# ---- NAL units ----------------------------------------------------------------------------------


def split_nals(stream: bytes) -> list[bytes]:
    """Annex B byte stream -> NAL units (without start codes, still escaped)."""
    out, i, n = [], 0, len(stream)
    starts = []
    while True:
        j = stream.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        nal = stream[s:e]
        while nal.endswith(b"\x00"):  # the zero of a following 4-byte start code
            nal = nal[:-1]
        out.append(nal)
    return out


def unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")  # the emulation-prevention byte after two zeros


# two zeros followed by a byte <= 3 get an emulation-prevention 3 between them; matches do not overlap,
# so after an inserted 3 the count of zeros starts again, as the standard's byte-by-byte rule has it
_NEEDS_ESCAPE = re.compile(b"\x00\x00(?=[\x00-\x03])")


def escape(rbsp: bytes) -> bytes:
    return _NEEDS_ESCAPE.sub(b"\x00\x00\x03", rbsp)


@dataclass(frozen=True)
class Params:
    log2_max_frame_num: int
    mbs: int
    pps_id: int
    deblocking_control: bool
    nal_ref_idc: int = 2


def parse_sps(rbsp: bytes) -> dict:
    r = BitReader(rbsp[1:])
    profile = r.u(8)
    r.u(16)
    r.ue()
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if r.ue() == 3:
            raise H264Error("4:4:4 with separate planes is not supported")
        r.ue(), r.ue(), r.u(1)
        if r.u(1):
            raise H264Error("custom scaling matrices are not supported")
    log2_fn = r.ue() + 4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1), r.se(), r.se()
        for _ in range(r.ue()):
            r.se()
    refs = r.ue()
    r.u(1)
    w, h = r.ue() + 1, r.ue() + 1
    if not r.u(1):
        raise H264Error("interlaced streams are not supported")
    if refs != 1:
        raise H264Error(f"need exactly one reference frame, the stream has {refs}")
    if poc_type != 2:
        raise H264Error(f"POC type {poc_type} is not supported (x264 writes type 2 when encoding without B-frames)")
    return {"log2_max_frame_num": log2_fn, "poc_type": poc_type, "mbs": w * h}


def parse_pps(rbsp: bytes) -> dict:
    r = BitReader(rbsp[1:])
    pps_id = r.ue()
    r.ue()
    if r.u(1):
        raise H264Error("CABAC streams are not supported (encode with cabac=0)")
    if r.u(1):
        raise H264Error("field POC in frames is not supported")
    if r.ue() != 0:
        raise H264Error("slice groups are not supported")
    r.ue(), r.ue()
    if r.u(1):
        raise H264Error("weighted prediction is not supported (encode with weightp=0)")
    r.u(2), r.se(), r.se(), r.se()
    deblocking_control = bool(r.u(1))
    r.u(1)  # constrained_intra_pred_flag
    if r.u(1):
        raise H264Error("redundant pictures are not supported (redundant_pic_cnt_present_flag is set)")
    return {"pps_id": pps_id, "deblocking_control": deblocking_control}


@lru_cache(maxsize=1024)
def _skip_slice(p: Params, frame_num: int) -> bytes:
    return skip_slice(p, frame_num)


def skip_slice(p: Params, frame_num: int) -> bytes:
    """A P slice in which every macroblock is skipped: the previous picture, shown again."""
    w = BitWriter()
    w.u(8, (p.nal_ref_idc << 5) | 1)  # nal header: non-IDR slice
    w.ue(0)  # first_mb_in_slice
    w.ue(5)  # slice_type P (all slices of the picture)
    w.ue(p.pps_id)
    w.u(p.log2_max_frame_num, frame_num % (1 << p.log2_max_frame_num))
    w.u(1, 1)  # num_ref_idx_active_override_flag
    w.ue(0)  # one reference: the previous picture
    w.u(1, 0)  # ref_pic_list_modification_flag_l0
    w.u(1, 0)  # adaptive_ref_pic_marking_mode_flag: sliding window
    w.se(0)  # slice_qp_delta
    if p.deblocking_control:
        w.ue(1)  # disable_deblocking_filter_idc: nothing to filter
    w.ue(p.mbs)  # mb_skip_run: the whole picture
    data = w.trailing()
    return escape(data)


def _rewrite_slice(nal: bytes, p: Params, frame_num: int, idr_pic_id: int = 0) -> tuple[bytes, bool, int]:
    """Set frame_num and (in an IDR slice) idr_pic_id of an x264 slice; returns (nal, is_idr, first_mb).
    The header up to those fields is written afresh (idr_pic_id is exp-Golomb coded, so its length may
    change) and the rest of the slice follows bit for bit, up to its stop bit."""
    rbsp = unescape(nal)
    nal_type = rbsp[0] & 0x1F
    r = BitReader(rbsp)
    r.pos = 8
    first_mb = r.ue()
    slice_type = r.ue()
    if slice_type % 5 not in (0, 2):
        raise H264Error("only I and P slices are supported (encode with bframes=0)")
    pps_id = r.ue()
    r.pos += p.log2_max_frame_num
    is_idr = nal_type == 5
    if is_idr:
        r.ue()
    w = BitWriter()
    w.u(8, rbsp[0])
    w.ue(first_mb)
    w.ue(slice_type)
    w.ue(pps_id)
    w.u(p.log2_max_frame_num, 0 if is_idr else frame_num % (1 << p.log2_max_frame_num))
    if is_idr:
        w.ue(idr_pic_id)
    # the rest, from r.pos to the stop bit (the last 1), moved as one integer: fast for big I slices
    total = len(rbsp) * 8
    value = int.from_bytes(rbsp, "big")
    trailing = (value & -value).bit_length() - 1  # zero bits after the stop bit
    if value == 0 or total - 1 - trailing < r.pos:
        raise H264Error("a slice without its stop bit")
    tail_len = total - trailing - r.pos
    tail = (value >> trailing) & ((1 << tail_len) - 1)
    head = int("".join(map(str, w.bits)), 2)
    bits = len(w.bits) + tail_len
    pad = -bits % 8
    out = (((head << tail_len) | tail) << pad).to_bytes((bits + pad) // 8, "big")
    return escape(out), is_idr, first_mb


def _coded_pictures(nals: list[bytes]) -> list[list[bytes]]:
    """Group NAL units by coded picture: each picture's slices, after the non-slice units (parameter
    sets, SEI) that precede its first slice."""
    pictures: list[list[bytes]] = []
    pending: list[bytes] = []
    for nal in nals:
        if nal[0] & 0x1F in (1, 5):
            first_mb = BitReader(unescape(nal[:16])[1:6]).ue()  # the slice header's first field
            if first_mb == 0 or not pictures:
                pictures.append(pending + [nal])
                pending = []
            else:
                pictures[-1].append(nal)
        else:
            pending.append(nal)
    return pictures


def split_runs(stream: bytes, lengths: list[int]) -> list[bytes]:
    """Cut an x264 stream into runs of `lengths[i]` coded pictures, each a stream of its own: it must
    open with an IDR picture and its parameter sets (force a keyframe at each run's first picture, and
    encode with repeat-headers), so that it decodes alone and can follow any other run."""
    pictures = _coded_pictures(split_nals(stream))
    if len(pictures) != sum(lengths):
        raise H264Error(f"expected {sum(lengths)} pictures, the stream has {len(pictures)}")
    runs, at = [], 0
    for n in lengths:
        nals = [nal for pic in pictures[at : at + n] for nal in pic]
        types = [nal[0] & 0x1F for nal in nals]
        first_slice = next(i for i, t in enumerate(types) if t in (1, 5))
        if types[first_slice] != 5 or not {7, 8} <= set(types[:first_slice]):
            raise H264Error(f"the run at picture {at} does not open with parameter sets and an IDR picture")
        # without SEI: x264 writes its version and options into the first picture of an encode only,
        # which would make a run's bytes depend on whether it came first
        runs.append(b"".join(b"\x00\x00\x00\x01" + nal for nal in nals if nal[0] & 0x1F != 6))
        at += n
    return runs


def _params(sps_nal: bytes, pps_nal: bytes, nal_ref_idc: int = 2) -> Params:
    sps, pps = parse_sps(unescape(sps_nal)), parse_pps(unescape(pps_nal))
    return Params(
        sps["log2_max_frame_num"],
        sps["mbs"],
        pps["pps_id"],
        pps["deblocking_control"],
        nal_ref_idc,
    )


def expand(stream: bytes, repeats: list[int]) -> bytes:
    """Show picture k of an x264 stream `repeats[k]` times, by inserting P-skip frames after it.
    `stream` may be several runs back to back (a segment), each with its own parameter sets."""
    nals = split_nals(stream)
    sps_nal = next((n for n in nals if n[0] & 0x1F == 7), None)
    pps_nal = next((n for n in nals if n[0] & 0x1F == 8), None)
    if sps_nal is None or pps_nal is None:
        raise H264Error("the stream has no SPS/PPS")
    p = _params(sps_nal, pps_nal)
    used = (sps_nal, pps_nal)
    pictures = _coded_pictures(nals)
    if len(pictures) != len(repeats):
        raise H264Error(f"expected {len(repeats)} pictures, the stream has {len(pictures)}")

    out = bytearray()
    frame_num = 0
    prev_idr: int | None = None  # the previous access unit's idr_pic_id, if it was an IDR picture
    for k, (pic, count) in enumerate(zip(pictures, repeats)):
        if count < 1:
            raise H264Error("every picture must be shown at least once")
        is_idr = any(nal[0] & 0x1F == 5 for nal in pic)
        idr_id = 0
        if is_idr:
            # Two IDR pictures in a row must differ in idr_pic_id (7.4.3). x264 numbers each call's IDRs
            # from 0, and runs from different calls meet here; so number them afresh: never the previous
            # one's, and never 0 for a last picture shown once, since the segment after this one opens
            # with an IDR numbered 0 (segments are cached apart and joined in any order).
            last = k == len(repeats) - 1 and count == 1
            idr_id = next(i for i in (0, 1, 2) if i != prev_idr and not (last and i == 0))
        for nal in pic:
            t = nal[0] & 0x1F
            if t == 7:
                sps_nal = nal
            elif t == 8 and (sps_nal, nal) != used:  # a run from another encode: read its parameters
                used = (sps_nal, nal)
                p = _params(sps_nal, nal, p.nal_ref_idc)
            if t in (1, 5):
                if t == 5:
                    frame_num = 0
                ref_idc = nal[0] >> 5
                if ref_idc == 0:  # a skip frame must be able to refer back to this picture
                    raise H264Error("a picture is not a reference frame (encode with bframes=0)")
                nal, _, _ = _rewrite_slice(nal, p, frame_num, idr_id)
                p = Params(**{**p.__dict__, "nal_ref_idc": ref_idc})
            out += b"\x00\x00\x00\x01" + nal
        prev_idr = idr_id if is_idr and count == 1 else None
        frame_num += 1
        for _ in range(count - 1):
            # only frame_num changes between skip slices, and it wraps: keep the few made
            out += b"\x00\x00\x00\x01" + _skip_slice(p, frame_num % (1 << p.log2_max_frame_num))
            frame_num += 1
    return bytes(out)
