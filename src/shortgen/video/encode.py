"""Stage 5: ffmpeg. Command lines are built by pure functions returning list[str] (tested without ffmpeg);
`FfmpegEncoder` runs them; testing.FakeEncoder stands in for fast unit tests.

Why this shape (measured on 2 cores): x264 costs ~4 ms per 1080x1920 frame even when the frame repeats
the last one, and a short is ~250 distinct pictures over ~3,100 frames. So by default x264 sees each
distinct picture once (raw yuv420p on stdin) and `h264.expand` holds it with P-skip frames; "full" mode
sends every frame through x264 (the conventional way, kept for comparison and as a fallback).
The distinct pictures go to x264 in runs, one per caption cue, each opening with an IDR picture: a run
is cached by its pictures alone, so an edit re-encodes only the cues it changes (see `run_args`).
Pictures arrive already in yuv420p because converting a full RGB frame in ffmpeg costs about as much as
x264's own work on a still, while only the caption band changes from one picture to the next.
Segments encode one after another (x264 takes every core) into a cache; the final file joins them by
stream copy and muxes one audio track, spliced from per-segment AAC frames on one 1024-sample grid (joining whole per-segment AAC
files drifts: each carries its own priming and padding).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import DiskFullError, EncodeError, ProbeError, disk_full
from . import h264, pacing
from .reports import Probe, parse_loudness, parse_probe

_FINDING = threading.Lock()


def ffmpeg_exe() -> str:
    """The static ffmpeg imageio-ffmpeg ships (moviepy's): no system ffmpeg needed."""
    with _FINDING:  # imageio-ffmpeg runs `ffmpeg -version` once per process; two lanes at once ran it twice
        return _ffmpeg_exe()


@functools.cache
def _ffmpeg_exe() -> str:
    # On Linux the binary is found by its name in the package's folder: importing imageio_ffmpeg (57 ms)
    # and its check, which runs the binary (24 ms), were 5% of a one-word edit. Anything unusual (its
    # environment variable, another system, no such file) goes imageio-ffmpeg's own way.
    import importlib.util

    spec = None if os.environ.get("IMAGEIO_FFMPEG_EXE") else importlib.util.find_spec("imageio_ffmpeg")
    if spec and spec.submodule_search_locations and sys.platform.startswith("linux"):
        for folder in spec.submodule_search_locations:
            found = sorted(Path(folder, "binaries").glob(f"ffmpeg-linux-{os.uname().machine}-*"))
            if len(found) == 1 and found[0].is_file() and os.access(found[0], os.X_OK):
                return str(found[0])
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoSettings:
    width: int
    height: int
    fps: int
    preset: str
    crf: int
    threads: int = 1
    mode: str = "skip"  # "skip": distinct pictures + P-skip frames; "full": every frame encoded
    keyint: int = 60  # frames between keyframes (at most), for seeking
    # "crf": x264's rate control; "cqp": a constant quantiser, CQP_OFFSET above the crf. x264's CRF
    # carries state from picture to picture, so cue runs encoded together came out as different bytes
    # depending on which runs shared the encode (what the cache already held); with a constant
    # quantiser a run is a function of its own pictures, and an edited render is the cold render's bytes.
    rate: str = "crf"


# What h264.expand needs from x264: CAVLC, no B-frames, one reference, no weighted prediction. And one
# picture parameter set for every run: x264 sets pic_init_qp from the rate control (26 for CRF, the
# quantiser for a constant-quantiser cue run), unless stitchable, where it is 26 for all; the track's
# sample entry holds one PPS, and a decoder that takes it alone then decodes every run right.
SKIP_X264 = "bframes=0:ref=1:weightp=0:cabac=0:scenecut=0:stitchable=1"
# Moving pictures (a still's zoom or pan, footage) are encoded at CRF with the smallest motion search:
# their motion is at most a pixel a step, which a diamond search of radius 1 finds. Measured on Part 4 as
# shipped: the cold render 12.1 -> 10.4 s (x264 is its largest CPU item), the file 8.49 -> 8.53 MB, and
# the two renders alike to SSIM 0.9988 (Y PSNR 47 dB between them). A lookahead of 5 pictures, as for the
# cue runs: x264 holds some 12 MB per 1080x1920 picture it looks ahead (a moving test sequence: 231 -> 200
# MB peak RSS, 20% faster, 6% fewer bytes).
MOVING_X264 = ":me=dia:subme=1:rc-lookahead=5"


COLOUR_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]


