"""A creator's pictures and footage, measured at load: what a file is, how big, how long, its content
hash. Everything that can be wrong with a file is found here, before anything renders, and raised as
MediaError with a reason a creator can act on (the loader adds file:line:col and the field).

Stills are read by Pillow (its header first: a picture's size is checked before a pixel is decoded, so a
decompression bomb costs nothing); clips, and animated GIFs, are measured by moviepy's ffmpeg probe.
"""

from __future__ import annotations

import os
import subprocess
import threading
import warnings
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

STILL_TYPES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF"}
CLIP_TYPES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".gif")
MAX_SIDE = 12_000  # pixels on a side, for a still
MAX_PIXELS = 50_000_000  # a still's area: 50 megapixels decode in about half a second
MAX_CLIP_SIDE = 8192


_UNLIMITED = threading.Lock()  # held while Pillow's pixel limit is lifted to read a header


class MediaError(ValueError):
    """A visual file that cannot be used; str() is the reason."""


@dataclass(frozen=True)
class Media:
    path: str  # absolute
    digest: str
    kind: str  # "still" | "clip"
    width: int
    height: int
    fps: Fraction = Fraction(0)
    frames: int = 0
    duration: float = 0.0


_MEMORY: list[Path] = []  # where what was learnt about a file is kept between runs (remember_in)


def remember_in(folder: Path) -> None:
    """Keep what probe and verify_clip learn in `folder`, by each file's path and stat: a run with
    nothing changed then neither hashes nor decodes a visual, nor imports moviepy (a no-op's cost)."""
    _MEMORY[:] = [folder]


def _kept(kind: str, key: tuple) -> Path | None:
    from ..cache import memory_path

    return memory_path(_MEMORY[0], kind, key) if _MEMORY else None


def _keep(kept: Path | None, data: dict) -> None:
    if kept is not None:
        from ..cache import keep

        keep(kept, data)


def probe(path: Path | str) -> Media:
    """Measure a picture or clip file; raises MediaError. Kept between runs by the file's path and stat
    (its ctime and inode change with any write or replacement, so a changed file is measured again)."""
    import json

    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise MediaError(f"no such file: {path}") from None
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e.strerror or e}") from None
    if p.is_dir():
        raise MediaError(f"{path} is a folder; expected a picture or a clip")
    resolved = str(p.resolve())
    # v3: a clip is measured as shown (turned on display, its pixels' shape)
    kept = _kept("media-v3", (resolved, st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino, st.st_dev))
    try:
        if kept is not None and kept.is_file():
            d = json.loads(kept.read_text())
            return Media(**{**d, "fps": Fraction(d["fps"])})
    except (OSError, ValueError, TypeError):
        pass
    m = _probe(resolved, st.st_mtime_ns, st.st_size)
    _keep(kept, {**m.__dict__, "fps": str(m.fps)})
    return m


@lru_cache(maxsize=256)
def _probe(path: str, mtime_ns: int, size: int) -> Media:
    suffix = Path(path).suffix.lower()
    if suffix not in STILL_TYPES and suffix not in CLIP_TYPES:
        raise MediaError(
            f"unsupported file type {suffix or '(none)'!r}: use a PNG, JPEG or WebP picture, or an MP4, MOV or WebM clip or a GIF"
        )
    if not os.access(path, os.R_OK):
        raise MediaError(f"cannot read {Path(path).name}: permission denied")
    if size == 0:
        raise MediaError(f"{Path(path).name} is empty")
    from ..cache import file_digest

    digest = file_digest(Path(path))
    if suffix in STILL_TYPES:
        still = _still(path, STILL_TYPES[suffix], digest)
        if still is not None:
            return still
    return _clip(path, digest)


