"""A creator's own take as a segment's narration: decoded from any format, rate and layout to mono at
the track's 48 kHz (TAKE_RATE), trimmed to the engine's lead-in and tail, and its words timed by forced
alignment without a speech model, on a copy at the engine's 22.05 kHz (RATE).

The engine speaks the same text (its word times are known exactly, from its own events); both audios
become MFCC frames (10 ms hop, normalised per utterance so that voice and microphone matter less);
dynamic time warping finds the cheapest monotone path between them, and each word's start and end are
carried across it. This is the method aeneas uses, in numpy: the DTW is one vectorised pass per row
(a row's recurrence is a running minimum over a prefix sum), about 50 ms for a 25 s segment.

Whether a take says its text is judged by rules calibrated on human readings and other voices, not on
the engine against itself (docs/scripts.md, "Your own voice"): the take must not fit another segment's text
better than its own; no passage may be skipped or added; and no stretch may match nothing. Two speakers'
sounds are too far apart for a missing line of a human reading to stand out, so a speech recogniser
(heard.py) also listens for words of the text not heard and words heard the text lacks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import keys
from ..audio import music
from ..cache import Cache
from .narrate import Narration, SpokenWord, read_wav
from .warp import HOP, RATE, _cosine, _costs, dtw, features

TAKE_RATE = 48000  # the track's rate: a take is kept, mastered and mixed at it
ALIGN_VERSION = 7  # bump when alignment changes: cached timings are keyed by it
# How sure the alignment is (see the module's docstring and docs/scripts.md for the measurements behind these)
# Calibrated on human readings and on other voices in other rooms, not on the engine against itself
# (docs/scripts.md, "Your own voice"): genuine takes reached a cost of 0.80 (human), 81 frames added (human) and
# 84 skipped (another voice with a pause of its own); each limit leaves a margin over those.
MISMATCH_RATIO = 0.83
MISMATCH_WINDOW_S = 2.0
SKIP_FRAMES = 100  # 1.0 s of speech on one side ...
SKIP_OTHER = 12  # ... against at most 0.12 s on the other: a passage skipped or added
OTHER_MARGIN = 0.01  # a take fits another segment's text better than its own by more than this: a wrong take
MAX_OVER_BUDGET_S = 60.0  # a file this much longer than a segment may run is refused before it is decoded


class RecordingError(ValueError):
    """A recording that cannot be used; str() is the reason."""


# ---- decoding and trimming ----------------------------------------------------------------------


# a take may come from a phone's camera or a DAW as well as a recorder: any of these with an audio stream
TAKE_TYPES = (*music.AUDIO_TYPES, ".mov", ".m4v", ".mkv", ".mka", ".webm", ".3gp", ".amr", ".awb", ".aif", ".aiff", ".caf",
              ".wma", ".ac3", ".m4b")  # fmt: skip


def probe(path: Path, budget_s: float) -> music.AudioInfo:
    """What the file is, refusing what cannot be a segment's narration (without decoding it)."""
    try:
        info = music.probe(path, any_type=Path(path).suffix.lower() in TAKE_TYPES)
    except music.AudioError as e:
        raise RecordingError(str(e)) from None
    if info.duration > budget_s + MAX_OVER_BUDGET_S:
        raise RecordingError(
            f"{path.name} lasts {info.duration:.1f} s; a segment may run {budget_s:g} s: trim it, or record the segment alone"
        )
    return info


