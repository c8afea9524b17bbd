"""Whether a take says its text, judged by what a speech recogniser hears in it: the check that catches a
sentence skipped or added in a voice unlike the engine's, where comparing sounds with the engine's cannot
(two speakers' MFCCs are too far apart for a missing line to stand out; measured in docs/scripts.md).

PocketSphinx (its US English acoustic model, dictionary and language model come inside its wheel: nothing
is downloaded) transcribes the take freely, without being told the text, so that words the text lacks are
heard as what they are. Both the text and the transcript become phones (CMUdict, as the recogniser's
dictionary spells them), and an edit-distance path pairs them; a phone pairs fully with itself and half
with one of its class (vowels, nasals, t/d ...), because a recogniser mishears "forty" as "fourteen".

Two windows of WINDOW phones (about a second of speech) slide along the path: over the text, how much of
each stretch was heard (a skipped sentence is a stretch heard not at all); over the transcript, how much
of each stretch is in the text (an added sentence is a stretch of it the text does not have). Calibrated
on the human readings in ../shared/fixtures/human-speech and on other espeak-ng voices in rooms and on a
phone line: see docs/scripts.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RATE = 16000  # the recogniser's rate
WINDOW = 16  # phones, about a second of speech
SAID_MIN = 0.30  # a window of the text heard less than this: words left out, if ...
MAX_PLACES = 3  # ... such windows are in at most this many places,
ELSEWHERE_MIN = 0.55  # ... the rest of the text is heard at least this well,
MAX_COVERED = 0.6  # ... they leave at least two fifths of the text,
GAP_TIME_MAX = 0.85  # ... and the take gives the words not heard at most this share of the time they need
# a long passage left out, where the recogniser also mishears some of what is said (a human take of
# Sonnet 3 without its longest line: 4 places, 64% of the text): allowed where the rest is heard this well
LONG_PLACES, LONG_COVERED, LONG_ELSEWHERE = 4, 0.7, 0.7
PAUSE_MIN_S = 0.25  # a silence this long or longer is a pause (shorter: a stop, the gap between two words)
KNOWN_MIN = 0.6  # the recogniser judges a text only if the dictionary knows this share of its phones
EXTRA_MIN = 0.15  # a window of the transcript less in the text than this: words added, if ...
HEARD_MIN = 0.55  # ... the text as a whole is heard at least this well
_CLASSES = [
    "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW",
    "P B", "T D", "K G", "F V", "S Z SH ZH", "TH DH", "CH JH", "M N NG", "L R W Y",
]  # fmt: skip
_CLASS = {p: k for k, c in enumerate(_CLASSES) for p in c.split()}
_ANY = "*"  # a text word the dictionary lacks: one of these per phone it probably has, pairing with anything
_DIGITS = "zero one two three four five six seven eight nine".split()


@dataclass(frozen=True)
class Heard:
    """What the recogniser heard, against the text."""

    said: float  # the least-heard window of the text: its share of phones heard (1 = all)
    said_at: int  # the first word of the text not heard there (an index in text.split())
    said_to: int  # ... and the last
    gap_time: float  # the time the take gives those words, against their share of its speech (a skip: little)
    extra: float  # the window of the transcript least in the text: its share in the text
    extra_at_s: float  # where the words around it the text lacks start, in the take
    known: float  # the text's share of phones the dictionary knows (the rest are guesses: "ReLU", another language)
    heard: float  # the text's share heard, in all
    heard_elsewhere: float  # ... outside its windows heard less than SAID_MIN
    places: int  # how many separate stretches of such windows
    covered: float  # the text's share in them
    words: str  # what was heard, for messages and the manifest


@lru_cache(maxsize=1)
def _decoder():  # a Decoder: pocketsphinx has no type hints
    from pocketsphinx import Decoder

    # no second (flat) pass and at most 3000 models a frame: 2x faster, the same words (measured on the readings);
    # each take normalised by its own mean
    return Decoder(samprate=RATE, logfn="/dev/null", fwdflat=False, maxhmmpf=3000, cmn="batch")


def recognise(x: np.ndarray, rate: int) -> list[tuple[str, float, float]]:
    """The words heard in `x` (mono float), with their start and end in seconds."""
    from ..audio.sound import resample

    y = resample(np.asarray(x, np.float32), rate, RATE) if rate != RATE else x
    d = _decoder()
    d.reinit_feat()  # forget the last take's mean and noise: what it heard must not depend on what came before
    d.start_utt()
    d.process_raw((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    d.end_utt()
    # fillers (<s>, <sil>, [NOISE]) are not words
    return [(s.word, s.start_frame / 100, (s.end_frame + 1) / 100) for s in d.seg() if s.word[0] not in "<["]


def _pron(word: str) -> list[str] | None:
    p = _decoder().lookup_word(word)
    return p.split() if p else None


def text_phones(text: str) -> list[tuple[str, int]]:
    """(phone, index of its word in text.split()) for the text, as the recogniser's dictionary spells it."""
    out: list[tuple[str, int]] = []
    for k, raw in enumerate(text.split()):
        w = re.sub(r"[^a-z0-9'\-]", "", raw.lower()).strip("'-")
        for part in filter(None, re.split(r"-|(?<=\D)(?=\d)|(?<=\d)(?=\D)", w)):
            if part.isdigit() and len(part) <= 2:  # "L2", "3": digits as said one by one is close enough
                ph = [p for c in part for p in _pron(_DIGITS[int(c)]) or []]
            else:
                forms = (part, part.replace("'d", "ed"), part.replace("'st", "est"), part.replace("'", ""))
                found: list[str] | None = next((p for p in map(_pron, forms) if p), None)
                ph = found or [_ANY] * max(1, round(len(part) * 0.75))
            out += [(p, k) for p in ph]
    return out


