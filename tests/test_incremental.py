"""Incremental rendering, proved by counting stage executions (never by timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shortgen.cache import Stats
from shortgen.cli import main
from shortgen.errors import EncodeError
from shortgen.render import render_episode
from shortgen.script.load import load_episode
from shortgen.series.batch import render_many
from shortgen.testing import FakeEncoder, FakeEngine


def render(path, layer, cache, engine=None, encoder=None, **extra):
    stats = Stats()
    engine, encoder = engine or FakeEngine(), encoder or FakeEncoder()
    res = render_episode(load_episode(path, {**layer, **extra}), engine, encoder, cache, stats=stats)
    return res, stats, engine, encoder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_cold_then_noop(short_script, layer, cache):
    res, st, eng, enc = render(short_script, layer, cache)
    assert res.rendered and st.encodes == 4 and st.draws > 4 and eng.calls == 1 and len(eng.spoken) == 4
    assert [c[0] for c in enc.calls].count("join") == 1
    first = res.files["video"].read_bytes()

    res, st, eng, enc = render(short_script, layer, cache)
    assert not res.rendered
    assert (st.tts, st.draws, st.encodes, eng.calls, enc.calls) == (0, 0, 0, 0, [])
    assert res.files["video"].read_bytes() == first


def test_one_segment_edit_redoes_only_that_segment(short_script, layer, cache):
    _, cold, _, _ = render(short_script, layer, cache)
    edit(short_script, "Memorising the noise", "Memorizing the noise")
    res, st, eng, enc = render(short_script, layer, cache)
    assert eng.spoken == ["Overfitting. Memorizing the noise, not the pattern."]
    assert st.encodes == 1
    # the segment's video and its audio chunk, in parallel; the audio chunks are spliced, then one
    # stream-copy rejoin
    assert sorted(c[0] for c in enc.calls[:-1]) == ["audio", "runs", "splice"]
    assert enc.calls[-1][0] == "join"
    # within the segment only the reworded cue's pictures are encoded: one per word, as it is spoken;
    # the "Overfitting." cue and the captionless card are reused although the narration was retimed
    seg = next(g for g in res.plan.segments if g.name == "Overfitting")
    changed = next(i for i, c in enumerate(seg.cues) if c.text.startswith("Memorizing"))
    assert [c[1] for c in enc.calls if c[0] == "runs"] == [[sum(st.cue == changed for st in seg.states)]]
    assert seg.cues[changed].text == "Memorizing the noise,"
    assert st.pictures == 3 and len(seg.cues) == 3
    assert 0 < st.draws < cold.draws  # only the edited segment's caption pictures; its card is reused
    assert st.hits["segments"] == 3 + 3  # 3 video segments and 3 audio chunks reused


def test_a_longer_segment_moves_the_later_ones_without_reencoding_them(short_script, layer, cache):
    first, _, _, _ = render(short_script, layer, cache)
    edit(short_script, "Step downhill, a little at a time.", "Step downhill, a little at a time, again and again.")
    res, st, eng, enc = render(short_script, layer, cache)
    moved = [b.start - a.start for a, b in zip(first.plan.segments, res.plan.segments)]
    assert moved[:2] == [0, 0] and moved[2] > 0 and moved[3] == moved[2]  # Overfitting and the outro moved
    assert [c[0] for c in enc.calls].count("runs") == 1 and [c[0] for c in enc.calls].count("audio") == 1
    # the splice tiles the whole episode on the AAC grid: one priming frame, then every 1024 samples
    man = json.loads(res.files["manifest"].read_text())
    pieces = json.loads(cache.path("segments", man["inputs"]["audio"], ".aac").read_text())
    assert len(pieces) == 4 and [p[1] for p in pieces] == [0, 1, 1, 1]
    assert sum(p[2] for p in pieces) == 1 + -(-res.plan.total_frames * 1600 // 1024)


def test_theme_change_redraws_and_reencodes_everything_but_speaks_nothing(short_script, layer, cache):
    _, cold, _, _ = render(short_script, layer, cache)
    _, st, eng, _ = render(short_script, layer, cache, theme={"accent": "#00ff88"})
    assert eng.calls == 0 and st.draws == cold.draws and st.encodes == 4


@pytest.mark.parametrize("change", [{"fps": 25}, {"crf": 23}, {"preset": "faster"}])
def test_encoder_settings_reencode_everything(short_script, layer, cache, change):
    render(short_script, layer, cache)
    _, st, eng, _ = render(short_script, layer, cache, **change)
    assert eng.calls == 0 and st.encodes == 4


def test_failure_mid_encode_keeps_the_old_video_and_poisons_nothing(short_script, layer, cache):
    res, _, _, _ = render(short_script, layer, cache)
    before = res.files["video"].read_bytes()
    edit(short_script, "Step downhill", "Walk downhill")
    with pytest.raises(EncodeError):
        render(short_script, layer, cache, encoder=FakeEncoder(fail_after=1), jobs=1)
    assert res.files["video"].read_bytes() == before  # the finished file is untouched
    for f in (cache.root / "segments").rglob("*"):
        if f.is_file():
            assert ".tmp" not in f.name
            assert b"half-written" not in f.read_bytes()
    assert not list(res.out_dir.glob("*.tmp*"))
    res, st, _, _ = render(short_script, layer, cache)  # the next run recovers by itself
    assert res.rendered and st.encodes == 1
    assert json.loads(res.files["video"].read_text())["frames"] == res.plan.total_frames


def test_batch_isolates_failures(tmp_path, short_script, layer):
    bad_schema = tmp_path / "scripts" / "broken.yaml"
    bad_schema.write_text(short_script.read_text().replace("one_liner: Fitting noise instead of signal", "one_liner: [a, list]"))
    bad_voice = tmp_path / "scripts" / "voice.yaml"
    bad_voice.write_text(
        short_script.read_text()
        .replace("  lead_in_frames: 12", "  voice: gmw/xx-nope\n  lead_in_frames: 12")
        .replace("part: 9", "part: 8")
    )
    outs = render_many(
        [short_script, bad_schema, bad_voice], layer, jobs=2, engine_factory=FakeEngine, encoder_factory=FakeEncoder
    )
    assert [o.ok for o in outs] == [True, False, False]
    assert (
        outs[1].exit_code == 2 and f"{bad_schema}:19:16: segments[1].one_liner: input should be a valid string" == outs[1].error
    )
    assert outs[2].exit_code == 2 and "unknown voice 'gmw/xx-nope'" in outs[2].error
    assert (layer["output_dir"] / "part9" / "part9.mp4").is_file()
    assert outs[0].stats["encodes"] == 4


def test_two_renders_of_one_part_at_once(short_script, layer):
    events = []
    outs = render_many(
        [short_script, short_script], layer, jobs=2, sink=events.append, engine_factory=FakeEngine, encoder_factory=FakeEncoder
    )
    assert all(o.ok for o in outs)
    assert sorted(o.rendered for o in outs) == [False, True]  # the lock lets one render, the other finds it done
    assert {e["stage"] for e in events} >= {"narrate", "encode", "join", "done"}
    video = layer["output_dir"] / "part9" / "part9.mp4"
    assert json.loads(video.read_text())["frames"] == 394


def test_clean_prunes_the_cache(short_script, layer, cache, capsys):
    render(short_script, layer, cache)
    assert any(cache.root.rglob("*.yuv"))
    assert main(["clean", "--cache-dir", str(cache.root), "--older-than", "1"]) == 0
    assert any(cache.root.rglob("*.yuv"))  # everything was used just now
    assert main(["clean", "--cache-dir", str(cache.root)]) == 0
    assert not cache.root.exists()
    assert "removed" in capsys.readouterr().out


def test_a_cached_card_gives_the_same_pictures_and_a_damaged_one_is_redrawn(short_script, layer, cache):
    def pictures():
        return sorted(json.loads(p.read_text())["pictures"] for p in cache.root.rglob("*.h264"))

    res, cold, _, _ = render(short_script, layer, cache)
    first = pictures()
    cards = sorted(cache.root.rglob("*.yuv"))
    assert len(cards) == 4 and len(first) == 4
    cards[0].write_bytes(cards[0].read_bytes()[:-1])  # a torn entry
    for p in [*cache.root.rglob("*.h264"), *cache.root.rglob("*.run")]:
        p.unlink()
    res.files["video"].unlink()
    _, st, _, _ = render(short_script, layer, cache)
    assert st.hits["frames"] == 3 and st.encodes == 4
    assert pictures() == first
    assert all(len(c.read_bytes()) == len(cards[1].read_bytes()) for c in cards)


@pytest.mark.parametrize("keyint", [60, 12, 4])
def test_runs_keep_keyframes_within_the_interval(short_script, layer, cache, keyint):
    from shortgen.plan import runs as plan_runs
    from shortgen.timeline import speak_and_plan

    ep = load_episode(short_script, {**layer, "keyint_frames": keyint})
    plan, s = speak_and_plan(ep, FakeEngine(), cache).plan, ep.settings
    for seg in plan.segments:
        runs = [(None, idx, inner) for idx, inner in plan_runs(seg, s.keyint_frames)]
        assert [i for _, idx, _ in runs for i in idx] == list(range(len(seg.states)))
        assert all(len({seg.states[i].cue for i in idx}) == 1 for _, idx, _ in runs)  # one cue per run
        key_idx = [idx[k] for _, idx, inner in runs for k in (0, *inner)]
        bounds = key_idx + [len(seg.states)]
        for i, j in zip(bounds, bounds[1:]):
            gap = (seg.states[j].start if j < len(seg.states) else seg.end) - seg.states[i].start
            assert gap <= keyint or j == i + 1  # at most keyint apart, unless one picture alone is held longer
        if keyint == 4:
            assert any(inner for _, _, inner in runs)
