"""Synthesise the music bed shortgen ships: a soft pad of four chords, 32 seconds that loop seamlessly,
written to assets/music/soft-pad.ogg (Vorbis, about 300 kB) with the ffmpeg shortgen already uses.

    python assets/music/make_pad.py

Made entirely by this code (numpy: detuned sine partials under slow swells), so the project may
redistribute it under its own licence (MIT). Rerunning it gives the same samples.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

RATE = 48000
CHORD_S = 8.0
# Cmaj9, Am9, Fmaj9, G6/9 voiced low and close, in Hz (A4 = 440)
CHORDS = [
    [130.81, 196.00, 246.94, 293.66, 329.63],
    [110.00, 164.81, 196.00, 246.94, 261.63],
    [87.31, 174.61, 220.00, 261.63, 329.63],
    [98.00, 146.83, 196.00, 220.00, 246.94],
]
OUT = Path(__file__).parent / "soft-pad.ogg"


def voice(freq: float, n: int, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One note as two slightly detuned sines and a soft octave, panned a little apart."""
    left = np.zeros(n, np.float64)
    right = np.zeros(n, np.float64)
    for detune, amp in ((-0.0035, 0.5), (0.0035, 0.5), (0.0, 0.12)):
        f = freq * (1 + detune) * (2 if amp < 0.2 else 1)
        phase = rng.uniform(0, 2 * np.pi)
        wave = amp * np.sin(2 * np.pi * f * t + phase)
        pan = 0.5 + detune * 60  # the detuned pair spreads across the stereo field
        left += wave * (1 - pan)
        right += wave * pan
    return np.stack([left, right])


def swell(n: int) -> np.ndarray:
    """A chord's envelope: a slow rise and fall (raised cosine), overlapping the next chord by half."""
    x = np.linspace(0, 1, n, endpoint=False)
    return 0.5 - 0.5 * np.cos(2 * np.pi * x)


def main() -> None:
    rng = np.random.default_rng(4)
    span = int(2 * CHORD_S * RATE)  # each chord sounds for two chord lengths, centred on its slot
    total = int(len(CHORDS) * CHORD_S * RATE)
    t = np.arange(span) / RATE
    out = np.zeros((2, total))
    for i, chord in enumerate(CHORDS):
        note = sum(voice(f, span, t, rng) for f in chord) * swell(span)
        start = int((i * CHORD_S - CHORD_S / 2) * RATE)
        idx = (start + np.arange(span)) % total  # wrapped round: the loop point is as smooth as any other
        np.add.at(out, (slice(None), idx), note)
    # a slow breathing tremolo, and a gentle low-pass for warmth: applied to the spectrum of the whole
    # loop (a circular filter, so the loop point stays seamless)
    out *= 1 + 0.08 * np.sin(2 * np.pi * np.arange(total) / total * 8)
    f = np.fft.rfftfreq(total, 1 / RATE)
    out = np.fft.irfft(np.fft.rfft(out, axis=1) / (1 + (f / 1800.0) ** 2), n=total, axis=1)
    out *= 0.5 / np.abs(out).max()
    pcm = out.T.astype("<f4").tobytes()
    import imageio_ffmpeg

    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "f32le", "-ar", str(RATE), "-ac", "2", "-i", "-",
            "-c:a", "libvorbis", "-q:a", "3", "-map_metadata", "-1", str(OUT)]  # fmt: skip
    proc = subprocess.run(args, input=pcm)
    if proc.returncode:
        sys.exit("ffmpeg failed")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1000} kB, {total / RATE:.0f} s)")


if __name__ == "__main__":
    main()