# ---- pure argument builders ---------------------------------------------------------------------


# Measured on Part 4's cue runs against a lossless encode: quantiser 26 gives the SSIM of CRF 20 or better
# (0.99877 against 0.99849) at 0.3 dB lower PSNR and 8% more bytes.
CQP_OFFSET = 6


def _x264(v: VideoSettings, keyint: int | str) -> list[str]:
    # crf 0 asks for lossless: quantiser 0 is x264's lossless mode too
    qp = 0 if v.crf == 0 else min(51, v.crf + CQP_OFFSET)
    quality = ["-qp", str(qp)] if v.rate == "cqp" else ["-crf", str(v.crf)]
    return [
        "-c:v",
        "libx264",
        "-preset",
        v.preset,
        *quality,
        "-threads",
        str(v.threads),
        "-x264-params",
        f"{SKIP_X264}:keyint={keyint}:min-keyint=1" + (MOVING_X264 if v.rate == "crf" else ""),
        "-pix_fmt",
        "yuv420p",
        *COLOUR_TAGS,
    ]


def distinct_args(ffmpeg: str, v: VideoSettings, keyint: int | str, out: Path) -> list[str]:
    """Raw yuv420p pictures on stdin, one frame each, to an Annex B H.264 stream. Skip mode sends each
    distinct picture once (see `run_args`); full mode sends every frame (keyint in frames)."""
    return [
        ffmpeg,
        "-hide_banner",
        "-v",
        "error",
        "-y",
        # the input's colour is declared too: unlabelled YUV would make ffmpeg insert a BT.601 -> BT.709
        # conversion through RGB, shifting every colour and costing a scaler pass per picture
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        f"{v.width}x{v.height}",
        "-r",
        str(v.fps),
        *COLOUR_TAGS,
        "-i",
        "-",
        "-an",
        *_x264(v, keyint),
        # how many pictures are encoded, for _feed's pacing
        "-progress",
        "pipe:1",
        "-stats_period",
        str(pacing.PROGRESS_S),
        "-f",
        "h264",
        str(out),
    ]


def run_args(ffmpeg: str, v: VideoSettings, keyframes: Sequence[int], out: Path) -> list[str]:
    """Skip mode by runs (a run: one cue's distinct pictures). An IDR picture with its parameter sets
    opens every run, so a run can be cut out, cached by its pictures alone and placed after any other;
    `keyframes` lists those pictures, plus any inside a run that keeps keyframes `v.keyint` frames apart.
    x264 places none of its own."""
    args = distinct_args(ffmpeg, v, "infinite", out)
    i = args.index("-x264-params")
    # rc-lookahead: x264 used to clamp it to the short keyframe interval; left at its default of 10
    # pictures it costs 30 MB more and crosses cue boundaries that the IDRs cut anyway (measured on
    # segment 3: 5 instead of 10 gives a 5% smaller run at 0.5 dB lower PSNR, 48.0 dB). A constant
    # quantiser has no rate control to look ahead for (no B-frames, no scenecut, keyframes forced): none,
    # and x264 holds 5 pictures (some 12 MB each) fewer; Part 4's cue runs came out byte-identical.
    args[i + 1] += ":repeat-headers=1:rc-lookahead=" + ("0" if v.rate == "cqp" else "5")
    # as times, each half a frame before its picture (ffmpeg forces the first frame at or after each, in
    # turn): an expression of eq(n,k) terms fails to parse past 100 of them, and a segment of short
    # cues (one-word sentences at 450 wpm) has more
    times = ",".join(f"{max(k - 0.5, 0) / v.fps:.6f}" for k in keyframes)
    return args[:i] + ["-force_key_frames", times, "-forced-idr", "1"] + args[i:]


