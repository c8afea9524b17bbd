"""The music bed read and laid: decoded with pydub through the bundled ffmpeg (only the span the episode
needs), looped with a crossfade where it is shorter than the episode (its copies keep the decoded
samples, so their loudness is measured once), cached as int16; and laid under the episode, each
segment's bed starting on a grid near the episode's own time, joined to the next with a crossfade. A
clip's own sound is read here too."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..video.encode import ffmpeg_exe
from . import sound
from .audiofile import AudioError, AudioInfo, refuse_short
from .meters import BIN, RATE, energy_bins

CROSSFADE_MS = 400  # a looping track joins itself with this crossfade


def _pydub():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydub import AudioSegment
    AudioSegment.converter = ffmpeg_exe()
    return AudioSegment


def decode(info: AudioInfo, start_s: float, seconds: float):
    """The span [start_s, start_s + seconds) of a file (less if it ends first) as a pydub AudioSegment:
    ffmpeg decodes only that span (the decoder named up front, so pydub needs no ffprobe)."""
    seg_cls = _pydub()  # first: it imports pydub with its import-time warnings silenced
    from pydub.exceptions import CouldntDecodeError

    want = max(0.0, min(seconds, info.duration - start_s))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # ffmpeg resamples to the mix's rate as it decodes (an FFT over a whole bed took 250 MB more)
            got = seg_cls.from_file(
                info.path, codec=info.codec, start_second=start_s or None, duration=want + 0.05, parameters=["-ar", str(RATE)]
            )
    except (CouldntDecodeError, OSError, ValueError, IndexError) as e:
        last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or ["ffmpeg could not decode it"]
        raise AudioError(f"{Path(info.path).name} cannot be decoded ({last[0].strip()[:120]})") from None
    if len(got) == 0:
        raise AudioError(f"{Path(info.path).name}: no audio in the span asked for (from {start_s:g} s)")
    refuse_short(info, len(got) / 1000, want)
    return got


def to_array(seg) -> np.ndarray:
    """A pydub AudioSegment as float32 stereo (2, n) at RATE: mono doubled, surround folded down (ITU
    coefficients, LFE dropped), resampled by FFT."""
    seg = seg.set_sample_width(2)
    x = np.frombuffer(seg.raw_data, dtype="<i2").astype(np.float32).reshape(-1, seg.channels).T
    x *= np.float32(1 / 32768.0)
    if seg.channels == 1:
        x = np.vstack([x, x])
    elif seg.channels > 2:  # FL FR FC LFE BL BR (SL SR): ffmpeg's order
        c = x[2] * 0.7071 if seg.channels > 2 else 0
        rest = x[4:]
        left = x[0] + c + (rest[0::2].sum(axis=0) * 0.7071 if len(rest) else 0)
        right = x[1] + c + (rest[1::2].sum(axis=0) * 0.7071 if len(rest) else 0)
        x = np.vstack([left, right]).astype(np.float32)
    if seg.frame_rate != RATE:
        x = np.vstack([sound.resample(ch, seg.frame_rate, RATE) for ch in x])
    return x


BED_STEP_S = 30  # a bed is decoded to a whole number of these: an edit that changes the length reuses it


def to_int16(seg) -> np.ndarray:
    """A decoded AudioSegment as 16-bit stereo (2, n) at RATE: the decoder's own samples when they are
    that already (a bed stays as decoded, and is cached so), else by way of to_array."""
    if seg.channels == 2 and seg.sample_width == 2 and seg.frame_rate == RATE:
        return np.frombuffer(seg.raw_data, dtype="<i2").reshape(-1, 2).T.copy()
    return np.clip(np.rint(to_array(seg) * 32767.0), -32768, 32767).astype(np.int16)


BED_SCALE = 1 / 32767.0  # the bed's int16 samples as the mix reads them (see lay)


def bed(info: AudioInfo, total: int, start_s: float, loop: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The track laid under at least `total` samples (rounded up to BED_STEP_S, so the bed survives
    edits), 16-bit stereo: from `start_s`, looped with a crossfade (or stopping, then silence) when it
    is shorter; and its K-weighted energy and a bound on its true peak (bed_peaks) per BIN.

    pydub decodes (only the span needed); the loop is laid here, in numpy: each copy of the track
    starts on a bin, so its bins are the decoded track's own, moved by whole bins, and only the
    crossfades (and the filters' settling after them) are measured anew. Measured on the shipped 32 s
    pad under a 2-minute episode: 0.12 s of CPU against 0.5 s (pydub's crossfades, then weighting the
    whole bed)."""
    n_out = -(-total // (BED_STEP_S * RATE)) * BED_STEP_S * RATE
    first = to_int16(decode(info, start_s, n_out / RATE))[:, :n_out]
    out = np.zeros((2, n_out), np.int16)
    out[:, : first.shape[1]] = first
    copies = [(0, first)]  # (where, source): the bed is the source's samples from there on (a bin) ...
    joins = []  # ... but over these spans (crossfades, and the end), weighted anew
    pos = first.shape[1]
    if pos < n_out and loop:
        whole = first if start_s == 0 else to_int16(decode(info, 0.0, min(info.duration, n_out / RATE)))
        while pos < n_out:
            fade = min(CROSSFADE_MS * RATE // 1000, whole.shape[1] // 4, pos // 4) // BIN * BIN
            at = pos - fade - pos % BIN  # the copy starts on a bin
            fade = pos - at
            w = ((np.arange(fade) + 0.5) / fade * (np.pi / 2)).astype(np.float32)  # equal power
            mixed = out[:, at:pos] * np.cos(w) + whole[:, :fade] * np.sin(w)
            out[:, at:pos] = np.clip(np.rint(mixed), -32768, 32767)
            n = min(whole.shape[1] - fade, n_out - pos)
            out[:, pos : pos + n] = whole[:, fade : fade + n]
            copies.append((at, whole))
            joins.append((at, pos))
            pos += n
    joins.append((pos, pos))  # the end: the filters ring on past the last copy
    return out, *_bed_bins(out, copies, joins)


def _bed_bins(x: np.ndarray, copies: list, joins: list) -> tuple[np.ndarray, np.ndarray]:
    """K-weighted energy and peak bound (bed_peaks) per BIN of the laid bed `x`: its sources' where it
    copies them (each copy later in the list overrides those before it), made anew over each join and
    the k_history after it, where the filters still hear the join."""
    e, pb = np.zeros(x.shape[1] // BIN), np.zeros(x.shape[1] // BIN)
    made: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for where, src in copies:
        if id(src) not in made:
            n = src.shape[1] // BIN * BIN
            made[id(src)] = _k_energy(src, 0, n), bed_peaks(src[:, :n])
        for into, v in zip((e, pb), made[id(src)]):
            n = min(len(v), len(into) - where // BIN)
            into[where // BIN : where // BIN + n] = v[:n]
    hist = sound.k_history(RATE)
    for a, b in joins:
        a, b = a // BIN * BIN, min(x.shape[1], -(-(b + hist) // BIN) * BIN)
        if b > a:
            e[a // BIN : b // BIN] = _k_energy(x, a, b)
            pb[a // BIN : b // BIN] = bed_peaks(x[:, a:b])
    return e, pb


def _k_energy(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """K-weighted energy per BIN of int16 stereo samples [a, b) of `x` (a on a bin), heard with the
    k_history before them."""
    lo = max(0, a - sound.k_history(RATE))
    e = np.zeros((b - a) // BIN)
    for ch in x[:, lo:b]:
        e += energy_bins(sound.k_weight(ch, RATE, BED_SCALE)[a - lo :][None, :])[: len(e)]
    return e


def bed_peaks(x: np.ndarray) -> np.ndarray:
    """A bound on int16 stereo samples' true peak per BIN (a whole number of bins), without
    oversampling: the sample peak and 3 dB (an inter-sample peak of real music stays well under it;
    the bed sits 20 dB and more under the voice, so it rarely matters)."""
    top = np.maximum(x[0], x[1]).reshape(-1, BIN).max(axis=1).astype(np.int32)
    bottom = np.minimum(x[0], x[1]).reshape(-1, BIN).min(axis=1).astype(np.int32)
    return np.maximum(top, -bottom) * (1.41 * BED_SCALE)


BED_GRID = 2 * RATE  # each segment's bed starts on this grid of the track, near the episode's own time


JOIN = 400 * RATE // 1000  # where a segment's bed jumps to the next one's, this crossfade ...


JOIN_GAP = 3 * 1024  # ... ends this long before the next segment (its chunk's pre-roll hears only the new bed)


def bed_offsets(starts: list[int]) -> list[int]:
    """Where in the track each segment's bed starts. A continuous bed would move every later segment's
    music with any edit, and re-encode them all; laid from the grid point at or before its own start,
    a segment's music stays put unless an edit moves its start across a grid line (a shift of 0.1 s:
    one time in twenty). Between segments the bed crossfades from one place to the other in the last
    moments before the title card, where the music is up and the sting plays."""
    first = -(-(JOIN + JOIN_GAP) // BED_GRID) * BED_GRID
    return [0] + [max(first, s // BED_GRID * BED_GRID) for s in starts[1:]]


def _layout(
    t: np.ndarray, starts: list[int], offsets: list[int], floors: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For episode sample positions `t` (sorted): the shift to the track position of the segment's own
    bed, and within a join's crossfade, the next segment's with its weight (0 to 1)."""
    shifts = np.array([o - s for s, o in zip(starts, offsets)], np.int64)
    k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
    own = shifts[k]
    nxt = own.copy()
    w = np.zeros(len(t))
    for i in range(len(starts) - 1):
        if shifts[i + 1] == shifts[i]:
            continue  # the grid met the next start: the bed runs on
        z1 = starts[i + 1] - JOIN_GAP
        z0 = min(z1, max((floors or starts)[i], z1 - JOIN))
        i0, i1, i2 = np.searchsorted(t, [z0, z1, starts[i + 1]])
        own[i1:i2] = shifts[i + 1]
        nxt[i0:i1] = shifts[i + 1]
        w[i0:i1] = (t[i0:i1] - z0 + 0.5) / max(z1 - z0, 1)
    return own, nxt, w


def lay_parts(starts: list[int], offsets: list[int], a: int, b: int, floors: list[int] | None = None) -> list[tuple]:
    """Where samples [a, b) of the laid bed come from: (p, q, shift) for a stretch read straight from the
    track at p + shift, and (p, q, shift, next shift, z0, z1) for a join's crossfade from z0 to z1."""
    shifts = [o - s for s, o in zip(starts, offsets)]
    ends = starts[1:] + [max(b, starts[-1]) + 1]
    parts: list[tuple] = []
    for k, (s, e) in enumerate(zip(starts, ends)):
        lo, hi = max(a, s if k else min(a, s)), min(b, e)
        if hi <= lo:
            continue
        if k + 1 == len(starts) or shifts[k + 1] == shifts[k]:
            parts.append((lo, hi, shifts[k]))
            continue
        z1 = e - JOIN_GAP
        z0 = min(z1, max((floors or starts)[k], z1 - JOIN))
        for p, q, shift in ((lo, min(hi, z0), shifts[k]), (max(lo, z1), hi, shifts[k + 1])):
            if q > p:
                parts.append((p, q, shift))
        p, q = max(lo, z0), min(hi, z1)
        if q > p:  # the crossfade
            parts.append((p, q, shifts[k], shifts[k + 1], z0, z1))
    return parts


def lay(track: np.ndarray, starts: list[int], offsets: list[int], a: int, b: int, floors: list[int] | None = None) -> np.ndarray:
    """Samples [a, b) of the bed under the episode, from the decoded track (2, n) as int16 or float:
    each segment's from its offset, crossfaded (equal power) at the joins; past the track, silence.
    `floors`: per segment, the earliest sample its join's crossfade may start at (where its speech
    ends: what comes before is then the segment's own, whatever the next one does)."""
    out = np.zeros((2, b - a), np.float32)
    scale = np.float32(BED_SCALE) if track.dtype == np.int16 else np.float32(1.0)

    def take(lo: int, hi: int, shift: int) -> np.ndarray:  # samples [lo, hi) as the bed shifted by `shift`
        got = np.zeros((2, hi - lo), np.float32)
        i, j = max(lo + shift, 0), min(hi + shift, track.shape[1])
        if j > i:
            got[:, i - lo - shift : j - lo - shift] = track[:, i:j]
        got *= scale
        return got

    for part in lay_parts(starts, offsets, a, b, floors):
        p, q, shift = part[:3]
        if len(part) == 3:
            out[:, p - a : q - a] = take(p, q, shift)
        else:  # the weight of the next segment's bed rises from 0 to 1 (equal power)
            z0, z1 = part[4:]
            ang = (np.arange(p, q, dtype=np.float64) - z0 + 0.5) / max(z1 - z0, 1) * (np.pi / 2)
            old, new = take(p, q, shift), take(p, q, part[3])
            out[:, p - a : q - a] = old * np.cos(ang).astype(np.float32) + new * np.sin(ang).astype(np.float32)
    return out


def lay_bins(
    e: np.ndarray, pb: np.ndarray, starts: list[int], offsets: list[int], nb: int, floors: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The laid bed's energy and peak per bin, from the track's (segment starts and offsets are whole bins)."""
    t = np.arange(nb, dtype=np.int64) * BIN + BIN // 2
    own, nxt, w = _layout(t, starts, offsets, floors)

    def take(v: np.ndarray, shift: np.ndarray) -> np.ndarray:
        i = np.arange(nb) + shift // BIN
        ok = (i >= 0) & (i < len(v))
        return np.where(ok, v[np.where(ok, i, 0)], 0.0)

    ang = w * (np.pi / 2)
    c, s = np.cos(ang), np.sin(ang)
    energy = take(e, own) * c * c + take(e, nxt) * s * s
    peak = take(pb, own) * c + take(pb, nxt) * s
    return energy, peak


def clip_sound(info: AudioInfo, start_s: float, seconds: float, loop: bool) -> np.ndarray:
    """A clip's own sound for a segment: from its start offset, looped with the picture (or stopping
    where the clip ends, as its held last frame is silent), levelled later."""
    seg = decode(info, start_s, min(seconds, info.duration - start_s))
    need_ms = int(seconds * 1000) + 1
    if len(seg) < need_ms and loop:
        while len(seg) < need_ms:
            seg = seg.append(decode(info, start_s, info.duration - start_s), crossfade=min(CROSSFADE_MS, len(seg) // 4))
    return to_array(seg[:need_ms])