def _still(path: str, fmt: str, digest: str) -> Media | None:
    """A still's size from its header, checked before decoding, then a full decode (a truncated or
    corrupt file fails here, not mid-render). None for an animated GIF: that is a clip."""
    from PIL import Image

    name = Path(path).name
    with warnings.catch_warnings(), _UNLIMITED:
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow's own bomb check refuses at open, before the size can be named; ours, on the header's
        # size, comes first (nothing is decoded until im.load(), after it)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path, formats=[fmt]) as im:
                Image.MAX_IMAGE_PIXELS = limit
                w, h = im.size
                if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
                    raise MediaError(
                        f"{name} is {w} x {h} pixels; a picture may have at most {MAX_PIXELS // 1_000_000} megapixels "
                        f"and {MAX_SIDE} on a side (scale it down)"
                    )
                if getattr(im, "n_frames", 1) > 1 and fmt == "GIF":
                    return None  # an animated GIF plays as a clip; an animated WebP shows its first frame
                    # (ffmpeg cannot decode WebP's animation)
                im.load()
        except MediaError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise MediaError(f"{name}: refused as a decompression bomb (far more pixels than its file size suggests)") from None
        except Image.UnidentifiedImageError:
            raise MediaError(f"{name} is not a readable {fmt} picture (corrupt, or another format under this name)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise MediaError(f"{name} is a corrupt or truncated picture ({e})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    if w < 2 or h < 2:
        raise MediaError(f"{name} is {w} x {h} pixels; too small to show")
    return Media(path, digest, "still", w, h)


def _clip(path: str, digest: str) -> Media:
    name = Path(path).name
    try:
        from moviepy.video.io.ffmpeg_reader import ffmpeg_parse_infos

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = ffmpeg_parse_infos(path, decode_file=False)
    except Exception as e:  # moviepy raises bare IOError/OSError/IndexError on files ffmpeg cannot read
        first = str(e).strip().splitlines()[0] if str(e).strip() else "ffmpeg could not read it"
        raise MediaError(f"{name} is not a readable video ({first[:120]})") from None
    if not info.get("video_found"):
        raise MediaError(f"{name} has no video stream")
    w, h = info.get("video_size") or (0, 0)
    head = _head(path) or ""
    if w and h:
        w = shown_width(head, w)  # pixels that are not square (a camcorder's, a DVD's): as wide as shown
    if display_rotation(head) in (90, 270):  # a phone's portrait clip: stored landscape, turned on display
        w, h = h, w
    fps = info.get("video_fps") or 0
    duration = float(info.get("video_duration") or info.get("duration") or 0)
    if not w or not h or w > MAX_CLIP_SIDE or h > MAX_CLIP_SIDE:
        raise MediaError(f"{name}: video of {w} x {h} pixels; at most {MAX_CLIP_SIDE} on a side")
    if not fps or fps <= 0 or fps > 240:
        raise MediaError(f"{name}: no usable frame rate ({fps})")
    if duration <= 0:
        raise MediaError(f"{name}: a video with no duration")
    rate = Fraction(fps).limit_denominator(1001)
    frames = int(info.get("video_n_frames") or 0) or max(1, int(duration * rate))
    return Media(path, digest, "clip", int(w), int(h), rate, frames, duration)


def _head(path: str) -> str | None:
    """What `ffmpeg -i` says of a file (None if ffmpeg could not be run): moviepy's probe does not read a
    clip's display matrix as ffmpeg 7 prints it, nor its pixels' shape, nor its transfer."""
    from ..video.encode import ffmpeg_exe

    try:
        head = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stderr.decode(errors="replace")


def shown_width(ffmpeg_info: str, width: int) -> int:
    """A clip's width as shown, from its sample aspect ratio in what `ffmpeg -i` prints ("[SAR 32:27 DAR
    16:9]"): 720 pixels of a widescreen DVD are 853 wide on screen. ffmpeg's scaler ignores the ratio, so
    the clip is scaled to its shown shape from this."""
    import re

    line = ffmpeg_info.split("Video:", 1)[1].split("\n", 1)[0] if "Video:" in ffmpeg_info else ""
    m = re.search(r"\[SAR (\d+):(\d+) DAR", line)
    if not m or not int(m.group(1)) or not int(m.group(2)):
        return width
    return max(2, round(width * int(m.group(1)) / int(m.group(2))))


def display_rotation(ffmpeg_info: str) -> int:
    """The first video stream's rotation from what `ffmpeg -i` prints ("displaymatrix: rotation of
    -90.00 degrees", or an older "rotate : 90"), as 0, 90, 180 or 270. ffmpeg turns the pictures as it
    decodes them: a phone's portrait clip, measured landscape, was shown squashed."""
    import re

    after = ffmpeg_info.split("Video:", 1)
    if len(after) < 2:
        return 0
    stream = re.split(r"\n\s*Stream #", after[1], maxsplit=1)[0]  # the video stream's own lines only
    m = re.search(r"rotation of (-?[\d.]+) degrees", stream) or re.search(r"\brotate\s*:\s*(-?[\d.]+)", stream)
    return round(float(m.group(1)) / 90) % 4 * 90 if m else 0


HDR_TRANSFERS = ("smpte2084", "arib-std-b67")  # PQ (HDR10, Dolby Vision) and HLG: what phones record in HDR


def tonemap_args(ffmpeg: str, src: str, out: str) -> list[str]:
    """The ffmpeg command that brings an HDR clip to SDR BT.709 (linear light, Hable's curve, then
    BT.709 primaries and transfer), as a near-lossless H.264 proxy with the clip's own timing."""
    chain = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,"
             "zscale=t=bt709:m=bt709:r=tv,format=yuv420p")  # fmt: skip
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", src, "-map", "0:v:0", "-vf", chain,
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-an", "-f", "mp4", out]  # fmt: skip


