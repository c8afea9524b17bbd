"""Stage 2: speech through the engine protocol, its cache, retries and word alignment."""

from __future__ import annotations

import numpy as np
import pytest

from shortgen.cache import Stats
from shortgen.errors import TTSError, VoiceError, Where
from shortgen.speech.narrate import Request, align, narrate
from shortgen.testing import FakeEngine


def req(text="Gradient descent. Step downhill.", voice="gmw/en-us", rate=175):
    return Request(text, voice, rate, "ep.yaml:7:5: segments[0]", Where("series.yaml", 4, 10))


def test_align_maps_events_by_character_offset():
    text = "Look in the box, 2024 times."
    sr = 1000
    pcm = np.ones(10_000, dtype=np.int16) * 1000
    # 'in the' merged into one event; '2024' fires three events inside the word
    events = [
        {"pos": 1, "len": 4, "sample": 0},
        {"pos": 6, "len": 2, "sample": 1000},
        {"pos": 13, "len": 4, "sample": 3000},
        {"pos": 18, "len": 4, "sample": 4000},
        {"pos": 19, "len": 2, "sample": 4500},
        {"pos": 20, "len": 2, "sample": 4700},
        {"pos": 23, "len": 6, "sample": 6000},
    ]
    words = align(text, events, pcm, sr)
    assert [w.text for w in words] == ["Look", "in", "the", "box,", "2024", "times."]
    assert [w.start for w in words][:2] == [0, 1000]
    assert 1000 < words[2].start < 3000  # interpolated between its neighbours
    assert words[4].start == 4000 and words[5].start == 6000


def test_word_end_is_the_last_voiced_window():
    sr = 1000
    pcm = np.zeros(3000, dtype=np.int16)
    pcm[0:400] = 5000
    pcm[1000:1700] = 5000
    words = align("one two", [{"pos": 1, "len": 3, "sample": 0}, {"pos": 5, "len": 3, "sample": 1000}], pcm, sr)
    assert words[0].end == 400 and words[1].end == 1700


def test_cache_hit_needs_no_engine(cache):
    eng, stats = FakeEngine(), Stats()
    a = narrate([req()], eng, cache, stats)
    b = narrate([req()], eng, cache, stats)
    assert eng.calls == 1 and stats.tts == 1 and stats.hits["narration"] == 1
    assert a == b and a[0].samples > 0


def test_key_covers_text_voice_rate_and_engine(cache):
    eng = FakeEngine(voices=("gmw/en-us", "gmw/en-gb"))
    narrate([req()], eng, cache)
    for r in (req(text="Other text."), req(voice="gmw/en-gb"), req(rate=200)):
        before = eng.calls
        narrate([r], eng, cache)
        assert eng.calls == before + 1
    narrate([req()], FakeEngine(samples_per_letter=999), cache)  # another engine version: not a hit
    assert len(list((cache.root / "narration").rglob("*.wav"))) == 5


def test_empty_wav_is_retried_once(cache):
    eng = FakeEngine(fail_first=1)
    out = narrate([req()], eng, cache)
    assert eng.calls == 2 and out[0].samples > 0


def test_failing_twice_names_the_segment(cache):
    with pytest.raises(TTSError) as e:
        narrate([req()], FakeEngine(fail_with="engine hung"), cache)
    assert str(e.value) == "ep.yaml:7:5: segments[0]: speech synthesis failed twice: engine hung"
    assert not list(cache.root.rglob("*.wav"))  # nothing half-made is cached


class CutShort(FakeEngine):
    """Speaks the first utterance only up to its fourth word, cleanly: the WAV and events look whole."""

    def synthesise(self, text, rate):
        if self.calls == 1:
            text = " ".join(text.split()[:4])
        return super().synthesise(text, rate)


def test_speech_cut_short_is_caught_and_spoken_again(cache):
    eng = CutShort()
    text = "Gradient descent. Step downhill, a little at a time, until the loss stops falling."
    out = narrate([req(text)], eng, cache)
    assert eng.calls == 2
    assert [w.text for w in out[0].words] == text.split()


