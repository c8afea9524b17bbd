"""An audio file as the loader meets it: what it is (format, rate, channels, length, content hash), and
the rule for one that decodes short of its header. No numpy: a render with nothing to do reads these
(kept by path and stat) and imports nothing heavy; music.py and record.py decode."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..video.encode import ffmpeg_exe

AUDIO_TYPES = (".wav", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac", ".mp4")
MAX_SECONDS = 6 * 3600


class AudioError(ValueError):
    """An audio file that cannot be used; str() is the reason."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    digest: str
    codec: str  # ffmpeg's decoder for its first audio stream
    rate: int
    channels: int
    duration: float
    estimated: bool = False  # the duration is a guess (an MP3 without a VBR header) or the container's, not the sound's
    allow_short: bool = False  # the user says to use what decodes (`allow_short: true`)


def short_decode(decoded_s: float, claimed_s: float) -> bool:
    """Whether a file stopped well before the length its container claims (by a second, or 5%, whichever
    is more): ffmpeg decodes a damaged or truncated file without an error and stops early."""
    return decoded_s < claimed_s - max(1.0, 0.05 * claimed_s)


def refuse_short(info: AudioInfo, decoded_s: float, claimed_s: float) -> None:
    """AudioError naming both lengths where a file decoded short of what its header claims (a guessed
    length, from an MP3's bitrate, or a video's container, is no claim about the sound: not held to)."""
    if not info.estimated and not info.allow_short and short_decode(decoded_s, claimed_s):
        raise AudioError(
            f"{Path(info.path).name} decodes to {decoded_s:.2f} s of the {claimed_s:.2f} s its header claims: the file is "
            "damaged or truncated; export or copy it again, or say `allow_short: true` to use what decodes"
        )


_STREAM = re.compile(r"Stream #\S+.*?: Audio: (\w+)[^,]*, (\d+) Hz, ([^,]+)")
_DUR = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def probe(path: Path | str, any_type: bool = False, remember: Path | None = None) -> AudioInfo:
    """What an audio file is, from ffmpeg's report (imageio-ffmpeg has no ffprobe); raises AudioError.
    `any_type`: a clip's sound, whatever its container. `remember`: a folder where the answer is kept
    for later runs, by the file's path and stat (its ctime and inode change with any write or
    replacement, so a changed file is probed again): the probe was 3% of a one-word edit."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"no such file: {path}")
    if p.is_dir():
        raise AudioError(f"{path} is a folder; expected an audio file")
    if not p.is_file():  # a pipe or a device would block the probe, or never end
        raise AudioError(f"{path} is not a regular file; expected an audio file")
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino, st.st_dev, any_type)
    if key in _PROBED:
        return _PROBED[key]
    from ..cache import keep, memory_path

    kept = memory_path(remember, "probe", key) if remember else None
    try:
        info = AudioInfo(**json.loads(kept.read_text())) if kept else None
    except (OSError, ValueError, TypeError):
        info = None
    if info is None:
        info = _probe(key[0], st.st_size, any_type)
        if kept:
            keep(kept, dataclasses.asdict(info))
    _PROBED[key] = info
    return info


_PROBED: dict[tuple, AudioInfo] = {}


def _probe(path: str, size: int, any_type: bool = False) -> AudioInfo:
    name = Path(path).name
    if Path(path).suffix.lower() not in AUDIO_TYPES and not any_type:
        raise AudioError(f"unsupported file type {Path(path).suffix or '(none)'!r}: use WAV, MP3, OGG, FLAC or M4A/AAC")
    if size == 0:
        raise AudioError(f"{name} is empty")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"cannot read {name}: {e.strerror or e}") from None
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path], capture_output=True, timeout=60)
    text = proc.stderr.decode(errors="replace")
    m, d = _STREAM.search(text), _DUR.search(text)
    if "Invalid data" in text or (not m and not d):
        raise AudioError(f"{name} is not a readable audio file (corrupt, or another format under this name)")
    if not m:
        raise AudioError(f"{name} has no audio stream")
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    if duration <= 0:
        raise AudioError(f"{name}: an audio stream with no duration")
    if duration > MAX_SECONDS:
        raise AudioError(f"{name} lasts {duration / 3600:.1f} hours; at most {MAX_SECONDS // 3600}")
    layout = m.group(3).strip().split("(")[0].strip()
    counted = re.match(r"(\d+) channels", layout)
    channels = _LAYOUTS.get(layout) or (int(counted.group(1)) if counted else 2)
    from ..cache import file_digest

    # the Duration line is the container's: with a video stream beside it, the sound may rightly end sooner
    estimated = "Estimating duration from bitrate" in text or bool(re.search(r"Stream #\S+.*?: Video: ", text))
    return AudioInfo(path, file_digest(Path(path)), m.group(1), int(m.group(2)), channels, duration, estimated)