def decode_args(ffmpeg: str, path: str, rate: int) -> list[str]:
    """The ffmpeg command that decodes a take's first audio stream (of any container: a phone's video
    too) to mono float32 at `rate` on stdout: every rate, channel count and sample format comes out the
    same, resampled and mixed down by ffmpeg from the file's own samples."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]  # fmt: skip


def decode(info: music.AudioInfo, allow_short: bool = False) -> np.ndarray:
    """The whole take as mono float32 at TAKE_RATE (the track's rate: nothing above 11 kHz is lost).
    Refuses a file that decodes to much less than its header claims (damaged or truncated: ffmpeg stops
    early without an error), unless `allow_short`."""
    import subprocess

    from ..video.encode import ffmpeg_exe

    name = Path(info.path).name
    try:
        proc = subprocess.run(decode_args(ffmpeg_exe(), info.path, TAKE_RATE), capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        raise RecordingError(
            f"{name} cannot be decoded ({e.strerror if isinstance(e, OSError) else 'ffmpeg timed out'})"
        ) from None
    x = np.frombuffer(proc.stdout[: len(proc.stdout) // 4 * 4], dtype="<f4")
    if proc.returncode != 0 and not len(x):
        last = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()][-1:] or ["ffmpeg failed"]
        raise RecordingError(f"{name} cannot be decoded ({last[0].strip()[:120]})")
    got = len(x) / TAKE_RATE
    if not allow_short:
        try:
            music.refuse_short(info, got, info.duration)
        except music.AudioError as e:
            raise RecordingError(str(e)) from None
    if len(x) < TAKE_RATE // 10:
        raise RecordingError(f"{name} holds no sound to speak with ({got * 1000:.0f} ms)")
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def voiced(x: np.ndarray, rate: int = RATE, audible: bool = False) -> np.ndarray:
    """Which 10 ms windows hold speech: over both a level under the loudest window (-30 dB) and the
    room's own noise (12 dB over the quietest tenth), so that a noisy recording's silence is silence.
    `audible`: over the room's noise alone, which a quiet fricative starting a word ("some") is."""
    return _voiced(_rms(x, rate), audible)


def _voiced(rms: np.ndarray, audible: bool = False) -> np.ndarray:
    """`voiced`, from the windows' levels."""
    if not len(rms) or rms.max() < 1e-4:
        return np.zeros(len(rms), bool)
    floor = float(np.percentile(rms, 10))
    return rms > (floor * 4 if audible else max(rms.max() * 0.03, floor * 4))


def _rms(x: np.ndarray, rate: int) -> np.ndarray:
    """The level of each 10 ms window."""
    hop = rate // 100
    n = len(x) // hop
    return np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1)) if n else np.zeros(0)


def speech_span(x: np.ndarray, rate: int = RATE) -> tuple[int, int] | None:
    """The first and last voiced sample (window-accurate), or None for silence."""
    hop = rate // 100
    v = np.flatnonzero(voiced(x, rate))
    return (int(v[0]) * hop, (int(v[-1]) + 1) * hop) if len(v) else None


def trim(x: np.ndarray, lead: int, tail: int, rate: int = RATE) -> tuple[np.ndarray, int]:
    """The recording cut (or padded with silence) to `lead` samples before its first voiced window and
    `tail` after its last: the engine's own lead and tail. Returns it and where it starts in `x`."""
    span = speech_span(x, rate)
    if span is None:
        raise RecordingError("the recording is silent")
    a, b = span[0] - lead, span[1] + tail
    out = np.zeros(b - a, np.float32)
    lo, hi = max(a, 0), min(b, len(x))
    out[lo - a : hi - a] = x[lo:hi]
    return out, a


# ---- alignment ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How sure the alignment of a take is, against the rules (see the module's docstring)."""

    take_s: float  # the take's length as decoded (before trimming)
    cost: float  # the worst windowed cost ratio along the path
    at_s: float  # where that window starts, in the trimmed take
    near: str  # the words there
    mismatch: str | None = None  # why the take is refused, or None
    pauses: tuple = ()  # the take's own pauses of PAUSE_HINT_S or more: (where, how long), in seconds
    said: float | None = None  # the recogniser: the least-heard stretch of the text, its share heard (heard.py)
    heard: str = ""  # ... and what it heard

    def trim_hint(self) -> str:
        """For an over-budget take: what there is to trim without cutting a word."""
        if not self.pauses:
            return ""
        at, longest = max(self.pauses, key=lambda p: p[1])
        total = sum(p[1] for p in self.pauses)
        return (
            f"; its {len(self.pauses)} pauses of {PAUSE_HINT_S:g} s or more add up to {total:.1f} s "
            f"(the longest, {longest:.1f} s, at {at:.1f} s)"
        )

    def summary(self) -> str:
        """For `check`: the take's length, its confidence against the rule and its weakest stretch."""
        said = "" if self.said is None else f"; its least-heard stretch heard {self.said:.0%}"
        return (
            f"take {self.take_s:.1f} s, alignment cost {self.cost:.2f} (refused over {MISMATCH_RATIO:.2f}), "
            f"weakest at {self.at_s:.1f} s{f' ({self.near!r})' if self.near else ''}{said}"
        )


