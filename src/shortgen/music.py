"""The music bed: a creator's track under the narration, ducked while the voice speaks, mixed and
mastered with it.

pydub does what it is good at: decoding any format through the bundled ffmpeg (only the span the
episode needs), slicing, looping with a crossfade, fades at the ends. numpy does what must be fast or
exact: resampling, the ducking envelope (from the narration's word timings, sample-accurate), the mix,
loudness (BS.1770) and the true-peak limiter, at 48 kHz stereo.

Ducking follows the voice, not the segments: each spoken phrase (words less than PHRASE_GAP_MS apart)
pulls the bed down by `music_duck_db`, the dip complete as its first word starts (`music_attack_ms` of
look-ahead) and released `music_release_ms` after its last; the bed rises in the pauses and under the
title cards. Where the bed is loud enough that the usual dip would leave it less than
`music_separation_lu` below the voice, that phrase dips further: speech stays intelligible by rule, and
the manifest reports the separation each segment gets, measured on the two stems.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import sound
from .encode import AAC_RATE, ffmpeg_exe

RATE = AAC_RATE  # the mix runs at the file's rate: music keeps its top octave
PHRASE_GAP_MS = 250  # words closer than this are one phrase: the bed does not pump between them
CROSSFADE_MS = 400  # a looping track joins itself with this crossfade
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


_STREAM = re.compile(r"Stream #\S+.*?: Audio: (\w+)[^,]*, (\d+) Hz, ([^,]+)")
_DUR = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def probe(path: Path | str) -> AudioInfo:
    """What an audio file is, from ffmpeg's report (imageio-ffmpeg has no ffprobe); raises AudioError."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"no such file: {path}")
    if p.is_dir():
        raise AudioError(f"{path} is a folder; expected an audio file")
    st = p.stat()
    return _probe(str(p.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=32)
def _probe(path: str, mtime_ns: int, size: int) -> AudioInfo:
    name = Path(path).name
    if Path(path).suffix.lower() not in AUDIO_TYPES:
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
    from .cache import file_digest

    return AudioInfo(path, file_digest(Path(path)), m.group(1), int(m.group(2)), channels, duration)


def _pydub():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydub import AudioSegment
    AudioSegment.converter = ffmpeg_exe()
    return AudioSegment


def decode(info: AudioInfo, start_s: float, seconds: float):
    """The span [start_s, start_s + seconds) of a file (less if it ends first) as a pydub AudioSegment:
    ffmpeg decodes only that span (the decoder named up front, so pydub needs no ffprobe)."""
    from pydub.exceptions import CouldntDecodeError

    seg_cls = _pydub()
    want = max(0.0, min(seconds, info.duration - start_s))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = seg_cls.from_file(info.path, codec=info.codec, start_second=start_s or None, duration=want + 0.05)
    except (CouldntDecodeError, OSError, ValueError, IndexError) as e:
        last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or [type(e).__name__]
        raise AudioError(f"{Path(info.path).name} cannot be decoded ({last[0].strip()[:120]})") from None
    if len(got) == 0:
        raise AudioError(f"{Path(info.path).name}: no audio in the span asked for (from {start_s:g} s)")
    return got


def to_array(seg) -> np.ndarray:
    """A pydub AudioSegment as float32 stereo (2, n) at RATE: mono doubled, surround folded down (ITU
    coefficients, LFE dropped), resampled by FFT."""
    seg = seg.set_sample_width(2)
    x = np.array(seg.get_array_of_samples(), dtype=np.float32).reshape(-1, seg.channels).T / 32768.0
    if seg.channels == 1:
        x = np.vstack([x, x])
    elif seg.channels > 2:  # FL FR FC LFE BL BR (SL SR): ffmpeg's order
        c = x[2] * 0.7071 if seg.channels > 2 else 0
        rest = x[4:]
        left = x[0] + c + (rest[0::2].sum(axis=0) * 0.7071 if len(rest) else 0)
        right = x[1] + c + (rest[1::2].sum(axis=0) * 0.7071 if len(rest) else 0)
        x = np.vstack([left, right]).astype(np.float32)
    if seg.frame_rate != RATE:
        x = np.vstack([sound.resample(ch, seg.frame_rate, RATE) for ch in x])
    return x


def bed(info: AudioInfo, total: int, start_s: float, loop: bool, fade_in_ms: int, fade_out_ms: int) -> np.ndarray:
    """The track laid under `total` samples: from `start_s`, looped with a crossfade (or stopping) when
    it is shorter, faded in and out at the episode's ends."""
    need_ms = total * 1000 // RATE + 1
    seg = decode(info, start_s, need_ms / 1000)
    if len(seg) < need_ms and loop:
        whole = seg if start_s == 0 else decode(info, 0.0, info.duration)
        while len(seg) < need_ms:
            seg = seg.append(whole, crossfade=min(CROSSFADE_MS, len(whole) // 4, len(seg) // 4))
    seg = seg[:need_ms]
    seg = seg.fade_in(min(fade_in_ms, len(seg) // 2)).fade_out(min(fade_out_ms, len(seg) // 2))
    x = to_array(seg)
    out = np.zeros((2, total), np.float32)
    n = min(total, x.shape[1])
    out[:, :n] = x[:, :n]
    return out


def phrases(words: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Spoken spans (start, end) in samples, merged where the silence between them is under `gap`."""
    out: list[list[int]] = []
    for a, b in sorted(words):
        if out and a - out[-1][1] < gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def duck_db(total: int, spans: list[tuple[int, int, float]], attack: int, release: int, step: int = 48) -> np.ndarray:
    """The bed's gain in dB at every sample: 0 in the pauses, -depth under each (start, end, depth) span,
    reached by a linear ramp over `attack` samples ending at its start and left over `release` samples
    from its end. Worked out every `step` samples (1 ms) and interpolated."""
    n = total // step + 2
    g = np.zeros(n, np.float32)
    for a, b, depth in spans:
        a0, b1 = max(0, (a - attack) // step), min(n, -(-(b + release) // step))
        t = np.arange(a0, b1) * step
        ramp = np.minimum(1.0, np.minimum((t - (a - attack)) / max(attack, 1), ((b + release) - t) / max(release, 1)))
        shape = -depth * np.clip(ramp, 0.0, 1.0)
        g[a0:b1] = np.minimum(g[a0:b1], shape)
    return np.interp(np.arange(total), np.arange(n) * step, g).astype(np.float32)


def loudness(x: np.ndarray) -> float:
    """BS.1770-4 integrated loudness of a (channels, n) signal at RATE."""
    if x.shape[1] < int(0.4 * RATE):
        return -np.inf
    k = np.vstack([sound.k_weight(ch, RATE) for ch in x])
    return sound.gated_loudness_multi(k, RATE)


def span_loudness(x: np.ndarray, spans: list[tuple[int, int]]) -> float:
    """Loudness (ungated mean square, K-weighted) of a stereo signal over these spans: what a listener
    hears during them, the figure the separation rule holds."""
    if not spans:
        return -np.inf
    k = np.vstack([sound.k_weight(ch, RATE) for ch in x])
    e = sum(float(np.einsum("ij,ij->", k[:, a:b], k[:, a:b])) for a, b in spans)
    n = sum(b - a for a, b in spans)
    return -0.691 + 10 * np.log10(max(e / max(n, 1), 1e-20))