# ffmpeg's AAC encoder spends most of its time in the trellis coder and in tools that speech at 160 kb/s
# does not need: measured 4.8 s -> 1.2 s for 105 s of narration, loudness and true peak unchanged.
AAC_FAST = ["-aac_coder", "fast", "-aac_pns", "0", "-aac_tns", "0", "-aac_is", "0", "-aac_ms", "0"]
AAC_RATE = 48000
AAC_FRAME = 1024  # samples per AAC frame; the encoder's delay (priming) is one frame too
PRE_ROLL, POST_ROLL = 2, 1  # silent frames fed around a voice chunk and dropped: the encoder starts settled


def voice_args(ffmpeg: str, rate: int, delay: int, total: int, bitrate: str, out: Path) -> list[str]:
    """One segment's audio chunk: mono float32 PCM at `rate` on stdin, resampled to 48 kHz, placed
    `delay` samples in, padded or cut to exactly `total` samples, to a raw AAC (ADTS) stream."""
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "f32le",
        "-ar",
        str(rate),
        "-ac",
        "1",
        "-i",
        "-",
        # pan, not -ac 2: ffmpeg's default mono->stereo downmix matrix lowers each channel by 3 dB
        "-af",
        f"aresample={AAC_RATE},adelay=delays={delay}S:all=1,apad=whole_len={total},"
        f"atrim=end_sample={total},pan=stereo|c0=c0|c1=c0",
        "-c:a",
        "aac",
        *AAC_FAST,
        "-b:a",
        bitrate,
        "-f",
        "adts",
        str(out),
    ]


def pcm_args(ffmpeg: str, bitrate: str, out: Path, meter: tuple[int, int] | None = None) -> list[str]:
    """A chunk of the mixed track: stereo float32 PCM at 48 kHz on stdin (already placed and padded,
    with its neighbours' audio around it), to a raw AAC (ADTS) stream. `meter`: input samples [a, b)
    are also decoded back from the encoder's own packets (a loopback decoder: its output lines up with
    the input, the priming dropped) and measured by ebur128 with true peak, in the same run; its
    summary is logged at info level."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-v", "info" if meter else "error", "-y",
            "-f", "f32le", "-ar", str(AAC_RATE), "-ac", "2", "-i", "-",
            "-map", "0:a", "-c:a", "aac", *AAC_FAST, "-b:a", bitrate, "-f", "adts", str(out)]  # fmt: skip
    if meter:
        trim = f"[dec:0]atrim=start_sample={meter[0]}:end_sample={meter[1]},ebur128=peak=true:framelog=verbose[m]"
        args += ["-dec", "0:0", "-filter_complex", trim, "-map", "[m]", "-f", "null", "-"]
    return args


def adts_frames(data: bytes) -> list[bytes]:
    """Split an ADTS stream into its frames (each carries its own length in its header)."""
    out, i = [], 0
    while i < len(data):
        if len(data) - i < 7 or data[i] != 0xFF or data[i + 1] & 0xF6 != 0xF0:
            raise ValueError(f"not an ADTS frame at byte {i}")
        n = ((data[i + 3] & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        if n < 7 or i + n > len(data):
            raise ValueError(f"truncated ADTS frame at byte {i}")
        out.append(data[i : i + n])
        i += n
    return out


def splice(pieces: Sequence[tuple[list[bytes], int, int]]) -> bytes:
    """Concatenate (frames, first, count) pieces: `count` frames from index `first`, the piece's last
    frame repeated where it runs short (a chunk's tail is silence, and so is that frame)."""
    out = []
    for frames, first, count in pieces:
        take = frames[first : first + count]
        out += take + [frames[-1]] * (count - len(take))
    return b"".join(out)


def join_args(ffmpeg: str, fps: int, audio: Path, out: Path) -> list[str]:
    """The final file, by stream copy: the segments' H.264 streams, concatenated on stdin, at a constant
    rate (their BT.709 tags are in x264's own SPS); the ADTS audio; the index up front for streaming.

    The audio's first frame is the encoder's priming frame; starting the stream one frame early makes
    the MP4 muxer write an edit list that skips it, so sample 0 plays with video frame 0.

    `-r` as an input option stamps every frame at exactly 1/fps (`-framerate` left the raw stream's
    timestamps unset, and the muxer invented 39999/40000-tick ones: 33 stts entries, a variable frame
    rate); `-max_interleave_delta 0` makes the muxer wait for both tracks and interleave them (without
    it the first 95 s of video were stored before any audio, and a browser on a slow link waited 37 s).
    """
    return [
        ffmpeg,
        "-hide_banner",
        "-v",
        "error",
        "-y",
        "-f",
        "h264",
        "-r",
        str(fps),
        "-i",
        "-",
        "-itsoffset",
        f"-{AAC_FRAME / AAC_RATE:.9f}",
        "-f",
        "aac",
        "-i",
        str(audio),
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        "-c",
        "copy",
        "-max_interleave_delta",
        "0",
        "-video_track_timescale",
        str(fps * 512),
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(out),
    ]


def probe_args(ffmpeg: str, path: Path, count: bool = True) -> list[str]:
    """Stream copy to the null muxer counts packets exactly without decoding; without `count`, ffmpeg
    reads the header only (it then says no output was named, and exits 1 after its report)."""
    head = [ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)]
    return [*head, "-map", "0:v:0", "-c", "copy", "-f", "null", "-"] if count else head