def sdr_source(m: Media) -> str:
    """The file to read a clip's pictures from: itself, or for an HDR clip (PQ or HLG), a tone-mapped SDR
    copy, made once per content and kept beside the checks (its pixels read as BT.709 otherwise: a
    phone's HLG clip showed washed out)."""
    from ..video.encode import ffmpeg_exe

    kept = _kept("transfer", (m.digest,))
    transfer = ""
    try:
        if kept is not None and kept.is_file():
            import json

            transfer = json.loads(kept.read_text())["transfer"]
        elif (head := _head(m.path)) is not None:  # not kept when ffmpeg could not be run
            line = next((ln for ln in head.splitlines() if "Video:" in ln), "")
            transfer = next((t for t in HDR_TRANSFERS if t in line), "")
            _keep(kept, {"transfer": transfer})
    except (OSError, ValueError, KeyError):
        transfer = ""
    if not transfer:
        return m.path
    import tempfile

    folder = _MEMORY[0].parent / "sdr" if _MEMORY else Path(tempfile.gettempdir()) / "shortgen-sdr"
    out = folder / f"{m.digest[:32]}.mp4"
    if not out.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        run = subprocess.run(tonemap_args(ffmpeg_exe(), m.path, str(tmp)), capture_output=True, timeout=3600)
        if run.returncode != 0:
            tmp.unlink(missing_ok=True)
            last = [ln for ln in run.stderr.decode(errors="replace").splitlines() if ln.strip()][-1:] or ["ffmpeg failed"]
            raise MediaError(f"{Path(m.path).name}: an HDR ({transfer}) clip that could not be tone-mapped ({last[0][:120]})")
        os.replace(tmp, out)
    return str(out)


class ClipReader:
    """A clip's frames in order, scaled by ffmpeg to `size` (w, h) on the way out of the decoder, as RGB
    Pillow images: ffmpeg starts at a seek point (only the needed span is decoded) and the frames are
    read one after another, starting again only to go back or far ahead. Past the clip's end the last
    frame repeats. One thread in ffmpeg: it runs beside x264, which has the cores, and threads of its
    own held 40 MB more (a 720p clip scaled to 1080x1920: 124 -> 81 MB peak RSS, the same CPU time)."""

    SKIP_MAX = 100  # frames read and dropped rather than seeking again

    def __init__(self, m: Media, size: tuple[int, int]):
        self.media, self.size = m, size
        self._source = sdr_source(m)
        self._proc: subprocess.Popen | None = None
        self._next = 0  # the frame the pipe yields next
        self._last: tuple[int, object] | None = None

    def frame(self, k: int):
        """Source frame k (counted at the clip's own rate)."""
        if self._last is not None and self._last[0] == k:
            return self._last[1]
        if self._proc is None or k < self._next or k > self._next + self.SKIP_MAX:
            self._start(k)
        w, h = self.size
        data = b""
        while self._next <= k:
            data = self._read(w * h * 3)
            if len(data) < w * h * 3:  # past the end: the last frame read, as long as asked
                if self._last is None:
                    raise MediaError(f"{Path(self.media.path).name}: cannot decode frame {k}")
                self._next = k + 1
                self._last = (k, self._last[1])
                return self._last[1]
            self._next += 1
        from PIL import Image

        img = Image.frombytes("RGB", (w, h), data)
        self._last = (k, img)
        return img

    def _start(self, k: int) -> None:
        from ..video.encode import ffmpeg_exe

        self.close()
        fps = self.media.fps or 0.0
        # a frame shown at time t: seek a hair before it (ffmpeg keeps frames at or after the seek)
        t = max(0.0, k / fps - 1e-5) if fps and k else 0.0
        self._proc = subprocess.Popen(
            clip_read_args(ffmpeg_exe(), self._source, t, self.size), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )  # fmt: skip
        self._next = k if t else 0

    def _read(self, n: int) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        parts, got = [], 0
        while got < n:
            chunk = self._proc.stdout.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.stdout is not None:
                proc.stdout.close()
            proc.kill()
            proc.wait()