def test_one_speech_engine_at_a_time_per_cache(cache):
    import threading
    import time

    busy, overlaps = [0], []

    class Slow(FakeEngine):
        def speak(self, jobs, workdir=None):
            busy[0] += 1
            overlaps.append(busy[0])
            time.sleep(0.05)
            busy[0] -= 1
            return super().speak(jobs, workdir)

    threads = [threading.Thread(target=narrate, args=([req(f"Word number {i}. And more.")], Slow(), cache)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1, 1, 1, 1]


def test_unknown_voice_points_at_the_setting(cache):
    with pytest.raises(VoiceError) as e:
        narrate([req(voice="gmw/en-usa")], FakeEngine(), cache)
    assert str(e.value) == "series.yaml:4:10: settings.voice: unknown voice 'gmw/en-usa'; did you mean gmw/en-us?"


def test_rate_changes_the_duration(cache):
    slow, fast = narrate([req(rate=150), req(rate=210)], FakeEngine(), cache)
    assert fast.samples < slow.samples


@pytest.mark.e2e
def test_parallel_renders_sharing_a_cache_speak_one_at_a_time_and_every_utterance_is_whole(tmp_path):
    """Two espeak workers side by side once cut utterances short or cancelled them (1 in 7 second
    utterances); renders sharing a cache (a batch) now take turns, so real speech always comes out whole."""
    import threading

    from shortgen.cache import Cache
    from shortgen.speech.narrate import EspeakEngine

    cache = Cache(tmp_path / "cache")
    text = "A VLM can look at an image and answer questions about it, because it was trained on pictures paired with text."
    results, errors = [], []

    def part(tag):
        try:
            results.extend(narrate([req(f"{text} Part {tag}, line {i}.") for i in range(4)], EspeakEngine(), cache))
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=part, args=(t,)) for t in ("one", "two", "three")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for n in results:
        assert [w.text for w in n.words] == n.text.split()


# ---- the speaking rate is verified before anything is cached ----------------------------------------


def test_a_narration_spoken_at_a_stale_rate_is_rejected_and_spoken_again(cache):
    """The observed fault: a worker speaks at the driver's 200 wpm while 175 is asked for."""
    eng = FakeEngine(stale_rate=200, stale_jobs=2)
    stats = Stats()
    reqs = [req("Gradient descent. Step downhill, a little at a time."), req("Overfitting. Memorising noise.")]
    out = narrate(reqs, eng, cache, stats)
    assert eng.calls == 2 and stats.tts == 2  # both re-spoken, in a second worker run
    right = [len(FakeEngine().synthesise(r.text, 175)[0]) for r in reqs]
    assert [n.samples for n in out] == right


def test_a_wrong_rate_the_engine_does_not_report_is_caught_by_its_length(cache):
    eng = FakeEngine(stale_rate=200, stale_jobs=1, reports_stale_rate=False)
    out = narrate([req()], eng, cache)
    assert eng.calls == 2 and out[0].samples == len(FakeEngine().synthesise(req().text, 175)[0])


def test_a_rate_that_never_takes_fails_clearly_and_caches_nothing(cache):
    eng = FakeEngine(stale_rate=200, stale_jobs=99)
    with pytest.raises(TTSError) as e:
        narrate([req()], eng, cache)
    assert "spoken at 200 wpm, not 175" in str(e.value)
    assert not list((cache.root / "narration").rglob("*.wav"))


@pytest.mark.parametrize("reference_shift, ok", [(0.0, True), (0.005, True), (0.03, False), (-0.125, False)])
def test_rate_tolerance_against_the_second_synthesis(tmp_path, reference_shift, ok):
    """0.8% (+400 samples): above the 0.16% two syntheses of one text differ by, below the 2.5% a
    5 wpm error makes."""
    import wave as wavmod

    from shortgen.speech.narrate import RateReport, verify_rate

    path = tmp_path / "a.wav"
    n = 120_000
    with wavmod.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"\0\0" * n)
    report = RateReport(n, round(n * (1 + reference_shift)), (175,))
    assert (verify_rate(report, str(path), req()) is None) == ok


