"""Hostile media: files of the kinds careless or hostile users have, each a render or one clear line."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shortgen.cli import main
from shortgen.video.encode import ffmpeg_exe

FIX = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]


def episode(tmp_path: Path, extra: dict[int, str] | None = None, settings: str = "") -> Path:
    """The short fixture, with lines added under segments (index -> YAML line) and in its settings."""
    lines = (FIX / "short.yaml").read_text().split("\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("  - name:")]
    for k in sorted(extra or {}, reverse=True):
        lines.insert(at[k] + 1, f"    {(extra or {})[k]}")
    p = tmp_path / "ep.yaml"
    text = "\n".join(lines)
    if settings:
        text = text.replace("settings:\n", f"settings:\n  {settings}\n", 1)
    p.write_text(text)
    return p


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_damaged_music_bed_is_refused_naming_both_lengths(tmp_path, capsys):
    data = bytearray((ROOT / "assets" / "music" / "soft-pad.ogg").read_bytes())
    data[len(data) // 8 : 7 * len(data) // 8] = bytes(3 * len(data) // 4)  # its middle overwritten
    (tmp_path / "bed.ogg").write_bytes(bytes(data))
    p = episode(tmp_path, settings="music: bed.ogg")
    assert main(["render", "-q", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(tmp_path / "o"), str(p)]) == 2
    line = one_line(capsys)
    assert "settings.music: bed.ogg decodes to " in line and "s its header claims" in line, line
    assert not (tmp_path / "o" / "part9").exists()


def test_a_picture_of_extreme_shape_renders_within_bounded_memory(tmp_path):
    """A 4 x 11000 strip, covering the panel: only the part that covers it is scaled, so the render's
    largest process stays far under 1 GB (it climbed past 4 GB when the whole strip was scaled)."""
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((11000, 4, 3)) * 255).astype("uint8")).save(tmp_path / "strip.png")
    Image.fromarray((rng.random((3, 9000, 3)) * 255).astype("uint8")).save(tmp_path / "wide.png")
    p = episode(tmp_path, {0: "visual: strip.png", 1: "visual: {file: wide.png, fit: contain}"})
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    args = ["-q", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(tmp_path / "o"), str(p)]
    cli = [sys.executable, "-c", "from shortgen.cli import run; run()"]
    run = subprocess.run([*cli, "render", *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert max(peak_kb, before) < 1024 * 1024, peak_kb  # the largest process of the render, in kB
    assert (tmp_path / "o" / "part9" / "part9.mp4").stat().st_size > 0


def test_a_clip_whose_cover_fit_would_be_enormous_is_refused_in_one_line(tmp_path, capsys):
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=d=1:s=8x4998:r=30", "-pix_fmt", "yuv420p"]
    subprocess.run([*cmd, str(tmp_path / "thin.mp4")], check=True)
    p = episode(tmp_path, {1: "visual: thin.mp4"})
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    line = one_line(capsys)
    assert f"{p}:17:13: segments[1].visual: thin.mp4 is 8 x 4998 pixels: to cover the 888 x 600 box" in line, line
    assert "fit: contain" in line


def test_a_bad_flag_value_is_one_line_with_exit_2(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["render", "--rate", "fast", str(FIX / "short.yaml")])
    assert e.value.code == 2
    assert one_line(capsys) == "shortgen render: argument --rate: invalid int value: 'fast' (see 'shortgen render --help')"


def test_an_unclosed_quote_is_placed_where_it_opened(tmp_path, capsys):
    text = (FIX / "short.yaml").read_text()
    p = tmp_path / "ep.yaml"
    lines = text.split("\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith("title:"))
    lines[at] = 'title: "Five ML Concepts, never closed'
    p.write_text("\n".join(lines) + '\n  - name: Late\n    narration: "A quote, far below.\n')
    assert main(["check", str(p)]) == 2
    line = one_line(capsys)
    assert f"the quoted text that opens at line {at + 1}, column 8 runs to here: a quote left open?" in line, line


def test_a_non_utf8_article_is_refused_at_its_line_and_column(tmp_path, capsys):
    art = tmp_path / "article.txt"
    art.write_bytes("Five ML Concepts #6\n\n1. Caf\xe9 latte\n".encode("latin-1"))
    assert main(["import", str(art), "-o", str(tmp_path / "part6.yaml")]) == 2
    assert one_line(capsys) == f"shortgen: {art}:3:7: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_a_full_disk_while_joining_names_the_folder_and_its_free_space(tmp_path, capsys):
    """The output folder on a full file system (a tiny tmpfs, so root): one line, exit 7, naming the
    folder and what is free there; nothing half-written left."""
    import pytest

    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        code = main(["render", "-q", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(mnt), str(FIX / "short.yaml")])
        line = one_line(capsys)
        assert code == 7, (code, line)
        assert "disk full writing" in line and str(mnt) in line and "MB free there" in line, line
        assert not (mnt / "part9").exists()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# ---- pictures and clips of every family people have: a render, or one clear line ----------------


def _frame(video: Path, at_s: float) -> np.ndarray:
    """One decoded frame of a render, RGB."""
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-ss", str(at_s), "-i", str(video), "-frames:v", "1", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(1920, 1080, 3)


def _families(d: Path) -> dict[str, str | None]:
    """Files made here, each with what it must give: None for a render, else a phrase of its one line."""
    rng = np.random.default_rng(0)

    def noise(h: int, w: int) -> np.ndarray:
        return (rng.random((h, w, 3)) * 255).astype("uint8")

    Image.fromarray(noise(500, 1)).save(d / "one-pixel-wide.png")
    Image.fromarray(noise(2, 9000)).save(d / "wide-strip.png")
    Image.new("RGB", (12000, 9000), (30, 90, 160)).save(d / "photo-108mp.jpg", quality=30)
    Image.fromarray(noise(600, 800)).convert("CMYK").save(d / "cmyk.jpg")
    grey = np.linspace(0, 65535, 800)[None, :].repeat(600, 0).astype(np.uint16)
    Image.fromarray(grey).save(d / "grey16.png")
    frames = [Image.fromarray(noise(300, 400)) for _ in range(4)]
    frames[0].save(d / "animated.webp", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    hdr = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=d=1:s=360x640:r=30", "-c:v", "libx264",
           "-pix_fmt", "yuv420p10le", "-x264-params", "colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc"]  # fmt: skip
    subprocess.run([*hdr, str(d / "phone-hdr-10bit.mp4")], check=True)
    return {
        "one-pixel-wide.png": "1 x 500 pixels; too small to show",
        "wide-strip.png": None,
        "photo-108mp.jpg": "at most 50 megapixels",
        "cmyk.jpg": None,
        "grey16.png": None,
        "animated.webp": None,
        "animated.gif": None,
        "phone-hdr-10bit.mp4": None,
    }


def test_every_family_of_picture_and_clip_renders_or_is_refused_in_one_line(tmp_path, capsys):
    for name, phrase in _families(tmp_path).items():
        p = episode(tmp_path, {0: f"visual: {name}"})
        out = tmp_path / f"o-{name}"
        code = main(["render", "-q", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(out), str(p)])
        if phrase is None:
            assert code == 0, (name, capsys.readouterr().err)
            assert (out / "part9" / "part9.mp4").stat().st_size > 0
        else:
            assert code == 2, name
            line = one_line(capsys)
            assert f"segments[0].visual: {name}" in line and phrase in line, line
        capsys.readouterr()
    # the HLG phone clip was read through a tone-mapped SDR copy, made once for its content
    assert len(list((tmp_path / "c" / "sdr").glob("*.mp4"))) == 1
    # a 16-bit grey ramp shows as a ramp (Pillow's own conversion clipped it to white)
    f = _frame(tmp_path / "o-grey16.png" / "part9" / "part9.mp4", 2.5)
    row = f[950, 150:930].mean(axis=1)  # across the panel (y 880 to 1480), above the captions
    assert row[-1] - row[0] > 120 and np.all(np.diff(row[::40]) >= -3), row[::40].round()


def test_a_phone_photo_is_shown_upright(tmp_path):
    """A photo stored sideways with an EXIF orientation (as phones save them) shows as taken."""
    shown = Image.new("RGB", (1200, 800), (220, 30, 30))
    shown.paste((30, 30, 220), (600, 0, 1200, 800))  # red left, blue right, as the photographer saw it
    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90 degrees clockwise to display
    shown.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", exif=ex, quality=95)
    p = episode(tmp_path, {0: "visual: {file: phone.jpg, motion: none}"})
    assert main(["render", "-q", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(tmp_path / "o"), str(p)]) == 0
    f = _frame(tmp_path / "o" / "part9" / "part9.mp4", 2.5).astype(int)
    left, right = f[950, 200], f[950, 880]
    assert left[0] > left[2] + 80 and right[2] > right[0] + 80, (left, right)


def test_a_truncated_clip_is_refused_naming_both_lengths(tmp_path, capsys):
    whole = tmp_path / "whole.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=d=8:s=320x240:r=30", "-pix_fmt", "yuv420p",
                    "-movflags", "+faststart", str(whole)], check=True)  # fmt: skip
    data = whole.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # a copy that stopped half way
    p = episode(tmp_path, {1: "visual: cut.mp4"})
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    line = one_line(capsys)
    assert "segments[1].visual: cut.mp4 holds " in line and "of the 8.00 s its header claims" in line, line


def test_the_tone_map_command_reads_the_first_video_stream_into_bt709():
    from shortgen.picture import media

    args = media.tonemap_args("ffmpeg", "in.mov", "out.mp4")
    assert args[:1] == ["ffmpeg"] and args[-1] == "out.mp4" and args[args.index("-map") + 1] == "0:v:0"
    chain = args[args.index("-vf") + 1]
    assert chain.index("t=linear") < chain.index("tonemap=hable") < chain.index("t=bt709") and chain.endswith("format=yuv420p")


def test_allow_short_uses_a_damaged_file_as_it_decodes(tmp_path, capsys):
    """Each refusal of a file that decodes short can be overruled for that file: `allow_short: true`."""
    data = bytearray((ROOT / "assets" / "music" / "soft-pad.ogg").read_bytes())
    data[len(data) // 8 : 7 * len(data) // 8] = bytes(3 * len(data) // 4)
    (tmp_path / "bed.ogg").write_bytes(bytes(data))
    whole = tmp_path / "whole.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=d=8:s=320x240:r=30", "-pix_fmt", "yuv420p",
                    "-movflags", "+faststart", str(whole)], check=True)  # fmt: skip
    (tmp_path / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    p = episode(tmp_path, {1: "visual: {file: cut.mp4, allow_short: true}"}, settings="music: bed.ogg\n  music_allow_short: true")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 0, capsys.readouterr().err


def test_a_clip_with_a_damaged_middle_is_refused(tmp_path, capsys):
    whole = tmp_path / "whole.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=d=8:s=320x240:r=30", "-pix_fmt", "yuv420p",
                    str(whole)], check=True)  # fmt: skip
    data = bytearray(whole.read_bytes())
    data[len(data) // 3 : 2 * len(data) // 3] = bytes(len(data) // 3 + 1)[: len(data[len(data) // 3 : 2 * len(data) // 3])]
    (tmp_path / "zeroed.mp4").write_bytes(bytes(data))  # its packets all there, their pictures gone
    p = episode(tmp_path, {1: "visual: zeroed.mp4"})
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    line = one_line(capsys)
    assert "segments[1].visual: zeroed.mp4 has damaged frames (" in line and "allow_short: true" in line, line


def test_the_beds_level_in_the_pauses_holds_for_every_channel_layout(tmp_path):
    """Mono, stereo, 5.1 and 7.1 beds of the same sound sit at the same level in the pauses, within
    0.5 LU of the setting (a surround file is folded down with ITU's coefficients, LFE dropped)."""
    import json

    mono = tmp_path / "mono.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "anoisesrc=d=40:c=pink:r=48000:a=0.2", "-ac", "1",
                    str(mono)], check=True)  # fmt: skip
    layouts = {"stereo": "stereo|c0=c0|c1=c0", "51": "5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0",
               "71": "7.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0"}  # fmt: skip
    for name, pan in layouts.items():
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-i", str(mono), "-af", f"pan={pan}", str(tmp_path / f"{name}.wav")], check=True
        )
    for name in ("mono", *layouts):
        p = episode(tmp_path, settings=f"music: {name}.wav")
        out = tmp_path / f"o-{name}"
        assert main(["render", "-q", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(out), str(p)]) == 0
        m = json.loads((out / "part9" / "manifest.json").read_text())["music"]
        assert abs(m["level_in_pauses_lufs"] - m["target_in_pauses_lufs"]) <= 0.5, (name, m["level_in_pauses_lufs"])