def loudness_args(ffmpeg: str, path: Path, skip: int = 0) -> list[str]:
    """ebur128 with true peak; `skip` samples at the start are left out (a raw AAC stream's priming
    frame, which an MP4's edit list hides): the 400 ms blocks then fall as they do in the final file."""
    trim = f"atrim=start_sample={skip}," if skip else ""
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-af",
        f"{trim}ebur128=peak=true",
        "-f",
        "null",
        "-",
    ]


# ---- running ------------------------------------------------------------------------------------

# A picture is raw yuv420p in pieces (bytes or memoryviews) that concatenate to one frame: the renderer
# sends the unchanged card rows of each plane as shared views and only the caption band fresh.
Picture = Sequence[bytes | memoryview]


class Encoder(Protocol):
    def encode_frames(self, pictures: Iterable[Picture], repeats: Sequence[int], v: VideoSettings, out: Path) -> None:
        """Full mode: every frame through x264, picture k repeated repeats[k] times."""

    def encode_runs(
        self, pictures: Iterable[Picture], runs: Sequence[tuple[int, Sequence[int]]], v: VideoSettings, scratch: Path
    ) -> list[bytes]:
        """Skip mode: encode consecutive runs of distinct pictures in one go. runs[i] is (pictures in
        run i, the ones after its first that must be keyframes, counted from its start). Returns each run
        as a stream that stands alone (see `run_args`)."""

    def assemble(self, runs: Sequence[bytes], repeats: Sequence[Sequence[int]], out: Path) -> None:
        """A segment's stream from its runs, each picture shown repeats[run][k] frames."""

    def encode_voice(self, pcm: bytes, rate: int, lead: int, frames: int, bitrate: str, out: Path) -> None:
        """AAC (ADTS) for `frames` AAC frames: `lead` frames of silence, the mono float32 PCM at `rate`,
        then silence. Writes frames + 1 ADTS frames: the first codes the silent frame just before, which
        serves as the priming frame when this chunk opens the episode."""

    def encode_pcm(self, pcm: bytes | memoryview, frames: int, bitrate: str, out: Path, meter: bool = False) -> float | None:
        """AAC (ADTS) of a mixed chunk: stereo float32 PCM at 48 kHz holding PRE_ROLL frames of what comes
        before the chunk, its `frames` frames, then POST_ROLL frames of what follows. Writes frames + 1
        ADTS frames, the first coding the frame just before the chunk (see encode_voice). `meter`: also
        returns the chunk's true peak (dBTP) as decoded from what was encoded, read in the same run."""

    def splice_audio(self, pieces: Sequence[tuple[Path, int, int]], out: Path) -> None: ...
    def join(self, segments: Sequence[Path], audio: Path, fps: int, out: Path) -> None: ...
    def probe(self, path: Path, count: bool = True) -> Probe:
        """What the file is. `count`: its video packets counted by reading them all (else its frames
        are its sample table's: the render's own, just written, file)."""

    def loudness(self, path: Path, skip: int = 0) -> tuple[float, float]: ...


