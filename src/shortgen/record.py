"""A creator's own recording as a segment's narration: decoded, trimmed to the engine's lead-in and
tail, and its words timed by forced alignment without a speech model.

The engine speaks the same text (its word times are known exactly, from its own events); both audios
become MFCC frames (10 ms hop, normalised per utterance so that voice and microphone matter less);
dynamic time warping finds the cheapest monotone path between them, and each word's start and end are
carried across it. This is the method aeneas uses, in numpy: the DTW is one vectorised pass per row
(a row's recurrence is a running minimum over a prefix sum), about 50 ms for a 25 s segment.

The path also says how sure it is. Along a true match the frames paired are alike; where the recording
says something else (a wrong file, a skipped or added sentence) they are not, and the path's cost rises
to what unrelated frames cost. The rule, measured (see README): over any 1.5 s of the recording, the
mean cost of the pairs on the path, against the mean cost of all pairs of the two utterances, must stay
under MISMATCH_RATIO; the first place it does not is reported, with the words there.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import keys, music
from .cache import Cache
from .narrate import Narration, SpokenWord, read_wav

RATE = 22050  # the engine's rate: a recording is mastered and timed as the engine's speech is
HOP = RATE // 100  # 10 ms frames
N_FFT = 512  # 23 ms windows
N_MELS = 40
N_MFCC = 13  # c1..c12 are kept: c0 (loudness) says more about the microphone than about the words
ALIGN_VERSION = 1  # bump when alignment changes: cached timings are keyed by it
# How sure the alignment is (see the module's docstring and README for the measurements behind these)
MISMATCH_RATIO = 0.58  # true pairs reached 0.55 at most (reverberation); another segment's words 0.61 and up
MISMATCH_WINDOW_S = 2.0
SKIP_FRAMES = 80  # 0.8 s of speech on one side ...
SKIP_OTHER = 12  # ... against at most 0.12 s on the other: a passage skipped or added
MAX_OVER_BUDGET_S = 60.0  # a file this much longer than a segment may run is refused before it is decoded


class RecordingError(ValueError):
    """A recording that cannot be used; str() is the reason."""


# ---- decoding and trimming ----------------------------------------------------------------------


def probe(path: Path, budget_s: float) -> music.AudioInfo:
    """What the file is, refusing what cannot be a segment's narration (without decoding it)."""
    try:
        info = music.probe(path)
    except music.AudioError as e:
        raise RecordingError(str(e)) from None
    if info.duration > budget_s + MAX_OVER_BUDGET_S:
        raise RecordingError(
            f"{path.name} lasts {info.duration:.1f} s; a segment may run {budget_s:g} s: trim it, or record the segment alone"
        )
    return info


def decode(info: music.AudioInfo) -> np.ndarray:
    """The whole recording as mono float32 at RATE (ffmpeg mixes it down and resamples, through pydub)."""
    seg_cls = music._pydub()
    from pydub.exceptions import CouldntDecodeError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = seg_cls.from_file(info.path, codec=info.codec, parameters=["-ac", "1", "-ar", str(RATE)])
    except (CouldntDecodeError, OSError, ValueError, IndexError) as e:
        last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or [type(e).__name__]
        raise RecordingError(f"{Path(info.path).name} cannot be decoded ({last[0].strip()[:120]})") from None
    seg = seg.set_sample_width(2)
    x = np.frombuffer(seg.raw_data, dtype="<i2").astype(np.float32) / 32768.0
    if seg.channels > 1:
        x = x.reshape(-1, seg.channels).mean(axis=1)
    if len(x) < HOP * 10:
        raise RecordingError(f"{Path(info.path).name} holds no sound to speak with ({len(x) / RATE * 1000:.0f} ms)")
    return x


