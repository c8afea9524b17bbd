"""How well a recording's words are timed: forced alignment (record.py) against known word times.

With no human recordings at hand, the "recordings" are the engine itself speaking each segment of the
series differently from the reference it is aligned to (gmw/en-us at 175 wpm): another voice, another
rate, another pitch, with noise at 20 dB SNR, with a little reverberation, with extra silence at the
start. Their true word times are the engine's own events for that speech, carried through whatever was
done to it. Every one of the series' segments, under every condition, is aligned as a render would
(trimmed to the reference's lead and tail, then warped) and its word onsets compared with the truth.

    python tests/bench/bench_align.py [--parts scripts/series.yaml] [--json out.json]

Prints the onset error per condition (median, 95th percentile, largest, in ms) and, to check the
mismatch rule, the worst windowed alignment cost of every true pair against pairs of the wrong text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from shortgen import record  # noqa: E402
from shortgen.cache import Cache  # noqa: E402
from shortgen.load import load_episode, load_series  # noqa: E402
from shortgen.narrate import EspeakEngine, Request, narrate, read_wav  # noqa: E402

R = record.RATE
REFERENCE = ("gmw/en-us", 175)
OTHER_VOICE = "gmw/en-gb-x-rp"


def pcm(n) -> np.ndarray:
    x, _ = read_wav(n.wav)
    return x.astype(np.float32) / 32768.0


def speech_rms(x: np.ndarray) -> float:
    v = record.voiced(x)
    frames = x[: len(v) * record.HOP].reshape(len(v), record.HOP)[v]
    return float(np.sqrt((frames**2).mean()))


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Pink-ish noise (white, low-passed once) at `snr_db` under the speech's own level, everywhere."""
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(len(x)).astype(np.float32)
    n = np.convolve(n, np.ones(4, np.float32) / 4, mode="same")
    n *= speech_rms(x) / float(np.sqrt((n**2).mean())) * 10 ** (-snr_db / 20)
    return x + n


