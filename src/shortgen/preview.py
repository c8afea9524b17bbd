"""`shortgen preview`: the short beside its script, rendered again whenever an input changes.

A page on 127.0.0.1 plays the rendered video with its captions and shows the plan beside it (each
segment's length against its budget, its caption cues; a click seeks there). A watcher (watchfiles)
follows the script, its series file and every file they name; a change wakes one renderer thread, which
renders incrementally (the cache does the work) and tells the page over server-sent events. Renders asked
for while one runs are coalesced: the newest state of the files wins. An error shows on the page as on the
command line, the last good render still playing. Only the page, its state and the output folder's files
are served; the output folder is replaced as one set by the render, so nothing half-written is served."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
from pathlib import Path
from typing import NoReturn

from .cache import Cache
from .errors import ShortgenError, describe

PAGE = Path(__file__).with_name("preview.html")
TYPES = {".mp4": "video/mp4", ".vtt": "text/vtt", ".jpg": "image/jpeg", ".png": "image/png", ".json": "application/json"}


class Preview:
    """The renders and their state; `watch` and `render_loop` run in threads until `stop` is set."""

    def __init__(self, targets: list[Path], layer: dict, engine, encoder):
        self.targets, self.layer, self.engine, self.encoder = targets, layer, engine, encoder
        self.changed = threading.Condition()
        self.state: dict = {"version": 0, "error": None, "rendering": False, "parts": []}
        self.wanted = threading.Event()
        self.stop = threading.Event()
        self.files: set[Path] = {p.resolve() for p in targets}
        self.out_dir: Path | None = None
        self.renderer: threading.Thread | None = None  # the render loop's thread, once served
        self.wanted.set()  # the first render

    # ---- rendering --------------------------------------------------------------------------------

    def render_loop(self) -> None:
        while not self.stop.is_set():
            if not self.wanted.wait(0.2):
                continue
            self.wanted.clear()
            self._publish(rendering=True)
            try:
                parts = [self._render(t) for t in self.targets]
                self._publish(rendering=False, error=None, parts=parts)
            except ShortgenError as e:
                self._publish(rendering=False, error=describe(e))
            except OSError as e:
                self._publish(rendering=False, error=describe(e))

    def _render(self, path: Path) -> dict:
        from .render import render_episode
        from .script.load import load_episode

        ep = load_episode(path, self.layer)
        self.files = self.files | _inputs(ep)  # a new set: the watcher thread may be reading the old one
        result = render_episode(ep, self.engine, self.encoder, Cache(ep.settings.cache_dir))
        self.out_dir = Path(ep.settings.output_dir).resolve()
        return _part(result, self.out_dir, ep.settings.segment_budget_frames)

    def _publish(self, **changes) -> None:
        with self.changed:
            self.state = {**self.state, **changes, "version": self.state["version"] + 1}
            self.changed.notify_all()

    # ---- watching ---------------------------------------------------------------------------------

    def watch(self) -> None:
        """Follow the directories of every input; restart when the inputs name new directories."""
        import watchfiles

        while not self.stop.is_set():
            dirs = sorted({str(p.parent) for p in self.files if p.parent.is_dir()})
            for changes in watchfiles.watch(*dirs, stop_event=self.stop, yield_on_timeout=True, rust_timeout=500,
                                            debounce=150, raise_interrupt=False):  # fmt: skip
                if any(Path(p).resolve() in self.files for _, p in changes):
                    self.wanted.set()
                if sorted({str(p.parent) for p in self.files if p.parent.is_dir()}) != dirs:
                    break  # a new input in another folder: watch that too


def _inputs(ep) -> set[Path]:
    """Every file a render of this episode reads that a creator edits: the script, its series file, the
    visuals, takes, music, sting, background and fonts it names (a generated visual is its script)."""
    from .script.load import find_series_for

    s = ep.settings
    named = [ep.path, find_series_for(ep.path), s.music, s.sting, s.background, *s.fonts]
    for seg in ep.segments:
        named += [seg.recording, seg.visual.media.path if seg.visual and not seg.visual.generated else None]
    return {Path(p).resolve() for p in named if p and str(p).lower() != "none" and Path(p).is_file()}


def _part(result, out_dir: Path, budget: int) -> dict:
    """What the page shows of a rendered part: its files (as URLs that change with every render) and its
    segments, with their lengths against the budget and their cues, in seconds."""
    plan, fps = result.plan, result.plan.fps
    stamp = result.files["video"].stat().st_mtime_ns

    def url(role: str) -> str:
        return f"/out/{result.files[role].resolve().relative_to(out_dir).as_posix()}?v={stamp}"

    segments = [
        {
            "name": seg.name,
            "kind": seg.kind,
            "number": seg.number,
            "start": seg.start / fps,
            "end": seg.end / fps,
            "budget": budget / fps if seg.kind == "concept" else None,
            "cues": [{"start": c.start / fps, "end": c.end / fps, "text": c.text} for c in seg.cues],
        }
        for seg in plan.segments
    ]
    return {"slug": result.episode.slug, "video": url("video"), "vtt": url("vtt"), "thumbnail": url("thumbnail"),
            "seconds": plan.total_frames / fps, "segments": segments}  # fmt: skip


# ---- serving --------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """The page, its state, its events and the output folder's files; nothing else."""

    preview: Preview  # set by `handler`

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        route = self.path.split("?")[0]
        if route == "/":
            self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
        elif route == "/state":
            self._send(200, "application/json", json.dumps(self.preview.state).encode())
        elif route == "/events":
            self._events()
        elif route.startswith("/out/"):
            self._file(route[len("/out/") :])
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        """Server-sent events: the state's version whenever it changes, a comment every 15 s."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        seen = -1
        try:
            while not self.preview.stop.is_set():
                with self.preview.changed:
                    if self.preview.state["version"] == seen:
                        self.preview.changed.wait(15)
                    version = self.preview.state["version"]
                self.wfile.write(f"data: {version}\n\n".encode() if version != seen else b": still here\n\n")
                self.wfile.flush()
                seen = version
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _file(self, rel: str) -> None:
        """A file of the output folder, with byte ranges (a browser seeks a video by asking for them);
        anything outside it is not found, whatever the path says."""
        from urllib.parse import unquote

        root = self.preview.out_dir
        path = (root / unquote(rel)).resolve() if root else None
        if root is None or path is None or not path.is_relative_to(root) or not path.is_file():
            self._send(404, "text/plain", b"not found")
            return
        kind = TYPES.get(path.suffix, "application/octet-stream")
        with open(path, "rb") as f:  # one handle: a render that replaces the file meanwhile does not mix sets
            size = os.fstat(f.fileno()).st_size
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
            if not m or not (m.group(1) or m.group(2)):
                self._send(200, kind, f.read())
                return
            a, b = m.groups()
            start, end = (int(a), min(int(b or size - 1), size - 1)) if a else (max(0, size - int(b)), size - 1)
            if start > end:
                self._send(416, "text/plain", b"range not satisfiable")
                return
            f.seek(start)
            self.send_response(206)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            left = end - start + 1
            while left > 0:  # only the bytes asked for, read as they are sent
                chunk = f.read(min(1 << 20, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def handler(preview: Preview) -> type:
    """The request handler class for this preview."""
    return type("Handler", (_Handler,), {"preview": preview})


def serve(preview: Preview, port: int = 0):
    """The server on 127.0.0.1 (`port`, or a free one), its threads started: (server, its address)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler(preview))
    httpd.daemon_threads = True
    for work in (httpd.serve_forever, preview.render_loop, preview.watch):
        t = threading.Thread(target=work, daemon=True, name=f"preview-{work.__name__}")
        t.start()
        if work == preview.render_loop:
            preview.renderer = t
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def close(preview: Preview, httpd) -> bool:
    """Stop serving and rendering. Returns whether no render is left running: one in flight finishes
    its lanes' work before the process may exit (their pools' threads are joined at exit), which on a
    busy machine took longer than a Ctrl-C should."""
    preview.stop.set()
    with preview.changed:
        preview.changed.notify_all()
    httpd.shutdown()
    httpd.server_close()
    renderer = preview.renderer
    if renderer is not None:
        renderer.join(0.5)  # idle, it notices `stop` within 0.2 s
    return renderer is None or not renderer.is_alive()


def exit_now(code: int) -> NoReturn:
    """End the process at once, a render in flight left as a killed one is: its cache writes are
    temporaries swept by the next run, and the output set is replaced only whole. Its encoders and
    speech worker are asked to stop first (they would end anyway when their pipes close)."""
    import signal
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for pid in child_pids(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    os._exit(code)


def child_pids(pid: int) -> list[int]:
    """A process's children, from every one of its threads (Linux: /proc; elsewhere none are known)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out
