"""Stage 1: schema validation with file:line:col: field messages, and settings precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortgen.cli import main
from shortgen.errors import ScriptError
from shortgen.script.load import expand_targets, load_episode

ROOT = Path(__file__).parent.parent

GOOD_SEG = "  - name: {n}\n    narration: Hello there, {n}.\n    one_liner: one\n    reference: ref\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path: Path, **kw) -> str:
    with pytest.raises(ScriptError) as e:
        load_episode(path, **kw)
    return str(e.value)


def test_missing_field_names_file_line_column_and_field(tmp_path):
    p = write(
        tmp_path,
        "ep.yaml",
        "series: S\npart: 1\nsegments:\n"
        + GOOD_SEG.format(n="A")
        + GOOD_SEG.format(n="B")
        + "  - name: C\n    one_liner: c\n    reference: r\n",
    )
    assert error_of(p) == f"{p}:12:5: segments[2].narration: field required"


def test_unknown_key_is_an_error_at_its_own_position(tmp_path):
    p = write(tmp_path, "ep.yaml", "series: S\npart: 1\nsegments:\n" + GOOD_SEG.format(n="A") + "    colour: red\n")
    assert error_of(p) == f"{p}:8:5: segments[0].colour: unknown key"


def test_top_level_unknown_key(tmp_path):
    p = write(tmp_path, "ep.yaml", "series: S\npart: 1\ntitel: oops\nsegments:\n" + GOOD_SEG.format(n="A"))
    assert error_of(p) == f"{p}:3:1: titel: unknown key; did you mean title?"


def test_a_misspelt_key_is_named_at_its_own_line_with_the_key_it_was_meant_to_be(tmp_path):
    seg = GOOD_SEG.format(n="A").replace("narration:", "narrration:")
    p = write(tmp_path, "ep.yaml", "series: S\npart: 1\nsegments:\n" + seg)
    line = 4 + seg.split("\n").index(next(ln for ln in seg.split("\n") if "narrration" in ln))
    assert error_of(p) == f"{p}:{line}:5: segments[0].narrration: unknown key; did you mean narration?"


def test_malformed_yaml_names_the_position(tmp_path):
    p = write(tmp_path, "ep.yaml", "series: S\npart: [1\nsegments: []\n")
    msg = error_of(p)
    assert msg.startswith(f"{p}:3:9: invalid YAML:")
    assert "\n" not in msg


def test_wrong_type(tmp_path):
    p = write(tmp_path, "ep.yaml", "series: S\npart: one\nsegments:\n" + GOOD_SEG.format(n="A"))
    assert error_of(p).startswith(f"{p}:2:7: part: input should be a valid integer")


def test_bad_setting_value_points_at_the_setting(tmp_path):
    p = write(
        tmp_path,
        "ep.yaml",
        "series: S\npart: 1\nsettings:\n  theme:\n    accent: notacolour\nsegments:\n" + GOOD_SEG.format(n="A"),
    )
    assert error_of(p) == f"{p}:5:13: settings.theme.accent: not a colour: 'notacolour'"


def test_empty_file(tmp_path):
    p = write(tmp_path, "ep.yaml", "")
    assert error_of(p).startswith(f"{p}:1:1:")


def test_missing_file_is_a_clear_error(tmp_path):
    msg = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "not found" in msg


def test_segment_count_is_checked_against_the_series(tmp_path):
    write(tmp_path, "series.yaml", "series: S\nparts: [ep.yaml]\nsettings:\n  segments_per_part: 2\n")
    p = write(tmp_path, "ep.yaml", "part: 1\nsegments:\n" + GOOD_SEG.format(n="A"))
    assert error_of(p) == f"{p}:3:3: segments: expected 2 segments, found 1"


@pytest.mark.parametrize(
    "line, where, message",
    [
        ("part: 1000", "2:7: part", "input should be less than or equal to 999"),
        ("part: 2.5", "2:7: part", "input should be a valid integer"),
        ("part: true", "2:7: part", "input should be a valid integer"),
        ("part:", "2:1: part", "a value is required"),
        ("title: [a, b]", "3:8: title", "input should be a valid string"),
        ("settings: {width: 1081}", "3:19: settings.width", "input should be a multiple of 2"),
        (
            "settings: {preset: slow}",
            "3:20: settings.preset",
            "input should be 'ultrafast', 'superfast', 'veryfast', 'faster', 'fast' or 'medium'",
        ),
        ("settings: {intro: 'no'}", "3:19: settings.intro", "input should be a valid boolean"),
        ("settings: {loudness_lufs: .nan}", "3:27: settings.loudness_lufs", "input should be a valid finite number"),
        ("settings: {theme: red}", "3:19: settings.theme", "input should be a mapping"),
        ("settings: {voice: '  '}", "3:19: settings.voice", "string should have at least 1 character"),
    ],
)
def test_each_rule_names_the_value_and_what_it_should_be(tmp_path, line, where, message):
    head = "series: S\npart: 1\n" if not line.startswith("part") else "series: S\n"
    p = write(tmp_path, "ep.yaml", head + line + "\nsegments:\n" + GOOD_SEG.format(n="A"))
    assert error_of(p) == f"{p}:{where}: {message}"


def test_a_valid_file_gives_every_field_stripped_and_typed(tmp_path):
    p = write(
        tmp_path,
        "ep.yaml",
        "series: '  S  '\npart: 2.0\nsettings: {fit_max_rate_factor: 1, intro: false}\nsegments:\n" + GOOD_SEG.format(n="A"),
    )
    ep = load_episode(p)
    assert (ep.series, ep.part, ep.title) == ("S", 2, "S #2") and isinstance(ep.part, int)
    assert ep.settings.fit_max_rate_factor == 1.0 and isinstance(ep.settings.fit_max_rate_factor, float)
    assert ep.settings.intro is False and ep.segments[0].narration == "Hello there, A."
    with pytest.raises(ScriptError, match="segments: list should have at least 1 item"):
        load_episode(write(tmp_path, "e2.yaml", "series: S\npart: 1\nsegments: []\n"))


def test_settings_precedence_defaults_series_episode_cli(tmp_path):
    write(
        tmp_path,
        "series.yaml",
        "series: S\nparts: [ep.yaml]\nsettings:\n  rate: 160\n  fps: 25\n"
        "  theme:\n    accent: '#112233'\n    highlight: '#445566'\n",
    )
    p = write(
        tmp_path,
        "ep.yaml",
        "part: 1\nsettings:\n  rate: 170\n  theme:\n    accent: '#abcdef'\nsegments:\n" + GOOD_SEG.format(n="A"),
    )
    s = load_episode(p, {"rate": 190}).settings
    assert s.rate == 190  # CLI beats the episode
    assert s.fps == 25  # series beats defaults
    assert s.theme.accent == "#abcdef"  # episode beats series ...
    assert s.theme.highlight == "#445566"  # ... key by key inside the theme
    assert s.lead_in_frames == 24  # untouched default
    assert load_episode(p).settings.rate == 170
    ep = load_episode(p, {"rate": 190})
    assert str(ep.where("rate")) == "command line"
    assert str(ep.where("fps")).startswith(str(tmp_path / "series.yaml"))


def test_series_name_comes_from_the_series_file(tmp_path):
    write(tmp_path, "series.yaml", "series: My Show\nparts: [ep.yaml]\n")
    p = write(tmp_path, "ep.yaml", "part: 3\nsegments:\n" + GOOD_SEG.format(n="A"))
    ep = load_episode(p)
    assert (ep.series, ep.part, ep.slug) == ("My Show", 3, "part3")


def test_expand_targets_series_and_directories():
    scripts = ROOT / "scripts"
    parts = expand_targets([scripts / "series.yaml"])
    assert [p.name for p in parts] == [f"part{i}.yaml" for i in range(1, 6)]
    assert expand_targets([scripts]) == parts  # the directory: its series, deduplicated


def test_shipped_scripts_are_valid_and_concepts_do_not_repeat():
    names = []
    for p in expand_targets([ROOT / "scripts" / "series.yaml"]):
        ep = load_episode(p)
        assert len(ep.segments) == 5
        for seg in ep.segments:
            assert seg.narration and seg.one_liner and seg.reference
            assert any(ch.isdigit() for ch in seg.reference), f"{p}: {seg.name}: a reference needs its year"
        names += [seg.name.lower() for seg in ep.segments]
    assert len(names) == 25 and len(set(names)) == 25


def test_part4_follows_the_published_article():
    seed = ROOT.parent / "shared" / "seed" / "five-ml-concepts-part4.txt"
    if not seed.exists():
        pytest.skip("the seed article is not beside the repository")
    text = " ".join(seed.read_text().replace("\u2019", "'").split())  # the script uses straight quotes
    ep = load_episode(ROOT / "scripts" / "part4.yaml")
    for seg in ep.segments:
        assert seg.name in text and seg.one_liner in text and seg.reference in text
        for sentence in seg.narration.split(". ")[1:]:  # all but the spoken name, verbatim
            assert sentence.rstrip(".") in text, sentence


def test_cli_reports_schema_errors_in_one_line_without_traceback(tmp_path, capsys):
    p = write(tmp_path, "ep.yaml", "series: S\npart: 1\nsegments:\n  - name: A\n")
    code = main(["check", "--cache-dir", str(tmp_path / "c"), str(p)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{p}:4:5: segments[0].narration: field required" in err
    assert "Traceback" not in err


# ---- text a creator may really write, and files that are not scripts -------------------------------


def test_markup_is_not_narration(tmp_path):
    p = write(
        tmp_path,
        "ep.yaml",
        "series: S\npart: 1\nsegments:\n  - name: A\n    narration: "
        '"## **Bias** -- the *gap* between [model](http://x.y) and <b>truth</b>. ---"\n'
        "    one_liner: one\n    reference: ref\n",
    )
    ep = load_episode(p)
    assert ep.segments[0].narration == "Bias the gap between model and truth."


@pytest.mark.parametrize("narration", ["'**'", "'#'", "'---'", "'** -- ##'", "'...'"])
def test_a_narration_with_no_words_is_refused_at_its_field(tmp_path, narration):
    p = write(
        tmp_path,
        "ep.yaml",
        f"series: S\npart: 1\nsegments:\n  - name: A\n    narration: {narration}\n    one_liner: one\n    reference: ref\n",
    )
    assert error_of(p) == f"{p}:5:16: segments[0].narration: no words to speak: only markup or punctuation"


def test_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "ep.yaml"
    p.write_bytes(b"series: S\npart: 1\nsegments:\n  - name: Caf" + b"\xe9\n")
    assert error_of(p) == f"{p}:4:14: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_binary_file_directory_and_missing_file(tmp_path, capsys):
    b = tmp_path / "clip.yaml"
    b.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "a binary file, not a YAML script" in error_of(b)
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: file not found"
    d = tmp_path / "dir.yaml"
    d.mkdir()
    for cmd in (["plan", str(d)], ["plan", str(tmp_path)], ["plan", str(b)], ["render", str(tmp_path / "nope.yaml")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and "Error" not in err.split(":")[0], err


def test_two_parts_with_the_same_number_are_an_error(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        write(tmp_path, name, "series: S\npart: 4\nsegments:\n" + GOOD_SEG.format(n="A"))
    write(tmp_path, "series.yaml", "series: S\nparts: [a.yaml, b.yaml]\n")
    for target in (tmp_path / "series.yaml", tmp_path):
        with pytest.raises(ScriptError) as e:
            expand_targets([target])
        assert str(e.value).startswith(f"{tmp_path / 'b.yaml'}:2:7: part: part 4 again: {tmp_path / 'a.yaml'}")


def test_a_command_pointed_at_nothing_fails(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["render", str(empty)]) == 2
    assert main(["check", str(empty)]) == 2
    assert "no episode or series scripts" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--rate", "0", "--rate: input should be greater than or equal to 80"),
        ("--rate", "-5", "--rate: input should be greater than or equal to 80"),
        ("--rate", "10000", "--rate: input should be less than or equal to 450"),
        ("--fps", "0", "--fps: input should be greater than or equal to 1"),
        ("--crf", "99", "--crf: input should be less than or equal to 51"),
        ("--preset", "slow", "--preset: input should be"),
        ("--voice", "", "--voice: string should have at least 1 character"),
        ("--jobs", "0", "--jobs: input should be a whole number of at least 1"),
    ],
)
def test_flags_are_held_to_the_same_rules_as_the_file(capsys, flag, value, message):
    cmd = ["render", f"{flag}={value}", str(ROOT / "scripts" / "part4.yaml")]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shortgen: command line: ") and message in err and len(err.splitlines()) == 1


# ---- the JSON Schema editors use --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["episode", "series"])
def test_shipped_schema_files_are_what_shortgen_schema_prints(kind, capsys):
    assert main(["schema", kind]) == 0
    printed = capsys.readouterr().out
    shipped = (ROOT / "scripts" / "schema" / f"{kind}.schema.json").read_text()
    assert printed == shipped, "run `shortgen schema KIND > scripts/schema/KIND.schema.json`"


def test_every_shipped_script_names_its_schema_and_validates_against_it():
    import json

    import jsonschema
    import yaml

    schemas = {k: json.loads((ROOT / "scripts" / "schema" / f"{k}.schema.json").read_text()) for k in ("episode", "series")}
    for script in sorted((ROOT / "scripts").glob("*.yaml")):
        kind = "series" if script.name == "series.yaml" else "episode"
        first = script.read_text().splitlines()[0]
        assert first == f"# yaml-language-server: $schema=schema/{kind}.schema.json", script
        jsonschema.validate(yaml.safe_load(script.read_text()), schemas[kind])


def test_the_json_schema_refuses_what_the_loader_refuses(tmp_path):
    """The same declarations: an unknown key, a rate out of range, a missing field."""
    import json

    import jsonschema
    import yaml

    from shortgen.script import schema

    js = schema.json_schema(schema.EPISODE, "t")
    good = yaml.safe_load((ROOT / "scripts" / "part4.yaml").read_text())
    for broken in ({**good, "colour": "red"}, {**good, "settings": {"rate": 10}}, {k: v for k, v in good.items() if k != "part"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, js)
        p = tmp_path / "ep.yaml"
        p.write_text(json.dumps(broken))
        with pytest.raises(ScriptError):
            load_episode(p)


def test_output_cut_short_by_its_reader_is_not_an_error(monkeypatch, capsys):
    """`shortgen schema | head -1`: the reader leaves early; no traceback, no 'Broken pipe' line."""
    import sys

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["schema"]) == 0
    assert capsys.readouterr().err == ""


# ---- the machine's cores ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, cap",
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # cgroup v2: one and a half cores rounds up to two
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no quota: the affinity decides
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_usable_cpus_follow_the_containers_quota_and_the_affinity(tmp_path, files, cap):
    """os.cpu_count() is the host's count; a container limited to fewer cores must not start more
    workers, or x264 threads, than it has."""
    import os

    from shortgen.settings import usable_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == (min(affinity, cap) if cap else affinity)


def test_the_encoder_key_names_x264s_thread_count():
    """x264's bytes depend on its thread count: a cached run is keyed by it, and the count is the
    machine's, whatever the number of parts rendered at once."""
    from shortgen.settings import X264_THREADS_MAX, Settings, usable_cpus

    s = Settings()
    assert s.encoder_key()["threads"] == s.x264_threads == min(X264_THREADS_MAX, usable_cpus())
    assert s.with_(jobs=1).x264_threads == s.x264_threads


def test_the_settings_table_in_the_docs_is_the_one_the_declarations_make():
    from shortgen.settings import table

    text = (ROOT / "docs" / "scripts.md").read_text()
    start, end = "<!-- settings table: generated -->\n", "<!-- end of settings table -->"
    shipped = text[text.index(start) + len(start) : text.index(end)]
    assert shipped == table(), "docs/scripts.md's settings table is stale: paste shortgen.settings.table() between its markers"