def add_reverb(x: np.ndarray, rt60: float, wet: float, seed: int) -> np.ndarray:
    """A small room: an exponentially decaying noise tail (RT60 `rt60` s), mixed in at `wet`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60 * R)) / R
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt((ir**2).sum())
    y = np.fft.irfft(np.fft.rfft(x, len(x) + len(ir)) * np.fft.rfft(ir, len(x) + len(ir)))[: len(x)]
    return ((1 - wet) * x + wet * y).astype(np.float32)


def stretch(x: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times faster: pitch up by the same factor (a tape sped up)."""
    from shortgen.sound import resample

    return resample(x, round(R * factor), R)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=Path, default=ROOT / "scripts" / "series.yaml")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    series = load_series(a.series)
    episodes = [load_episode(p) for p in series.parts]
    texts = [(f"part{ep.part}[{seg.index}]", seg.narration) for ep in episodes for seg in ep.segments]
    engine = EspeakEngine()
    conditions = {
        "another voice (en-gb-x-rp, 175 wpm)": (OTHER_VOICE, 175, None),
        "slower (150 wpm)": ("gmw/en-us", 150, None),
        "faster (200 wpm)": ("gmw/en-us", 200, None),
        "higher pitch (+8%, sped up with it)": ("gmw/en-us", 175, "pitch"),
        "noise, 20 dB SNR (another voice)": (OTHER_VOICE, 175, "noise"),
        "reverberation, RT60 0.4 s (another voice)": (OTHER_VOICE, 175, "reverb"),
        "2 s of silence first, 1 s after (another voice)": (OTHER_VOICE, 175, "silence"),
    }
    with tempfile.TemporaryDirectory(prefix="shortgen-align-") as tmp:
        cache = Cache(Path(tmp))
        t0 = time.perf_counter()
        refs = narrate([Request(t, *REFERENCE, label=k) for k, t in texts], engine, cache)
        spoken = {}
        for voice, rate in {(v, r) for v, r, _ in conditions.values()}:
            spoken[voice, rate] = narrate([Request(t, voice, rate, label=k) for k, t in texts], engine, cache)
        print(f"spoke {len(texts)} segments under {len(spoken) + 1} voices and rates in {time.perf_counter() - t0:.0f} s")
        rows, errors_all, ratios, align_s, refused = {}, [], [], [], 0
        for name, (voice, rate, effect) in conditions.items():
            errs = []
            for i, (ref, var) in enumerate(zip(refs, spoken[voice, rate])):
                x = pcm(var)
                truth = np.array([w.start for w in var.words], float)
                if effect == "pitch":
                    x, truth = stretch(x, 1.08), truth / 1.08
                elif effect == "noise":
                    x = add_noise(x, 20.0, i)
                elif effect == "reverb":
                    x = add_reverb(x, 0.4, 0.3, i)
                elif effect == "silence":
                    x = np.concatenate([np.zeros(2 * R, np.float32), x, np.zeros(R, np.float32)])
                    truth = truth + 2 * R
                ref_x = pcm(ref)
                span = record.speech_span(ref_x) or (0, len(ref_x))
                t1 = time.perf_counter()
                rec, offset = record.trim(x, span[0], len(ref_x) - span[1])
                words, worst, problem = record.align(ref_x, ref.words, rec)
                align_s.append(time.perf_counter() - t1)
                ratios.append(worst)
                refused += problem is not None
                got = np.array([w.start + offset for w in words], float)
                errs += list(np.abs(got - truth) / R * 1000)
            errors_all += errs
            rows[name] = errs
        # the mismatch rules: each recording against the next segment's text; without its first
        # sentence; with the next segment's first sentence added before its own
        wrong, skipped, added = [], [], []
        others = spoken[OTHER_VOICE, 175]
        for i, (ref, var) in enumerate(zip(refs, others)):
            ref_x = pcm(ref)
            span = record.speech_span(ref_x) or (0, len(ref_x))

            def check(x: np.ndarray, ref=ref, ref_x=ref_x, span=span) -> tuple[float, str | None]:
                rec, _ = record.trim(x, span[0], len(ref_x) - span[1])
                return record.align(ref_x, ref.words, rec)[1:]

            wrong.append(check(pcm(others[(i + 1) % len(refs)])))
            k = next((j for j in range(2, len(var.words)) if var.words[j - 1].text.endswith(".")), None)
            if k is not None:
                skipped.append(check(pcm(var)[var.words[k].start :]))
            nxt = others[(i + 1) % len(refs)]
            k = next((j for j in range(2, len(nxt.words)) if nxt.words[j - 1].text.endswith(".")), None)
            if k is not None:
                added.append(check(np.concatenate([pcm(nxt)[: nxt.words[k].start], pcm(var)])))

    def fmt(errs):
        e = np.array(errs)
        return f"{np.median(e):6.1f} {np.percentile(e, 95):7.1f} {e.max():7.1f}  {len(e):5d}"

    print(f"\n{'condition':52s} {'median':>6s} {'p95':>7s} {'max':>7s}  words   (onset error, ms)")
    for name, errs in rows.items():
        print(f"{name:52s} {fmt(errs)}")
    print(f"{'all':52s} {fmt(errors_all)}")
    print("targets: median <= 40 ms, 95th percentile <= 100 ms, none over 250 ms")
    print(f"\nalignment: {statistics.median(align_s) * 1000:.0f} ms per segment (median), {max(align_s) * 1000:.0f} ms at most")
    print(f"worst windowed cost ratio, true pairs: max {max(ratios):.2f}, median {statistics.median(ratios):.2f}")
    print(f"refused as not matching: {refused} of {len(ratios)} true pairs (should be none)")
    cases = {"the wrong segment's recording": wrong, "its first sentence skipped": skipped, "a sentence added": added}
    for what, res in cases.items():
        caught = sum(1 for _, problem in res if problem)
        print(f"  {what:34s} refused {caught} of {len(res)}  (cost ratio min {min(r for r, _ in res):.2f})")
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "conditions": {
                        k: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "max_ms": float(max(v))}
                        for k, v in rows.items()
                    },
                    "true_ratio_max": max(ratios),
                    "true_refused": refused,
                    "caught": {k: sum(1 for _, p in v if p) for k, v in cases.items()},
                },
                indent=1,
            )
        )
    ok = np.median(errors_all) <= 40 and np.percentile(errors_all, 95) <= 100 and max(errors_all) <= 250 and not refused
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
