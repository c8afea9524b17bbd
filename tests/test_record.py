"""A creator's own recording as a segment's narration: trimmed, aligned to the engine's speech of the
same text by DTW, refused in one line when it is unusable or says something else."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import helpers
from helpers import bad_audio, long_wav, parse_srt
from shortgen.cache import Cache, Stats
from shortgen.cli import main
from shortgen.render import render_episode
from shortgen.script.load import load_episode
from shortgen.speech import record, warp
from shortgen.speech.narrate import EspeakEngine, Request, narrate, read_wav
from shortgen.testing import FakeEncoder, FakeEngine
from shortgen.timeline import speak_and_plan
from shortgen.video.encode import FfmpegEncoder

FIX = Path(__file__).parent / "fixtures"
R = record.RATE
T = record.TAKE_RATE
TEXT = "Overfitting. Memorising the noise, not the pattern."
OTHER = "Regularisation. A penalty on large weights keeps the model simple."


def write_wav(path: Path, x: np.ndarray, rate: int = R) -> Path:
    helpers.write_wav(path, x, rate)
    return path


def episode(tmp_path: Path, recording: str, segment: int = 1) -> Path:
    """The short fixture with `recording:` on one segment (the second's narration is TEXT)."""
    lines = (FIX / "short.yaml").read_text().split("\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("  - name:")][segment]
    lines.insert(at + 1, f"    recording: {recording}")
    p = tmp_path / "ep.yaml"
    p.write_text("\n".join(lines))
    return p


# ---- the warping path, pure ---------------------------------------------------------------------


def test_dtw_follows_a_known_warp():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 12)).cumsum(axis=0)  # a smooth random walk: frames near in time are alike
    # b: a played at 1.5x speed for its first half, then at 0.75x
    src = np.concatenate([np.arange(0, 100, 1.5), 100 + np.arange(0, 100, 0.75)])
    b = np.array([a[min(199, int(round(s)))] for s in src])
    rows, cols = warp.dtw(warp._costs(a, b))
    assert rows[0] == 0 and cols[0] == 0 and rows[-1] == 199 and cols[-1] == len(b) - 1
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)
    # every frame of b is paired with (nearly) the frame of a it came from
    for r, c in zip(rows, cols):
        assert abs(r - src[c]) <= 2.0


def test_trim_keeps_the_engines_lead_and_tail_and_says_where_it_cut():
    rng = np.random.default_rng(1)
    speech = np.sin(np.arange(R) * 0.05).astype(np.float32) * 0.5
    x = np.concatenate([np.zeros(2 * R, np.float32), speech, np.zeros(R, np.float32)])
    x += rng.standard_normal(len(x)).astype(np.float32) * 0.005  # a quiet room, -40 dB
    out, at = record.trim(x, 1000, 3000)
    assert abs(at - (2 * R - 1000)) <= record.HOP
    assert abs(len(out) - (R + 4000)) <= 2 * record.HOP
    with pytest.raises(record.RecordingError, match="silent"):
        record.trim(np.zeros(R, np.float32), 100, 100)


# ---- alignment on real speech: the engine with another voice, rate, noise and silence -------------


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("speech"))
    ref, other, wrong = narrate(
        [
            Request(TEXT, "gmw/en-us", 175, "ref"),
            Request(TEXT, "gmw/en-gb-x-rp", 150, "take"),
            Request(OTHER, "gmw/en-gb-x-rp", 175, "wrong"),
        ],
        EspeakEngine(),
        cache,
    )
    return ref, other, wrong


@pytest.fixture(scope="module")
def other_reference(tmp_path_factory):
    """The engine's speech of another segment's text (OTHER), as an episode has it."""
    return narrate([Request(OTHER, "gmw/en-us", 175, "other")], EspeakEngine(), Cache(tmp_path_factory.mktemp("other")))[0]


