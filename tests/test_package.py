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
