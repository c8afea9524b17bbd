"""Stage 3: the plan is pure data in integer frames; captions follow the engine's word timings."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import helpers
from shortgen.plan import (
    CUE_MAX_CHARS,
    SENTENCE_END,
    SampleWord,
    SegmentInput,
    build_plan,
    frames_to_ms,
    group_cues,
    samples_to_frames,
)
from shortgen.publish import outputs
from shortgen.script.load import load_episode
from shortgen.timeline import speak_and_plan

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "fixtures" / "golden_plan_short.json"


@pytest.fixture
def measured(monkeypatch, layer, engine, cache):
    monkeypatch.chdir(ROOT)  # relative source paths, so the golden file is machine-independent
    return speak_and_plan(load_episode(Path("tests/fixtures/short.yaml"), layer), engine, cache)


def test_plan_matches_golden_json(measured):
    got = json.loads(json.dumps(measured.plan.to_dict()))
    if os.environ.get("SHORTGEN_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(GOLDEN.read_text()), "plan changed; if intended, rerun with SHORTGEN_UPDATE_GOLDEN=1"


def test_segments_and_states_tile_the_timeline_exactly(measured):
    plan = measured.plan
    t = 0
    for seg in plan.segments:
        assert seg.start == t and seg.end > seg.start
        assert all(isinstance(v, int) for v in (seg.start, seg.end, seg.narration_start, seg.narration_frames))
        s = seg.start
        for st in seg.states:
            assert st.start == s and st.end > st.start
            s = st.end
        assert s == seg.end
        t = seg.end
    assert t == plan.total_frames
    assert [s.kind for s in plan.segments] == ["intro", "concept", "concept", "outro"]


def test_word_frames_come_from_the_engine_events(measured, engine):
    """Each word starts on the frame nearest the engine's own event sample, offset by the lead-in."""
    plan = measured.plan
    for seg, narr in zip(plan.segments, measured.narrations):
        _, events = engine.synthesise(narr.text, narr.rate)
        assert len(seg.words) == len(events)
        for w, ev in zip(seg.words, events):
            assert w.start == seg.narration_start + samples_to_frames(ev["sample"], engine.SAMPLE_RATE, plan.fps)
            assert w.end > w.start


def test_cues_and_highlights_follow_word_timings(measured):
    for seg in measured.plan.segments:
        words = [w.text for w in seg.words]
        assert " ".join(c.text for c in seg.cues) == " ".join(words)  # every word once, in order
        for ci, c in enumerate(seg.cues):
            assert c.start == seg.words[c.first].start
            assert c.end >= seg.words[c.last].end or ci + 1 < len(seg.cues) and c.end == seg.cues[ci + 1].start
            # a sentence end can only close a cue
            assert not any(SENTENCE_END.search(w) for w in words[c.first : c.last])
        for st in seg.states:
            if st.word is not None:
                # the highlighted word is on screen from its own start frame (or its cue's start)
                cue = seg.cues[st.cue]
                assert st.start == max(seg.words[st.word].start, cue.start)
                assert cue.first <= st.word <= cue.last


def test_group_cues_breaks_at_sentences_and_phrases():
    words = "Gradient descent. Step downhill, a little at a time, until the loss stops falling.".split()
    cues = [" ".join(words[a : b + 1]) for a, b in group_cues(words)]
    assert cues == ["Gradient descent.", "Step downhill,", "a little at a time,", "until the loss stops falling."]
    long = ("word " * 40).split()
    for a, b in group_cues(long):
        assert len(" ".join(long[a : b + 1])) <= CUE_MAX_CHARS


def test_integer_time_conversions_do_not_drift():
    assert samples_to_frames(22050, 22050, 30) == 30
    assert samples_to_frames(22050 * 100 + 367, 22050, 30) == 3000  # 0.4983 frame rounds down
    assert samples_to_frames(22050 * 100 + 368, 22050, 30) == 3001
    assert frames_to_ms(3147, 30) == 104900
    assert frames_to_ms(1, 30) == 33 and frames_to_ms(2, 30) == 67


def test_srt_and_vtt_hold_the_plan_cues(measured):
    plan = measured.plan
    want = [(frames_to_ms(c.start, plan.fps), frames_to_ms(c.end, plan.fps), c.text) for s in plan.segments for c in s.cues]
    assert helpers.parse_srt(outputs.srt(plan)) == want
    vtt = outputs.vtt(plan)
    assert vtt.startswith("WEBVTT")
    assert vtt.count(" --> ") == len(want)


def test_build_plan_is_pure():
    inp = SegmentInput("concept", "X", "x", "r", 1, 22050, 22050, (SampleWord("Hi.", 0, 11025),), 175, "v", "k")
    a = build_plan("S", 1, "T", 30, 1080, 1920, [inp], 24, 12)
    b = build_plan("S", 1, "T", 30, 1080, 1920, [inp], 24, 12)
    assert a == b and a.total_frames == 24 + 30 + 12


def _two_cue_plan():
    """A plan with three cues at known frames (30 fps), built from words with known sample times. By hand:
    narration starts at frame 30 (1.000 s); "descent." ends at 57, held to 65, and the 10-frame gap to
    "Step" (75) is bridged; "downhill," (a phrase end) ends at 96, held to 104, but "a" starts at 97; the
    segment ends at 30 + 105 + 12 = 147 (4.900 s), and "time." held to 137 is bridged to it."""
    sr = 22050
    words = tuple(
        SampleWord(t, s * sr // 1000, e * sr // 1000)
        for t, s, e in (
            ("Gradient", 0, 400),
            ("descent.", 450, 900),
            ("Step", 1500, 1700),
            ("downhill,", 1750, 2200),
            ("a", 2250, 2300),
            ("little", 2350, 2600),
            ("at", 2650, 2700),
            ("a", 2750, 2800),
            ("time.", 2850, 3300),
        )
    )
    inp = SegmentInput("concept", "Gradient Descent", "o", "r", 1, 3500 * sr // 1000, sr, words, 175, "v", "k", "s:1:1")
    return build_plan("S", 1, "T", 30, 1080, 1920, [inp], lead_in=30, tail=12)


def test_srt_is_exactly_the_golden_text():
    assert outputs.srt(_two_cue_plan()) == (
        "1\n00:00:01,000 --> 00:00:02,500\nGradient descent.\n\n"
        "2\n00:00:02,500 --> 00:00:03,233\nStep downhill,\n\n"
        "3\n00:00:03,233 --> 00:00:04,900\na little at a time.\n"
    )


def test_vtt_is_exactly_the_golden_text():
    vtt = outputs.vtt(_two_cue_plan())
    assert vtt == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:02.500\nGradient descent.\n\n"
        "00:00:02.500 --> 00:00:03.233\nStep downhill,\n\n"
        "00:00:03.233 --> 00:00:04.900\na little at a time.\n"
    )
    lines = vtt.split("\n")
    assert lines[0] == "WEBVTT" and lines[1] == ""  # the header, then a blank line
    stamps = [ln for ln in lines if "-->" in ln]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", ln) for ln in stamps)
    assert "," not in "".join(stamps)  # VTT's decimal mark is a full stop
    assert vtt.endswith("\n") and "\n\n\n" not in vtt