def voiced(x: np.ndarray) -> np.ndarray:
    """Which 10 ms windows hold speech: over both a level under the loudest window (-30 dB) and the
    room's own noise (12 dB over the quietest tenth), so that a noisy recording's silence is silence."""
    n = len(x) // HOP
    rms = np.sqrt((x[: n * HOP].reshape(n, HOP) ** 2).mean(axis=1)) if n else np.zeros(0)
    if not n or rms.max() < 1e-4:
        return np.zeros(n, bool)
    floor = float(np.percentile(rms, 10))
    return rms > max(rms.max() * 0.03, floor * 4)


def speech_span(x: np.ndarray) -> tuple[int, int] | None:
    """The first and last voiced sample (window-accurate), or None for silence."""
    v = np.flatnonzero(voiced(x))
    return (int(v[0]) * HOP, (int(v[-1]) + 1) * HOP) if len(v) else None


def trim(x: np.ndarray, lead: int, tail: int) -> tuple[np.ndarray, int]:
    """The recording cut (or padded with silence) to `lead` samples before its first voiced window and
    `tail` after its last: the engine's own lead and tail. Returns it and where it starts in `x`."""
    span = speech_span(x)
    if span is None:
        raise RecordingError("the recording is silent")
    a, b = span[0] - lead, span[1] + tail
    out = np.zeros(b - a, np.float32)
    lo, hi = max(a, 0), min(b, len(x))
    out[lo - a : hi - a] = x[lo:hi]
    return out, a


# ---- features and the warping path --------------------------------------------------------------


@lru_cache(maxsize=1)
def _filters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Hann window, a mel filterbank (80 Hz to 7.6 kHz) and an orthonormal DCT-II."""

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges = 700 * (10 ** (np.linspace(mel(80.0), mel(7600.0), N_MELS + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(N_FFT, 1 / RATE)
    fb = np.zeros((N_MELS, len(freqs)))
    for m in range(N_MELS):
        lo, mid, hi = edges[m : m + 3]
        fb[m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    k = np.arange(N_MELS)
    dct = np.cos(np.pi / N_MELS * (k[None, :] + 0.5) * np.arange(N_MFCC)[:, None]) * np.sqrt(2 / N_MELS)
    return np.hanning(N_FFT).astype(np.float32), fb.astype(np.float32), dct.astype(np.float32)


def features(x: np.ndarray) -> np.ndarray:
    """MFCC c1..c12 per 10 ms frame (frame i centred on sample i * HOP), each coefficient normalised to
    zero mean and unit variance over the utterance, and their slopes over +-2 frames (which keep the
    word boundaries sharp under reverberation: measured, the largest onset error fell from 326 to 93 ms)."""
    window, fb, dct = _filters()
    pad = np.pad(x.astype(np.float32), (N_FFT // 2, N_FFT // 2))
    n = 1 + (len(pad) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(pad[idx] * window, axis=1)) ** 2
    logmel = np.log(spec.astype(np.float32) @ fb.T + 1e-8)
    c = (logmel @ dct.T)[:, 1:]
    c = (c - c.mean(axis=0)) / (c.std(axis=0) + 1e-6)
    d = np.zeros_like(c)
    d[2:-2] = (c[3:-1] - c[1:-3] + 2 * (c[4:] - c[:-4])) / 10
    return np.hstack([c, d])


def _costs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between every frame of `a` and every frame of `b`."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d, 0)).astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance between every frame of `a` and every frame of `b`: blind to level, which makes
    the path's cost a fairer measure of whether the words match (measured: it separates true pairs from
    wrong ones where the Euclidean cost did not)."""
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-9)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-9)
    return (1 - a @ b.T).astype(np.float32)