def pcm(n) -> np.ndarray:
    return read_wav(n.wav)[0].astype(np.float32) / 32768.0


def test_recorded_words_land_on_their_true_times(spoken, tmp_path):
    ref, take, _ = spoken
    x = pcm(take)
    rng = np.random.default_rng(2)
    v = record.voiced(x)
    level = float(np.sqrt((x[: len(v) * record.HOP].reshape(len(v), -1)[v] ** 2).mean()))
    x = (
        np.concatenate([np.zeros(R, np.float32), x]) + rng.standard_normal(len(x) + R).astype(np.float32) * level * 0.1
    )  # 20 dB SNR
    f = write_wav(tmp_path / "take.wav", x, 44100 // 2)
    info = record.probe(f, 30.0)
    n, v = record.narration(f, info, TEXT, ref, Cache(tmp_path / "c"), 30.0)
    assert v.mismatch is None and n.sample_rate == T  # kept at the track's rate

    offset = json.loads(next((tmp_path / "c").rglob("*.json")).read_text())["trimmed_from"]
    truth = (np.array([w.start for w in take.words]) + R) / R
    got = (np.array([w.start for w in n.words]) + offset) / T
    err_ms = np.abs(got - truth) * 1000
    assert np.median(err_ms) <= 60 and err_ms.max() <= 300, err_ms.round()
    assert v.cost < record.MISMATCH_RATIO
    # trimmed to the engine's lead: the kept part starts as far before the speech as the engine's does
    ref_lead = record.speech_span(pcm(ref))[0] / R
    rec_lead = record.speech_span(read_wav(n.wav)[0].astype(np.float32) / 32768.0, T)[0] / T
    assert abs(rec_lead - ref_lead) <= 0.02


def test_a_take_of_another_segment_is_refused_naming_it(spoken, other_reference, tmp_path):
    ref, _, wrong = spoken
    others = {3: other_reference}
    f = tmp_path / "wrong.wav"
    shutil.copy(wrong.wav, f)
    said = r"wrong.wav does not say this segment's narration: it sounds like segments\[3\]"
    with pytest.raises(record.RecordingError, match=said):
        record.narration(f, record.probe(f, 30.0), TEXT, ref, Cache(tmp_path / "c"), 30.0, others=others)
    # and a cached verdict says the same without aligning again
    with pytest.raises(record.RecordingError, match="does not say"):
        record.narration(f, record.probe(f, 30.0), TEXT, ref, Cache(tmp_path / "c"), 30.0, others=others)
    # where the creator says to render it anyway, the verdict travels with it instead (to the manifest)
    _, v = record.narration(f, record.probe(f, 30.0), TEXT, ref, Cache(tmp_path / "c"), 30.0, refuse=False, others=others)
    assert v.mismatch and "does not say this segment's narration" in v.mismatch


def test_recording_mismatch_warn_renders_a_take_the_rule_refuses_and_says_so(spoken, tmp_path):
    _, _, wrong = spoken
    shutil.copy(wrong.wav, tmp_path / "wrong.wav")
    p = episode(tmp_path, "wrong.wav")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    p.write_text(p.read_text().replace("settings:\n", "settings:\n  recording_mismatch: warn\n", 1))
    m = speak_and_plan(load_episode(p, {"cache_dir": tmp_path / "c"}), EspeakEngine(), Cache(tmp_path / "c"))
    v = m.alignment[1]
    assert v.cost > record.MISMATCH_RATIO or any(w in (v.mismatch or "") for w in ("leaves out", "says more", "sounds like"))
    assert v.mismatch and v.mismatch.startswith("wrong.wav does not say")


def test_a_skipped_sentence_is_refused_near_where_it_was_skipped(spoken, tmp_path):
    ref, take, _ = spoken
    x = pcm(take)
    a, b = take.words[1].start, take.words[6].start  # "Memorising the noise, not the" left out (1.5 s)
    f = write_wav(tmp_path / "skipped.wav", np.concatenate([x[:a], x[b:]]))
    with pytest.raises(record.RecordingError, match=r"at about [01]\.\d s the recording leaves out words .*skipped"):
        record.narration(f, record.probe(f, 30.0), TEXT, ref, Cache(tmp_path / "c"), 30.0)


def test_a_long_pause_of_the_speakers_own_is_not_a_mismatch(spoken, tmp_path):
    ref, take, _ = spoken
    x = pcm(take)
    at = take.words[1].start - R // 20
    f = write_wav(tmp_path / "pause.wav", np.concatenate([x[:at], np.zeros(2 * R, np.float32), x[at:]]))
    n, v = record.narration(f, record.probe(f, 30.0), TEXT, ref, Cache(tmp_path / "c"), 30.0)
    assert v.cost < record.MISMATCH_RATIO and v.mismatch is None
    # the words after the pause moved with it
    assert abs((n.words[1].start - n.words[0].start) / T - (take.words[1].start - take.words[0].start + 2 * R) / R) < 0.1


# ---- in an episode ------------------------------------------------------------------------------


def test_a_recorded_segment_plays_the_recording_and_times_captions_to_it(spoken, tmp_path):
    _, take, _ = spoken
    shutil.copy(take.wav, tmp_path / "take.wav")
    p = episode(tmp_path, "take.wav")
    cache = Cache(tmp_path / "c")
    ep = load_episode(p, {"cache_dir": tmp_path / "c"})
    assert ep.segments[1].recording == tmp_path / "take.wav"
    m = speak_and_plan(ep, EspeakEngine(), cache)
    n = m.narrations[2]  # intro, segment 0, segment 1
    assert n.voice == "recording" and "narration" in n.wav.parts
    # the plan's length comes from the trimmed recording, slower than the engine's own speech
    seg = m.plan.segments[2]
    assert seg.samples == n.samples == len(read_wav(n.wav)[0])
    assert abs(n.samples / T - len(pcm(take)) / R) < 0.5 and n.samples / T > 1.1 * len(pcm(spoken[0])) / R
    assert [w.text for w in seg.words] == TEXT.split()
    assert all(b.start >= a.start for a, b in zip(seg.words, seg.words[1:]))


def test_replacing_one_recording_redoes_only_that_segment(tmp_path):
    eng = FakeEngine()
    for i, (name, rate) in enumerate([("a.wav", 150), ("b.wav", 160)]):
        text = ["Gradient descent. Step downhill, a little at a time.", TEXT][i]
        write_wav(tmp_path / name, eng.synthesise(text, rate)[0].astype(np.float32) / 32768.0)
    lines = (FIX / "short.yaml").read_text().split("\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("  - name:")]
    lines.insert(at[1] + 1, "    recording: b.wav")
    lines.insert(at[0] + 1, "    recording: a.wav")
    p = tmp_path / "ep.yaml"
    p.write_text("\n".join(lines))
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    render_episode(load_episode(p, layer), eng, FakeEncoder(), Cache(layer["cache_dir"]))
    write_wav(tmp_path / "b.wav", eng.synthesise(TEXT, 140)[0].astype(np.float32) / 32768.0)  # a new take
    st = Stats()
    res = render_episode(load_episode(p, layer), eng, FakeEncoder(), Cache(layer["cache_dir"]), stats=st)
    assert res.rendered and st.encodes == 1  # only the re-recorded segment's video
    m = json.loads(res.files["manifest"].read_text())
    assert [(r["segment"], Path(r["file"]).name) for r in m["recordings"]] == [(0, "a.wav"), (1, "b.wav")]


def test_a_recorded_episode_renders_end_to_end_on_target(spoken, tmp_path):
    _, take, _ = spoken
    shutil.copy(take.wav, tmp_path / "take.wav")
    p = episode(tmp_path, "take.wav")
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    res = render_episode(load_episode(p, layer), EspeakEngine(), FfmpegEncoder(), Cache(layer["cache_dir"]))
    probe = FfmpegEncoder().probe(res.files["video"])
    assert (probe.width, probe.height, probe.codec, probe.audio) == (1080, 1920, "h264", "aac")
    lufs, tp = FfmpegEncoder().loudness(res.files["video"])
    assert abs(lufs + 14.0) <= 0.5 and tp <= -1.0
    m = json.loads(res.files["manifest"].read_text())
    seg = next(s for s in m["segments"] if s["name"] == "Overfitting")
    # the segment lasts as long as the recording (trimmed) with its lead-in and tail, not as the engine
    n = speak_and_plan(load_episode(p, layer), EspeakEngine(), Cache(layer["cache_dir"])).narrations[2]
    assert seg["frames"] >= round(n.samples / T * 30)
    # the captions follow the recording's words: the cue that starts with "Memorising" starts when the
    # recording says it (its true time in the take, less what the trim cut, after the segment's lead-in)
    timed = speak_and_plan(load_episode(p, layer), EspeakEngine(), Cache(layer["cache_dir"]))
    sp = timed.plan.segments[2]
    offset = json.loads(n.wav.with_suffix(".json").read_text())["trimmed_from"]
    said = sp.narration_start / 30 + take.words[1].start / R - offset / T
    starts = [a / 1000 for a, _, text in parse_srt(res.files["srt"].read_text()) if text.startswith("Memorising")]
    assert starts and abs(starts[0] - said) < 0.15, (starts, said)


# ---- bad recordings: one line naming the field ---------------------------------------------------


def test_bad_recordings_fail_in_one_line_naming_the_field(tmp_path, capsys):
    cases = bad_audio(tmp_path)
    long_wav(tmp_path / "long.wav")
    cases["long.wav"] = "lasts 10800.0 s; a segment may run 30 s"
    os.mkfifo(tmp_path / "pipe.wav")  # a pipe would block a reader for ever
    cases["pipe.wav"] = "is not a regular file"
    for name, phrase in cases.items():
        p = episode(tmp_path, name)
        assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"{p}:17:16: segments[1].recording: " in err[0] and phrase in err[0], err[0]


def test_an_over_budget_recording_fails_check_with_the_overshoot_and_a_hint(spoken, tmp_path, capsys):
    _, take, _ = spoken
    x = pcm(take)
    write_wav(tmp_path / "long.wav", np.concatenate([x] * (int(33 * R / len(x)) + 1)))
    p = episode(tmp_path, "long.wav")
    code = main(["check", "--cache-dir", str(tmp_path / "c"), str(p)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 3, text
    assert "segments[1] 'Overfitting'" in text and "over the 30.00 s budget: trim long.wav or re-record it" in text


def test_an_over_budget_take_says_how_much_of_it_is_its_own_pauses(spoken, tmp_path, capsys):
    """What to trim: the take's own pauses (breaths, hesitations), their sum and the longest, with where."""
    import re

    _, take, _ = spoken
    x = pcm(take)
    gap = np.zeros(int(1.2 * R), np.float32)
    pieces = []
    while sum(len(p) for p in pieces) < 34 * R:
        pieces += [x, gap]
    write_wav(tmp_path / "slow.wav", np.concatenate(pieces[:-1]))
    p = episode(tmp_path, "slow.wav")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 3
    out = capsys.readouterr()
    text = out.out + out.err
    found = re.search(r"its (\d+) pauses of 0.4 s or more add up to ([\d.]+) s \(the longest, ([\d.]+) s, at ([\d.]+) s\)", text)
    assert found, text
    count, total, longest = int(found.group(1)), float(found.group(2)), float(found.group(3))
    gaps = len(pieces) // 2 - 1
    assert count >= gaps and total >= gaps * 1.2 and 1.2 <= longest < 2.5, found.group(0)