def align(ref: np.ndarray, ref_words: tuple[SpokenWord, ...], rec: np.ndarray) -> tuple[tuple[SpokenWord, ...], Verdict]:
    """Word times in `rec` (samples at RATE) for the words the engine spoke in `ref`, and how sure
    they are: the worst windowed cost ratio, where it is, and what does not match, if anything."""
    fa, fb = features(ref), features(rec)
    plain, timing = _costs_with_pauses(fa, fb, ref_words, rec)
    rows, cols = dtw(timing)
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
    pauses = _pauses(rec)
    for w in ref_words:
        end = min(len(rec), to_rec(w.end))
        s = onto_speech(max(prev, min(len(rec), to_rec(w.start))), prev, end, pauses)
        words.append(SpokenWord(w.text, w.char_start, s, max(s + HOP, end)))
        prev = s
    return tuple(words), _confidence(ref, rec, fa, fb, plain, tuple(words))


GOOD_MATCH_PERCENTILE = 5  # 2 to 5 measured alike on the human takes; 10 and more undo it
ONSET_FRAMES = 30  # how far after a pause's end the word that follows it may have been put (0.3 s)
WORD_PAUSE_FRAMES = 40  # a pause this long (0.4 s) falls between words; shorter ones are left to the path
ONSET_LEAD_FRAMES = 1  # a moved word starts 10 ms before its sound: early by a little reads as on time


def onto_speech(s: int, prev: int, end: int, pauses: list[tuple[int, int]]) -> int:
    """A word's start moved onto the speech the path left it near, at a reader's pause (WORD_PAUSE_FRAMES
    or longer): out of the pause it fell into, to where the pause ends; and to the end of a pause it
    follows closely when the word before began before that pause (a reader pauses between words, not
    inside one). Shorter pauses are left alone: in a noisy room they are a quiet "th" or "f" under the
    noise, and moving a word to the vowel made it late. Measured: human phrase onsets 18/117/237 ms
    (median/p95/max) as the path left them, 11/51/80 moved; the other voices as before but in reverb
    and noise (p95 33 to 64 ms) (tests/bench/bench_align.py)."""
    f = s // HOP
    for a, b in pauses:
        if b - a < WORD_PAUSE_FRAMES:
            continue
        if a <= f < b and b * HOP < end:  # in a pause: the word starts where it ends
            return (b - ONSET_LEAD_FRAMES) * HOP
        if prev < a * HOP and b < f <= b + ONSET_FRAMES:
            return (b - ONSET_LEAD_FRAMES) * HOP
    return s


PAUSE_WEIGHT = 3.0  # how much a pause against speech costs, in the features' units (measured: docs/scripts.md)
CLOSURE_FRAMES = 8  # a silence shorter than this inside speech is a consonant's closure, not a pause


