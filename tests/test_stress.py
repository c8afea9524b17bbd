"""Stress: cold narrations under CPU load never reach the cache at the wrong speaking rate.

Not in the default run (`-m stress` selects it): it speaks the whole series many times. The number of
runs comes from SHORTGEN_STRESS_RUNS (default 25). Observed before the fix: 2 wrong-rate narrations in
25 cold renders under load.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import wave
from pathlib import Path

import pytest

from shortgen.cache import Cache, Stats
from shortgen.script.load import load_episode
from shortgen.speech.narrate import RATE_SLACK_SAMPLES, RATE_TOLERANCE, EspeakEngine, narrate
from shortgen.timeline import _request, _texts

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.stress


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _requests(part: Path):
    ep = load_episode(part, {})
    return [_request(ep, text, seg, seg.rate if seg else ep.settings.rate) for _, text, _, seg in _texts(ep)]


def _frames(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


def test_cold_narrations_under_load_are_never_cached_at_the_wrong_rate(tmp_path, capsys):
    runs = int(os.environ.get("SHORTGEN_STRESS_RUNS", "25"))
    parts = sorted((ROOT / "scripts").glob("part*.yaml"))
    engine = EspeakEngine()
    # the reference: every text spoken unloaded, each part in a fresh worker, as a cold render does
    reference = {}
    for part in parts:
        reqs = _requests(part)
        for r, n in zip(reqs, narrate(reqs, engine, Cache(tmp_path / "ref"))):
            reference[r.text] = n.samples
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(3)]
    for b in burners:
        b.start()
    wrong, respoken, utterances = [], 0, 0
    try:
        for i in range(runs):
            reqs = _requests(parts[i % len(parts)])
            stats = Stats()
            cache = Cache(tmp_path / f"run{i}")
            for r, n in zip(reqs, narrate(reqs, engine, cache, stats)):
                utterances += 1
                ref = reference[r.text]
                if abs(_frames(n.wav) - ref) > RATE_TOLERANCE * ref + RATE_SLACK_SAMPLES:
                    wrong.append((i, r.text[:40], _frames(n.wav), ref))
            respoken += stats.tts - 1
    finally:
        stop.set()
        for b in burners:
            b.join(5)
    with capsys.disabled():
        print(
            f"\nstress: {runs} cold part narrations ({utterances} utterances) under CPU load: "
            f"{len(wrong)} cached at the wrong rate, {respoken} worker runs re-spoke a rejected utterance"
        )
    assert not wrong
