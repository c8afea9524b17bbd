"""The music bed: a creator's track under the narration, ducked while the voice speaks, mixed and
mastered with it. This module plans the ducking and renders the mix; beds.py reads and lays the bed,
meters.py measures on energy bins.

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
from .beds import lay_parts
from .meters import BIN, RATE, _add_bins, _gated_bins, _gated_steps, _lufs, _span_energy, _steps, energy_bins, peak_bins

PHRASE_GAP_MS = 250  # words closer than this are one phrase: the bed does not pump between them


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


# How the plan is measured. `voice_e`, `bed_e`: the stems' K-weighted energy per BIN samples; `voice_pb`,
# `bed_pb`: their true-peak envelope's maximum per bin (for the bed, a bound). K-weighting is linear and
# every gain here moves slowly (over 100 ms and more) against the filters' few milliseconds of memory, so
# every loudness figure (the bed's level, each phrase's, the mix's, the stems as heard) comes from those
# bins and the gains; the voice and the bed are uncorrelated, so their energies add (the tests check the
# result against ffmpeg's meter on the finished file). The limiter works on the sum of the stems' gained
# peaks, a bound on the mix's own true peak (exact where one of them is silent, never under).
# `bed_lufs`: the track's own loudness, which sets the bed's gain (measured on the whole decoded track,
# so that it does not move with the episode's length). `fade_end`: where the fade out ends (`total` by
# default); the track places it from its last segment's own narration and length, so that an edit
# earlier in the episode (which moves the end by a part of an AAC frame) leaves the fade, and the last
# segment's encoded pieces, as they were.
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
    `segments`: per segment (first sample, end sample, its words as (start, end) samples). `stings`:
    sounds laid over the music after ducking; `extras`: sounds under the voice, already at their level (a
    clip's own sound), ducked with the bed. With no bed they are the music."""
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
    spans, seg_phrases = _duck_spans(segments, voice_e, base_e, settings)
    attack, release = settings.music_attack_ms * RATE // 1000, settings.music_release_ms * RATE // 1000
    edge = _gain(np.minimum(np.arange(nb + 1, dtype=np.float64) * BIN, total - 1), spans, attack, release, fade_end,
                 fade_in, fade_out).astype(np.float64)  # at the bins' edges  # fmt: skip
    gain_e = ((edge[:-1] + edge[1:]) / 2) ** 2  # mid-bin: the gain moves over 100 ms and more, a bin 0.3 ms
    gain_pk = np.maximum(edge[:-1], edge[1:]) * 1.001  # a ramp's top in the bin (with room where ramps cross)
    music_e = base_e * gain_e
    rest_pb = base_pb * gain_pk
    for s in stings:
        _add_bins(music_e, s.at // BIN, s.e)
        _add_bins(rest_pb, s.at // BIN, s.pb * 1.1)  # a short sound's sample peak, with room
    voice_e2 = 2 * voice_e  # the voice plays on both channels
    gv, whole = _voice_gain(_steps(voice_e2), _steps(music_e), settings)
    music_e *= whole * whole
    rest_pb *= whole
    gv, env, curve = _limited(gv, voice_e2, voice_pb, music_e, rest_pb, settings)
    c2 = curve.astype(np.float64) ** 2
    tp = float(20 * np.log10(max(float((env * curve).max(initial=0.0)), 1e-12)))
    music_e *= c2
    heard_voice = voice_e2 * (gv * gv) * c2
    final_lufs = _gated_bins(heard_voice + music_e)
    pauses = np.ones(nb, bool)
    for a, b, _ in spans:
        pauses[max(0, a - attack) // BIN : (b + release) // BIN + 1] = False
    pauses[: fade_in // BIN] = False
    pauses[max(0, fade_end - fade_out) // BIN :] = False
    figures = _figures(seg_phrases, heard_voice, music_e, spans, pauses, settings)
    return MixPlan(
        total, fade_end, level, whole, gv, tuple(spans), attack, release, fade_in, fade_out, curve, final_lufs, tp, figures
    )


def _duck_spans(segments: list, voice_e: np.ndarray, base_e: np.ndarray, settings) -> tuple[list, list]:
    """Each spoken phrase's dip: (start, end, depth in dB), the usual `music_duck_db`, deeper where the
    music there would sit less than `music_separation_lu` under the voice; and each segment's phrases."""
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
    return spans, seg_phrases


def _voice_gain(voice_s: np.ndarray, music_s: np.ndarray, settings) -> tuple[float, float]:
    """The voice's gain and the whole mix's, toward the target. The voice is mastered to it already and
    the bed adds a little: the bed keeps its set level; the voice takes the correction, up to +3 dB (a
    sparse narration); where the bed alone would pass the target, the whole mix comes down instead (so
    the separation rule still holds). Returns (the voice's gain with the whole's, the whole's)."""
    gv = 1.0
    if _gated_steps(voice_s + music_s) < settings.loudness_lufs:
        lo, hi = 1.0, 10 ** (3 / 20)
        for _ in range(16):  # to 0.0001 dB: far finer than the 0.5 dB steps it is rounded to
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if _gated_steps(mid * mid * voice_s + music_s) < settings.loudness_lufs else (lo, mid)
        gv = hi
    lufs = _gated_steps(gv * gv * voice_s + music_s)
    whole = _stepped(10 ** ((settings.loudness_lufs - lufs) / 20)) if np.isfinite(lufs) else 1.0  # 1 unless the bed is loud
    return gv * whole, whole


def _limited(gv: float, voice_e2, voice_pb, music_e, rest_pb, settings) -> tuple[float, np.ndarray, np.ndarray]:
    """The voice's gain, on the GAIN_STEP_DB grid, with the limiter's: (gain, the peak envelope, the
    limiter's gain per bin). The limiter takes a little loudness off the voice's peaks, which the voice
    gets back: its gain is the step nearest the estimate or the one above, whichever meets the target
    better (then further up while that is better still), or the one below where the nearest overshoots
    by more than half a step (the gated loudness can jump with the gain, where blocks cross the
    relative gate). Both nearest and next are always weighed: taking the nearest wherever it was within
    half a step, Part 4 sat on that edge (-14.25 LUFS, and -14.05 a step up), and a one-word edit that
    crossed it changed the whole episode's gain, so every piece of the track was encoded again."""
    ceiling = settings.true_peak_dbtp - sound.TP_MARGIN_DB
    tried: dict[int, tuple[float, float, np.ndarray, np.ndarray]] = {}

    def miss(k: int) -> float:  # the loudness at step k, less the target
        if k not in tried:
            g = _stepped(gv) * 10 ** (k * GAIN_STEP_DB / 20)
            env = voice_pb * g + rest_pb
            curve = sound.block_gains(env.astype(np.float32), ceiling, rate=RATE // BIN)
            d = _gated_bins((voice_e2 * g * g + music_e) * curve.astype(np.float64) ** 2) - settings.loudness_lufs
            tried[k] = (d if np.isfinite(d) else np.inf, g, env, curve)
        return tried[k][0]

    _, g, env, curve = tried[_best_step(miss, GAIN_STEP_DB / 2)]
    return g, env, curve


def _figures(seg_phrases: list, heard_voice: np.ndarray, music_e: np.ndarray, spans: list, pauses: np.ndarray,
             settings) -> dict:  # fmt: skip
    """The stems as heard in the file, for the manifest: the music's level in the pauses, and under each
    segment's speech the voice's, the music's and their separation."""
    per: list[dict | None] = []
    for ph in seg_phrases:
        if not ph:
            per.append(None)
            continue
        v, m = _lufs(_span_energy(heard_voice, ph)), _lufs(_span_energy(music_e, ph))
        per.append({"voice_lufs": round(v, 2), "music_lufs": round(m, 2), "separation_lu": round(v - m, 2)})
    gaps = _lufs(float(music_e[pauses].sum()) / (int(pauses.sum()) * BIN)) if pauses.any() else None
    return {
        "level_in_pauses_lufs": None if gaps is None else round(gaps, 2),
        "target_in_pauses_lufs": settings.music_level_lufs,
        "duck_db": settings.music_duck_db,
        "deepest_duck_db": round(max((d for _, _, d in spans), default=0.0), 2),
        "separation_rule_lu": settings.music_separation_lu,
        "segments": per,
    }


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
