"""Stage 6: the files a user gets. Seconds appear here, at the edge, converted from frames once."""

from __future__ import annotations

import ctypes
import errno
import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

from PIL import Image

from ..cache import atomic_write_bytes, owner, owner_alive
from ..plan import Plan, frames_to_ms


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


def jpeg_bytes(image: Image.Image, max_bytes: int = 2_000_000) -> bytes:
    """The picture as a JPEG of at most `max_bytes`, at the best quality that fits."""
    for q in (92, 85, 75, 60):
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=q, optimize=True)
        if buf.tell() <= max_bytes:
            break
    return buf.getvalue()


def save_png(image: Image.Image, path: Path) -> None:
    atomic_write_bytes(path, png_bytes(image))


def png_bytes(image: Image.Image, level: int = 3) -> bytes:
    """An RGB picture as a PNG, every row but the first filtered by "Up" (the row above subtracted). Pillow
    tries all five filters on each row and keeps the best: 0.12 s of CPU for Part 4's storyboard, against
    0.05 s here (numpy, then zlib, which let other threads run), in a file 3% larger (346 kB)."""
    import struct
    import zlib

    import numpy as np

    rows = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    h, w = rows.shape[:2]
    rows = rows.reshape(h, w * 3)
    data = np.empty((h, w * 3 + 1), np.uint8)
    data[:, 0] = 2  # Up
    data[0, 0] = 0  # the first row as it is
    data[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=data[1:, 1:])  # modulo 256, as PNG's filters are
    z = zlib.compress(data.data, level)  # the array's own buffer, not a copy

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    step = 1 << 18  # IDAT chunks of 256 kB, as decoders that stream expect
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))]
        + [chunk(b"IDAT", z[i : i + step]) for i in range(0, len(z), step)]
        + [chunk(b"IEND", b"")]
    )


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def episode_manifest(
    plan: Plan, settings, probe, loudness: tuple[float, float], fits: list, inputs: dict, looks: dict | None = None, **keys: str
) -> dict:
    """The manifest of a rendered episode: the plan's spans, what the file probes as, its measured
    loudness, the rate fits, the inputs' hashes, each picture's look (its scrims and the contrast its
    text gets) and the keys that say whether it is up to date."""
    from .. import __version__

    lufs, tp = loudness
    return manifest(
        plan,
        looks=looks,
        tool={"name": "shortgen", "version": __version__},
        video={
            "codec": probe.codec,
            "profile": probe.profile,
            "pix_fmt": probe.pix_fmt,
            "colour": probe.colour,
            "preset": settings.preset,
            "crf": settings.crf,
            "frames": probe.frames,
            "fps": float(probe.fps),
            "width": probe.width,
            "height": probe.height,
        },
        audio={
            "codec": probe.audio,
            "sample_rate": probe.audio_rate,
            "channels": probe.audio_channels,
            "bitrate": settings.audio_bitrate,
        },
        loudness={
            "integrated_lufs": lufs,
            "true_peak_dbtp": tp,
            "target_lufs": settings.loudness_lufs,
            "ceiling_dbtp": settings.true_peak_dbtp,
            "meter": "BS.1770-4: integrated over the mastered narration; true peak by ffmpeg ebur128 on each encoded AAC chunk",
        },
        fits=[f.__dict__ for f in fits],
        budget_s=settings.segment_budget_frames / settings.fps,
        inputs=inputs,
        **keys,
    )


def manifest(plan: Plan, looks: dict | None = None, **extra) -> dict:
    fps = plan.fps
    looks = looks or {}
    return {
        "series": plan.series,
        "part": plan.part,
        "title": plan.title,
        "fps": fps,
        "width": plan.width,
        "height": plan.height,
        "total_frames": plan.total_frames,
        "duration_s": round(plan.total_frames / fps, 3),
        "segments": [
            {
                "index": s.index,
                "kind": s.kind,
                "name": s.name,
                "number": s.number,
                "start_frame": s.start,
                "end_frame": s.end,
                "frames": s.frames,
                "duration_s": round(s.frames / fps, 3),
                "rate_wpm": s.rate,
                "source": s.source,
                **(_visual(s.visual) if s.visual else {}),
                **({"look": looks[s.index]} if s.index in looks else {}),
            }
            for s in plan.segments
        ],
        **({"background": _visual(plan.background)["visual"]} if plan.background else {}),
        **extra,
    }


