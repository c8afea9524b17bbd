"""Interrupted work: a render killed at any moment leaves either the whole old set of files or the whole
new one, every cache entry complete, and temporaries the next run removes; late errors come first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shortgen.cache import Cache
from shortgen.cli import main
from shortgen.publish import outputs
from shortgen.rendered import check_rendered
from shortgen.speech.narrate import EspeakEngine
from shortgen.video.encode import FfmpegEncoder, ffmpeg_exe

pytestmark = pytest.mark.e2e
FIX = Path(__file__).parent / "fixtures"
SET = set(outputs.file_names("part9").values())  # video, captions, pictures, manifest and the upload package


def _cli(script: Path, cache: Path, out: Path, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "SHORTGEN_CACHE_DIR": str(cache)}
    env.pop(outputs.FAULT_ENV, None)
    if fault:
        env[outputs.FAULT_ENV] = fault
    cmd = [
        sys.executable,
        "-c",
        "from shortgen.cli import run; run()",
        "render",
        "-q",
        "--jobs",
        "1",
        "--cache-dir",
        str(cache),
        "--output-dir",
        str(out),
        str(script),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)


def _assert_one_whole_set(d: Path, cache: Path, scripts: dict[str, str]) -> str:
    """The folder holds exactly one complete, consistent set; returns which script version made it."""
    names = {p.name for p in d.iterdir()}
    assert names == SET, names  # nothing missing, nothing half-written, no lock
    man = json.loads((d / "manifest.json").read_text())
    version = next(k for k, sha in scripts.items() if sha == man["inputs"]["script_sha256"])
    p = FfmpegEncoder().probe(d / "part9.mp4")
    assert p.frames == man["total_frames"]
    srt = (d / "part9.srt").read_text()
    last_end = max(seg["end_frame"] for seg in man["segments"])
    assert last_end == man["total_frames"] and srt.count("-->") == sum(1 for _ in srt.split("\n\n") if "-->" in _)
    # the upload package is of the same set: its duration and title are the manifest's
    upload = json.loads((d / "upload.json").read_text())
    assert upload["duration_s"] == round(man["total_frames"] / man["fps"], 3) and upload["title"] == man["title"]
    assert (d / "description.txt").read_text() == upload["description"]
    return version


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def first_render(tmp_path):
    """A private script, rendered once (the old set), and the edited script (the new one)."""
    script = tmp_path / "scripts" / "short.yaml"
    script.parent.mkdir()
    shutil.copy(FIX / "short.yaml", script)
    cache, out = tmp_path / "cache", tmp_path / "out"
    assert main(["render", "-q", "--cache-dir", str(cache), "--output-dir", str(out), str(script)]) == 0
    old = _sha(script)
    script.write_text(script.read_text().replace("a little at a time", "one small step at a time"))
    return {"script": script, "cache": cache, "out": out, "shas": {"old": old, "new": _sha(script)}}


@pytest.mark.parametrize(
    "point, expect",
    [
        ("join:after", "old"),  # the new video is made; nothing replaced yet
        ("publish:before", "old"),  # every new file is staged; still nothing replaced
        ("publish:after-exchange", "new"),  # the one step that replaces the set has happened
        ("publish:after", "new"),
    ],
)
def test_killed_at_any_point_the_folder_holds_one_whole_set(first_render, point, expect):
    r = first_render
    proc = _cli(r["script"], r["cache"], r["out"], fault=point)
    proc.wait(120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-500:]
    d = r["out"] / "part9"
    assert _assert_one_whole_set(d, r["cache"], r["shas"]) == expect
    assert not list(r["out"].glob(".*"))  # no staging or lock in the user's output folder
    rows, msgs = (
        check_rendered(d, FfmpegEncoder(), EspeakEngine(), Cache(r["cache"]), {"cache_dir": r["cache"]})
        if expect == "new"
        else ([], [])
    )
    assert all(row.ok for row in rows), msgs
    # the next run finishes the job and removes what the killed one left in the cache
    proc = _cli(r["script"], r["cache"], r["out"])
    assert proc.wait(120) == 0, proc.stderr.read().decode()[-500:]
    assert _assert_one_whole_set(d, r["cache"], r["shas"]) == "new"
    left = [p.name for p in (r["cache"] / "tmp").iterdir()] if (r["cache"] / "tmp").exists() else []
    assert not left, left


def test_sigkill_mid_encode_leaves_complete_entries_and_the_old_set(first_render):
    r = first_render
    # a cold cache, so that there is encoding to interrupt
    shutil.rmtree(r["cache"])
    proc = _cli(r["script"], r["cache"], r["out"])
    segs, tmp = r["cache"] / "segments", r["cache"] / "tmp"

    def state() -> tuple[bool, bool]:
        writing = tmp.exists() and any(p.suffix in (".h264", ".run") for p in tmp.iterdir())
        done = segs.exists() and any(p.suffix == ".h264" for p in segs.rglob("*"))
        return writing, done

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        writing, done = state()
        if writing and done:  # one video segment finished, another being written
            break
        time.sleep(0.003)
    os.killpg(proc.pid, signal.SIGKILL)  # the render and its children, mid-encode
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the render finished before it could be killed"
    entries = [p for p in segs.rglob("*") if p.suffix in (".h264", ".run", ".aac")]
    assert {p.suffix for p in entries} >= {".h264", ".run"}
    for entry in entries:  # every entry that exists is complete and decodes
        fmt = ["-f", "aac"] if entry.suffix == ".aac" else ["-f", "h264"]
        whole = subprocess.run([ffmpeg_exe(), "-v", "error", *fmt, "-i", str(entry), "-f", "null", "-"], capture_output=True)
        assert whole.returncode == 0 and not whole.stderr, (entry, whole.stderr[-300:])
    assert _assert_one_whole_set(r["out"] / "part9", r["cache"], r["shas"]) == "old"
    proc = _cli(r["script"], r["cache"], r["out"])
    assert proc.wait(120) == 0
    assert _assert_one_whole_set(r["out"] / "part9", r["cache"], r["shas"]) == "new"
    assert not list(tmp.iterdir())


def test_sigkill_during_speech_leaves_no_speaker_and_no_temporaries(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    proc = _cli(FIX / "short.yaml", cache, out)
    deadline = time.monotonic() + 30
    worker = None
    while time.monotonic() < deadline and worker is None and proc.poll() is None:
        # the worker starts before the script is loaded; speech begins once its job file is written
        speaking = any(p.name.endswith("-tts") for p in (cache / "tmp").glob("*")) if (cache / "tmp").exists() else False
        mine = ["pgrep", "-f", f"shortgen.speech.espeak_worker --standby wheel --for {proc.pid}"]
        kids = subprocess.run(mine, capture_output=True, text=True).stdout.split() if speaking else []
        worker = int(kids[0]) if kids else None
        time.sleep(0.002)
    assert worker, "no speech worker was seen speaking"
    os.kill(proc.pid, signal.SIGKILL)  # the render only: its worker must notice and go
    proc.wait()
    for _ in range(200):
        if subprocess.run(["kill", "-0", str(worker)], capture_output=True).returncode != 0:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the speech worker outlived its render")
    assert not (out / "part9").exists()
    assert main(["render", "-q", "--cache-dir", str(cache), "--output-dir", str(out), str(FIX / "short.yaml")]) == 0
    assert not list((cache / "tmp").iterdir())
    assert {p.name for p in (out / "part9").iterdir()} == SET


def test_a_late_error_is_found_before_anything_is_replaced(first_render, capsys):
    """A concept name that fits its card but not the thumbnail's list fails before any encoding."""
    r = first_render
    r["script"].write_text(
        r["script"].read_text().replace("name: Overfitting", "name: Overfitting Versus Underfitting In Models")
    )
    before = {p.name: p.stat().st_mtime_ns for p in (r["out"] / "part9").iterdir()}
    code = main(["render", "-q", "--cache-dir", str(r["cache"]), "--output-dir", str(r["out"]), str(r["script"])])
    assert code == 2
    err = capsys.readouterr().err
    assert "short.yaml:" in err and "segments[1].name" in err
    assert {p.name: p.stat().st_mtime_ns for p in (r["out"] / "part9").iterdir()} == before