def _feed(args: list[str], pictures: Iterable[Picture], what: str) -> str:
    """Run ffmpeg with raw pictures (or any bytes) written to its stdin; returns what it logged. A thread writes while this one
    makes the next pictures: a frame is 3 MB against a 64 kB pipe, so otherwise making and encoding
    take turns (measured: Part 4 with motion on every concept rendered in 19.2 s instead of 20.8 s).
    An x264 run that reports its progress is paced (pacing.py)."""
    import queue

    paced = "-progress" in args
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE if paced else subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    stdin = proc.stdin
    ready: queue.Queue = queue.Queue(maxsize=3)
    broken = threading.Event()
    pace = pacing.Pace(proc.stdout, pacing.x264_delay(args) + pacing.PACE_SPARE) if paced else None

    def write() -> None:
        while (pic := ready.get()) is not None:
            if broken.is_set():
                continue  # drain: the producer must never block on a full queue
            try:
                if pace is not None:
                    pace.wait()
                for piece in pic:
                    stdin.write(piece)
            except (BrokenPipeError, OSError):
                broken.set()

    writer = threading.Thread(target=write, daemon=True, name="feed-ffmpeg")
    writer.start()
    try:
        try:
            for pic in pictures:
                if broken.is_set():
                    break
                ready.put(pic)
        finally:
            ready.put(None)
            writer.join()
        try:
            stdin.close()
        except BrokenPipeError:
            pass
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read().decode(errors="replace")  # drain stderr before waiting: no pipe deadlock
    _check_exit(proc.wait(), err, what, args)
    return err


def _run(args: list[str], what: str) -> str:
    try:
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)
    except FileNotFoundError:
        raise EncodeError(f"{what}: ffmpeg not found at {args[0]}") from None
    err = proc.stderr.decode(errors="replace")
    _check_exit(proc.returncode, err, what, args)
    return err


def _check_exit(code: int, err: str, what: str, args: list[str] | None = None) -> None:
    """Turn a failed ffmpeg run into one typed, one-line error: disk full (naming the folder, what is
    free there and about what the output needs), or ffmpeg's last words."""
    if code == 0:
        return
    if "No space left on device" in err:
        out = Path(args[-1]) if args and args[-1] not in ("-", "pipe:1") else None
        raise DiskFullError(f"{what}: {disk_full(out, _input_bytes(args or []))}" if out else f"{what}: disk full")
    last = next((ln for ln in reversed(err.strip().splitlines()) if ln.strip()), f"exit status {code}")
    raise EncodeError(f"{what}: ffmpeg failed: {last.strip()}")


def _input_bytes(args: list[str]) -> int:
    """About what an ffmpeg run's output needs: the size of its input files (a concat list's files too)."""
    total = 0
    for flag, value in zip(args, args[1:]):
        if flag != "-i" or not Path(value).is_file():
            continue
        total += Path(value).stat().st_size
        if value.endswith(".txt"):  # a concat list: its files are the inputs
            for ln in Path(value).read_text(errors="replace").splitlines():
                name = ln.strip()[len("file ") :].strip().strip("'") if ln.strip().startswith("file ") else ""
                f = Path(value).parent / name if name and not Path(name).is_absolute() else Path(name)
                total += f.stat().st_size if name and f.is_file() else 0
    return total


