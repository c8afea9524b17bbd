"""The episode's one audio track: every narration placed at its exact sample, then mastered.

Placement is sample-exact (a frame is 1600 samples at 48 kHz/30 fps), so captions stay on their words.
Mastering: integrated loudness to the target (ITU-R BS.1770 via pyloudnorm), then a look-ahead limiter
on the 4x-oversampled signal keeps the true peak under the ceiling. The final file is measured again
with ffmpeg's ebur128 meter; that measurement is what the manifest records.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from .errors import TTSError
from .plan import Plan

# Mastering runs at the speech engine's own rate: half the samples of 48 kHz, no resampling in Python.
# ffmpeg resamples to 48 kHz once, inside the AAC encode (the true-peak margin covers its overshoot).
RATE = 22050
FADE_MS = 6            # edge fades kill clicks where speech files start or stop mid-wave
TP_MARGIN_DB = 1.0     # AAC encoding lifts true peaks by up to ~0.5 dB here; leave room under the ceiling


def _pydub():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # pydub warns at import when no ffmpeg is on PATH
        warnings.simplefilter("ignore", DeprecationWarning)   # ... and about audioop on Python 3.11-3.12
        from pydub import AudioSegment
    from .encode import ffmpeg_exe
    AudioSegment.converter = ffmpeg_exe()
    return AudioSegment


@dataclass(frozen=True)
class Mastered:
    wav: Path
    samples: int
    lufs: float
    true_peak: float
    gain_db: float


def frames_to_samples(frames: int, fps: int) -> int:
    return frames * RATE // fps


def load_speech(wav: Path) -> np.ndarray:
    """A narration as float32 at the mastering rate, with short fades at both ends."""
    from scipy.signal import resample_poly

    seg = _pydub().from_wav(wav).set_channels(1).set_sample_width(2)
    seg = seg.fade_in(FADE_MS).fade_out(FADE_MS)
    x = np.array(seg.get_array_of_samples(), dtype=np.float32) / 32768.0
    if seg.frame_rate != RATE:
        g = gcd(RATE, seg.frame_rate)
        x = resample_poly(x, RATE // g, seg.frame_rate // g).astype(np.float32)
    return x


def assemble(plan: Plan, wavs: dict[str, Path]) -> np.ndarray:
    track = np.zeros(frames_to_samples(plan.total_frames, plan.fps), dtype=np.float32)
    for seg in plan.segments:
        x = load_speech(wavs[seg.audio_key])
        at = frames_to_samples(seg.narration_start, plan.fps)
        end = min(frames_to_samples(seg.end, plan.fps), at + len(x))
        track[at:end] += x[: end - at]
    return track


def _interpolator() -> np.ndarray:
    """A 4-phase, 12-taps-per-phase low-pass for 4x oversampling, the structure BS.1770 annex 2 uses."""
    from scipy.signal import firwin

    h = firwin(48, 0.25, window=("kaiser", 6.0)) * 4
    return h.reshape(12, 4).T.astype(np.float32)      # row p: the taps of phase p


def tp_envelope(x: np.ndarray) -> np.ndarray:
    """Per-sample true-peak envelope: the largest |value| among the 4 oversampled points at each sample."""
    out = np.abs(x).astype(np.float32)
    for taps in _interpolator():
        y = np.convolve(x, taps, mode="full")[6:6 + len(x)]   # centre the 12-tap phase (group delay)
        np.maximum(out, np.abs(y), out=out)
    return out


def true_peak_db(x: np.ndarray) -> float:
    peak = float(tp_envelope(x).max()) if len(x) else 0.0
    return 20 * np.log10(peak) if peak > 0 else -np.inf


def k_weight(x: np.ndarray) -> np.ndarray:
    """BS.1770 K-weighting (shelf + high-pass), with pyloudnorm's filter definitions."""
    import pyloudnorm
    from scipy.signal import lfilter

    y = x.astype(np.float64)
    for f in pyloudnorm.Meter(RATE)._filters.values():
        y = lfilter(f.b, f.a, y)
    return y.astype(np.float32)


def gated_loudness(kx: np.ndarray, channels: int = 1) -> float:
    """BS.1770-4 gated loudness of an already K-weighted mono signal, as if on `channels` identical channels."""
    block, step = int(0.4 * RATE), int(0.1 * RATE)
    if len(kx) < block:
        return -np.inf
    # Energy per 100 ms step, a second at a time (no signal-sized float64 temporaries), then each 400 ms
    # block is four consecutive steps.
    n = len(kx) // step
    e = np.empty(n)
    for a in range(0, n, 10):
        piece = kx[a * step:min(n, a + 10) * step].astype(np.float64).reshape(-1, step)
        e[a:a + len(piece)] = np.einsum("ij,ij->i", piece, piece)
    z = (e[:-3] + e[1:-2] + e[2:-1] + e[3:]) / block * channels
    lk = -0.691 + 10 * np.log10(np.maximum(z, 1e-20))
    z = z[lk > -70]
    if not len(z):
        return -np.inf
    rel = -0.691 + 10 * np.log10(z.mean()) - 10
    z = z[-0.691 + 10 * np.log10(z) > rel]
    return float(-0.691 + 10 * np.log10(z.mean()))


