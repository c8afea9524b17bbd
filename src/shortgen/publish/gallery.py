"""`shortgen gallery`: one static page, `output/index.html`, to review a series: every rendered part with
its video (captions as a <track>), thumbnail, chapters, durations, loudness and check status. No build
step and nothing fetched: the page, its style and its script are one file; the captions are inlined as
data: URLs too, because Chromium refuses a <track> file from a file:// page (each file is its own origin),
so the page plays the same from the file system or any static web server.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..cache import atomic_write_bytes
from ..errors import NothingRenderedError
from ..video import mp4
from .outputs import file_names, read_manifest

PAGE = "index.html"


@dataclass
class Part:
    folder: Path
    manifest: dict
    upload: dict
    codecs: str
    status: tuple[bool, str]  # (ok, what the check said)


def parts(out_dir: Path, check: Callable[[Path], tuple[bool, str]] | None = None) -> list[Part]:
    """The rendered parts in `out_dir` (folders with a manifest, not a render's hidden staging), in part order."""
    found = []
    for d in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        m = read_manifest(d / "manifest.json")
        if not m or "segments" not in m:
            continue
        names = file_names(d.name)
        video = d / names["video"]
        if not video.is_file():
            continue
        try:
            codecs = mp4.codecs(video)
        except (OSError, ValueError, IndexError):
            codecs = ""
        upload = read_manifest(d / names["upload"])
        status = check(d) if check else _budget_status(m)
        found.append(Part(d, m, upload, codecs, status))
    return sorted(found, key=lambda p: (p.manifest.get("series", ""), p.manifest.get("part", 0), p.folder.name))


def _budget_status(m: dict) -> tuple[bool, str]:
    """Without a full check: each concept held to the budget, from the manifest."""
    budget = m.get("budget_s", 30.0)
    over = [s for s in m["segments"] if s.get("kind") == "concept" and s.get("duration_s", 0) > budget]
    if over:
        return False, "over budget: " + ", ".join(f"{s['name']} {s['duration_s']:.2f} s" for s in over)
    return True, f"every segment within {budget:g} s (from the manifest)"


def _url(folder: Path, name: str) -> str:
    return f"{quote(folder.name)}/{quote(name)}"


def _data_url(path: Path, mime: str) -> str:
    try:
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    except OSError:
        return ""


def _part_html(p: Part) -> str:
    m, names = p.manifest, file_names(p.folder.name)
    fps = m.get("fps", 30)
    title = html.escape(m.get("title") or f"Part {m.get('part')}")
    dur = m.get("duration_s", 0.0)
    loud = m.get("loudness", {})
    ok, said = p.status
    src_type = f'video/mp4; codecs="{p.codecs}"' if p.codecs else "video/mp4"
    vtt = _data_url(p.folder / names["vtt"], "text/vtt")
    chapters = p.upload.get("chapters", [])
    rows = "".join(
        f"<tr><td>{html.escape(s['name'] if s.get('kind') == 'concept' else s.get('kind', ''))}</td>"
        f"<td class=num>{s['start_frame'] / fps:.2f}</td><td class=num>{s['duration_s']:.2f} s</td></tr>"
        for s in m.get("segments", [])
    )
    chap = "".join(
        f'<li><a href="#" data-seek="{c["seconds"]}">{html.escape(c["time"])}</a> {html.escape(c["title"])}</li>'
        for c in chapters
    )
    return f"""
<section class=part id="{html.escape(p.folder.name)}">
  <h2>{title}</h2>
  <div class=row>
    <video controls preload=metadata playsinline width=270 height=480 poster="{_url(p.folder, names["thumbnail"])}">
      <source src="{_url(p.folder, names["video"])}" type='{html.escape(src_type)}'>
      <track kind=captions srclang=en label="Captions" default src="{vtt}">
    </video>
    <div class=info>
      <p class="status {"ok" if ok else "bad"}">{"&#10003; check passed" if ok else "&#10007; check failed"}:
         {html.escape(said)}</p>
      <p>{dur:.2f} s, {m.get("total_frames", 0)} frames at {fps} fps; loudness {loud.get("integrated_lufs", 0):.1f} LUFS,
         true peak {loud.get("true_peak_dbtp", 0):.1f} dBTP</p>
      <img class=thumb src="{_url(p.folder, names["thumbnail"])}" alt="thumbnail of {title}" width=192 height=108>
      <h3>Chapters</h3>
      <ol class=chapters>{chap or "<li>none (see upload.json)</li>"}</ol>
      <h3>Segments</h3>
      <table><tr><th>segment</th><th>start (s)</th><th>duration</th></tr>{rows}</table>
      <p class=files><a href="{_url(p.folder, names["video"])}">video</a> ·
        <a href="{_url(p.folder, names["vtt"])}">captions</a> ·
        <a href="{_url(p.folder, names["description"])}">description</a> ·
        <a href="{_url(p.folder, names["upload"])}">upload.json</a> ·
        <a href="{_url(p.folder, names["storyboard"])}">storyboard</a></p>
    </div>
  </div>
</section>"""


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 24px;
       background: #111318; color: #e8e8ec; }
h1 { font-size: 26px; } h2 { font-size: 20px; color: #ffd23f; margin-bottom: 8px; }
h3 { font-size: 15px; margin: 14px 0 4px; }
.part { border-top: 1px solid #333; padding: 18px 0; }
.row { display: flex; gap: 24px; flex-wrap: wrap; }
video { background: #000; border-radius: 6px; }
.info { flex: 1; min-width: 300px; }
.status.ok { color: #7ddc7d; } .status.bad { color: #ff7070; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
a { color: #8fc3ff; } .thumb { border-radius: 4px; }
"""

_SCRIPT = """
document.querySelectorAll('a[data-seek]').forEach(function (a) {
  a.addEventListener('click', function (e) {
    e.preventDefault();
    var v = a.closest('.part').querySelector('video');
    v.currentTime = Number(a.dataset.seek);
    v.play();
  });
});
"""


def render_page(found: list[Part], title: str) -> str:
    body = "".join(_part_html(p) for p in found) or "<p>No rendered parts yet: run <code>shortgen render</code>.</p>"
    return f"""<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<link rel=icon href="data:,">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(found)} parts. Made by <code>shortgen gallery</code>; plays from the file system or any static web server.</p>
{body}
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write(out_dir: Path, check: Callable[[Path], tuple[bool, str]] | None = None) -> Path:
    """Write `out_dir/index.html` (by atomic rename) and return its path."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise NothingRenderedError(f"{out_dir}: no such folder: render a part first")
    found = parts(out_dir, check)
    series = sorted({p.manifest.get("series", "") for p in found} - {""})
    title = " / ".join(series) or "shortgen gallery"
    page = out_dir / PAGE
    atomic_write_bytes(page, render_page(found, title).encode("utf-8"))
    return page