@pytest.mark.e2e
def test_worker_sets_the_rate_for_every_utterance_whatever_happened_before(tmp_path):
    """Speak at 175, knock espeak's rate to 200 behind the worker's back (as a lost or stale command
    would), and speak again: the next utterance still comes out at 175, sample for sample."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import json, os, sys
        from shortgen.speech import espeak_worker as W
        W._prepare_env("wheel")
        import pyttsx3
        from pyttsx3.drivers import _espeak
        engine = pyttsx3.init("espeak")
        sp = W.Speaker(engine, _espeak)
        voice = W.voice_ids(engine)["gmw/en-us"]
        text = "Regularization. Penalties that keep a model simple, so it generalises."
        out = []
        for k in range(3):
            p, info = W._speak_verified(sp, voice, 175, text, {str(tmp_path)!r} + f"/u{{k}}.wav")
            assert p is None, p
            out.append((info["samples"], info["rates_seen"]))
            sp.idle()
            sp.driver.setProperty("rate", 200)       # the fault, injected
        print(json.dumps(out), file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-500:]
    res = __import__("json").loads(proc.stderr.strip().splitlines()[-1])
    assert all(rates == [175] for _, rates in res)
    lengths = [n for n, _ in res]
    assert max(lengths) - min(lengths) <= 0.008 * max(lengths)  # the same speech each time


@pytest.mark.e2e
def test_a_narration_is_the_same_samples_whatever_the_engine_spoke_before(tmp_path):
    """espeak keeps state from one utterance to the next (its pitch flutter's phase, among others), so
    the same text came out a few samples longer or shorter after other speech: a narration's audio, and
    so the whole render, depended on which narrations the cache already held. Each is spoken by a fresh
    engine now: alone, after other text, or after itself, the WAV is the same bytes."""
    from shortgen.speech.narrate import EspeakEngine

    text = "Follow for more. Next: Part 10."
    eng = EspeakEngine()

    def spoken(before: list[str], tag: str) -> bytes:
        files = [(str(tmp_path / f"{tag}{i}.wav"), str(tmp_path / f"{tag}{i}.json")) for i in range(len(before) + 1)]
        jobs = [{"text": t, "voice": "en-us", "rate": 175, "wav": w, "events": e} for t, (w, e) in zip([*before, text], files)]
        res = eng.speak(jobs, tmp_path / f"work-{tag}")
        assert res.ok == list(range(len(jobs))), res.failed
        return (tmp_path / f"{tag}{len(before)}.wav").read_bytes() + (tmp_path / f"{tag}{len(before)}.json").read_bytes()

    alone = spoken([], "a")
    assert spoken(["Overfitting. Memorising the noise, not the pattern."], "b") == alone
    assert spoken([text, "Go down, bit by bit."], "c") == alone


# ---- the same voice on every machine -------------------------------------------------------------

SYSTEM_LIB = [
    p
    for p in (
        "/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1",
        "/usr/lib/aarch64-linux-gnu/libespeak-ng.so.1",
        "/usr/lib/libespeak-ng.so.1",
    )
    if __import__("os").path.exists(p)
]


@pytest.mark.e2e
def test_the_wheels_engine_speaks_by_default_even_beside_a_system_espeak(cache):
    import espeakng_loader

    from shortgen.speech.narrate import EspeakEngine

    eng = EspeakEngine()
    wheel = str(__import__("pathlib").Path(espeakng_loader.get_library_path()).resolve())
    assert eng.library == "wheel" and eng.lib_path == wheel
    res = eng.speak(
        [
            {
                "text": "Hello there.",
                "voice": "gmw/en-us",
                "rate": 175,
                "wav": str(cache.root / "a.wav"),
                "events": str(cache.root / "a.json"),
            }
        ],
        cache.root / "w",
    )
    assert res.lib == wheel and res.ok == [0]
    if SYSTEM_LIB:
        assert EspeakEngine("system").id != eng.id  # the cache key names the engine actually loaded


@pytest.mark.e2e
@pytest.mark.skipif(not SYSTEM_LIB, reason="no system espeak-ng installed (CI installs Debian's espeak-ng)")
def test_every_shipped_script_speaks_with_a_system_espeak(tmp_path):
    """Debian's espeak-ng 1.51 once failed every cold render of part5 ('audio shorter than its word
    events': it repeats a stale word event at the end of some utterances)."""
    from pathlib import Path

    from shortgen.cache import Cache
    from shortgen.script.load import expand_targets, load_episode
    from shortgen.speech.narrate import EspeakEngine
    from shortgen.timeline import speak_and_plan as measure

    root = Path(__file__).parent.parent
    cache = Cache(tmp_path / "cache")
    engine = EspeakEngine("system")
    for part in expand_targets([root / "scripts" / "series.yaml"]):
        m = measure(load_episode(part, {"speech_library": "system"}), engine, cache)
        assert m.engine_id == engine.id
        for seg, n in zip(m.plan.segments, m.narrations):
            assert [w.text for w in n.words] == n.text.split() and seg.frames > 0


@pytest.mark.e2e
def test_a_worker_started_ahead_speaks_what_a_fresh_one_speaks_and_an_unused_one_leaves(tmp_path):
    """The CLI starts the speech worker before it loads the script (espeak_worker.start_standby): it
    must speak the same samples and word events as a worker started for the job, serve one batch and
    go, and one never given a job must leave when told to (no speaker outlives its render)."""
    import json
    from pathlib import Path

    from shortgen.speech import espeak_worker as W
    from shortgen.speech.narrate import EspeakEngine

    eng = EspeakEngine()

    def say(name: str) -> tuple[bytes, list]:
        job = {"text": "Adam keeps running averages of gradients.", "voice": "en-us", "rate": 175,
               "wav": str(tmp_path / f"{name}.wav"), "events": str(tmp_path / f"{name}.json")}  # fmt: skip
        res = eng.speak([job], tmp_path / f"work-{name}")
        assert res.ok == [0], res.failed
        return Path(job["wav"]).read_bytes(), json.loads(Path(job["events"]).read_text())

    W.start_standby(eng.library)
    ahead = W._STANDBY[eng.library]
    got = say("ahead")
    assert ahead.wait(10) == 0 and eng.library not in W._STANDBY  # it served this batch, and left
    assert "--standby" in ahead.args
    assert got == say("fresh")
    W.start_standby(eng.library)
    unused = W._STANDBY[eng.library]
    W.stop_standby()
    assert unused.returncode == 0 and not W._STANDBY
