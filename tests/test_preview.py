"""`shortgen preview` in a real browser (headless Chromium, as the gallery's test): the page plays the
render, follows an edit of the script on disk, shows a broken script's error in the CLI's words and
clears it when fixed; the server serves nothing outside the output folder and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser import Browser, find_chromium

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def wait_for(page: Browser, expression: str, timeout_s: float = 60) -> object:
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = page.evaluate(expression)
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"never true: {expression}")


@pytest.fixture
def preview(tmp_path):
    shutil.copy(FIXTURES / "short.yaml", tmp_path / "short.yaml")
    args = ["preview", "short.yaml", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(tmp_path / "o")]
    proc = subprocess.Popen([sys.executable, "-c", "from shortgen.cli import run; run()", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("shortgen preview: http://127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
    yield line.split()[2], tmp_path / "short.yaml", proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_the_page_follows_edits_and_errors_of_the_script(preview):
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine: install Debian's `chromium` package (.ci/run does)")
    url, script, proc = preview
    page = Browser(exe)
    try:
        page.open(url)
        cues = "[...document.querySelectorAll('.cue')].map(c => c.textContent).join(' | ')"
        ready = "document.getElementById('video').readyState >= 1 && document.getElementById('video').duration"
        wait_for(page, f"({cues}).includes('a little at a time')")
        before = wait_for(page, ready)
        assert "/out/part9/thumbnail.jpg" in page.evaluate("document.getElementById('video').poster")
        # a narration made longer on disk: new cues and a longer video, without a reload
        script.write_text(script.read_text().replace("a little at a time.", "a little at a time, and then again and again."))
        t0 = time.monotonic()
        wait_for(page, f"({cues}).includes('and then again')")
        after = wait_for(page, f"({ready}) > {before} + 0.3 && document.getElementById('video').duration")
        took = time.monotonic() - t0
        assert after > before + 0.3 and took < 30, (before, after, took)
        # a broken script: its error on the page as on the command line, the last render still there
        script.write_text(script.read_text().replace("part: 9", "part: [9"))
        error = wait_for(page, "getComputedStyle(document.getElementById('error')).display !== 'none' "
                               "&& document.getElementById('error').textContent")  # fmt: skip
        assert "short.yaml:" in error and "invalid YAML" in error, error
        assert page.evaluate("document.getElementById('video').duration") == pytest.approx(after)
        script.write_text(script.read_text().replace("part: [9", "part: 9"))
        wait_for(page, "getComputedStyle(document.getElementById('error')).display === 'none'")
        assert not [e for e in page.errors if "favicon" not in e], page.errors
    finally:
        page.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0


def test_only_the_output_folders_files_are_served(preview):
    url, script, proc = preview
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and b'"parts": [{' not in urllib.request.urlopen(url + "state").read():
        time.sleep(0.2)
    ok = urllib.request.urlopen(url + "out/part9/part9.vtt").read()
    assert ok.startswith(b"WEBVTT")
    ranged = urllib.request.urlopen(urllib.request.Request(url + "out/part9/part9.mp4", headers={"Range": "bytes=4-11"}))
    assert ranged.status == 206 and ranged.headers["Content-Range"].startswith("bytes 4-11/")
    assert ranged.read()[:4] == b"ftyp"  # the MP4's first box's type, as a player seeking asks for it
    for bad in ("out/../short.yaml", "out/%2e%2e/short.yaml", "out//etc/passwd", "../short.yaml", "out/part9/../../short.yaml"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + bad)
        assert e.value.code == 404, bad
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert proc.stderr is not None and proc.stderr.read() == ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_preview_started_in_the_background_stops_on_ctrl_c_or_sigterm(tmp_path, sig):
    """A shell starts a background job with SIGINT ignored, and Python keeps it ignored unless told: the
    preview sets its own handlers, so it stops either way, with exit 0 and nothing left running."""
    shutil.copy(FIXTURES / "short.yaml", tmp_path / "short.yaml")
    # three times, each from an empty cache: the signal lands mid-render, and the kernel may hand it to any
    # thread (the main thread's hour-long sleep then never woke: one stop in five hung)
    for k in range(3):
        args = ["preview", "short.yaml", "--cache-dir", str(tmp_path / f"c{k}"), "--output-dir", str(tmp_path / "o")]
        proc = subprocess.Popen([sys.executable, "-c", "from shortgen.cli import run; run()", *args], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
        try:
            assert (proc.stdout.readline() if proc.stdout else "").startswith("shortgen preview: http://127.0.0.1:")
            proc.send_signal(sig)
            assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not _running_under(tmp_path / f"c{k}")  # its encoders and speech worker gone with it


def _running_under(folder: Path, wait_s: float = 3.0) -> list[str]:
    """Command lines of processes still naming `folder` (Linux /proc), after up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmd:
                found.append(cmd)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
