"""Mastering: loudness to target and true peak under the ceiling, checked against reference meters."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

import helpers
from shortgen.audio import sound
from shortgen.errors import TTSError

RATE = sound.RATE


def speechlike(seconds=12.0, seed=0) -> np.ndarray:
    """Voiced bursts (a 140 Hz buzz with harmonics) at syllable rate, with pauses and a few hot transients."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    buzz = sum(np.sin(2 * np.pi * 140 * k * t + rng.random() * 6) / k for k in range(1, 20))
    syllables = np.abs(np.sin(2 * np.pi * 3 * t)) ** 0.5
    words = rng.random(n // 9600 + 1).repeat(9600)[:n] > 0.15  # short pauses between words
    y = (buzz * syllables * words * 0.05 * (0.6 + 0.4 * rng.random(n // 4800 + 1).repeat(4800)[:n])).astype(np.float32)
    y[RATE * 3 : RATE * 3 + 50] = 0.99  # transients a limiter has to catch
    return y


def reference_true_peak(x: np.ndarray) -> float:
    return 20 * np.log10(np.abs(resample_poly(x, 4, 1)).max())


def test_tp_envelope_matches_4x_oversampling():
    x = speechlike(4.0, 1)
    assert abs(sound.true_peak_db(x) - reference_true_peak(x)) < 0.1


def test_gated_loudness_matches_pyloudnorm():
    x = speechlike(6.0, 2)
    ours = sound.gated_loudness(sound.k_weight(x), channels=2)
    ref = pyloudnorm.Meter(RATE).integrated_loudness(np.repeat(x[:, None], 2, axis=1).astype(np.float64))
    assert abs(ours - ref) < 0.01


def test_filters_match_the_reference_implementations():
    from scipy.signal import firwin, lfilter

    assert np.allclose(sound._interpolator(), (firwin(48, 0.25, window=("kaiser", 6.0)) * 4).reshape(12, 4).T, atol=1e-7)
    ref = pyloudnorm.Meter(RATE)._filters
    for (b, a), name in zip(sound.k_filters(RATE), ("high_shelf", "high_pass")):
        assert np.allclose(b, ref[name].b) and np.allclose(a, ref[name].a)
    x = speechlike(3.0, 4)
    direct = x.astype(np.float64)
    for b, a in sound.k_filters(RATE):
        direct = lfilter(b, a, direct)
    assert np.abs(sound.k_weight(x) - direct).max() < 1e-5  # FFT filtering == IIR filtering
    # a long signal (a music bed at 48 kHz) is filtered block by block: the same, to float32 precision
    long = np.tile(speechlike(3.0, 5), 12)
    assert len(long) > sound.K_SIZE * 4
    direct = long.astype(np.float64)
    for b, a in sound.k_filters(48000):
        direct = lfilter(b, a, direct)
    assert np.abs(sound.k_weight(long, 48000) - direct).max() < 1e-5


@pytest.mark.parametrize("level", [0.02, 0.2, 1.0])
def test_master_hits_target_and_ceiling(tmp_path, level):
    x = speechlike() * level
    m = sound.master(x, -14.0, -1.0)
    helpers.write_wav(tmp_path / "m.wav", m.samples)
    sr, mono = wavfile.read(tmp_path / "m.wav")
    assert sr == RATE and mono.shape == (len(x),)
    mono = mono / 32767
    y = np.repeat(mono[:, None], 2, axis=1)  # as played: two identical channels
    lufs = pyloudnorm.Meter(RATE).integrated_loudness(y.astype(np.float64))
    assert abs(lufs - -14.0) < 0.2
    assert reference_true_peak(y[:, 0]) <= -1.0 - 0.5  # headroom kept for the AAC encoder
    assert abs(m.lufs - lufs) < 0.05


def test_limiter_gain_moves_smoothly():
    env = np.full(RATE, 0.5, dtype=np.float32)
    env[RATE // 2] = 4.0  # one hot sample
    g = sound.gain_curve(env, -1.0)
    assert g.min() * 4.0 <= 10 ** (-1 / 20) + 1e-6  # the peak is brought under the ceiling
    assert np.abs(np.diff(g)).max() < 0.05  # no step big enough to click


def test_silence_is_a_typed_error(tmp_path):
    with pytest.raises(TTSError):
        sound.master(np.zeros(RATE * 2, dtype=np.float32), -14.0, -1.0)


def test_a_narration_shorter_than_one_loudness_block_is_mastered_too():
    t = np.arange(int(0.3 * RATE)) / RATE
    x = (0.05 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)  # "Hi." is about this long
    m = sound.master(x, -14.0, -1.0)
    assert len(m.samples) == len(x) and np.isfinite(m.lufs) and m.true_peak <= -2.0 + 0.01


def test_episode_loudness_from_per_segment_energy_matches_metering_the_whole_track():
    """Each segment's mastered energy, placed at its start, gives the episode's integrated loudness with
    no pass over the whole track; checked against pyloudnorm on the assembled (stereo) track."""
    segs = [
        sound.master(speechlike(sec, seed) * lvl, -14.0, -1.0)
        for sec, seed, lvl in ((6.0, 1, 0.3), (9.0, 2, 0.05), (4.0, 3, 1.0))
    ]
    starts = [int(0.8 * RATE), int(8.1 * RATE) + 17, int(19.3 * RATE) + 5]
    total = int(25 * RATE)
    track = np.zeros(total, np.float32)
    for m, at in zip(segs, starts):
        track[at : at + len(m.samples)] += m.samples
    ref = pyloudnorm.Meter(RATE).integrated_loudness(np.repeat(track[:, None], 2, axis=1).astype(np.float64))
    ours = sound.integrated_from_energy(sound.place_energy(total, [(at, m.energy) for m, at in zip(segs, starts)]))
    assert abs(ours - ref) < 0.05, (ours, ref)
    assert abs(ours - -14.0) < 0.3  # segments mastered alone add up to the target


@pytest.mark.parametrize("n,size", [(1, 1), (5, 1), (5, 2), (7, 3), (100, 9), (100, 10), (37, 82), (1000, 82)])
def test_running_minimum_equals_the_sliding_window_definition(n, size):
    x = np.random.default_rng(n * size).normal(size=n).astype(np.float32)
    lo = size // 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, (lo, size - 1 - lo), mode="edge"), size)
    assert np.array_equal(sound._min_filter(x, size), windows.min(axis=1))


def test_resampling_keeps_a_tone_and_its_level():
    from shortgen.audio.sound import resample

    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = resample(x, 16000, 22050)
    assert len(y) == 22050
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 440) <= 1  # the tone stays at 440 Hz (1 Hz bins)
    assert abs(np.sqrt(np.mean(y[2000:-2000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01
