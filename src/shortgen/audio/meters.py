"""The meters of the mix, on energy bins: K-weighted energy per BIN samples (linear, so a mix's bins are
its stems' bins, gained), peak envelopes per bin, and BS.1770-4 gated loudness from them. The ducking plan
is decided on these without rendering the mix (music.py)."""

from __future__ import annotations

import numpy as np

from ..video.encode import AAC_RATE
from . import sound

RATE = AAC_RATE  # the mix runs at the file's rate: music keeps its top octave


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


def loudness(x: np.ndarray) -> float:
    """BS.1770-4 integrated loudness of a (channels, n) signal at RATE."""
    if x.shape[1] < int(0.4 * RATE):
        return -np.inf
    k = np.vstack([sound.k_weight(ch, RATE) for ch in x])
    return sound.gated_loudness_multi(k, RATE)


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