def test_publish_without_exchange_recovers_after_a_crash_between_renames(tmp_path):
    """Where the file system cannot swap two folders: old folder aside, new one in; a crash between
    the two renames leaves no mixed set, and `recover` puts the old set back."""
    final, staging = tmp_path / "out" / "part9", tmp_path / "stage"
    final.mkdir(parents=True)
    (final / "a.txt").write_text("old")
    staging.mkdir()
    (staging / "a.txt").write_text("new")
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import os
os.environ["{outputs.FAULT_ENV}"] = "publish:between-renames"
from pathlib import Path
from shortgen.publish.outputs import publish
publish(Path({str(staging)!r}), Path({str(final)!r}), exchange=False)
""",
        ]
    ).returncode
    assert code == -signal.SIGKILL
    assert not final.exists()  # absent for an instant, never mixed
    outputs.recover(final)
    assert (final / "a.txt").read_text() == "old"
    outputs.publish(staging, final, exchange=False)
    assert (final / "a.txt").read_text() == "new" and not list(final.parent.glob(".*"))


def test_files_the_user_put_in_the_folder_survive_a_render(first_render):
    r = first_render
    note = r["out"] / "part9" / "notes.txt"
    note.write_text("mine")
    assert main(["render", "-q", "--cache-dir", str(r["cache"]), "--output-dir", str(r["out"]), str(r["script"])]) == 0
    assert note.read_text() == "mine"


def test_a_full_disk_while_speaking_is_reported_promptly_as_disk_full(tmp_path, capsys):
    """A cache on a full file system: exit 7 within seconds, naming the path (it once took two minutes
    and ended as 'timed out', exit 4). Needs a tiny tmpfs, so root."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        t0 = time.monotonic()
        code = main(["render", "-q", "--cache-dir", str(mnt), "--output-dir", str(tmp_path / "out"), str(FIX / "short.yaml")])
        took = time.monotonic() - t0
        err = capsys.readouterr().err
        assert code == 7 and took < 20, (code, took, err)
        assert "disk full" in err and str(mnt) in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "out" / "part9").exists()
        assert not [p for p in mnt.rglob("*") if p.is_file() and p.stat().st_size and p.suffix != ".lock"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_ctrl_c_mid_render_exits_130_keeps_the_old_set_and_cleans_up(first_render):
    r = first_render
    shutil.rmtree(r["cache"])  # cold: there is encoding to interrupt
    proc = _cli(r["script"], r["cache"], r["out"])
    segs = r["cache"] / "segments"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if segs.exists() and any(p.suffix == ".h264" for p in segs.rglob("*")):
            break
        time.sleep(0.003)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
    code = proc.wait(60)
    err = proc.stderr.read().decode()
    assert code == 130, (code, err[-500:])
    assert "interrupted" in err and "Traceback" not in err
    assert _assert_one_whole_set(r["out"] / "part9", r["cache"], r["shas"]) == "old"
    time.sleep(0.2)
    mine = f"shortgen.speech.espeak_worker.*({r['cache']}|--for {proc.pid})"  # a worker given its jobs, or standing by
    workers = subprocess.run(["pgrep", "-f", mine], capture_output=True).stdout
    assert not workers.strip()
    assert not [p for p in (r["cache"] / "tmp").iterdir()] if (r["cache"] / "tmp").exists() else True
