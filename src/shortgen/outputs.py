"""Stage 6: the files a user gets. Seconds appear here, at the edge, converted from frames once."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from .cache import atomic_write_bytes
from .plan import Plan, frames_to_ms


def cues(plan: Plan) -> list[tuple[int, int, str]]:
    """(start frame, end frame, text) of every caption cue, in order: the same cues that are burned in."""
    return [(c.start, c.end, c.text) for seg in plan.segments for c in seg.cues]


def _stamp(ms: int, sep: str) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(plan: Plan) -> str:
    out = []
    for i, (a, b, text) in enumerate(cues(plan), 1):
        out.append(f"{i}\n{_stamp(frames_to_ms(a, plan.fps), ',')} --> {_stamp(frames_to_ms(b, plan.fps), ',')}\n{text}\n")
    return "\n".join(out)


def vtt(plan: Plan) -> str:
    out = ["WEBVTT", ""]
    for a, b, text in cues(plan):
        out.append(f"{_stamp(frames_to_ms(a, plan.fps), '.')} --> {_stamp(frames_to_ms(b, plan.fps), '.')}\n{text}\n")
    return "\n".join(out)


def parse_srt(text: str) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of each cue; used by `check` and the tests to read back what we wrote."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) < 3:
            continue
        a, b = (x.strip() for x in lines[1].split("-->"))
        out.append((_ms(a), _ms(b), " ".join(lines[2:])))
    return out


def _ms(stamp: str) -> int:
    hms, ms = stamp.replace(",", ".").split(".")
    h, m, s = (int(x) for x in hms.split(":"))
    return ((h * 60 + m) * 60 + s) * 1000 + int(ms)


def save_jpeg(image: Image.Image, path: Path, max_bytes: int = 2_000_000) -> None:
    for q in (92, 85, 75, 60):
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=q, optimize=True)
        if buf.tell() <= max_bytes:
            break
    atomic_write_bytes(path, buf.getvalue())


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def manifest(plan: Plan, **extra) -> dict:
    fps = plan.fps
    return {
        "series": plan.series, "part": plan.part, "title": plan.title, "fps": fps,
        "width": plan.width, "height": plan.height, "total_frames": plan.total_frames,
        "duration_s": round(plan.total_frames / fps, 3),
        "segments": [{"index": s.index, "kind": s.kind, "name": s.name, "number": s.number,
                      "start_frame": s.start, "end_frame": s.end, "frames": s.frames,
                      "duration_s": round(s.frames / fps, 3), "rate_wpm": s.rate, "source": s.source}
                     for s in plan.segments],
        **extra,
    }


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")