def integrated_lufs(x: np.ndarray) -> float:
    """Integrated loudness of a mono or (n, channels) signal, by pyloudnorm (the reference meter)."""
    import pyloudnorm

    return float(pyloudnorm.Meter(RATE).integrated_loudness(x.astype(np.float64)))


def gain_curve(env: np.ndarray, ceiling_db: float, lookahead_ms: float = 3.0, release_ms: float = 60.0,
               block: int = 16) -> np.ndarray:
    """A look-ahead limiter's gain for a signal with this true-peak envelope: 1 where it is under the ceiling.

    Computed on 16-sample blocks (each block takes its most demanding sample), which is 16x cheaper and
    still smooth: the steps are a third of a millisecond apart and tiny.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    need = np.minimum(1.0, 10 ** (ceiling_db / 20) / np.maximum(env, 1e-9)).astype(np.float32)
    if need.min() >= 1.0:
        return need
    n = len(need)
    padded = np.concatenate([need, np.ones(-n % block, dtype=np.float32)])
    need_b = padded.reshape(-1, block).min(axis=1)
    la = max(1, int(RATE * lookahead_ms / 1000) // block)
    rel = max(1, int(RATE * release_ms / 1000) // block)
    # A centred min then a moving average no wider than it: the result never exceeds what any block
    # in reach needs, so the ceiling holds and the gain moves smoothly (no clicks).
    g = uniform_filter1d(minimum_filter1d(need_b, 2 * la + 1), la + 1)
    g = np.minimum(g, uniform_filter1d(minimum_filter1d(g, rel), rel))
    return np.repeat(g, block)[:n]


def master(track: np.ndarray, target_lufs: float, ceiling_dbtp: float, out: Path) -> Mastered:
    """Gain and limit the mono narration, for playback as stereo (two identical channels).

    Stereo with identical channels measures 3.01 LU louder than the mono signal, so we aim the mono at
    target - 3.01. The true-peak envelope scales linearly with gain, so it is computed once and the gain
    that meets the target after limiting is found by bisection on the K-weighted signal.
    """
    from scipy.io import wavfile

    x = track.astype(np.float32)
    env, kx = tp_envelope(x), k_weight(x)
    ceiling = ceiling_dbtp - TP_MARGIN_DB

    def loud(gain_db: float) -> tuple[float, np.ndarray]:
        g = 10 ** (gain_db / 20)
        curve = gain_curve(env * g, ceiling)
        return gated_loudness(kx * (g * curve), channels=2), curve   # K(g*x) ~ g*K(x): g moves slowly

    if not np.isfinite(gated_loudness(kx, 2)):
        raise TTSError("the narration is silent: the speech engine produced no audible audio")
    # After limiting, loudness still rises monotonically with gain, but flattens as the limiter works
    # harder; so bracket the target, then refine by false position (falling back to bisection).
    lo = target_lufs - gated_loudness(kx, 2)          # the gain that would hit the target unlimited
    l_lo = loud(lo)[0]
    hi, l_hi = lo, l_lo
    while l_hi < target_lufs and hi < lo + 40:
        hi += 6.0
        l_hi = loud(hi)[0]
    gain_db = lo if abs(l_lo - target_lufs) <= abs(l_hi - target_lufs) else hi
    for _ in range(20):
        if min(abs(l_lo - target_lufs), abs(l_hi - target_lufs)) < 0.05 or l_hi < target_lufs:
            break
        g = lo + (target_lufs - l_lo) * (hi - lo) / max(l_hi - l_lo, 1e-6)
        if not lo < g < hi or _ % 3 == 2:
            g = (lo + hi) / 2
        lg = loud(g)[0]
        lo, l_lo, hi, l_hi = (g, lg, hi, l_hi) if lg < target_lufs else (lo, l_lo, g, lg)
    gain_db = lo if abs(l_lo - target_lufs) <= abs(l_hi - target_lufs) else hi
    lufs, curve = loud(gain_db)
    g = (10 ** (gain_db / 20)) * curve
    y = (x * g).astype(np.float32)
    # written mono; the AAC encode duplicates it into two identical channels (see encode.audio_args)
    # the envelope scales with the (slowly moving) gain, so the peak needs no second oversampling pass
    tp = float(20 * np.log10(max(float((env * g).max()), 1e-12)))
    out.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(out, RATE, y)
    return Mastered(out, len(y), lufs, tp, gain_db)