def _visual(v) -> dict:
    out = {"file": v.file, "sha256": v.digest, "kind": v.kind, "fit": v.fit, "motion": v.motion}
    if v.kind == "clip":
        out.update(start_frame=v.start, clip_end=v.clip_end, fps=round(v.fps_num / v.fps_den, 3))
    return {"visual": out}


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


# ---- one set of files, replaced at once ---------------------------------------------------------

RENAME_EXCHANGE = 2  # renameat2 flag (Linux 3.15+): swap two paths atomically
FAULT_ENV = "SHORTGEN_FAULT"  # tests name a point here to have the render SIGKILL itself at it


def fault(point: str) -> None:
    """Die here, as kill -9 would, if the tests asked for it (a failpoint; a no-op otherwise)."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories; False where the system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _previous(final: Path) -> Path:
    return final.with_name(f".{final.name}.previous")


def recover(final: Path) -> None:
    """Finish what a publish killed half-way left (the two-rename fallback): put the previous set back
    where the new one never arrived, and drop it where the new one did."""
    prev = _previous(final)
    if prev.is_dir():
        if final.exists():
            shutil.rmtree(prev, ignore_errors=True)
        else:
            os.replace(prev, final)


def publish(staging: Path, final: Path, exchange: bool = True) -> None:
    """Put the complete folder `staging` in the place of `final` in one step: a reader of `final` sees
    the whole old set or the whole new one, never a mix, whenever the process dies.

    With an existing `final` the two folders are swapped by one renameat2(RENAME_EXCHANGE), and the old
    set, now at `staging`, is deleted. Where the file system cannot exchange, the
    old folder is renamed aside and the new one into place: for that instant `final` is absent, never
    mixed, and `recover` completes the step after a crash."""
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final)
    if not final.exists():
        try:
            os.rename(staging, final)
            fault("publish:after")
            return
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if exchange and _exchange(staging, final):
        fault("publish:after-exchange")
        old = staging
    else:
        prev = _previous(final)
        os.rename(final, prev)
        fault("publish:between-renames")
        os.rename(staging, final)
        old = prev
    fault("publish:after")
    shutil.rmtree(old, ignore_errors=True)


def staging_dir(tmp_dir: Path, out_dir: Path) -> Path:
    """A private folder for the new set, on the output's file system (the set moves in by rename): in
    `tmp_dir` (the cache's tmp/, swept when its process is gone) where it shares that file system, else
    a hidden folder beside the output, cleared by the next render of it (see `clear_staging`)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    try:
        same = os.stat(tmp_dir).st_dev == os.stat(out_dir.parent).st_dev
    except OSError:
        same = False
    name = f"{owner()}-{time.monotonic_ns()}"
    path = tmp_dir / f"{name}-staging-{out_dir.name}" if same else out_dir.parent / f".{out_dir.name}.staging-{name}"
    path.mkdir()
    return path


def clear_staging(out_dir: Path) -> None:
    """Staging folders beside the output left by renders that were killed (the caller holds the lock)."""
    for p in out_dir.parent.glob(f".{out_dir.name}.staging-*"):
        tag = p.name.rsplit(".staging-", 1)[1].split("-")[0]
        if tag == owner() or not owner_alive(tag):
            shutil.rmtree(p, ignore_errors=True)


def file_names(slug: str) -> dict[str, str]:
    """Every file a render writes into an episode's folder, by role: the set that is replaced at once."""
    return {
        "video": f"{slug}.mp4",
        "srt": f"{slug}.srt",
        "vtt": f"{slug}.vtt",
        "thumbnail": "thumbnail.jpg",
        "cover": "cover.jpg",
        "manifest": "manifest.json",
        "description": "description.txt",  # the upload package (package.py)
        "upload": "upload.json",
        "storyboard": "storyboard.png",
    }


def carry_over(old: Path, new: Path, keep: set[str], ours: set[str]) -> None:
    """Hard-link (else copy) files of `old` into `new`: our unchanged outputs (`keep`), and anything in
    the folder that shortgen did not write, so swapping the folders loses nothing of the user's."""
    try:
        entries = list(os.scandir(old))
    except OSError:
        return
    for e in entries:
        target = new / e.name
        if target.exists() or (e.name in ours and e.name not in keep):
            continue  # the new set has its own
        if e.is_dir(follow_symlinks=False):
            shutil.copytree(e.path, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(e.path, target)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