def with_pauses(fa: np.ndarray, fb: np.ndarray, ref_words, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features with one more dimension each, where a person's pause may fall: for the engine's
    speech, 1 inside a word (its stop closures too), 0 between words, and 0.5 on the frames where a word
    starts; for the take, 1 where it speaks and 0 in its pauses (CLOSURE_FRAMES and longer). A take's
    pause then pairs cheaply only with a gap between words: a reader who pauses where the engine does
    not (a breath, a sonnet's number and then two seconds) no longer stretches a word across the pause.
    Measured on human takes: the largest phrase-onset error fell from 2.3 s to 0.18 s (docs/scripts.md)."""
    ia = np.zeros(len(fa), np.float32)
    for w in ref_words:
        ia[w.start // HOP : -(-w.end // HOP)] = 1.0
    for w in ref_words:
        f = int(round(w.start / HOP))
        ia[max(0, f - 2) : f + 1] = np.minimum(ia[max(0, f - 2) : f + 1], 0.5)
    vb = _closures_filled(voiced(rec))
    ib = np.zeros(len(fb), np.float32)
    ib[: min(len(vb), len(fb))] = vb[: len(fb)]
    return np.hstack([fa, PAUSE_WEIGHT * ia[:, None]]), np.hstack([fb, PAUSE_WEIGHT * ib[:, None]])


PAUSE_HINT_S = 0.4  # a pause this long is a breath a creator could trim from a take that runs over


def own_pauses(x: np.ndarray, rate: int) -> tuple:
    """A take's pauses between its first and last speech of PAUSE_HINT_S or more: ((where, how long), ...)."""
    return tuple(
        (round(a / 100, 2), round((b - a) / 100, 2)) for a, b in _silences(voiced(x, rate)) if b - a >= PAUSE_HINT_S * 100
    )


def _costs_with_pauses(fa: np.ndarray, fb: np.ndarray, ref_words, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame costs with the pause feature (with_pauses), and a copy for timing the words. In the
    copy, where the take pauses and the engine is between words, the sound is not compared: a pause's
    cost there is a good match's (the 5th percentile of all) plus the feature's own. Comparing it let a
    reader's long pause pair with whatever in the engine sounded quietest (its first frame) rather
    than with a gap between words. The rules judge the path of the first: on the copy's, a sentence
    added in a genuine voice is caught less often (4 of 25 instead of 8, bench_align.py)."""
    a, b = with_pauses(fa, fb, ref_words, rec)
    sound = _costs(fa, fb)
    plain = np.sqrt(sound**2 + (a[:, -1:] - b[None, :, -1]) ** 2).astype(np.float32)
    timing = plain.copy()
    quiet = b[:, -1] == 0
    quiet[: np.argmax(~quiet)] = False  # the lead and the tail were trimmed to the engine's own
    quiet[len(quiet) - np.argmax(~quiet[::-1]) :] = False
    gaps = a[:, -1] < PAUSE_WEIGHT  # between the engine's words, and where each starts
    if quiet.any() and gaps.any():
        good = float(np.percentile(sound, GOOD_MATCH_PERCENTILE))
        timing[np.ix_(gaps, quiet)] = np.sqrt(good**2 + a[gaps, -1:] ** 2)
    return plain, timing


def _pauses(x: np.ndarray) -> list[tuple[int, int]]:
    """A take's pauses between speech, in frames [start, end): silent under the room's noise + 12 dB,
    a click inside one ignored (CLICK_FRAMES), a consonant's closure not one (CLOSURE_FRAMES). Each ends
    where the sound after it begins: back over windows 6 dB over the noise, for a word that opens with a
    quiet fricative ("some"), by at most LEAD_IN_FRAMES."""
    rms = _rms(x, RATE)
    floor = float(np.percentile(rms, 10)) if len(rms) else 0.0
    out = []
    for a, b in _silences(_closures_filled(_clicks_removed(_voiced(rms, audible=True)))):
        g = b
        while g > a and b - g < LEAD_IN_FRAMES and rms[g - 1] > 2 * floor:
            g -= 1
        out.append((a, g))
    return out


LEAD_IN_FRAMES = 15  # 0.15 s
CLICK_FRAMES = 5  # a sound this short (50 ms) alone in a pause is a click or a lip, not a word's start


def _clicks_removed(v: np.ndarray) -> np.ndarray:
    """A voiced mask whose runs shorter than CLICK_FRAMES count as silence."""
    runs = np.flatnonzero(np.diff(np.concatenate([[0], v.astype(np.int8), [0]])))
    v = v.copy()
    for a, b in zip(runs[::2], runs[1::2]):
        if b - a < CLICK_FRAMES:
            v[a:b] = False
    return v


def _closures_filled(v: np.ndarray) -> np.ndarray:
    """A voiced mask whose silences shorter than CLOSURE_FRAMES (a consonant's closure) count as speech."""
    v = v.copy()
    for a, b in _silences(v):
        if b - a < CLOSURE_FRAMES:
            v[a:b] = True
    return v


def _silences(v: np.ndarray) -> list[tuple[int, int]]:
    """The silent runs [start, end) of a voiced mask that lie between speech (not before or after it)."""
    runs = np.flatnonzero(np.diff(np.concatenate([[1], v.astype(np.int8), [1]])))
    return [(int(a), int(b)) for a, b in zip(runs[::2], runs[1::2]) if 0 < a and b < len(v)]


def _near(words, sample: int) -> str:
    return " ".join([w.text for w in words if abs(w.start - sample) < 1.2 * RATE][:5])


def structure(ref: np.ndarray, rec: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[int, int, int, int]:
    """Along the path, the most speech frames of one side that pair with at most SKIP_OTHER frames of
    the other's speech: (skipped, where in rec frames, added, where). Silence is free: a creator may
    pause longer than the engine, or breathe."""
    va, vb = voiced(ref), voiced(rec)
    a_sp = np.cumsum(va[np.minimum(rows, len(va) - 1)] & np.concatenate([[True], np.diff(rows) > 0]))
    b_sp = np.cumsum(vb[np.minimum(cols, len(vb) - 1)] & np.concatenate([[True], np.diff(cols) > 0]))
    out = []
    for mine, other in ((a_sp, b_sp), (b_sp, a_sp)):
        # for each point, the earliest point whose `other` count is within SKIP_OTHER of it
        j = np.searchsorted(other, other - SKIP_OTHER, side="left")
        gain = mine - mine[j]
        i = int(np.argmax(gain))
        out += [int(gain[i]), int(cols[j[i]])]
    return out[0], out[1], out[2], out[3]


def _confidence(ref, rec, fa, fb, plain, words) -> Verdict:
    """Two measured rules. (1) Along the path of the `plain` costs, no SKIP_FRAMES of one side's speech pair with at
    most SKIP_OTHER frames of the other's (a passage skipped or added). (2) Along the cheapest path by
    cosine distance, the mean cost over any MISMATCH_WINDOW_S, against the mean cost of all pairs,
    stays at most MISMATCH_RATIO."""
    take_s = len(rec) / RATE
    skipped, s_at, added, a_at = structure(ref, rec, *dtw(plain))
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
    v = Verdict(take_s, worst, at / RATE, _near(words, at))
    if skipped >= SKIP_FRAMES:
        at = s_at * HOP
        return replace(v, mismatch=f"at about {at / RATE:.1f} s the recording leaves out words of the text"
                       f"{_near_quoted(words, at)}: a sentence skipped?")  # fmt: skip
    if added >= SKIP_FRAMES:
        at = a_at * HOP
        return replace(v, mismatch=f"from about {at / RATE:.1f} s the recording says more than the text"
                       f"{_near_quoted(words, at)}: a sentence added?")  # fmt: skip
    if worst > MISMATCH_RATIO:
        return replace(v, mismatch=(
            f"from about {v.at_s:.1f} s it matches no part of the text{_near_quoted(words, at)} (cost {worst:.2f} of "
            f"unrelated speech's, over {MISMATCH_RATIO}): a wrong file, or a sentence changed?"))  # fmt: skip
    return v


def _near_quoted(words, sample: int) -> str:
    close = _near(words, sample)
    return f" (near {close!r})" if close else ""


def text_cost(ref: np.ndarray, rec: np.ndarray) -> float:
    """How well a take matches a text as a whole: the mean cosine cost along the cheapest path, against
    the mean cost of all pairs (lower is closer). Only comparable between texts for one take."""
    cc = _cosine(features(ref), features(rec))
    r, c = dtw(cc)
    return float(cc[r, c].mean()) / (float(cc.mean()) or 1.0)


def closer_text(rec: np.ndarray, own: np.ndarray, others: dict[int, np.ndarray]) -> tuple[int, float, float] | None:
    """The other segment whose text the take matches better than its own by more than OTHER_MARGIN:
    (its index, its cost, the own text's cost), or None. A voice unlike the engine's raises every cost
    alike; which text fits best still says which text was read (measured: see docs/scripts.md)."""
    mine = text_cost(own, rec)
    best = min(((text_cost(x, rec), k) for k, x in others.items()), default=None)
    if best is not None and best[0] < mine - OTHER_MARGIN:
        return best[1], best[0], mine
    return None


def _pcm(n: Narration) -> np.ndarray:
    """An engine narration's samples as float32 at RATE, with its words' times at RATE."""
    ref, sr = read_wav(n.wav)
    ref = ref.astype(np.float32) / (32768.0 if ref.dtype == np.int16 else 1.0)
    if sr != RATE:
        from ..audio.sound import resample

        ref = resample(ref, sr, RATE)
    return ref


def narration(
    path: Path,
    info: music.AudioInfo,
    text: str,
    reference: Narration,
    cache: Cache,
    budget_s: float,
    refuse: bool = True,
    others: dict[int, Narration] | None = None,
    allow_short: bool = False,
) -> tuple[Narration, Verdict]:
    """A segment's narration from its take: decoded at the track's rate (TAKE_RATE), trimmed to the
    engine's lead and tail, its words aligned on a copy at RATE to the engine's speech of the same text
    (`reference`), and compared with the other segments' texts (`others`: index -> the engine's speech).
    Cached by the take's content, the texts and the reference speech. Returns it and the verdict (the
    manifest and `check` report it). Raises RecordingError for a silent, damaged or unusable take, and
    for one that does not say the text when `refuse` (unless it is over `budget_s`: then the budget rule
    speaks first)."""
    others = others or {}
    key = keys.recording(
        info.digest, text, reference.wav.stem, ALIGN_VERSION, MISMATCH_RATIO, sorted((k, n.wav.stem) for k, n in others.items())
    )
    wav, js = cache.path("narration", key, ".wav"), cache.path("narration", key, ".json")
    if cache.has(wav, js):
        d = json.loads(js.read_text())
        v = Verdict(**d["verdict"])
        if v.mismatch and refuse:
            raise RecordingError(v.mismatch)
        return _narration(text, wav, d), v
    ref = _pcm(reference)
    scale = RATE / reference.sample_rate
    ref_words = tuple(replace(w, start=round(w.start * scale), end=round(w.end * scale)) for w in reference.words)
    span = speech_span(ref) or (0, len(ref))
    up = TAKE_RATE / RATE
    x = decode(info, allow_short)
    take_s = len(x) / TAKE_RATE
    if speech_span(x, TAKE_RATE) is None:
        raise RecordingError(f"{path.name} holds no speech: its {take_s:.1f} s are silent, or steady noise")
    rec48, offset = trim(x, round(span[0] * up), round((len(ref) - span[1]) * up), TAKE_RATE)
    del x
    from ..audio.sound import resample

    rec = resample(rec48, TAKE_RATE, RATE)
    words, v = _timed(text, ref, ref_words, rec, rec48, take_s, budget_s, others)
    if v.mismatch:
        v = replace(v, mismatch=f"{path.name} does not say this segment's narration: {v.mismatch}")
    words48 = tuple(replace(w, start=round(w.start * up), end=round(w.end * up)) for w in words)
    d = {
        "samples": len(rec48),
        "trimmed_from": offset,
        "verdict": dataclasses.asdict(v),
        "words": [[w.text, w.char_start, w.start, w.end] for w in words48],
    }
    with cache.writing(wav) as tmp:
        _write_wav(tmp, rec48, TAKE_RATE)
    with cache.writing(js) as tmp:
        tmp.write_text(json.dumps(d))
    if v.mismatch and refuse:
        raise RecordingError(v.mismatch)
    return _narration(text, wav, d), v


def _timed(text: str, ref: np.ndarray, ref_words: tuple, rec: np.ndarray, rec48: np.ndarray, take_s: float,
           budget_s: float, others: dict[int, Narration]) -> tuple[tuple[SpokenWord, ...], Verdict]:  # fmt: skip
    """The take's words (at RATE) and the verdict on it. Over the budget, `check` refuses it with the
    overshoot: no alignment (a long recording would cost a large warping matrix); the words spread in
    proportion stand in for the plan."""
    if len(rec) > budget_s * RATE:
        k = len(rec) / len(ref)
        words = tuple(replace(w, start=round(w.start * k), end=round(w.end * k)) for w in ref_words)
        return words, Verdict(take_s, 0.0, 0.0, "", pauses=own_pauses(rec, RATE))
    words, v = align(ref, ref_words, rec)
    v = replace(v, take_s=take_s, pauses=own_pauses(rec, RATE))
    if v.mismatch is None and others:
        found = closer_text(rec, ref, {k: _pcm(n) for k, n in others.items()})
        if found:
            k, theirs, mine = found
            v = replace(v, mismatch=f"it sounds like segments[{k}]'s narration (cost {theirs:.2f} against its own "
                        f"text's {mine:.2f}): a take of another segment?")  # fmt: skip
    return words, (_heard(text, rec48, v) if v.mismatch is None else v)


def _heard(text: str, rec48: np.ndarray, v: Verdict) -> Verdict:
    """The verdict with what a recogniser hears in the take: a sentence skipped or added in a voice
    unlike the engine's, which the comparison of sounds misses (heard.py)."""
    from . import heard

    h = heard.judge(text, heard.recognise(rec48, TAKE_RATE), voiced(rec48, TAKE_RATE, audible=True))
    return replace(v, said=round(h.said, 3), heard=h.words, mismatch=heard.mismatch(text, h))


def _narration(text: str, wav: Path, d: dict) -> Narration:
    words = tuple(SpokenWord(*w) for w in d["words"])
    return Narration(text=text, voice="recording", rate=0, wav=wav, sample_rate=TAKE_RATE, samples=d["samples"], words=words)


def _write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes())
