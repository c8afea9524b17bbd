"""How well a take's words are timed, and how well the mismatch rules judge takes: forced alignment
(record.py) against truth established without the aligner.

Data nobody here made, and our own:
- human speech: the two LibriVox readings in ../shared/fixtures/human-speech (44.1 kHz stereo MP3), cut
  at pauses into 26 takes of 4 to 29 s. Truth: the ends of the reader's pauses (a 5 ms energy detector,
  12 dB over the reading's noise floor, silent for 100 ms or more), each labelled by hand with the word
  that follows (HUMAN_LABELS).
- other voices: every segment of the series spoken by five other espeak-ng voices at 140 to 210 wpm, with
  room reverberation (RT60 0.4-0.5 s), noise (20 dB SNR), a telephone band (300-3400 Hz at 8 kHz), a
  tape-speed pitch shift, and long pauses of the speaker's own. Truth: that voice's own word events.
- takes that must be refused: a take of another segment, a passage skipped, a passage added; from the
  human takes and from the Scottish voice in a noisy room.

    python tests/bench/bench_align.py [--json out.json]

Prints onset errors (median, 95th percentile, largest, in ms) per kind of take, and how many takes of each
kind the rules refuse.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from shortgen.audio import music  # noqa: E402
from shortgen.audio.sound import resample  # noqa: E402
from shortgen.cache import Cache  # noqa: E402
from shortgen.script.load import load_episode, load_series  # noqa: E402
from shortgen.speech import record  # noqa: E402
from shortgen.speech.narrate import EspeakEngine, Request, narrate, read_wav  # noqa: E402

R, T = record.RATE, record.TAKE_RATE
HUMAN = ROOT.parent / "shared" / "fixtures" / "human-speech"
REFERENCE = ("gmw/en-us", 175)
# (about where the reader's pause ends, s; the words that follow), labelled by hand from the pauses an
# energy detector found and the text (syllable timing decided the two places a pause could belong to)
HUMAN_LABELS = {
    "sonnet-002": [(0.43, "2"), (3.06, "When forty"), (6.20, "And dig"), (9.65, "Thy youth's"), (13.43, "Will be"),
                   (16.96, "Then being"), (18.07, "where all thy"), (19.92, "Where all the"), (27.97, "and thriftless"),
                   (30.45, "How much"), (36.11, "'This fair"), (36.70, "fair child"), (42.24, "Proving"), (46.05, "This were"),
                   (49.26, "And see")],
    "sonnet-003": [(0.63, "3"), (2.97, "Look in"), (4.44, "and tell"), (10.03, "Whose fresh"), (15.32, "some mother"),
                   (16.96, "For where"), (22.93, "Or who"), (29.21, "Thou art"), (31.46, "and she"), (36.10, "So thou"),
                   (43.98, "But if"), (45.09, "remember'd"), (47.12, "Die single")],
}  # fmt: skip
# takes: from one labelled phrase to another (label indices), in three partitions of each reading
HUMAN_TAKES = {
    "sonnet-002": [[0, 8], [8, 15], [0, 5], [5, 8], [8, 10], [10, 13], [13, 15], [0, 2], [2, 4], [4, 6], [6, 9], [9, 12],
                   [12, 14], [14, 15]],
    "sonnet-003": [[0, 6], [6, 13], [0, 4], [4, 7], [7, 10], [10, 13], [0, 3], [3, 5], [5, 8], [8, 9], [9, 11], [11, 13]],
}  # fmt: skip
VOICES = [  # (voice, wpm, what the room and microphone do)
    ("gmw/en-gb-scotland", 150, "reverb+noise"),
    ("gmw/en-gb-x-rp", 175, ""),
    ("gmw/en-029", 160, "phone"),
    ("gmw/en-us-nyc", 200, "noise"),
    ("gmw/en-gb-x-gbclan", 140, "reverb"),
    ("gmw/en-us", 175, "pitch"),
    ("gmw/en-gb-scotland", 210, "pauses"),
]


def pcm(n) -> np.ndarray:
    return read_wav(n.wav)[0].astype(np.float32) / 32768.0


def speech_rms(x: np.ndarray) -> float:
    v = record.voiced(x)
    return float(np.sqrt((x[: len(v) * record.HOP].reshape(len(v), record.HOP)[v] ** 2).mean()))


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = np.convolve(rng.standard_normal(len(x)).astype(np.float32), np.ones(4, np.float32) / 4, mode="same")
    return x + n * (speech_rms(x) / float(np.sqrt((n**2).mean())) * 10 ** (-snr_db / 20))


def add_reverb(x: np.ndarray, rt60: float, wet: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60 * R)) / R
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt((ir**2).sum())
    y = np.fft.irfft(np.fft.rfft(x, len(x) + len(ir)) * np.fft.rfft(ir, len(x) + len(ir)))[: len(x)]
    return ((1 - wet) * x + wet * y).astype(np.float32)


def phone(x: np.ndarray) -> np.ndarray:
    y = resample(x, R, 8000)
    spec = np.fft.rfft(y)
    f = np.fft.rfftfreq(len(y), 1 / 8000)
    spec[(f < 300) | (f > 3400)] = 0
    return resample(np.clip(np.fft.irfft(spec, len(y)).astype(np.float32) * 1.5, -1, 1), 8000, R)


def onset(x: np.ndarray, rate: int, guess: float) -> float:
    """The end of the reader's pause before `guess` (+0.15 s): the last run of 100 ms or more of 5 ms
    windows at most 12 dB over the noise floor. A shorter dip is a stop's closure inside the phrase
    ("Look in": the k), not the pause; stopping there put the truth on the second word."""
    hop = rate // 200
    n = len(x) // hop
    db = 20 * np.log10(np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(1)) + 1e-9)
    thr, i = np.percentile(db, 10) + 12, min(n - 1, int(round((guess + 0.15) * 200)))
    while i > 0:
        while i > 0 and db[i - 1] > thr:
            i -= 1
        j = i
        while j > 0 and db[j - 1] <= thr:
            j -= 1
        if i - j >= 20 or j == 0:
            break
        i = j
    return i * hop / rate


def human_takes() -> list[tuple[str, np.ndarray, str, list[tuple[int, float]]]]:
    """(name, the take at T, its text, [(word index, true onset in the take, s)])."""
    out = []
    for name, cuts in HUMAN_TAKES.items():
        x = record.decode(music.probe(HUMAN / f"{name}.mp3"))
        words = (HUMAN / f"{name}.txt").read_text().split()
        labs = [
            (next(j for j in range(len(words)) if " ".join(words[j:]).startswith(first)), onset(x, T, t))
            for t, first in HUMAN_LABELS[name]
        ]
        for a, b in cuts:
            t0 = max(0.0, labs[a][1] - 0.25)
            t1 = len(x) / T if b >= len(labs) else labs[b][1] - 0.15
            wa, wb = labs[a][0], labs[b][0] if b < len(labs) else len(words)
            truth = [(k - wa, o - t0) for k, o in labs[a:b]]
            out.append((f"{name}[{a}:{b}]", x[int(t0 * T) : int(t1 * T)], " ".join(words[wa:wb]), truth))
    return out


def judge(ref_n, x48: np.ndarray, others: dict) -> tuple[list[int], float, str | None]:
    """What record.narration does with a decoded take: trim at T, align a copy at R, compare texts.
    Returns the words' starts in the trimmed take (samples at R, from its start) less the trim, the
    cost, and the mismatch (None: accepted)."""
    ref = pcm(ref_n)
    span = record.speech_span(ref) or (0, len(ref))
    rec48, off = record.trim(x48, round(span[0] * T / R), round((len(ref) - span[1]) * T / R), T)
    rec = resample(rec48, T, R)
    words, v = record.align(ref, ref_n.words, rec)
    mismatch = v.mismatch
    if mismatch is None and others:
        found = record.closer_text(rec, ref, {k: pcm(n) for k, n in others.items()})
        mismatch = f"sounds like {found[0]}" if found else None
    if mismatch is None:
        mismatch = record._heard(ref_n.text, rec48, v).mismatch
    return [w.start + round(off * R / T) for w in words], v.cost, mismatch


def phrases(take) -> list[tuple[float, float, list[str]]]:
    """(start s, end s, words) of each labelled phrase of a human take after its first, but its last."""
    name, x, text, truth = take
    words, out = text.split(), []
    for k in range(1, len(truth) - 1):
        out.append((truth[k][1], truth[k + 1][1], words[truth[k][0] : truth[k + 1][0]]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    engine = EspeakEngine()
    errors: dict[str, list[float]] = {}
    verdicts: dict[str, list[bool]] = {}  # kind -> refused?

    def up(x22: np.ndarray) -> np.ndarray:
        return resample(x22, R, T)

    with tempfile.TemporaryDirectory(prefix="shortgen-align-") as tmp:
        cache = Cache(Path(tmp))
        # ---- human takes, and takes that must be refused made from them
        if HUMAN.exists():
            takes = human_takes()
            refs = narrate([Request(t, *REFERENCE, label=n) for n, _, t, _ in takes], engine, cache)
            by_reading: dict[str, list[int]] = {}
            for i, (name, *_) in enumerate(takes):
                by_reading.setdefault(name.split("[")[0], []).append(i)
            for i, ((name, x, text, truth), ref_n) in enumerate(zip(takes, refs)):
                # the other segments of its "episode": the takes of the same reading and partition size
                same = [j for j in by_reading[name.split("[")[0]] if j != i and takes[j][2] != text]
                others = {j: refs[j] for j in same}
                starts, cost, bad = judge(ref_n, x, others)
                verdicts.setdefault("human: genuine", []).append(bad is not None)
                errors.setdefault("human: phrase onsets after pauses", []).extend(
                    abs(starts[k] / R - (t - 0.0)) * 1000 for k, t in truth[1:]
                )
                j = same[0]  # this take in another segment's place
                verdicts.setdefault("human: another segment's take", []).append(
                    judge(refs[j], x, {**{k: refs[k] for k in same if k != j}, i: ref_n})[2] is not None
                )
                # a phrase of 4 words or more left out (the longest), and one from another take added
                ph = [p for p in phrases(takes[i]) if len(p[2]) >= 4]
                if ph:
                    s0, s1, _ = max(ph, key=lambda p: len(p[2]))
                    y = np.concatenate([x[: int(s0 * T)], x[int(s1 * T) :]])
                    verdicts.setdefault("human: a phrase skipped", []).append(judge(ref_n, y, others)[2] is not None)
                for k in same:
                    oph = [p for p in phrases(takes[k]) if len(p[2]) >= 4 and " ".join(p[2]) not in text]
                    if oph and len(truth) > 1:
                        s0, s1, _ = max(oph, key=lambda p: len(p[2]))
                        at = int(truth[1][1] * T)
                        y = np.concatenate([x[:at], takes[k][1][int(s0 * T) : int(s1 * T)], x[at:]])
                        verdicts.setdefault("human: a phrase added", []).append(judge(ref_n, y, others)[2] is not None)
                        break
        # ---- other voices, rooms and microphones
        series = load_series(ROOT / "scripts" / "series.yaml")
        texts = [(f"part{ep.part}[{s.index}]", s.narration) for ep in map(load_episode, series.parts) for s in ep.segments]
        refs = narrate([Request(t, *REFERENCE, label=k) for k, t in texts], engine, cache)
        episode_of = [k.split("[")[0] for k, _ in texts]
        for voice, wpm, room in VOICES:
            spoken = narrate([Request(t, voice, wpm, label=k) for k, t in texts], engine, cache)
            kind = f"{voice.split('/')[1]} {wpm} wpm{', ' + room if room else ''}"
            for i, (ref_n, var) in enumerate(zip(refs, spoken)):
                x, truth = pcm(var), np.array([w.start for w in var.words], float)
                if room == "pitch":
                    x, truth = resample(x, round(R * 1.1), R), truth / 1.1
                if "reverb" in room:
                    x = add_reverb(x, 0.5, 0.35, i)
                if "noise" in room:
                    x = add_noise(x, 20.0, i)
                if room == "phone":
                    x = phone(x)
                if room == "pauses":  # 2 s before, 1.5 s between the two words nearest the middle
                    h = min((w.start for w in var.words), key=lambda t: abs(t - len(x) // 2))
                    x = np.concatenate([np.zeros(2 * R, np.float32), x[:h], np.zeros(3 * R // 2, np.float32), x[h:]])
                    truth = np.where(truth >= h, truth + 1.5 * R, truth) + 2 * R
                others = {j: refs[j] for j in range(len(refs)) if j != i and episode_of[j] == episode_of[i]}
                starts, cost, bad = judge(ref_n, up(x), others)
                verdicts.setdefault(f"voice: {kind}", []).append(bad is not None)
                errors.setdefault(f"voice: {kind}", []).extend(np.abs(np.array(starts) - truth) / R * 1000)
                if voice == "gmw/en-gb-scotland" and room == "reverb+noise":
                    j = next(j for j in others)
                    wrong = judge(refs[j], up(x), {**{k: refs[k] for k in others if k != j}, i: ref_n})[2]
                    verdicts.setdefault("voice: another segment's take", []).append(wrong is not None)
                    ends = [m for m in range(1, len(var.words)) if var.words[m - 1].text.endswith(".")]
                    if len(ends) >= 3:  # a sentence skipped
                        s0, s1 = var.words[ends[1]].start, var.words[ends[2]].start
                        y = add_noise(add_reverb(np.concatenate([pcm(var)[:s0], pcm(var)[s1:]]), 0.5, 0.35, i), 20.0, i)
                        verdicts.setdefault("voice: a sentence skipped", []).append(judge(ref_n, up(y), others)[2] is not None)
                    nxt = spoken[j]
                    k = next((m for m in range(2, len(nxt.words)) if nxt.words[m - 1].text.endswith(".")), None)
                    if k is not None and len(ends) >= 2:  # another segment's sentence added
                        at = var.words[ends[0]].start
                        y = np.concatenate([pcm(var)[:at], pcm(nxt)[: nxt.words[k].start], pcm(var)[at:]])
                        y = add_noise(add_reverb(y, 0.5, 0.35, i), 20.0, i)
                        verdicts.setdefault("voice: a sentence added", []).append(judge(ref_n, up(y), others)[2] is not None)

    print(f"{'onset error (ms)':52s} {'median':>6s} {'p95':>6s} {'max':>6s} {'words':>6s}")
    for k, e in errors.items():
        e2 = np.array(e)
        print(f"{k:52s} {np.median(e2):6.0f} {np.percentile(e2, 95):6.0f} {e2.max():6.0f} {len(e2):6d}")
    print(f"\n{'takes':52s} {'refused':>8s}")
    for k, v in verdicts.items():
        print(f"{k:52s} {sum(v):3d} of {len(v):3d}")
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "onsets_ms": {
                        k: {"median": float(np.median(e)), "p95": float(np.percentile(e, 95)), "max": float(np.max(e))}
                        for k, e in errors.items()
                    },
                    "refused": {k: [int(sum(v)), len(v)] for k, v in verdicts.items()},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