class FfmpegEncoder:
    def __init__(self, ffmpeg: str | None = None):
        self._ffmpeg = ffmpeg

    @property
    def ffmpeg(self) -> str:
        # found on first use: locating it runs `ffmpeg -version` (~25 ms), which a no-op render never needs
        if self._ffmpeg is None:
            self._ffmpeg = ffmpeg_exe()
        return self._ffmpeg

    def encode_frames(self, pictures, repeats, v, out):
        every = (pic for pic, n in zip(pictures, repeats) for _ in range(n))
        _feed(distinct_args(self.ffmpeg, v, v.keyint, out), every, f"encoding {out.name}")

    def encode_runs(self, pictures, runs, v, scratch):
        lengths = [n for n, _ in runs]
        keyframes = [at + k for at, (_, inner) in zip(itertools.accumulate([0, *lengths]), runs) for k in (0, *inner)]
        try:
            _feed(run_args(self.ffmpeg, v, keyframes, scratch), pictures, f"encoding {scratch.name}")
            return h264.split_runs(scratch.read_bytes(), lengths)
        except h264.H264Error as e:
            raise EncodeError(f"encoding {scratch.name}: {e}") from None
        finally:
            scratch.unlink(missing_ok=True)

    def assemble(self, runs, repeats, out):
        try:
            # one pass over the segment, so that IDR pictures from different runs are numbered apart
            out.write_bytes(h264.expand(b"".join(runs), [n for reps in repeats for n in reps]))
        except h264.H264Error as e:
            raise EncodeError(f"assembling {out.name}: {e}") from None

    def encode_voice(self, pcm, rate, lead, frames, bitrate, out):
        total = (PRE_ROLL + frames + POST_ROLL) * AAC_FRAME
        self._chunk(
            lambda raw: voice_args(self.ffmpeg, rate, (PRE_ROLL + lead) * AAC_FRAME, total, bitrate, raw), pcm, frames, out
        )

    def encode_pcm(self, pcm, frames, bitrate, out, meter=False):
        span = (PRE_ROLL * AAC_FRAME, (PRE_ROLL + frames) * AAC_FRAME) if meter else None
        err = self._chunk(lambda raw: pcm_args(self.ffmpeg, bitrate, raw, span), pcm, frames, out)
        return parse_loudness(err)[1] if meter else None

    def _chunk(self, args, pcm: bytes | memoryview, frames: int, out: Path) -> str:
        """Encode a chunk fed with PRE_ROLL frames before it and keep frames + 1 ADTS frames: frame j
        codes input frame j - 1 (frame 0 is the priming frame), so input frame PRE_ROLL - 1, the last
        pre-roll frame, is ADTS frame PRE_ROLL. Returns what ffmpeg logged."""
        what = f"encoding audio {out.name}"
        raw = out.with_name(out.name + ".adts")
        try:
            err = _feed(args(raw), [(pcm,)], what)
            got = adts_frames(raw.read_bytes())
        except ValueError as e:
            raise EncodeError(f"{what}: {e}") from None
        finally:
            raw.unlink(missing_ok=True)
        keep = got[PRE_ROLL : PRE_ROLL + frames + 1]
        if len(keep) != frames + 1:
            raise EncodeError(f"{what}: the AAC encoder returned {len(got)} frames, expected at least {PRE_ROLL + frames + 1}")
        out.write_bytes(b"".join(keep))
        return err

    def splice_audio(self, pieces, out):
        try:
            out.write_bytes(splice([(adts_frames(Path(p).read_bytes()), a, n) for p, a, n in pieces]))
        except ValueError as e:
            raise EncodeError(f"splicing audio: {e}") from None

    def join(self, segments, audio, fps, out):
        # a segment is a complete Annex B stream (headers, IDR, frames): back to back they make one stream
        _feed(join_args(self.ffmpeg, fps, audio, out), ((Path(p).read_bytes(),) for p in segments), "joining segments")

    def probe(self, path, count=True):
        if not Path(path).is_file():
            raise ProbeError(f"{path}: no such file")
        args = probe_args(self.ffmpeg, path, count)
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
        probe = parse_probe(proc.stderr.decode(errors="replace"), path)
        from . import mp4

        try:
            tracks, mdat = mp4.read_tracks(path)
        except (OSError, ValueError, IndexError, struct.error) as e:
            raise ProbeError(f"{path}: unreadable MP4 sample tables ({e})") from None
        video = next((t for t in tracks if t.kind == "vide"), None)
        offsets = [off for t in tracks for off, _, _ in t.chunks]
        return dataclasses.replace(
            probe,
            frames=probe.frames if count else sum(n for n, _ in video.stts) if video else 0,
            frame_lengths=len(video.stts) if video else 0,
            index_first=not offsets or 0 <= mdat <= min(offsets),
            interleave_s=mp4.interleave_gap(tracks),
        )

    def loudness(self, path, skip=0):
        proc = subprocess.run(
            loudness_args(self.ffmpeg, path, skip), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600
        )
        return parse_loudness(proc.stderr.decode(errors="replace"))