def dtw(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotone path through a cost matrix from (0, 0) to its far corner, with steps
    (1, 0), (0, 1) and (1, 1). Row by row: with a = c + min(up, diagonal), D[i, j] = min over k <= j of
    a[k] + c[i, k+1..j], which is a prefix sum plus a running minimum. Returns (rows, cols) of the path."""
    n, m = c.shape
    acc = np.empty((n, m), np.float64)
    acc[0] = np.cumsum(c[0], dtype=np.float64)
    inf = np.array([np.inf])
    for i in range(1, n):
        prev = acc[i - 1]
        a = c[i] + np.minimum(prev, np.concatenate([inf, prev[:-1]]))
        s = np.cumsum(c[i], dtype=np.float64)
        acc[i] = np.minimum.accumulate(a - s) + s
    # back from the far corner, always to the cheapest predecessor
    i, j = n - 1, m - 1
    rows, cols = [i], [j]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            d, u, l_ = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if d <= u and d <= l_:
                i, j = i - 1, j - 1
            elif u <= l_:
                i -= 1
            else:
                j -= 1
        rows.append(i)
        cols.append(j)
    return np.array(rows[::-1]), np.array(cols[::-1])


# ---- alignment ----------------------------------------------------------------------------------


def align(
    ref: np.ndarray, ref_words: tuple[SpokenWord, ...], rec: np.ndarray
) -> tuple[tuple[SpokenWord, ...], float, str | None]:
    """Word times in `rec` (samples at RATE) for the words the engine spoke in `ref`. Returns the words,
    the worst windowed cost ratio, and what does not match, if anything (where, in words)."""
    fa, fb = features(ref), features(rec)
    rows, cols = dtw(_costs(fa, fb))
    # the recording's position for each engine frame: the middle of the frames it was paired with
    first = np.full(len(fa), -1)
    last = np.zeros(len(fa), int)
    for r, k in zip(rows, cols):
        if first[r] < 0:
            first[r] = k
        last[r] = k
    mid = (first + last) / 2.0

    def to_rec(sample: int) -> int:
        return int(round(np.interp(sample / HOP, np.arange(len(fa)), mid) * HOP))

    words = []
    prev = 0
    for w in ref_words:
        s = max(prev, min(len(rec), to_rec(w.start)))
        e = max(s + HOP, min(len(rec), to_rec(w.end)))
        words.append(SpokenWord(w.text, w.char_start, s, e))
        prev = s
    worst, problem = _confidence(ref, rec, fa, fb, rows, cols, tuple(words))
    return tuple(words), worst, problem


def _confidence(ref, rec, fa, fb, rows, cols, words) -> tuple[float, str | None]:
    """Two measured rules. (1) Along the cheapest path by cosine distance, the mean cost over any
    MISMATCH_WINDOW_S, against the mean cost of all pairs, stays under MISMATCH_RATIO. (2) Along the
    timing path, no SKIP_FRAMES of one side's speech pair with under SKIP_OTHER frames of the other's
    speech (silence is free: a creator may pause longer than the engine)."""

    def near(sample: int) -> str:
        close = [w.text for w in words if abs(w.start - sample) < 1.2 * RATE][:5]
        return f" (near {' '.join(close)!r})" if close else ""

    va, vb = voiced(ref), voiced(rec)
    a_sp = np.cumsum(va[np.minimum(rows, len(va) - 1)] & np.concatenate([[True], np.diff(rows) > 0]))
    b_sp = np.cumsum(vb[np.minimum(cols, len(vb) - 1)] & np.concatenate([[True], np.diff(cols) > 0]))
    for mine, other, what in ((a_sp, b_sp, "skipped"), (b_sp, a_sp, "added")):
        q = np.searchsorted(mine, mine + SKIP_FRAMES)
        ok = q < len(mine)
        bad = np.flatnonzero(ok & (other[np.minimum(q, len(mine) - 1)] - other <= SKIP_OTHER))
        if len(bad):
            at = int(cols[bad[0]]) * HOP
            if what == "skipped":
                return (
                    1.0,
                    f"at about {at / RATE:.1f} s the recording leaves out words of the text{near(at)}: a sentence skipped?",
                )
            return 1.0, f"from about {at / RATE:.1f} s the recording says more than the text{near(at)}: a sentence added?"
    cc = _cosine(fa, fb)
    r2, c2 = dtw(cc)
    on = cc[r2, c2]
    base = float(cc.mean()) or 1.0
    win = max(1, int(MISMATCH_WINDOW_S * 100))
    if len(on) > win:
        k = np.cumsum(np.concatenate([[0.0], on]))
        local = (k[win:] - k[:-win]) / win
        i = int(np.argmax(local))
        worst, at = float(local[i]) / base, int(c2[i]) * HOP
    else:
        worst, at = float(on.mean()) / base, 0
    if worst > MISMATCH_RATIO:
        return worst, (
            f"from about {at / RATE:.1f} s it matches no part of the text{near(at)} (cost {worst:.2f} of unrelated "
            f"speech's, over {MISMATCH_RATIO}): a wrong file, or a sentence changed?"
        )
    return worst, None


def narration(
    path: Path, info: music.AudioInfo, text: str, reference: Narration, cache: Cache, budget_s: float, refuse: bool = True
) -> tuple[Narration, float, str | None]:
    """A segment's narration from its recording: trimmed to the engine's lead and tail, its words
    aligned to the engine's speech of the same text (`reference`). Cached by the recording's content,
    the text and the reference speech. Returns it, the worst cost ratio and what does not match (the
    manifest reports both). Raises RecordingError for a silent recording, and for one that does not
    say the text when `refuse` (unless it is over `budget_s`: then the budget rule speaks first)."""
    key = keys.recording(info.digest, text, reference.wav.stem, ALIGN_VERSION, MISMATCH_RATIO)
    wav, js = cache.path("narration", key, ".wav"), cache.path("narration", key, ".json")
    if cache.has(wav, js):
        d = json.loads(js.read_text())
        if d.get("mismatch") and refuse:
            raise RecordingError(d["mismatch"])
        return _narration(text, wav, d), d["worst_ratio"], d.get("mismatch")
    ref, sr = read_wav(reference.wav)
    ref = ref.astype(np.float32) / (32768.0 if ref.dtype == np.int16 else 1.0)
    if sr != RATE:
        from .sound import resample

        ref = resample(ref, sr, RATE)
        scale = RATE / sr
        reference = replace(
            reference, words=tuple(replace(w, start=round(w.start * scale), end=round(w.end * scale)) for w in reference.words)
        )
    span = speech_span(ref) or (0, len(ref))
    rec, offset = trim(decode(info), span[0], len(ref) - span[1])
    problem = None
    if len(rec) > budget_s * RATE:
        # over the budget, `check` refuses it with the overshoot: no alignment (a long recording would
        # cost a large warping matrix); the words spread in proportion stand in for the plan
        k = len(rec) / len(ref)
        words = tuple(replace(w, start=round(w.start * k), end=round(w.end * k)) for w in reference.words)
        worst = 0.0
    else:
        words, worst, problem = align(ref, reference.words, rec)
    d = {
        "samples": len(rec),
        "trimmed_from": offset,
        "worst_ratio": round(worst, 3),
        "words": [[w.text, w.char_start, w.start, w.end] for w in words],
    }
    if problem:
        d["mismatch"] = f"{path.name} does not say this segment's narration: {problem}"
    with cache.writing(wav) as tmp:
        _write_wav(tmp, rec)
    with cache.writing(js) as tmp:
        tmp.write_text(json.dumps(d))
    if d.get("mismatch") and refuse:
        raise RecordingError(d["mismatch"])
    return _narration(text, wav, d), worst, d.get("mismatch")


def _narration(text: str, wav: Path, d: dict) -> Narration:
    words = tuple(SpokenWord(*w) for w in d["words"])
    return Narration(text=text, voice="recording", rate=0, wav=wav, sample_rate=RATE, samples=d["samples"], words=words)


def _write_wav(path: Path, x: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes())
