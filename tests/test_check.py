"""The 30-second promise: the budget at its frame boundary, the reports, and the rendered-file check."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shortgen import check
from shortgen.cli import main
from shortgen.errors import BudgetError, ProbeError
from shortgen.render import render_episode
from shortgen.rendered import check_rendered
from shortgen.script.load import load_episode
from shortgen.testing import FakeEncoder, FakeEngine
from shortgen.timeline import speak_and_plan
from shortgen.video.encode import FfmpegEncoder

FIX = Path(__file__).parent / "fixtures"
UNDER, OVER = FIX / "budget_just_under.yaml", FIX / "budget_just_over.yaml"


def measure(path, layer, cache, **extra):
    return speak_and_plan(load_episode(path, {**layer, **extra}), FakeEngine(), cache)


def test_exactly_900_frames_passes(layer, cache):
    m = measure(UNDER, layer, cache)
    assert m.plan.segments[0].frames == 900
    assert check.problems(m) == []
    assert all(r.ok for r in check.rows(m))


def test_901_frames_fails_with_advice(layer, cache):
    m = measure(OVER, layer, cache)
    seg = m.plan.segments[0]
    assert seg.frames == 901
    (msg,) = check.problems(m)
    assert msg.startswith(f"{OVER}:9:5: segments[0] 'Regularization' runs 30.03 s, 0.03 s over the 30.00 s budget at 175 wpm;")
    rate = int(msg.split("a rate of ")[1].split(" ")[0])
    assert rate > 175
    assert "cut about 1 words" in msg
    row = check.rows(m)[0]
    assert not row.ok and row.frames == 901 and row.failure == "OVER"


def test_suggested_rate_really_fits(layer, cache):
    m = measure(OVER, layer, cache)
    rate = int(check.problems(m)[0].split("a rate of ")[1].split(" ")[0])
    again = measure(OVER, layer, cache, rate=rate)
    assert again.plan.segments[0].frames <= 900


def test_fit_rate_speeds_up_only_as_needed_and_says_so(layer, cache):
    m = measure(OVER, layer, cache, fit="rate")
    assert m.plan.segments[0].frames <= 900
    (fit,) = m.fits
    assert fit.from_rate == 175 and 175 < fit.to_rate <= 210
    assert check.problems(m) == []
    assert "rate fitted 175->" in check.rows(m)[0].note
    # but never past the ceiling
    m2 = measure(OVER, layer, cache, fit="rate", fit_max_rate_factor=1.0)
    assert check.problems(m2)


def test_json_and_junit_reports(layer, cache):
    rows, msgs = [], []
    for p in (UNDER, OVER):
        m = measure(p, layer, cache)
        rows += check.rows(m)
        msgs += check.problems(m)
    data = json.loads(check.format_json(rows, msgs))
    assert data["ok"] is False
    assert [s["status"] for s in data["segments"]] == ["OK", "OK", "OVER", "OK"]
    assert data["segments"][2]["frames"] == 901 and data["problems"] == msgs

    root = ET.fromstring(check.format_junit(rows, msgs))
    assert root.get("tests") == "4" and root.get("failures") == "1"
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["1. Regularization", "(episode total)"] * 2
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("classname") == str(OVER)
    assert "0.03 s over" in failed[0].find("failure").get("message")


def test_cli_check_exit_codes_and_junit_file(layer, tmp_path, monkeypatch, capsys):
    import shortgen.speech.narrate

    monkeypatch.setattr(shortgen.speech.narrate, "EspeakEngine", FakeEngine)  # budget fixtures are tuned to it
    cache = ["--cache-dir", str(layer["cache_dir"])]
    assert main(["check", *cache, str(UNDER)]) == 0
    out = tmp_path / "report.xml"
    assert main(["check", *cache, "--format", "junit", "-o", str(out), str(UNDER), str(OVER)]) == 3
    assert ET.parse(out).getroot().get("failures") == "1"
    err = capsys.readouterr().err
    assert "0.03 s over" in err and "Traceback" not in err


def test_render_refuses_over_budget_and_writes_nothing(layer, cache):
    ep = load_episode(OVER, layer)
    enc = FakeEncoder()
    with pytest.raises(BudgetError) as e:
        render_episode(ep, FakeEngine(), enc, cache)
    assert "0.03 s over" in str(e.value)
    assert enc.calls == []
    assert not (layer["output_dir"]).exists()


def test_rendered_check_against_manifest_and_plan(layer, cache):
    ep = load_episode(UNDER, layer)
    res = render_episode(ep, FakeEngine(), FakeEncoder(), cache)
    rows, msgs = check_rendered(res.out_dir, FakeEncoder(), FakeEngine(), cache, layer)
    assert all(r.ok for r in rows) and msgs == []
    assert [r.segment for r in rows] == ["(rendered file)", "1. Regularization", "(episode total)"]
    # a manifest whose span disagrees with the plan by more than a frame is caught
    man = json.loads((res.out_dir / "manifest.json").read_text())
    man["segments"][0]["end_frame"] += 2
    (res.out_dir / "manifest.json").write_text(json.dumps(man))
    rows, msgs = check_rendered(res.out_dir, FakeEncoder(), FakeEngine(), cache, layer)
    bad = [r for r in rows if not r.ok]
    assert [(r.segment, r.frames, r.failure) for r in bad] == [("1. Regularization", 902, "OVER")]
    assert any("over budget by 0.07 s" in m for m in msgs)
    assert any("spans frames 0-902, the plan says 0-900" in m for m in msgs)


def test_corrupt_or_truncated_mp4_is_a_clear_error(tmp_path):
    d = tmp_path / "part1"
    d.mkdir()
    (d / "manifest.json").write_text(
        json.dumps(
            {"fps": 30, "total_frames": 30, "width": 1080, "height": 1920, "segments": [], "inputs": {"script": "nope.yaml"}}
        )
    )
    (d / "part1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
    with pytest.raises(ProbeError) as e:
        check_rendered(d, FfmpegEncoder(), FakeEngine(), None)
    assert str(e.value).startswith(f"{d / 'part1.mp4'}: not a readable video (")
    assert "\n" not in str(e.value)
    (d / "manifest.json").write_text("{trunc")
    with pytest.raises(ProbeError, match="unreadable manifest"):
        check_rendered(d, FfmpegEncoder(), FakeEngine(), None)


def test_cli_rendered_check_of_a_broken_file_exits_6(tmp_path, capsys):
    d = tmp_path / "part1"
    d.mkdir()
    (d / "manifest.json").write_text(
        json.dumps(
            {"fps": 30, "total_frames": 30, "width": 1080, "height": 1920, "segments": [], "inputs": {"script": "nope.yaml"}}
        )
    )
    (d / "part1.mp4").write_bytes(b"garbage")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(d)]) == 6
    err = capsys.readouterr().err
    assert "not a readable video" in err and "Traceback" not in err


# ---- check and render agree on what fits ------------------------------------------------------------


def _edited(short_script, old, new):
    short_script.write_text(short_script.read_text().replace(old, new))
    return short_script


@pytest.mark.parametrize(
    "old, new, field",
    [
        # fits the schema and the card, not the thumbnail's one-line concept list
        ("name: Overfitting", "name: Overfitting Versus Underfitting In Models", "segments[1].name"),
        # within the schema's limit, but of wide letters: the box, not the character count, decides
        (
            "reference: Deep Learning (Goodfellow et al. 2016), Chapter 5",
            "reference: " + "MMMMMMMMMMMM " * 11,
            "segments[1].reference",
        ),
        # over the schema's limit (the old one allowed 300 characters; the box holds about 140)
        (
            "reference: Deep Learning (Goodfellow et al. 2016), Chapter 5",
            "reference: " + "Goodfellow, Bengio and Courville, Deep Learning, MIT Press, 2016; " * 3,
            "segments[1].reference",
        ),
        # a caption word that cannot be shown in two lines even broken
        (
            "Memorising the noise",
            "Memorising the " + "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
            "segments[1].narration",
        ),
    ],
)
def test_check_refuses_what_render_refuses_naming_the_field(short_script, layer, cache, old, new, field):
    script = _edited(short_script, old, new)
    try:
        m = measure(script, layer, cache)
        problems = check.fit_problems(m)
    except Exception as e:  # the schema's own limit: the same file:line:col: field
        problems = [str(e)]
    assert problems and all(field in p for p in problems), problems
    line = next(i for i, ln in enumerate(script.read_text().splitlines(), 1) if new.strip()[:20] in ln)
    if field.endswith("narration"):
        line -= 1  # a folded block: its value starts at the `>` on the key's line
    assert f"{script}:{line}:" in problems[0]
    with pytest.raises(Exception) as e:
        render_episode(load_episode(script, layer), FakeEngine(), FakeEncoder(), cache)
    assert field in str(e.value) and f"{script}:{line}:" in str(e.value)
    assert not (layer["output_dir"] / "part9").exists()


def test_cli_check_exits_2_for_text_that_does_not_fit(short_script, layer, monkeypatch, capsys):
    import shortgen.speech.narrate

    monkeypatch.setattr(shortgen.speech.narrate, "EspeakEngine", lambda *a, **k: FakeEngine())
    script = _edited(short_script, "name: Overfitting", "name: Overfitting Versus Underfitting In Models")
    code = main(["check", "--cache-dir", str(layer["cache_dir"]), str(script)])
    out = capsys.readouterr()
    assert code == 2 and "segments[1].name" in out.err and "(text fit)" in out.out


@pytest.mark.parametrize(
    "word",
    [
        "https://arxiv.org/abs/1706.03762/attention-is-all-you-need",
        "Supercalifragilisticexpialidociousness",
        "HyperparameterOptimizationFramework",
    ],
)
def test_a_long_caption_word_is_broken_where_a_reader_would(short_script, layer, cache, word):
    from shortgen.picture import captions

    script = _edited(short_script, "Memorising the noise", f"Memorising {word}")
    m = measure(script, layer, cache)
    assert check.fit_problems(m) == []
    seg = m.plan.segments[2]
    cue = next(c for c in seg.cues if word in c.text)
    layout = captions.layout_caption(cue.text, load_episode(script, layer).settings, "t")
    k, token = next((i, t) for i, t in enumerate(cue.text.split()) if word in t)
    pieces = [p for p, _, _, i in layout.words if i == k]
    assert len(pieces) == 2
    rest = token  # the pieces spell the word, with at most a hyphen added at a break
    for p in pieces:
        q = p if rest.startswith(p) else p[:-1]
        assert p == q or p.endswith("-")
        assert rest.startswith(q), (pieces, token)
        rest = rest[len(q) :]
    assert rest == ""
    if "/" in word:
        assert pieces[0].endswith("/")  # a URL breaks after a slash, with no hyphen added
    render_episode(load_episode(script, layer), FakeEngine(), FakeEncoder(), cache)  # and it renders


def test_render_lays_out_again_only_what_it_will_draw_and_still_refuses_a_new_overflow(short_script, layer, cache, monkeypatch):
    """A render holds to the fit rules the cards, captions, thumbnail and cover it will draw; what it
    keeps passed them when it was drawn. An edit's new text that does not fit is refused as before."""
    from shortgen.picture import draw

    render_episode(load_episode(short_script, layer), FakeEngine(), FakeEncoder(), cache)
    laid_out: list[str] = []
    real_card, real_thumb = draw.draw_card, draw.draw_thumbnail

    def card(seg, plan, settings, dry=False):
        if dry:
            laid_out.append(seg.name)
        return real_card(seg, plan, settings, dry)

    def thumb(plan, settings, dry=False):
        if dry:
            laid_out.append("thumbnail")
        return real_thumb(plan, settings, dry)

    monkeypatch.setattr(draw, "draw_card", card)
    monkeypatch.setattr(draw, "draw_thumbnail", thumb)
    edited = _edited(short_script, "Memorising the noise", "Memorising all the noise")
    render_episode(load_episode(edited, layer), FakeEngine(), FakeEncoder(), cache)
    names = [seg.name for seg in measure(edited, layer, cache).plan.segments]
    assert laid_out == [names[2]]  # the edited segment's card: the others and the pictures were kept
    laid_out.clear()
    long = _edited(edited, "name: Overfitting", "name: Overfitting Versus Underfitting In Models")
    with pytest.raises(Exception) as e:
        render_episode(load_episode(long, layer), FakeEngine(), FakeEncoder(), cache)
    assert "segments[1].name" in str(e.value) and "thumbnail" in laid_out  # a new name: the pictures too
