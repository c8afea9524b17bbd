"""Stage 2: speech through the engine protocol, its cache, retries and word alignment."""
from __future__ import annotations

import numpy as np
import pytest

from shortgen.cache import Stats
from shortgen.errors import TTSError, VoiceError, Where
from shortgen.narrate import FakeEngine, Request, align, narrate


def req(text="Gradient descent. Step downhill.", voice="gmw/en-us", rate=175):
    return Request(text, voice, rate, "ep.yaml:7:5: segments[0]", Where("series.yaml", 4, 10))


def test_align_maps_events_by_character_offset():
    text = "Look in the box, 2024 times."
    sr = 1000
    pcm = np.ones(10_000, dtype=np.int16) * 1000
    # 'in the' merged into one event; '2024' fires three events inside the word
    events = [{"pos": 1, "len": 4, "sample": 0}, {"pos": 6, "len": 2, "sample": 1000},
              {"pos": 13, "len": 4, "sample": 3000}, {"pos": 18, "len": 4, "sample": 4000},
              {"pos": 19, "len": 2, "sample": 4500}, {"pos": 20, "len": 2, "sample": 4700},
              {"pos": 23, "len": 6, "sample": 6000}]
    words = align(text, events, pcm, sr)
    assert [w.text for w in words] == ["Look", "in", "the", "box,", "2024", "times."]
    assert [w.start for w in words][:2] == [0, 1000]
    assert 1000 < words[2].start < 3000           # interpolated between its neighbours
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
    narrate([req()], FakeEngine(samples_per_letter=999), cache)   # another engine version: not a hit
    assert len(list((cache.root / "narration").rglob("*.wav"))) == 5


def test_empty_wav_is_retried_once(cache):
    eng = FakeEngine(fail_first=1)
    out = narrate([req()], eng, cache)
    assert eng.calls == 2 and out[0].samples > 0


def test_failing_twice_names_the_segment(cache):
    with pytest.raises(TTSError) as e:
        narrate([req()], FakeEngine(fail_with="engine hung"), cache)
    assert str(e.value) == "ep.yaml:7:5: segments[0]: speech synthesis failed twice: engine hung"
    assert not list(cache.root.rglob("*.wav"))      # nothing half-made is cached


def test_unknown_voice_points_at_the_setting(cache):
    with pytest.raises(VoiceError) as e:
        narrate([req(voice="gmw/en-usa")], FakeEngine(), cache)
    assert str(e.value) == "series.yaml:4:10: settings.voice: unknown voice 'gmw/en-usa'; did you mean gmw/en-us?"


def test_rate_changes_the_duration(cache):
    slow, fast = narrate([req(rate=150), req(rate=210)], FakeEngine(), cache)
    assert fast.samples < slow.samples


def test_an_episode_is_spoken_by_two_workers_and_their_results_merge_in_order(monkeypatch):
    from shortgen.narrate import EspeakEngine
    calls = []

    def fake_speak(self, jobs):
        calls.append([j["text"] for j in jobs])
        failed = {"1": "utterance did not complete"} if jobs[0]["text"] == "d" else {}
        return {"ok": [i for i in range(len(jobs)) if str(i) not in failed], "failed": failed}

    monkeypatch.setattr(EspeakEngine, "_speak", fake_speak)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    eng = EspeakEngine()
    res = eng.speak([{"text": t} for t in "abcdefg"])
    assert sorted(calls) == [list("abcd"), list("efg")]
    assert res["ok"] == [0, 1, 2, 3, 4, 5, 6] and res["failed"] == {}
    calls.clear()
    res = eng.speak([{"text": t} for t in "defg"] + [{"text": "x"}] * 3)     # "d" leads the first half
    assert res["failed"] == {"1": "utterance did not complete"} and 1 not in res["ok"] and len(res["ok"]) == 6
    assert eng.speak([{"text": "a"}, {"text": "b"}]) and calls[-1] == ["a", "b"]       # a few jobs: one worker


@pytest.mark.e2e
def test_espeak_workers_side_by_side_do_not_cancel_each_others_utterances(tmp_path):
    """Two espeak worker processes at once (a batch render, or one episode's two halves) once made
    pyttsx3 cancel about 1 in 7 second utterances: espeak still said IsPlaying() just after finishing."""
    from concurrent.futures import ThreadPoolExecutor

    from shortgen.narrate import EspeakEngine
    eng = EspeakEngine()
    text = ("A VLM can look at an image and answer questions about it, because it was trained on pictures "
            "paired with text. ") * 2

    def jobs(tag):
        return [{"text": f"{text} {i}.", "voice": "gmw/en-us", "rate": 175, "wav": str(tmp_path / f"{tag}{i}.wav"),
                 "events": str(tmp_path / f"{tag}{i}.json")} for i in range(4)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        for r in range(8):
            results = list(pool.map(eng._speak, [jobs(f"a{r}-"), jobs(f"b{r}-")]))
            assert all(res["failed"] == {} for res in results), results
