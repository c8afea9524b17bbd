"""Read an MP4's sample tables (ISO/IEC 14496-12): enough to hold a file to what players need.

Two facts matter for playback: every video frame lasts the same time (one `stts` entry: players report a
constant frame rate), and audio and video are interleaved along the file (a browser streaming it needs
both tracks from the first bytes, not 95 s of video before any audio). ffmpeg's own summary shows
neither, so `check` and the tests read the boxes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


@dataclass(frozen=True)
class Track:
    kind: str  # "vide", "soun", ...
    timescale: int
    stts: list[tuple[int, int]]  # (sample count, sample duration)
    chunks: list[tuple[int, int, int]]  # (file offset, first sample, samples in chunk), in file order

    def sample_times(self) -> list[int]:
        """Each sample's decode time, in the track's timescale."""
        out, t = [], 0
        for count, delta in self.stts:
            for _ in range(count):
                out.append(t)
                t += delta
        return out


def _boxes(data: bytes, start: int, end: int):
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        head = 8
        if size == 1:
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
            head = 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            raise ValueError(f"a broken {kind!r} box at byte {i}")
        yield kind, i + head, i + size
        i += size


def _find(data: bytes, start: int, end: int, path: list[bytes]):
    for kind, a, b in _boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                yield a, b
            else:
                yield from _find(data, a, b, path[1:])


def read_tracks(path: Path) -> tuple[list[Track], int]:
    """The tracks of an MP4 file, and the byte offset of its `mdat` (to say whether `moov` comes first)."""
    data = Path(path).read_bytes()
    mdat = next((a for kind, a, _ in _boxes(data, 0, len(data)) if kind == b"mdat"), -1)
    tracks = []
    for moov_a, moov_b in _find(data, 0, len(data), [b"moov"]):
        for ta, tb in _find(data, moov_a, moov_b, [b"trak"]):
            ((ma, mb),) = _find(data, ta, tb, [b"mdia", b"mdhd"])
            version = data[ma]
            timescale = struct.unpack(">I", data[ma + (20 if version == 1 else 12) :][:4])[0]
            ((ha, _),) = _find(data, ta, tb, [b"mdia", b"hdlr"])
            kind = data[ha + 8 : ha + 12].decode("latin-1")
            stbl = [b"mdia", b"minf", b"stbl"]
            ((sa, _),) = _find(data, ta, tb, stbl + [b"stts"])
            n = struct.unpack(">I", data[sa + 4 : sa + 8])[0]
            stts = [struct.unpack(">II", data[sa + 8 + 8 * k : sa + 16 + 8 * k]) for k in range(n)]
            ((ca, _),) = _find(data, ta, tb, stbl + [b"stsc"])
            n = struct.unpack(">I", data[ca + 4 : ca + 8])[0]
            stsc = [struct.unpack(">III", data[ca + 8 + 12 * k : ca + 20 + 12 * k]) for k in range(n)]
            offsets: list[int] = []
            for name, fmt, width in ((b"stco", ">I", 4), (b"co64", ">Q", 8)):
                for oa, _ in _find(data, ta, tb, stbl + [name]):
                    n = struct.unpack(">I", data[oa + 4 : oa + 8])[0]
                    offsets = [struct.unpack(fmt, data[oa + 8 + width * k : oa + 8 + width * (k + 1)])[0] for k in range(n)]
            chunks, sample, run = [], 0, 0
            for c, off in enumerate(offsets, 1):
                while run + 1 < len(stsc) and stsc[run + 1][0] <= c:  # stsc's runs come in chunk order
                    run += 1
                per = stsc[run][1] if stsc else 0
                chunks.append((off, sample, per))
                sample += per
            tracks.append(Track(kind, timescale, stts, chunks))
    return tracks, mdat


def interleave_gap(tracks: list[Track]) -> float:
    """The largest distance in time (seconds) between what the file holds at any point for one track and
    for another: walking the chunks in file order, how far one track's time runs ahead of another's."""
    events = []
    for tr in tracks:
        times = tr.sample_times()
        for off, first, count in tr.chunks:
            if count and first < len(times):
                events.append((off, tr.kind, times[first] / tr.timescale))
    events.sort()
    latest: dict[str, float] = {}
    worst = 0.0
    for _, kind, t in events:
        latest[kind] = t
        if len(latest) > 1:
            worst = max(worst, max(latest.values()) - min(latest.values()))
    return worst


def codecs(path: Path) -> str:
    """The file's RFC 6381 codecs string, as a browser's canPlayType takes it: 'avc1.640028, mp4a.40.2'
    (the profile, constraints and level from the avcC box; the AAC object type from the esds box)."""
    data = Path(path).read_bytes()
    out = []
    stsd = [b"mdia", b"minf", b"stbl", b"stsd"]
    for moov_a, moov_b in _find(data, 0, len(data), [b"moov"]):
        for ta, tb in _find(data, moov_a, moov_b, [b"trak"]):
            for sa, sb in _find(data, ta, tb, stsd):
                for kind, ea, eb in _boxes(data, sa + 8, sb):
                    if kind in (b"avc1", b"avc3"):
                        for ca, _ in _find(data, ea + 78, eb, [b"avcC"]):
                            out.append(f"{kind.decode()}.{data[ca + 1]:02x}{data[ca + 2]:02x}{data[ca + 3]:02x}")
                    elif kind == b"mp4a":
                        for da, db in _find(data, ea + 28, eb, [b"esds"]):
                            out.append(_mp4a(data[da + 4 : db]))
    return ", ".join(out)


def _mp4a(es: bytes) -> str:
    """'mp4a.40.N' from an ES descriptor: the decoder config's object type, the audio object type."""
    i, oti, aot = 0, 0x40, 2
    while i < len(es):
        tag = es[i]
        i += 1
        size = 0
        for _ in range(4):  # the expandable length: 7 bits a byte
            b = es[i]
            i += 1
            size = size << 7 | (b & 0x7F)
            if not b & 0x80:
                break
        if tag == 0x03:
            flags = es[i + 2]
            i += 3 + (2 if flags & 0x80 else 0)  # ES_ID, flags, dependsOn_ES_ID
            i += 1 + es[i] if flags & 0x40 else 0  # a URL
            i += 2 if flags & 0x20 else 0  # OCR_ES_Id
        elif tag == 0x04:
            oti = es[i]
            i += 13
        elif tag == 0x05:
            aot = es[i] >> 3
            if aot == 31:
                aot = 32 + ((es[i] & 7) << 3 | es[i + 1] >> 5)
            break
        else:
            i += size
    return f"mp4a.{oti:x}.{aot}"


