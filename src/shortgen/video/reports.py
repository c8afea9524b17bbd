"""ffmpeg's reports read: what `ffmpeg -i` says of a file (its streams, size, rate, codec, colour, and
with a null decode its frame count), and the loudness meter's summary. Pure functions on text, tested
without ffmpeg."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import ProbeError


@dataclass(frozen=True)
class Probe:
    duration: float
    width: int
    height: int
    fps: Fraction
    codec: str
    profile: str
    pix_fmt: str
    colour: str
    frames: int
    audio: str | None
    audio_rate: int | None
    audio_channels: str | None
    frame_lengths: int = 1  # distinct video frame durations (stts entries): 1 is a constant rate
    index_first: bool = True  # moov before mdat
    interleave_s: float = 0.0  # how far apart along the file the tracks' times run (see mp4.py)


_DUR = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


_VID = re.compile(r"Stream #\S+.*?: Video: (\w+)(?: \(([^)]*)\))?.*?, (\w+)(\([^)]*\))?, (\d+)x(\d+)")


_FPS = re.compile(r", ([\d.]+(?:/\d+)?) fps")


_AUD = re.compile(r"Stream #\S+.*?: Audio: (\w+)(?: \(([^)]*)\))?.*?, (\d+) Hz, ([\w.]+)")


_FRAMES = re.compile(r"frame=\s*(\d+)")


def parse_probe(text: str, path: Path | str = "?") -> Probe:
    """Read `ffmpeg -i` output. Raises ProbeError with ffmpeg's own reason when the file is unreadable."""
    d, v = _DUR.search(text), _VID.search(text)
    if not d or not v:
        reason = next(
            (
                ln.strip()
                for ln in text.splitlines()
                if "Invalid data" in ln or "moov atom" in ln or "No such file" in ln or "error" in ln.lower()
            ),
            "no video stream found",
        )
        reason = re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", reason)  # drop ffmpeg's "[in#0 @ 0x...]" prefix
        raise ProbeError(f"{path}: not a readable video ({reason})")
    fps_m = _FPS.search(text[v.start() :])
    a = _AUD.search(text)
    frames = [int(x) for x in _FRAMES.findall(text)]
    return Probe(
        duration=int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)),
        width=int(v.group(5)),
        height=int(v.group(6)),
        fps=Fraction(fps_m.group(1)) if fps_m else Fraction(0),
        codec=v.group(1),
        profile=v.group(2) or "",
        pix_fmt=v.group(3),
        colour=(v.group(4) or "").strip("()"),
        frames=frames[-1] if frames else 0,
        audio=a.group(1) if a else None,
        audio_rate=int(a.group(3)) if a else None,
        audio_channels=a.group(4) if a else None,
    )


def parse_loudness(text: str) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) from the ebur128 filter's summary."""
    i = re.findall(r"I:\s+(-?[\d.]+|-inf) LUFS", text)
    p = re.findall(r"Peak:\s+(-?[\d.]+|-inf) dBFS", text)
    if not i or not p:
        raise ProbeError("the loudness meter printed no summary")
    return float(i[-1]), float(p[-1])
