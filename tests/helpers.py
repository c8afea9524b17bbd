"""Test and benchmark helpers: references the library itself does not need."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from shortgen.audio.sound import RATE, load_speech, master
from shortgen.picture import captions, draw
from shortgen.picture.frames import planes420, ycc
from shortgen.plan import Plan, SegmentPlan, State
from shortgen.settings import Settings
from shortgen.video.encode import ffmpeg_exe


def yuv420(img: Image.Image) -> tuple[bytes, bytes, bytes]:
    """An RGB picture as yuv420p planes, BT.709 tv range: what the renderer makes in pieces."""
    return planes420(ycc(img))


def compose(card: Image.Image, overlay: Image.Image | None, settings: Settings) -> Image.Image:
    """A card with a caption overlay pasted into its band."""
    if overlay is None:
        return card
    out = card.copy()
    x0, y0, _, _ = draw.caption_origin(settings)
    out.paste(overlay, (x0, y0), overlay)
    return out


def draw_state(card: draw.Drawn, seg: SegmentPlan, state: State, settings: Settings) -> draw.Drawn:
    """One distinct picture drawn in full: the card plus the cue with the spoken word highlighted."""
    if state.cue is None:
        return draw.Drawn(card.image, list(card.boxes))
    cue = seg.cues[state.cue]
    ov = captions.draw_overlay(seg, state.cue, None if state.word is None else state.word - cue.first, settings)
    return draw.Drawn(compose(card.image, ov.image, settings), card.boxes + ov.boxes)


def episode_track(plan: Plan, wavs: dict, target_lufs: float, ceiling_dbtp: float) -> np.ndarray:
    """The whole episode's mastered narration at the mastering rate, each at its planned frame."""
    track = np.zeros(-(-plan.total_frames * RATE // plan.fps), dtype=np.float32)
    for seg in plan.segments:
        x, rate = load_speech(wavs[seg.audio_key])
        assert rate == RATE, "the engine's speech"
        y = master(x, target_lufs, ceiling_dbtp).samples
        at = seg.narration_start * RATE // plan.fps
        track[at : at + len(y)] = y[: len(track) - at]
    return track


def write_wav(path, x: np.ndarray, rate: int = RATE) -> None:
    """Mono float samples as a 16-bit WAV."""
    import wave

    pcm = (np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def parse_srt(text: str) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of each cue of an SRT file."""

    def ms(stamp: str) -> int:
        hms, frac = stamp.replace(",", ".").split(".")
        h, m, s = (int(x) for x in hms.split(":"))
        return ((h * 60 + m) * 60 + s) * 1000 + int(frac)

    out = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) < 3:
            continue
        a, b = (x.strip() for x in lines[1].split("-->"))
        out.append((ms(a), ms(b), " ".join(lines[2:])))
    return out


# ---- audio files, good and bad -------------------------------------------------------------------


def tone_wav(path: Path, seconds: float, freq: float = 2000.0, rate: int = 44100, channels: int = 1, amp: float = 0.3) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(x, channels).tobytes())
    return path


def long_wav(path: Path, hours: float = 3.0, rate: int = 8000) -> Path:
    """A three-hour WAV that costs little disk: a minute of tone, then a sparse run of silence."""
    tone_wav(path, 60.0, rate=rate)
    n = int(hours * 3600 * rate) * 2
    with open(path, "r+b") as f:
        f.seek(40)
        f.write(n.to_bytes(4, "little"))  # the data chunk's size
        f.seek(4)
        f.write((n + 36).to_bytes(4, "little"))
        f.truncate(44 + n)
    return path


def bad_audio(d: Path) -> dict[str, str]:
    (d / "corrupt.mp3").write_bytes(b"\xff\xfb garbage " * 50)
    tone_wav(d / "silent.wav", 10.0, amp=0.0)
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.txt").write_text("la la la")
    silent_video = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=d=1:s=64x64", "-c:v", "libx264"]
    subprocess.run([*silent_video, str(d / "video.mp4")], check=True)
    whole = tone_wav(d / "cut.wav", 10.0).read_bytes()
    (d / "cut.flac").write_bytes(whole[:30])
    return {
        "missing.wav": "no such file",
        "corrupt.mp3": "not a readable audio file",
        "silent.wav": "silent",
        "empty.wav": "is empty",
        "notes.txt": "unsupported file type",
        "video.mp4": "no audio stream",
        "cut.flac": "cut.flac",
    }


def read_pcm(path) -> np.ndarray:
    """A 16-bit mono WAV (the engine's speech) as float samples."""
    from shortgen.speech.narrate import read_wav

    return read_wav(path)[0].astype(np.float32) / 32768.0