def clip_read_args(ffmpeg: str, path: str, start_s: float, size: tuple[int, int]) -> list[str]:
    """The ffmpeg command that decodes a clip from `start_s` and writes its frames scaled to `size` as raw
    RGB on stdout: a fast seek to a second before, then an exact one (frames from `start_s` on). Its
    muxer queues one frame, not ffmpeg's 8: the frames are read as the pictures need them, and the
    queue held 14 MB of a panel's frames (a reader at 936x632: 79 -> 65 MB PSS)."""
    offset = min(1.0, start_s)
    seek = ["-ss", f"{start_s - offset:.6f}", "-i", path, "-ss", f"{offset:.6f}"] if start_s else ["-i", path]
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-threads", "1", *seek, "-map", "0:v:0", "-an", "-sn",
            "-vf", f"scale={size[0]}:{size[1]}", "-sws_flags", "area", "-threads", "1", "-f", "rawvideo",
            "-pix_fmt", "rgb24", "-thread_queue_size", "1", "-"]  # fmt: skip


def packet_seconds_args(ffmpeg: str, path: str) -> list[str]:
    """The ffmpeg command that reads a clip's video packets to the end without decoding them, reporting
    how far they go (its -progress lines on stdout)."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-map", "0:v:0", "-c", "copy", "-f", "null",
            "-progress", "pipe:1", "-nostats", "-"]  # fmt: skip


def packet_seconds(path: str) -> float | None:
    """How many seconds of video a clip's packets hold (None if ffmpeg could not tell)."""
    from ..video.encode import ffmpeg_exe

    try:
        run = subprocess.run(packet_seconds_args(ffmpeg_exe(), path), capture_output=True, timeout=120)
        out = run.stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    times = [ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith("out_time_us=")]
    return int(times[-1]) / 1e6 if times and times[-1].strip().lstrip("-").isdigit() else None


def decode_check_args(ffmpeg: str, path: str, start_s: float, seconds: float) -> list[str]:
    """The ffmpeg command that decodes a clip's video from `start_s` for `seconds` to nowhere, reporting
    only its errors: a damaged middle (its packets there, but not a picture in them) shows here."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-ss", f"{start_s:.3f}", "-i", path, "-map", "0:v:0",
            "-t", f"{seconds:.3f}", "-f", "null", "-"]  # fmt: skip


DAMAGE = ("Invalid NAL unit size", "error while decoding", "missing picture", "corrupt", "Invalid data found", "concealing")


def damaged_frames(path: str, start_s: float, seconds: float = 31.0) -> list[str]:
    """The decoder's complaints about a clip's span that mean broken pictures (a stray warning is not)."""
    from ..video.encode import ffmpeg_exe

    try:
        run = subprocess.run(decode_check_args(ffmpeg_exe(), path, start_s, seconds), capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in run.stderr.decode(errors="replace").splitlines() if any(d in ln for d in DAMAGE)]


def verify_clip(m: Media, start_frame: int, allow_short: bool = False) -> None:
    """Decode the clip's first frame to be shown, small, and read its packets to the end: a file with a
    readable header and broken or missing data fails here, at load, rather than mid-render (or playing a
    truncated clip's last frame for the rest of its span)."""
    passed = _kept("clip-ok", (m.digest, m.path, start_frame, allow_short))
    if passed is not None and passed.is_file():
        return
    from ..audio.audiofile import short_decode

    got = None if allow_short else packet_seconds(m.path)
    if got is not None and m.duration and short_decode(got, m.duration):
        raise MediaError(
            f"{Path(m.path).name} holds {got:.2f} s of video of the {m.duration:.2f} s its header claims: the file is damaged "
            "or truncated; export or copy it again, or say `allow_short: true` to use what it holds"
        )
    # the span a segment can show (a segment runs at most 30 s) is decoded once: a few complaints are a
    # glitch a player hides; more are a damaged file
    bad = [] if allow_short else damaged_frames(m.path, float(start_frame / m.fps) if m.fps else 0.0)
    if len(bad) >= 3:
        said = bad[0].split("] ", 1)[-1][:80]
        raise MediaError(
            f"{Path(m.path).name} has damaged frames ({len(bad)} decoding errors, first: {said!r}): export or copy it "
            "again, or say `allow_short: true` to use it as it decodes"
        )
    try:
        r = ClipReader(m, (64, 64))
        try:
            r.frame(start_frame)
        finally:
            r.close()
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"{Path(m.path).name}: cannot decode its frames ({str(e).strip()[:120] or 'ffmpeg failed'})") from None
    _keep(passed, {"ok": True})
