"""The music bed: a creator's track under the narration, ducked while the voice speaks, mixed and
mastered with it.

pydub does what it is good at: decoding any format through the bundled ffmpeg (only the span the
episode needs), slicing, and a clip's own sound looped with a crossfade. numpy does what must be fast
or exact, or must not change the decoded bed (cached across edits): the bed's loop (its copies keep
the decoded samples, so their loudness is measured once), the fades at the episode's ends, the ducking
envelope (from the narration's word timings, sample-accurate), the mix, loudness (BS.1770) and the
true-peak limiter, at 48 kHz stereo.

Ducking follows the voice, not the segments: each spoken phrase (words less than PHRASE_GAP_MS apart)
pulls the bed down by `music_duck_db`, the dip complete as its first word starts (`music_attack_ms` of
look-ahead) and released `music_release_ms` after its last; the bed rises in the pauses and under the
title cards. Where the bed is loud enough that the usual dip would leave it less than
`music_separation_lu` below the voice, that phrase dips further: speech stays intelligible by rule, and
the manifest reports the separation each segment gets, measured on the two stems.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..video.encode import AAC_RATE, ffmpeg_exe
from . import sound
from .audiofile import (  # noqa: F401 - music's callers and tests know them by these names
    AUDIO_TYPES,
    MAX_SECONDS,
    AudioError,
    AudioInfo,
    probe,
    refuse_short,
    short_decode,
)

RATE = AAC_RATE  # the mix runs at the file's rate: music keeps its top octave
PHRASE_GAP_MS = 250  # words closer than this are one phrase: the bed does not pump between them
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


def fade_at(t: np.ndarray, total: int, fade_in: int, fade_out: int) -> np.ndarray:
    """The bed's fade in and out at the episode's ends (raised-cosine ramps of `fade_in` and `fade_out`
    samples, each at most half the episode, the fade out ending at `total`), as a gain at sample
    positions `t` (float64); silence from `total` on."""
    g = np.ones(len(t))
    for n, ramp_at in ((min(fade_in, total // 2), t), (min(fade_out, total // 2), np.maximum(total - 1 - t, 0))):
        if n > 0:
            inside = ramp_at < n
            g[inside] *= 0.5 - 0.5 * np.cos(np.pi * ramp_at[inside] / n)
    return g


BIN = 16  # samples per energy bin: 1024 (an AAC frame, where voices are placed) is a whole number of them


def energy_bins(k: np.ndarray) -> np.ndarray:
    """Energy per BIN samples of K-weighted channels (channels, n), summed over channels (float64)."""
    n = k.shape[-1] // BIN
    e = np.zeros(n)
    for ch in np.atleast_2d(k):
        seg = ch[: n * BIN].reshape(n, BIN)  # a view: sums of 16 squares are exact enough in float32
        e += np.einsum("ij,ij->i", seg, seg)
    return e


def spread_energy(e: np.ndarray, bin_in: int, rate_in: int, n_out: int) -> np.ndarray:
    """Energy bins of a signal at `rate_in` (`bin_in` samples each) as BIN-sample bins of the same signal
    at RATE, `n_out` samples long: each bin's energy spread evenly over the time it covers, scaled by the
    ratio of sample counts (the same mean square over more samples)."""
    n = n_out // BIN
    if n == 0 or len(e) == 0:
        return np.zeros(n)
    # cumulative energy (per input sample) at each output bin edge, interpolated in time
    edges_in = np.arange(len(e) + 1) * bin_in / rate_in
    cum = np.concatenate([[0.0], np.cumsum(e)])
    edges_out = np.arange(n + 1) * BIN / RATE
    return np.diff(np.interp(edges_out, edges_in, cum)) * (RATE / rate_in)


def spread_peaks(p: np.ndarray, rate_in: int, n_out: int) -> np.ndarray:
    """peak_bins of a true-peak envelope at `rate_in` held over RATE samples `n_out` long: each output
    sample holds the larger of the input sample it falls in and the next one. Taken per bin from the
    input's samples, without making the 48 kHz envelope (a 20 s narration: 1 ms instead of 9 ms)."""
    if n_out == 0 or len(p) == 0:
        return np.zeros(-(-n_out // BIN))
    q = np.maximum(p, np.append(p[1:], p[-1]))  # each sample's own and its next neighbour's
    b = np.arange(-(-n_out // BIN), dtype=np.int64) * BIN
    lo = np.minimum(b * rate_in // RATE, len(q) - 1)  # the input sample a bin's first output falls in ...
    hi = np.minimum((np.minimum(b + BIN, n_out) - 1) * rate_in // RATE, len(q) - 1)  # ... and its last
    q = q[: hi[-1] + 1]
    got = np.maximum.reduceat(q, lo)  # [lo of this bin, lo of the next): the next bin may share its last
    nxt = np.append(lo[1:], len(q))
    return np.where(hi >= nxt, np.maximum(got, q[hi]), got)


def phrases(words: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Spoken spans (start, end) in samples, merged where the silence between them is under `gap`."""
    out: list[list[int]] = []
    for a, b in sorted(words):
        if out and a - out[-1][1] < gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def duck_at(t: np.ndarray, spans: list[tuple[int, int, float]], attack: int, release: int) -> np.ndarray:
    """The bed's gain in dB at sample positions `t` (sorted): 0 in the pauses, -depth under each
    (start, end, depth) span, reached by a linear ramp over `attack` samples ending at its start and left
    over `release` samples from its end (where spans' ramps overlap, the deeper gain holds). Each value
    depends on its own position only: any window of the episode gets the same gains as the whole."""
    t = np.asarray(t, dtype=np.float64)
    g = np.zeros(len(t), np.float32)
    for a, b, depth in spans:
        i, j = np.searchsorted(t, [a - attack, b + release])
        if j <= i:
            continue
        u = t[i:j]
        ramp = np.minimum((u - (a - attack)) / max(attack, 1), ((b + release) - u) / max(release, 1))
        np.minimum(g[i:j], (-depth * np.clip(ramp, 0.0, 1.0)).astype(np.float32), out=g[i:j])
    return g


def loudness(x: np.ndarray) -> float:
    """BS.1770-4 integrated loudness of a (channels, n) signal at RATE."""
    if x.shape[1] < int(0.4 * RATE):
        return -np.inf
    k = np.vstack([sound.k_weight(ch, RATE) for ch in x])
    return sound.gated_loudness_multi(k, RATE)


# ---- the mix ------------------------------------------------------------------------------------


@dataclass
class Mixed:
    samples: np.ndarray  # (2, total) float32 at RATE: voice and bed, mastered
    lufs: float
    true_peak: float  # a bound from the stems' peaks (the file's is measured on the encoded chunks)
    figures: dict  # the music's own figures, for the manifest


@dataclass(frozen=True)
class Placed:
    """A short sound laid into the mix: stereo samples from sample `at`, with its K-weighted energy and
    its peak per episode bin (from bin `at // BIN`)."""

    at: int
    x: np.ndarray
    e: np.ndarray
    pb: np.ndarray


def placed(at: int, x: np.ndarray) -> Placed:
    off = at % BIN  # bins are the episode's: a sound that starts mid-bin is measured from that bin's start
    k = np.vstack([np.concatenate([np.zeros(off, np.float32), sound.k_weight(ch, RATE)]) for ch in x])
    e = energy_bins(np.pad(k, ((0, 0), (0, -k.shape[1] % BIN))))
    return Placed(at, x, e, peak_bins(np.concatenate([np.zeros(off, np.float32), np.abs(x).max(axis=0)])))


def peak_bins(p: np.ndarray) -> np.ndarray:
    """The largest of each BIN samples of a peak envelope (the last bin padded)."""
    return np.pad(p, (0, -len(p) % BIN)).reshape(-1, BIN).max(axis=1)


def _add_bins(into: np.ndarray, b0: int, v: np.ndarray, scale: float | np.ndarray = 1.0) -> None:
    n = max(0, min(len(v), len(into) - b0))
    into[b0 : b0 + n] += v[:n] * (scale[b0 : b0 + n] if isinstance(scale, np.ndarray) else scale)


def _gated_bins(e: np.ndarray) -> float:
    """BS.1770-4 gated loudness from energy bins (BIN samples each, summed over channels)."""
    return _gated_steps(_steps(e))


STEP_BINS = RATE // 10 // BIN  # BS.1770's 100 ms step


def _steps(e: np.ndarray) -> np.ndarray:
    """Energy per whole 100 ms step, from energy bins: what gated loudness is taken from (and linear in
    the bins, so a mix's steps are its stems' steps, gained)."""
    n = len(e) // STEP_BINS
    return e[: n * STEP_BINS].reshape(n, STEP_BINS).sum(axis=1)


def _gated_steps(s100: np.ndarray) -> float:
    if len(s100) < 4:
        return -np.inf
    return sound._gated((s100[:-3] + s100[1:-2] + s100[2:-1] + s100[3:]) / (4 * STEP_BINS * BIN))


def _span_energy(e: np.ndarray, spans: list[tuple[int, int]]) -> float:
    """Mean square over these sample spans, from energy bins."""
    tot = sum(float(e[a // BIN : b // BIN].sum()) for a, b in spans)
    n = sum((b // BIN - a // BIN) * BIN for a, b in spans)
    return tot / max(n, 1)


def _lufs(e: float) -> float:
    return -0.691 + 10 * np.log10(max(e, 1e-20))


# The episode-wide gains (the voice's correction, the music's) are rounded to this: an edit elsewhere
# then leaves a segment's samples as they were (its chunks are reused), unless it moves the exact gain
# across a step's edge. The loudness stays within a quarter of a LU of the target.
GAIN_STEP_DB = 0.5


def _best_step(miss: Callable[[int], float], half: float) -> int:
    """Of the gain steps k (0: the one nearest the estimate), the one whose loudness misses the target
    least: 0 against 1 (then on up while that is better still), and -1 where 0 overshoots by more than
    `half` a step. `miss(k)`: the loudness at step k, less the target."""
    if not np.isfinite(miss(0)):
        return 0
    ks = [0, -1] if miss(0) > half else [0]
    k = 0
    while k < 3 and abs(miss(k + 1)) < abs(miss(k)):
        k += 1
    return min([*ks, k], key=lambda j: abs(miss(j)))


def _stepped(g: float) -> float:
    return 10 ** (round(20 * np.log10(g) / GAIN_STEP_DB) * GAIN_STEP_DB / 20) if g > 0 else 0.0


@dataclass(frozen=True)
class MixPlan:
    """What the mix decides, from the stems' energies and peaks per bin, never their samples: plain
    data, so `render` makes any window of the mix on its own, bit for bit as the whole would be (an
    edit then re-makes, and re-encodes, only the windows whose sound it changed). Episode-wide gains
    are rounded to GAIN_STEP_DB for the same reason; the limiter works per bin."""

    total: int
    fade_end: int  # where the fade out ends: the episode's end, as its last segment places it (see analyse)
    bed_gain: float  # the bed to its set level
    whole: float  # the music's share of the episode-wide correction
    voice_gain: float  # the voice's
    spans: tuple  # (start, end, depth dB) under which the bed dips
    attack: int
    release: int
    fade_in: int
    fade_out: int
    limiter: np.ndarray  # gain per bin
    lufs: float
    true_peak: float
    figures: dict


def analyse(
    voice_e: np.ndarray,
    voice_pb: np.ndarray,
    segments: list[tuple[int, int, list[tuple[int, int]]]],
    bed_e: np.ndarray,
    bed_pb: np.ndarray,
    bed_lufs: float,
    stings: list[Placed],
    extras: list[Placed],
    settings,
    total: int,
    fade_end: int | None = None,
) -> MixPlan:
    """Plan the mix of a mastered voice (mono, placed) and a bed (stereo, laid under the episode).

    `voice_e`, `bed_e`: their K-weighted energy per BIN samples; `voice_pb`, `bed_pb`: their true-peak
    envelope's maximum per bin (for the bed, a bound). K-weighting is linear and every gain here moves
    slowly (over 100 ms and more) against the filters' few milliseconds of memory, so every loudness
    figure (the bed's level, each phrase's, the mix's, the stems as heard) comes from those bins and the
    gains; the voice and the bed are uncorrelated, so their energies add (the tests check the result
    against ffmpeg's meter on the finished file). The limiter works on the sum of the stems' gained
    peaks, a bound on the mix's own true peak (exact where one of them is silent, never under).
    `bed_lufs`: the track's own loudness, which sets the bed's gain (measured on the whole decoded
    track, so that it does not move with the episode's length).
    `segments`: per segment (first sample, end sample, its words as (start, end) samples).
    `stings`: sounds laid over the music after ducking; `extras`: sounds under the voice, already at
    their level (a clip's own sound), ducked with the bed. With no bed they are the music.
    `fade_end`: where the fade out ends (the episode's end, `total`, by default). The track places it
    from its last segment's own narration and length, so that an edit earlier in the episode (which
    moves the end by a part of an AAC frame, from the frames' rounding) leaves the fade, and the last
    segment's encoded pieces, as they were.
    """
    fade_end = total if fade_end is None else fade_end
    nb = -(-total // BIN)
    voice_e, voice_pb, bed_e, bed_pb = (np.pad(v, (0, max(0, nb - len(v))))[:nb] for v in (voice_e, voice_pb, bed_e, bed_pb))
    if not np.isfinite(bed_lufs) and not extras:
        raise AudioError("the music is silent where the episode needs it")
    level = 10 ** ((settings.music_level_lufs - bed_lufs) / 20) if np.isfinite(bed_lufs) else 0.0
    fade_in, fade_out = settings.music_fade_in_ms * RATE // 1000, settings.music_fade_out_ms * RATE // 1000
    base_e = bed_e * level**2
    base_pb = bed_pb * level
    for s in extras:
        _add_bins(base_e, s.at // BIN, s.e)
        _add_bins(base_pb, s.at // BIN, s.pb)
    gap = PHRASE_GAP_MS * RATE // 1000
    spans: list[tuple[int, int, float]] = []
    seg_phrases: list[list[tuple[int, int]]] = []
    for _, _, words in segments:
        ph = phrases(words, gap)
        seg_phrases.append(ph)
        for a, b in ph:
            v = _lufs(2 * _span_energy(voice_e, [(a, b)]))  # the voice plays on both channels
            m = _lufs(_span_energy(base_e, [(a, b)]))
            need = settings.music_separation_lu + 0.5 - (v - m)
            spans.append((a, b, round(max(settings.music_duck_db, need), 2)))
    attack, release = settings.music_attack_ms * RATE // 1000, settings.music_release_ms * RATE // 1000

    def gain_at(t: np.ndarray) -> np.ndarray:
        return _gain(t, spans, attack, release, fade_end, fade_in, fade_out).astype(np.float64)

    edge = gain_at(np.minimum(np.arange(nb + 1, dtype=np.float64) * BIN, total - 1))  # at the bins' edges
    gain_e = ((edge[:-1] + edge[1:]) / 2) ** 2  # mid-bin: the gain moves over 100 ms and more, a bin 0.3 ms
    gain_pk = np.maximum(edge[:-1], edge[1:]) * 1.001  # a ramp's top in the bin (with room where ramps cross)
    music_e = base_e * gain_e
    rest_pb = base_pb * gain_pk
    for s in stings:
        _add_bins(music_e, s.at // BIN, s.e)
        _add_bins(rest_pb, s.at // BIN, s.pb * 1.1)  # a short sound's sample peak, with room
    # The target: the voice is mastered to it already and the bed adds a little. The bed keeps its set
    # level; the voice takes the correction, up to +3 dB (a sparse narration); where the bed alone would
    # pass the target, the whole mix comes down instead (so the separation rule still holds)
    voice_e2 = 2 * voice_e
    gv = 1.0
    voice_s, music_s = _steps(voice_e2), _steps(music_e)  # the search below works on these
    if _gated_steps(voice_s + music_s) < settings.loudness_lufs:
        lo, hi = 1.0, 10 ** (3 / 20)
        for _ in range(16):  # to 0.0001 dB: far finer than the 0.5 dB steps it is rounded to
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if _gated_steps(mid * mid * voice_s + music_s) < settings.loudness_lufs else (lo, mid)
        gv = hi
    lufs = _gated_steps(gv * gv * voice_s + music_s)
    whole = _stepped(10 ** ((settings.loudness_lufs - lufs) / 20)) if np.isfinite(lufs) else 1.0  # 1 unless the bed is loud
    gv *= whole
    music_e *= whole * whole
    rest_pb *= whole
    ceiling = settings.true_peak_dbtp - sound.TP_MARGIN_DB
    bin_rate = RATE // BIN

    def limit(gv: float) -> tuple[np.ndarray, np.ndarray]:
        env = voice_pb * gv + rest_pb
        return env, sound.block_gains(env.astype(np.float32), ceiling, rate=bin_rate)

    # the limiter takes a little loudness off the voice's peaks, which the voice gets back: the voice's
    # gain is the step nearest the estimate or the one above, whichever meets the target better (then
    # further up while that is better still), or the one below where the nearest overshoots by more than
    # half a step (the gated loudness can jump with the gain, where blocks cross the relative gate).
    # Both nearest and next are always weighed: taking the nearest wherever it was within half a step,
    # Part 4 sat on that edge (-14.25 LUFS, and -14.05 a step up), and a one-word edit that crossed it
    # changed the whole episode's gain, so every piece of the track was encoded again
    tried: dict[int, tuple[float, float, np.ndarray, np.ndarray]] = {}

    def miss(k: int) -> float:  # the loudness at step k, less the target
        if k not in tried:
            g = _stepped(gv) * 10 ** (k * GAIN_STEP_DB / 20)
            env, curve = limit(g)
            d = _gated_bins((voice_e2 * g * g + music_e) * curve.astype(np.float64) ** 2) - settings.loudness_lufs
            tried[k] = (d if np.isfinite(d) else np.inf, g, env, curve)
        return tried[k][0]

    _, gv, env, curve = tried[_best_step(miss, GAIN_STEP_DB / 2)]
    c2 = curve.astype(np.float64) ** 2
    tp = float(20 * np.log10(max(float((env * curve).max(initial=0.0)), 1e-12)))
    music_e *= c2
    heard_voice = voice_e2 * (gv * gv) * c2
    final_lufs = _gated_bins(heard_voice + music_e)
    # the stems, as heard in the file: the music's level in the pauses, and under each segment's speech
    per: list[dict | None] = []
    for ph in seg_phrases:
        if not ph:
            per.append(None)
            continue
        v, m = _lufs(_span_energy(heard_voice, ph)), _lufs(_span_energy(music_e, ph))
        per.append({"voice_lufs": round(v, 2), "music_lufs": round(m, 2), "separation_lu": round(v - m, 2)})
    speaking = np.zeros(nb, bool)
    for a, b, _ in spans:
        speaking[max(0, a - attack) // BIN : (b + release) // BIN + 1] = True
    pauses = ~speaking
    pauses[: fade_in // BIN] = False
    pauses[max(0, fade_end - fade_out) // BIN :] = False
    gaps = _lufs(float(music_e[pauses].sum()) / (int(pauses.sum()) * BIN)) if pauses.any() else None
    figures = {
        "level_in_pauses_lufs": None if gaps is None else round(gaps, 2),
        "target_in_pauses_lufs": settings.music_level_lufs,
        "duck_db": settings.music_duck_db,
        "deepest_duck_db": round(max((d for _, _, d in spans), default=0.0), 2),
        "separation_rule_lu": settings.music_separation_lu,
        "segments": per,
    }
    return MixPlan(
        total, fade_end, level, whole, gv, tuple(spans), attack, release, fade_in, fade_out, curve, final_lufs, tp, figures
    )


def _gain(t: np.ndarray, spans, attack: int, release: int, fade_end: int, fade_in: int, fade_out: int) -> np.ndarray:
    """The bed's linear gain at sample positions `t` (sorted): the dip under the voice and the fades
    at the episode's ends. float32, computed per position: the same wherever a window starts."""
    g = duck_at(t, spans, attack, release)
    g *= np.float32(np.log(10) / 20)
    np.exp(g, out=g)
    if len(t) and (t[0] < fade_in or t[-1] >= fade_end - fade_out):
        g *= fade_at(t, fade_end, fade_in, fade_out).astype(np.float32)
    return g


def render(
    mp: MixPlan, a: int, b: int, voice: np.ndarray, bed: np.ndarray, stings: list[Placed], extras: list[Placed]
) -> np.ndarray:
    """Samples [a, b) of the mix as planned: `voice` (mono) and `bed` (stereo, as laid, at the track's
    own level) are that window of the stems. Every operation is per sample, so a window is bit for bit
    the same samples of the whole."""
    t = np.arange(a, b, dtype=np.float64)
    gain = _gain(t, list(mp.spans), mp.attack, mp.release, mp.fade_end, mp.fade_in, mp.fade_out)
    gain *= np.float32(mp.whole)
    out = bed * np.float32(mp.bed_gain)
    for s in extras:
        _overlay(out, a, s)
    out *= gain
    for s in stings:
        _overlay(out, a, s, mp.whole)
    out += voice[None, :] * np.float32(mp.voice_gain)
    out *= np.repeat(mp.limiter[a // BIN : -(-b // BIN)], BIN)[a % BIN :][: b - a]
    return out


def window_inputs(mp: MixPlan, lo: int, hi: int, starts: list[int], offsets: list[int], floors: list[int]) -> list:
    """Everything `render` and `lay` read for samples [lo, hi) of the episode (0 <= lo < hi <= total),
    as positions relative to `lo`, besides the stems themselves: two windows with equal inputs and the
    same stems there are bit for bit the same samples (every operation is per sample, and integer
    positions are exact in float64), wherever they sit in the episode. An edit then finds the pieces it
    left alone by these alone, without making their samples to hash them."""
    n_in, n_out = min(mp.fade_in, mp.fade_end // 2), min(mp.fade_out, mp.fade_end // 2)
    out: list = [lo % BIN, hi - lo, repr((mp.whole, mp.bed_gain, mp.voice_gain, mp.attack, mp.release))]
    out.append((lo, n_in) if lo < n_in else None)  # inside a fade, the distance from its end matters
    out.append((mp.fade_end - lo, n_out) if mp.fade_end - hi < n_out else None)
    # a span that starts before the window or ends after it gives the same gains in it as one cut at its
    # edge (the ramps there are past their full depth): an edit later in a phrase leaves a window at its
    # start as it was
    out.append(
        [(max(a, lo) - lo, min(b, hi) - lo, repr(d)) for a, b, d in mp.spans if a - mp.attack < hi and b + mp.release > lo]
    )
    out.append(hashlib.sha256(mp.limiter[lo // BIN : -(-hi // BIN)].tobytes()).hexdigest())
    # the bed: where each stretch is read from the track (shift + lo), relative to the window
    for part in lay_parts(starts, offsets, lo, hi, floors):
        p, q, shift = part[:3]
        fade = () if len(part) == 3 else (part[3] + lo, part[4] - lo, part[5] - lo)
        out.append((p - lo, q - lo, shift + lo, *fade))
    return out


def _overlay(out: np.ndarray, a: int, s: Placed, gain: float = 1.0) -> None:
    """Add the part of a placed sound that falls in the window starting at sample `a`."""
    lo, hi = max(s.at, a), min(s.at + s.x.shape[1], a + out.shape[1])
    if hi > lo:
        out[:, lo - a : hi - a] += s.x[:, lo - s.at : hi - s.at] * np.float32(gain)


def mix(
    voice: np.ndarray,
    segments: list[tuple[int, int, list[tuple[int, int]]]],
    bed: np.ndarray,
    settings,
    stings: list[tuple[int, np.ndarray]] = (),  # type: ignore[assignment]
    extras: list[tuple[int, np.ndarray]] = (),  # type: ignore[assignment]
) -> Mixed:
    """The whole mix at once, its stems measured here: `voice` (mono, placed, mastered) and `bed`
    (stereo, as laid under the episode). The track plans from cached measures and renders by window."""
    total = len(voice)
    voice_e = energy_bins(sound.k_weight(voice, RATE)[None, :])
    bed_e = energy_bins(np.vstack([sound.k_weight(ch, RATE) for ch in bed[:, :total]]))
    voice_pb = peak_bins(sound.tp_envelope(voice))
    bed_pb = peak_bins(np.maximum(*(sound.tp_envelope(ch) for ch in bed[:, :total])))
    st, ex = [placed(at, x) for at, x in stings], [placed(at, x) for at, x in extras]
    mp = analyse(voice_e, voice_pb, segments, bed_e, bed_pb, _gated_bins(bed_e), st, ex, settings, total)
    return Mixed(render(mp, 0, total, voice, bed[:, :total], st, ex), mp.lufs, mp.true_peak, mp.figures)


# ---- the bed under the episode --------------------------------------------------------------------

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
