"""Fakes at the edges, for fast tests: a speech engine and an encoder that need no espeak and no ffmpeg.

They live in the library (not under tests/) so that the worker processes of a batch render, which are
spawned fresh, can import them by name.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import wave
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import EncodeError
from .speech.narrate import RateReport, SpeechResult, tokens
from .video.reports import Probe


class FakeEngine:
    """Deterministic speech: each word is a tone burst whose length follows its letters and the rate,
    with a gap after it, written as a real WAV with engine-style word events. It counts its calls.

    `samples_per_letter` sets the pace at `rate` 175; a higher rate speaks proportionally faster, like espeak.
    """

    SAMPLE_RATE = 22050

    def __init__(
        self,
        samples_per_letter: int = 1300,
        gap: int = 1500,
        voices=("gmw/en-us",),
        fail_first: int = 0,
        fail_with: str | None = None,
        stale_rate: int | None = None,
        stale_jobs: int = 0,
        reports_stale_rate: bool = True,
    ) -> None:
        self.id = f"fake-{samples_per_letter}-{gap}"
        self.samples_per_letter, self.gap = samples_per_letter, gap
        self.known_voices = list(voices)
        self.calls = 0
        self.spoken: list[str] = []
        self.fail_first = fail_first  # return an empty WAV for the first N jobs: the espeak flake
        self.fail_with = fail_with  # fail every job with this message
        # the wrong-rate fault: the first `stale_jobs` jobs are spoken at `stale_rate` instead; the
        # engine's own rate report shows it unless `reports_stale_rate` is False (then only the
        # second synthesis, made at the right rate, gives it away)
        self.stale_rate, self.stale_jobs, self.reports_stale_rate = stale_rate, stale_jobs, reports_stale_rate

    def speak(self, jobs: Sequence[dict], workdir: Path | None = None) -> SpeechResult:
        self.calls += 1
        for j in jobs:
            if j["voice"] not in self.known_voices:
                return SpeechResult(unknown_voice=j["voice"], voices=self.known_voices)
        failed: dict[int, str] = {}
        reports: dict[int, RateReport] = {}
        for n, j in enumerate(jobs):
            if self.fail_with:
                failed[n] = self.fail_with
                continue
            spoken_at = j["rate"]
            if self.stale_jobs > 0 and self.stale_rate:
                self.stale_jobs -= 1
                spoken_at = self.stale_rate
            pcm, events = self.synthesise(j["text"], spoken_at)
            reference = len(self.synthesise(j["text"], j["rate"])[0])
            if self.fail_first > 0:
                self.fail_first -= 1
                pcm = pcm[:0]
            self.spoken.append(j["text"])
            with wave.open(j["wav"], "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(self.SAMPLE_RATE)
                w.writeframes(pcm.astype("<i2").tobytes())
            Path(j["events"]).write_text(json.dumps(events))
            reports[n] = RateReport(len(pcm), reference, (spoken_at if self.reports_stale_rate else j["rate"],))
        return SpeechResult(ok=[n for n in range(len(jobs)) if n not in failed], failed=failed, reports=reports)

    def synthesise(self, text: str, rate: int) -> tuple[np.ndarray, list[dict]]:
        import numpy as np

        scale = 175 / rate
        parts, events, at = [np.zeros(self.gap, np.int16)], [], self.gap
        for word, off in tokens(text):
            n = int(max(2, len(word)) * self.samples_per_letter * scale)
            t = np.arange(n) / self.SAMPLE_RATE
            parts.append((np.sin(2 * np.pi * 220 * t) * 8000 * np.hanning(n)).astype(np.int16))
            gap = int(self.gap * scale) * (3 if word[-1] in ".,;:!?" else 1)
            parts.append(np.zeros(gap, np.int16))
            events.append({"pos": off + 1, "len": len(word), "sample": at})
            at += n + gap
        return np.concatenate(parts), events


class FakeEncoder:
    """Writes JSON descriptions instead of video: fast, and it records every call for tests."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_after = fail_after  # pictures to consume before failing: a crash mid-encode

    def _digests(self, pictures, v, target: Path) -> list[str]:
        """Consume the pictures as an encoder would: each must be one yuv420p frame; with `fail_after`,
        fail part-way, leaving a half-written `target` as a killed encoder does."""
        digests = []
        for i, pic in enumerate(pictures):
            if self.fail_after is not None and i >= self.fail_after:
                target.write_text("half-written")
                raise EncodeError(f"encoding {target.name}: simulated failure")
            data = b"".join(pic)
            assert len(data) == v.width * v.height * 3 // 2, "a picture of the wrong size (yuv420p)"
            digests.append(hashlib.sha256(data).hexdigest()[:12])
        return digests

    def encode_frames(self, pictures, repeats, v, out):
        self.calls.append(("frames", out.name))
        digests = self._digests(pictures, v, out)
        out.write_text(
            json.dumps(
                {"frames": sum(repeats), "fps": v.fps, "w": v.width, "h": v.height, "pictures": digests, "repeats": list(repeats)}
            )
        )

    def encode_runs(self, pictures, runs, v, scratch):
        lengths = [n for n, _ in runs]
        self.calls.append(("runs", lengths))
        digests = self._digests(pictures, v, scratch)
        assert len(digests) == sum(lengths), "as many pictures as the runs hold"
        at = list(itertools.accumulate([0, *lengths]))
        return [
            json.dumps({"pictures": digests[a:b], "w": v.width, "h": v.height, "fps": v.fps}).encode() for a, b in zip(at, at[1:])
        ]

    def assemble(self, runs, repeats, out):
        parts = [json.loads(r) for r in runs]
        for p, reps in zip(parts, repeats):
            assert len(p["pictures"]) == len(reps), "a repeat count for every picture of a run"
        out.write_text(
            json.dumps(
                {
                    "frames": sum(map(sum, repeats)),
                    "fps": parts[0]["fps"],
                    "w": parts[0]["w"],
                    "h": parts[0]["h"],
                    "pictures": [d for p in parts for d in p["pictures"]],
                    "repeats": [n for reps in repeats for n in reps],
                }
            )
        )

    def encode_voice(self, pcm, rate, lead, frames, bitrate, out):
        self.calls.append(("audio", out.name))
        out.write_text(json.dumps({"samples": len(pcm) // 4, "rate": rate, "lead": lead, "frames": frames}))

    def encode_pcm(self, pcm, frames, bitrate, out, meter=False):
        self.calls.append(("audio", out.name))
        out.write_text(json.dumps({"samples": len(pcm) // 8, "frames": frames, "mixed": True}))
        return self.loudness(out)[1] if meter else None

    def splice_audio(self, pieces, out):
        self.calls.append(("splice", out.name))
        out.write_text(json.dumps([[str(p), a, n] for p, a, n in pieces]))

    def join(self, segments, audio, fps, out):
        self.calls.append(("join", out.name))
        parts = [json.loads(Path(p).read_text()) for p in segments]
        out.write_text(
            json.dumps(
                {
                    "frames": sum(p["frames"] for p in parts),
                    "fps": parts[0]["fps"],
                    "w": parts[0]["w"],
                    "h": parts[0]["h"],
                    "audio": str(audio),
                }
            )
        )

    def probe(self, path, count=True):
        d = json.loads(Path(path).read_text())
        return Probe(
            duration=d["frames"] / d["fps"],
            width=d["w"],
            height=d["h"],
            fps=Fraction(d["fps"]),
            codec="h264",
            profile="fake",
            pix_fmt="yuv420p",
            colour="tv, bt709",
            frames=d["frames"],
            audio="aac",
            audio_rate=48000,
            audio_channels="stereo",
        )

    def loudness(self, path, skip=0):
        return (-14.0, -1.5)
