"""It installs like a real tool: a built wheel carries everything a render needs (fonts included) and
renders the short fixture from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def test_the_wheel_renders_from_outside_the_checkout(tmp_path):
    dist, work = tmp_path / "dist", tmp_path / "elsewhere"
    src = tmp_path / "src"  # a copy: building must not write into the checkout
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "output", "*.egg-info", "build", "__pycache__", ".pytest_cache")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], capture_output=True, text=True
    )
    if built.returncode and ("Could not find a version" in built.stderr or "connection" in built.stderr.lower()):
        pytest.skip(f"cannot fetch the build backend here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr[-800:]
    (wheel,) = dist.glob("shortgen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for font in ("Roboto-Black.ttf", "Roboto-Bold.ttf", "Roboto-Regular.ttf", "NotoEmoji.ttf", "DejaVuSans-Bold.ttf"):
        assert f"shortgen/assets/fonts/{font}" in names
    assert any(n.endswith("LICENSE-Roboto.txt") for n in names)
    # a fresh venv outside the checkout, with the wheel and its dependencies from the registry
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    got = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True)
    if got.returncode and ("Could not find a version" in got.stderr or "connection" in got.stderr.lower()):
        pytest.skip(f"cannot fetch the dependencies here: {got.stderr.strip().splitlines()[-1]}")
    assert got.returncode == 0, got.stderr[-800:]
    work.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "short.yaml", work / "short.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["SHORTGEN_CACHE_DIR"] = str(tmp_path / "cache")
    where = subprocess.run([str(py), "-c", "import shortgen.settings as s; print(s.__file__, s.ASSETS)"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout  # fmt: skip
    assert where.startswith(str(venv)) and str(ROOT) not in where  # the wheel's code and fonts
    run = subprocess.run([str(venv / "bin" / "shortgen"), "render", "-q", "short.yaml"],
                         capture_output=True, text=True, cwd=work, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-800:]
    assert {p.name for p in (work / "output" / "part9").iterdir()} == {
        "part9.mp4",
        "part9.srt",
        "part9.vtt",
        "thumbnail.jpg",
        "cover.jpg",
        "manifest.json",
        "description.txt",
        "upload.json",
        "storyboard.png",
    }


def test_the_storyboards_png_is_its_pixels_to_pillow_and_to_ffmpeg(tmp_path):
    """The storyboard's PNG is written here (a filter a row, zlib), not by Pillow: it must read back as
    exactly its pixels, by Pillow (which checks every chunk's CRC) and by ffmpeg, at any size or mode."""
    import io
    import struct
    import zlib

    import numpy as np
    from PIL import Image

    from shortgen.publish.outputs import png_bytes
    from shortgen.video.encode import ffmpeg_exe

    rng = np.random.default_rng(4)
    ramp = np.broadcast_to(np.arange(2230, dtype=np.uint8)[None, :, None], (300, 2230, 3))
    pictures = [
        Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)),  # odd, and noise: rows wrap mod 256
        Image.fromarray((ramp + rng.integers(0, 3, ramp.shape)).astype(np.uint8)),  # several IDAT chunks' worth
        Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)).convert("RGBA"),
        Image.new("RGB", (1, 1), (5, 6, 7)),
    ]
    for im in pictures:
        want = np.asarray(im.convert("RGB"))
        data = png_bytes(im)
        with Image.open(io.BytesIO(data)) as back:
            assert back.format == "PNG" and back.mode == "RGB" and np.array_equal(np.asarray(back), want)
        path = tmp_path / "sheet.png"
        path.write_bytes(data)
        raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             capture_output=True, check=True).stdout  # fmt: skip
        assert raw == want.tobytes()
        # its chunks: IHDR first, IDATs of at most 256 kB, IEND last, each CRC right
        i, kinds = 8, []
        while i < len(data):
            (n,) = struct.unpack(">I", data[i : i + 4])
            kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
            assert struct.unpack(">I", data[i + 8 + n : i + 12 + n])[0] == zlib.crc32(kind + body)
            assert kind != b"IDAT" or n <= 1 << 18
            kinds.append(kind)
            i += 12 + n
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}


def test_a_storyboard_tile_is_its_frame_averaged_down():
    """A tile is each plane averaged over its blocks (a whole factor at 1080x1920: Pillow's reduce), then
    turned into RGB: within a level of the exact block means, at any frame size."""
    import numpy as np

    from shortgen.picture import storyboard

    rng = np.random.default_rng(5)
    for w, h in ((1080, 1920), (720, 1280)):
        y = rng.integers(16, 236, (h, w), dtype=np.uint8)
        c = rng.integers(16, 241, (2, h // 2, w // 2), dtype=np.uint8)
        tile = storyboard.yuv420_to_tile(y.tobytes() + c.tobytes(), w, h).astype(np.float64)
        assert tile.shape == (storyboard.TILE_H, storyboard.TILE_W, 3)
        if w == 1080:  # whole blocks: compare with their exact means
            means = [p.reshape(storyboard.TILE_H, p.shape[0] // storyboard.TILE_H, storyboard.TILE_W, -1).mean(axis=(1, 3))
                     for p in (y.astype(np.float64), *c.astype(np.float64))]  # fmt: skip
            yy, u, v = 1.164384 * (means[0] - 16), means[1] - 128, means[2] - 128
            rgb = np.stack([yy + 1.792741 * v, yy - 0.213249 * u - 0.532909 * v, yy + 2.112402 * u], axis=-1)
            assert np.abs(tile - np.clip(rgb, 0, 255)).max() <= 5.0  # a level in Y, Cb and Cr, through the matrix