def heard_phones(words: list[tuple[str, float, float]]) -> list[tuple[str, float]]:
    """(phone, its estimated start in s) for the transcript."""
    out: list[tuple[str, float]] = []
    for w, s, e in words:
        ph = _pron(w) or []
        out += [(p, s + (e - s) * i / len(ph)) for i, p in enumerate(ph)]
    return out


def _similarity(a: list[str], b: list[str]) -> np.ndarray:
    ca = np.array([_CLASS.get(p, -1) for p in a])
    cb = np.array([_CLASS.get(p, -2) for p in b])
    s = np.where(ca[:, None] == cb[None, :], 0.5, 0.0)
    s[np.array(a, object)[:, None] == np.array(b, object)[None, :]] = 1.0
    s[np.array(a) == _ANY, :] = 1.0
    return s


def pair(a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How well each phone of `a` and of `b` is matched (0, 0.5 or 1) along the cheapest edit path
    (a gap costs 1, a pair 1 - its similarity), and the phone of `b` each of `a` pairs with (-1: none)."""
    n, m = len(a), len(b)
    ma, mb, to_b = np.zeros(n), np.zeros(m), np.full(n, -1)
    if not n or not m:
        return ma, mb, to_b
    sim = _similarity(a, b)
    cost = np.zeros((n + 1, m + 1))
    cost[0] = np.arange(m + 1)
    j = np.arange(m + 1)
    for i in range(1, n + 1):  # a row: the diagonal and vertical moves, then the horizontal ones as a running min
        row = np.empty(m + 1)
        row[0] = i
        row[1:] = np.minimum(cost[i - 1, 1:] + 1, cost[i - 1, :-1] + 1 - sim[i - 1])
        cost[i] = np.minimum.accumulate(row - j) + j
    i, k = n, m
    while i and k:
        if np.isclose(cost[i, k], cost[i - 1, k - 1] + 1 - sim[i - 1, k - 1]):
            ma[i - 1] = mb[k - 1] = sim[i - 1, k - 1]
            to_b[i - 1] = k - 1
            i, k = i - 1, k - 1
        elif np.isclose(cost[i, k], cost[i - 1, k] + 1):
            i -= 1
        else:
            k -= 1
    return ma, mb, to_b


def _windows(m: np.ndarray) -> np.ndarray:
    return np.convolve(m, np.ones(WINDOW) / WINDOW, "valid") if len(m) > WINDOW else np.array([m.mean() if len(m) else 1.0])


def judge(text: str, words: list[tuple[str, float, float]], voiced: np.ndarray | None = None) -> Heard:
    """What was heard (`words`, from `recognise`) against the text; `voiced`: which 10 ms windows of the
    take sound (record.voiced), else the clock stands for it."""
    tp, hp = text_phones(text), heard_phones(words)
    ma, mb, to_b = pair([p for p, _ in tp], [p for p, _ in hp])
    wa, wb = _windows(ma), _windows(mb)
    low = wa < SAID_MIN
    covered, extra = _covered(low, len(ma)), _covered(wb < EXTRA_MIN, len(mb))
    i, k = int(np.argmin(wa)), int(np.argmin(wb))
    gap, more = _gap(ma, covered, i), _gap(mb, extra, k)
    # name whole words: a word at the gap's edge mostly heard (one phone paired elsewhere) is not in it
    word = np.array([w for _, w in tp] or [0])
    first, last = word[min(gap[0], len(word) - 1)], word[min(gap[1], len(word) - 1)]
    while first < last and ma[word == first].mean() >= 0.5:
        first += 1
    while last > first and ma[word == last].mean() >= 0.5:
        last -= 1
    # the time the take gives the words not heard, between the heard phones around them, against their share
    span = (words[0][1], words[-1][2]) if words else (0.0, 0.0)
    # (an anchor is a phone in a run of three heard exactly: one stray match in a misheard stretch is none)
    sure = np.convolve(ma == 1.0, np.ones(3), "same") == 3 if len(ma) else ma > 0
    before = next((hp[to_b[j]][1] for j in range(gap[0] - 1, -1, -1) if sure[j]), span[0])
    after = next((hp[to_b[j]][1] for j in range(gap[1] + 1, len(ma)) if sure[j]), span[1])
    share = (gap[1] + 1 - gap[0]) / max(1, len(tp)) * (span[1] - span[0])
    # the time the take sounds there (`voiced`: its 10 ms windows over the room's noise): a reader's
    # pause beside a cut is no time given to words (a human take with its first line cut, after the
    # sonnet's number and a long breath: 1.35 of the words' share on the clock, 0.4 sounding)
    if voiced is not None and len(voiced):
        sounding = _pauses_only(voiced)
        spoken = float(sounding[max(0, int(before * 100)) : max(0, int(after * 100))].sum()) / 100
    else:
        spoken = after - before
    known = np.array([p != _ANY for p, _ in tp], bool)  # a guessed word says nothing of how well it was heard
    rest = known & ~covered
    return Heard(
        gap_time=spoken / share if share > 0 else 1.0,
        said=float(wa[i]),
        said_at=int(first) if tp else 0,
        said_to=int(last) if tp else 0,
        extra=float(wb[k]),
        extra_at_s=hp[more[0]][1] if hp else 0.0,
        known=float(known.mean()) if len(known) else 0.0,
        heard=float(ma[known].mean()) if known.any() else 1.0,
        heard_elsewhere=float(ma[rest].mean()) if rest.sum() >= WINDOW else 0.0,
        places=int(np.sum(np.diff(np.concatenate([[0], low.astype(int)])) == 1)),
        covered=float(covered.mean()) if len(covered) else 0.0,
        words=" ".join(re.sub(r"\(\d+\)$", "", w) for w, _, _ in words),
    )


def _pauses_only(voiced: np.ndarray) -> np.ndarray:
    """The take's 10 ms windows that sound, with the short silences inside speech (stops, the gaps
    between words, under PAUSE_MIN_S) counted as sounding: only pauses are time given to no words.
    Measured on 175 genuine takes in espeak's voices: counting every silent window as no time refused 8;
    with the short ones closed, none."""
    v = np.asarray(voiced, bool).copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[1], v.astype(np.int8), [1]])))
    for a, b in zip(edges[::2], edges[1::2]):  # runs of silence [a, b)
        if b - a < PAUSE_MIN_S * 100 and a > 0 and b < len(v):
            v[a:b] = True
    return v


def _covered(low: np.ndarray, n: int) -> np.ndarray:
    """The phones in any of the `low` windows."""
    out = np.zeros(n, bool)
    for w in np.flatnonzero(low):
        out[w : w + WINDOW] = True
    return out


def _gap(ma: np.ndarray, covered: np.ndarray, i: int) -> tuple[int, int]:
    """The phones not matched at all in the stretch of low windows around window `i`: (first, last)."""
    a, b = i, min(len(ma), i + WINDOW) - 1
    while a > 0 and covered[a - 1]:
        a -= 1
    while b + 1 < len(ma) and covered[b + 1]:
        b += 1
    unheard = [j for j in range(a, b + 1) if ma[j] == 0]
    return (unheard[0], unheard[-1]) if unheard else (a, b)


def understood(h: Heard) -> bool:
    """Whether the recogniser follows this voice well enough for its gaps to mean words left out: a voice
    it mishears (espeak's own, a phone line) leaves gaps all over; a skip leaves one, in a take heard
    well elsewhere."""
    if h.places <= MAX_PLACES and h.heard_elsewhere >= ELSEWHERE_MIN and h.covered <= MAX_COVERED:
        return True
    return h.places <= LONG_PLACES and h.covered <= LONG_COVERED and h.heard_elsewhere >= LONG_ELSEWHERE


def mismatch(text: str, h: Heard) -> str | None:
    """Why the take does not say `text`, naming where, or None. A text the English dictionary mostly does
    not know (another language, much jargon) is left to the other rules: what the recogniser makes of it
    says nothing."""
    if h.known < KNOWN_MIN:
        return None
    if h.said < SAID_MIN and h.gap_time < GAP_TIME_MAX and understood(h):
        words = text.split()[h.said_at : h.said_to + 1]
        near = " ".join(words[:8]) + (" ..." if len(words) > 8 else "")
        return f"{near!r} is not heard in it: a sentence skipped?"
    if h.extra < EXTRA_MIN and h.heard >= HEARD_MIN:
        return f"at about {h.extra_at_s:.1f} s it says words the text does not have: a sentence added?"
    return None
