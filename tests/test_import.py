"""`shortgen import`: the series' article (plain text and Markdown) into an episode script."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from shortgen.cli import main
from shortgen.script import article
from shortgen.script.load import load_episode

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "seed" / "five-ml-concepts-part4.txt"
MD = Path(__file__).parent / "fixtures" / "articles" / "five-ml-concepts-part4.md"


def _seed() -> str:
    if not SEED.is_file():
        pytest.skip(f"the seed article is not beside the checkout: {SEED}")
    return SEED.read_text()


def _content(path: Path) -> dict:
    """A script's content: what the article can give (pictures are the creator's, added later)."""
    data = yaml.safe_load(path.read_text())
    data.pop("series", None)
    for seg in data["segments"]:
        seg.pop("visual", None)
        seg["narration"] = " ".join(seg["narration"].split())
    return data


def _import(tmp_path: Path, text: str, name: str = "article.txt", *extra: str) -> tuple[int, Path]:
    src = tmp_path / name
    src.write_text(text)
    out = tmp_path / "scripts" / "part.yaml"
    return main(["import", str(src), "-o", str(out), "--no-check", *extra]), out


@pytest.mark.parametrize("source", ["txt", "md"])
def test_importing_the_article_gives_the_shipped_script(tmp_path, source):
    text = _seed() if source == "txt" else MD.read_text()
    code, out = _import(tmp_path, text, f"part4.{source}")
    assert code == 0
    assert _content(out) == _content(ROOT / "scripts" / "part4.yaml")
    ep = load_episode(out)  # valid as written: it names its series, having no series file beside it
    assert ep.settings and [s.name for s in ep.segments][2] == "VLM (Vision-Language Models)"


def test_an_imported_part_beside_its_series_takes_the_series_settings(tmp_path):
    scripts = tmp_path / "scripts"
    shutil.copytree(ROOT / "scripts", scripts)
    shutil.copytree(ROOT / "assets", tmp_path / "assets")  # the series names its music there
    src = tmp_path / "a.txt"
    src.write_text(_seed())
    assert main(["import", str(src), "-o", str(scripts / "part4.yaml"), "--no-check"]) == 2  # it exists
    assert main(["import", str(src), "-o", str(scripts / "part4.yaml"), "--no-check", "--force"]) == 0
    text = (scripts / "part4.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=schema/episode.schema.json") and "series:" not in text
    assert load_episode(scripts / "part4.yaml").settings.rate == 175  # the series file's


def test_what_the_article_lacks_is_a_warning_naming_its_line(tmp_path, capsys):
    text = _seed()
    lines = text.splitlines()
    # no reference for Adam, no quick-reference row for VLM, a sixth concept, a reference for nothing
    lines = [ln for ln in lines if not ln.startswith("| Adam | Adam:") and not ln.startswith("| VLM | Joint")]
    at = lines.index("Quick Reference")
    lines[at:at] = ["6. Dropout", "Switching off random neurons while training.", "Like a team that practises short-handed."]
    ref_at = next(i for i, ln in enumerate(lines) if ln.startswith("| Superposition | Toy"))
    lines.insert(ref_at + 1, "| Batch Norm | Ioffe & Szegedy 2015 |")
    code, out = _import(tmp_path, "\n".join(lines) + "\n")
    err = capsys.readouterr().err
    assert code == 0
    src = tmp_path / "article.txt"
    numbered = {ln: i for i, ln in enumerate(lines, 1)}
    assert f"{src}:{numbered['4. Adam']}: concept 4 'Adam' has no row in the References table" in err
    vlm = "concept 3 'VLM (Vision-Language Models)' has no row in the Quick Reference table"
    assert f"{src}:{numbered['3. VLM (Vision-Language Models)']}: {vlm}" in err
    assert f"{src}:{numbered['6. Dropout']}: concept 6 'Dropout' left out: a part has 5 segments" in err
    assert f"{src}:{numbered['| Batch Norm | Ioffe & Szegedy 2015 |']}: the References table names 'Batch Norm'" in err
    data = yaml.safe_load(out.read_text())
    assert "reference" not in data["segments"][3] and "one_liner" not in data["segments"][2]  # nothing made up
    assert len(data["segments"]) == 5
    load_episode(out)  # and it is still a valid script: the card shows what there is


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty"),
        ("   \n\n", "the file is empty"),
        ("part: 4\nsegments: []\n", "not an article of the series"),
        ("Just a note.\nNothing numbered here.\n", "not an article of the series"),
        ("Five ML Concepts - #4\nToday's Five\n1. Adam\nAn optimizer.\n", "1 concepts with text, and a part has 5"),
        ("Some Title\nToday's Five\n" + "".join(f"{i}. C{i}\nText {i}.\n" for i in range(1, 6)), "no part number"),
    ],
)
def test_what_is_not_an_article_is_refused_in_one_line(tmp_path, capsys, text, message):
    code, out = _import(tmp_path, text)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_binary_and_missing_files_and_folders_are_refused(tmp_path, capsys):
    (tmp_path / "x.bin").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    for path, said in ((tmp_path / "x.bin", "binary"), (tmp_path / "latin.txt", "not UTF-8"), (tmp_path, "directory"),
                       (tmp_path / "nope.txt", "No such file")):  # fmt: skip
        assert main(["import", str(path), "-o", str(tmp_path / "o.yaml"), "--no-check"]) == 2 or said == "No such file"
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err


def test_an_existing_script_is_never_overwritten_without_force(tmp_path, capsys):
    text = _seed()
    out = tmp_path / "scripts" / "part.yaml"
    out.parent.mkdir()
    out.write_text("# my own edits\n")
    code, _ = _import(tmp_path, text)
    assert code == 2 and out.read_text() == "# my own edits\n"
    assert "exists; pass --force" in capsys.readouterr().err
    code, _ = _import(tmp_path, text, "article.txt", "--force")
    assert code == 0 and out.read_text().startswith("# Five ML Concepts #4")


def test_spoken_names_and_yaml_scalars():
    assert article.spoken_name("VLM (Vision-Language Models)") == "Vision-language models."
    assert article.spoken_name("Activation Functions") == "Activation functions."
    assert article.spoken_name("GPT-4V Prompting") == "GPT-4V prompting."
    assert article.spoken_name("Adam") == "Adam."
    for text in ("Adam: A Method", "yes", "#4 is here", "null", "a 'quote' and \"double\"", "trailing ", "- dash"):
        assert yaml.safe_load(f"k: {article._scalar(text)}")["k"] == text


@pytest.mark.e2e
def test_the_import_checks_the_written_script_with_the_real_engine(tmp_path, capsys):
    text = _seed()
    (tmp_path / "a.txt").write_text(text)
    out = tmp_path / "p4.yaml"
    args = ["import", str(tmp_path / "a.txt"), "-o", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Activation Functions" in printed and "OK" in printed
    # a concept too long to speak in 30 s: the command says which, and by how much
    long = text.replace("Like an on-off switch that can also dim the lights.", " ".join(["Like an on-off switch."] * 30))
    (tmp_path / "a.txt").write_text(long)
    assert main([*args, "--force"]) == 3
    err = capsys.readouterr().err
    assert "Activation Functions" in err and "over" in err