def parameter_sets(path: Path) -> tuple[dict[tuple[int, int], bytes], list[tuple[int, int, int, bytes]]]:
    """The video track's H.264 parameter sets: those of its sample entry (`avcC`), keyed by (NAL type,
    id), and every one carried in its samples, as (sample, NAL type, id, bytes). The `avc1` contract is
    that the sample entry's sets hold for the whole track: an in-band set must equal the entry's."""
    from .h264 import BitReader, unescape

    def set_id(nal: bytes) -> int:
        r = BitReader(unescape(nal)[4 if nal[0] & 31 == 7 else 1 :])  # an SPS's id follows profile and level
        return r.ue()

    data = Path(path).read_bytes()
    entry: dict[tuple[int, int], bytes] = {}
    inband: list[tuple[int, int, int, bytes]] = []
    for moov_a, moov_b in _find(data, 0, len(data), [b"moov"]):
        for ta, tb in _find(data, moov_a, moov_b, [b"trak"]):
            ((ha, _),) = _find(data, ta, tb, [b"mdia", b"hdlr"])
            if data[ha + 8 : ha + 12] != b"vide":
                continue
            stbl = [b"mdia", b"minf", b"stbl"]
            ((sa, sb),) = _find(data, ta, tb, stbl + [b"stsd"])
            ((va, vb),) = _find(data, sa + 8, sb, [b"avc1"])
            ((ca, _),) = _find(data, va + 78, vb, [b"avcC"])  # after the visual sample entry's 78 bytes
            length_size = (data[ca + 4] & 3) + 1
            i, sets = ca + 5, []
            for count_mask in (31, 255):  # the SPS count (5 bits), then the PPS count
                n = data[i] & count_mask
                i += 1
                for _ in range(n):
                    size = struct.unpack(">H", data[i : i + 2])[0]
                    sets.append(data[i + 2 : i + 2 + size])
                    i += 2 + size
            entry = {(s[0] & 31, set_id(s)): s for s in sets}
            ((za, _),) = _find(data, ta, tb, stbl + [b"stsz"])
            fixed, count = struct.unpack(">II", data[za + 4 : za + 12])
            sizes = [fixed] * count if fixed else list(struct.unpack(f">{count}I", data[za + 12 : za + 12 + 4 * count]))
            track = next(t for t in read_tracks(path)[0] if t.kind == "vide")
            for off, first, per in track.chunks:
                for k in range(first, first + per):
                    a, end = off, off + sizes[k]
                    while a + length_size <= end:
                        n = int.from_bytes(data[a : a + length_size], "big")
                        nal = data[a + length_size : a + length_size + n]
                        if nal and nal[0] & 31 in (7, 8):
                            inband.append((k, nal[0] & 31, set_id(nal), nal))
                        a += length_size + n
                    off += sizes[k]
    return entry, inband
