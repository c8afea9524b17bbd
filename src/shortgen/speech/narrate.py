"""Stage 2: text -> speech audio + per-word timings, from the engine itself.

Timings come from espeak's word events (their sample positions), never from spreading the duration
over characters. SpokenWord ends come from the audio: the last voiced 10 ms window before the next word.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import wave
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import keys
from ..cache import Cache, Stats, file_digest
from ..errors import DiskFullError, TTSError, VoiceError, Where

if TYPE_CHECKING:
    import numpy as np

WORKER_TIMEOUT_S = 60
ALIGN_VERSION = 1  # bump when align() changes: cached word timings are keyed by it
# How far an utterance's length may stray from the engine's second, independent synthesis of the same
# text at the same rate (see espeak_worker._speak_verified). Measured: the two differ by at most 0.16%
# (233 samples in 144,000) within one worker and not at all between fresh workers, while a rate off
# by even 5 wpm in 175 changes the length by about 2.5%, and the observed fault (200 for 175) by 12.5%.
RATE_TOLERANCE = 0.008
RATE_SLACK_SAMPLES = 400  # ... plus this much (18 ms at 22.05 kHz), for the shortest utterances


@dataclass(frozen=True)
class SpokenWord:
    text: str
    char_start: int  # 0-based, in the narration text
    start: int  # sample where the word starts
    end: int  # sample where its voiced part ends


@dataclass(frozen=True)
class Narration:
    text: str
    voice: str
    rate: int
    wav: Path
    sample_rate: int
    samples: int
    words: tuple[SpokenWord, ...]

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


@dataclass(frozen=True)
class Request:
    text: str
    voice: str
    rate: int
    label: str  # for errors: "scripts/part4.yaml:7:5: segments[0]"
    voice_where: Where | None = None  # where the voice was configured


@dataclass(frozen=True)
class RateReport:
    """What the engine measured of one utterance: its length, the length of a second synthesis of the
    same text at the same rate (set afresh), and the rate espeak had in effect while it spoke."""

    samples: int
    reference_samples: int
    rates_seen: tuple[int, ...]


@dataclass
class SpeechResult:
    """How a batch of utterances went, by job index."""

    ok: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    reports: dict[int, RateReport] = field(default_factory=dict)
    unknown_voice: str | None = None
    voices: list[str] = field(default_factory=list)
    lib: str = ""  # the libespeak-ng file the worker mapped

    @classmethod
    def from_worker(cls, d: dict) -> SpeechResult:
        """The worker's result file (JSON: string keys) as typed data."""
        return cls(
            ok=[int(n) for n in d.get("ok", [])],
            failed={int(n): str(why) for n, why in d.get("failed", {}).items()},
            reports={
                int(n): RateReport(int(r["samples"]), int(r["reference_samples"]), tuple(r["rates_seen"]))
                for n, r in d.get("jobs", {}).items()
            },
            unknown_voice=d.get("unknown_voice"),
            voices=list(d.get("voices", [])),
            lib=d.get("lib") or "",
        )

    @classmethod
    def all_failed(cls, count: int, why: str) -> SpeechResult:
        return cls(failed={i: why for i in range(count)})


class Engine(Protocol):
    """Speaks a batch of requests into WAV files with word events. Fakes implement this for tests.

    Each job is {"text", "voice", "rate", "wav", "events"}; the result is a SpeechResult. `workdir` is
    a private folder for the engine's own temporaries."""

    id: str

    def speak(self, jobs: Sequence[dict], workdir: Path | None = None) -> SpeechResult: ...


# ---- tokens and timing --------------------------------------------------------------------------


def tokens(text: str) -> list[tuple[str, int]]:
    """Whitespace-separated words with their 0-based character offsets."""
    return [(m.group(), m.start()) for m in re.finditer(r"\S+", text)]


def align(text: str, events: list[dict], pcm: np.ndarray, sample_rate: int) -> tuple[SpokenWord, ...]:
    """Map engine word events to the script's words by character offset.

    espeak can fire several events for one word ("2024", "ReLU") and none for a word it merged with the
    previous one ("in the"); the first event inside a word's span starts it, and a word with no event
    gets a start interpolated by characters between its neighbours that have one.
    """
    toks = tokens(text)
    starts: list[int | None] = [None] * len(toks)
    spans = [(off, off + len(w)) for w, off in toks]
    ends = [b for _, b in spans]
    seen_pos: set[int] = set()
    for ev in sorted(events, key=lambda e: (e["sample"], e["pos"])):
        pos = ev["pos"] - 1
        if pos in seen_pos:
            continue
        seen_pos.add(pos)
        k = bisect_right(ends, pos)  # the word holding this character, or the next one after a space
        if k < len(toks) and (starts[k] is None or ev["sample"] < starts[k]):
            starts[k] = ev["sample"]
    total = len(pcm)
    # interpolate the gaps by character offset
    known = [k for k, s in enumerate(starts) if s is not None]
    if not known:
        raise TTSError("the engine reported no word events")
    firm = {k: s for k, s in enumerate(starts) if s is not None}
    at: list[int] = []
    for k in range(len(toks)):
        if k in firm:
            at.append(firm[k])
            continue
        prev = max((i for i in known if i < k), default=None)
        nxt = min((i for i in known if i > k), default=None)
        a_s, a_c = (firm[prev], spans[prev][0]) if prev is not None else (0, 0)
        b_s, b_c = (firm[nxt], spans[nxt][0]) if nxt is not None else (total, len(text))
        frac = (spans[k][0] - a_c) / max(1, b_c - a_c)
        at.append(int(a_s + frac * (b_s - a_s)))
    # starts must be non-decreasing
    for k in range(1, len(at)):
        at[k] = max(at[k], at[k - 1])

    voiced = _voiced_windows(pcm, sample_rate)
    win = sample_rate // 100
    words = []
    for k, (w, off) in enumerate(toks):
        s = at[k]
        limit = at[k + 1] if k + 1 < len(toks) else total
        e = _last_voiced_end(voiced, win, s, limit)
        words.append(SpokenWord(text=w, char_start=off, start=s, end=max(e, min(limit, s + win))))
    return tuple(words)


def _voiced_windows(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    import numpy as np  # lazily: a fully cached run never needs it

    win = sample_rate // 100
    n = len(pcm) // win
    if n == 0:
        return np.zeros(0, dtype=bool)
    frames = pcm[: n * win].astype(np.float32).reshape(n, win)
    rms = np.sqrt((frames**2).mean(axis=1))
    peak = float(rms.max()) or 1.0
    return rms > peak * 0.03  # -30 dB below the loudest window


def _last_voiced_end(voiced: np.ndarray, win: int, start: int, limit: int) -> int:
    import numpy as np  # lazily: a fully cached run never needs it

    a, b = start // win, min(len(voiced), -(-limit // win))
    idx = np.flatnonzero(voiced[a:b])
    return min(limit, (a + int(idx[-1]) + 1) * win) if len(idx) else start


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM samples and their rate. espeak writes plain PCM WAV, so the stdlib reader suffices."""
    import numpy as np  # lazily: a fully cached run never needs it

    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise TTSError(f"{path}: expected 16-bit PCM from the speech engine, got {8 * w.getsampwidth()}-bit")
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            if w.getnchannels() > 1:
                x = x.reshape(-1, w.getnchannels()).mean(axis=1).astype(np.int16)
            return x, w.getframerate()
    except (wave.Error, EOFError) as e:
        raise TTSError(f"{path}: unreadable WAV from the speech engine: {e}") from None


# ---- the real engine ----------------------------------------------------------------------------


class EspeakEngine:
    """pyttsx3 + espeak-ng, run in a worker process with a timeout.

    `library` picks the libespeak-ng: "wheel" (the default: the espeakng-loader wheel's, so a script
    sounds and times the same on every machine), "system" (the distribution's), or a path. The id, which
    keys the narration cache, names the library file by digest; the worker reports the file it really
    mapped, and speech from any other is refused."""

    def __init__(self, library: str = "wheel") -> None:
        self.library = library
        self.lib_path = _library_file(library)
        self.id = _espeak_engine_id(self.lib_path)

    def with_library(self, library: str) -> EspeakEngine:
        return self if library == self.library else EspeakEngine(library)

    def _run(self, spec: dict, workdir: Path, timeout: float) -> tuple[dict | None, str]:
        """Run the worker on `spec`; (its result or None, the last line it printed on stderr)."""
        spec_path, result_path = workdir / "jobs.json", workdir / "result.json"
        try:
            spec_path.write_text(json.dumps({**spec, "result": str(result_path), "library": self.library}))
        except OSError as e:
            if e.errno == 28:
                raise DiskFullError(f"disk full while writing {spec_path}") from None
            raise
        from . import espeak_worker as worker

        proc = worker.take_standby(self.library)  # started ahead of need, waiting for its job file
        if proc is None:
            cmd = worker.command(str(spec_path))
            out, env = subprocess.DEVNULL, worker.worker_env()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, env=env)
        try:
            _, stderr = proc.communicate(None if proc.stdin is None else f"{spec_path}\n".encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        err = stderr.decode(errors="replace")
        if "No space left on device" in err:
            raise DiskFullError(f"disk full while the speech engine wrote into {workdir}")
        tail = next((ln for ln in reversed(err.strip().splitlines()) if ln.strip()), f"exit status {proc.returncode}")
        return (json.loads(result_path.read_text()) if result_path.exists() else None), tail.strip()

    def speak(self, jobs: Sequence[dict], workdir: Path | None = None) -> SpeechResult:
        with _workdir(workdir) as tmp:
            try:
                res, tail = self._run({"jobs": list(jobs)}, tmp, WORKER_TIMEOUT_S + 2 * len(jobs))
            except subprocess.TimeoutExpired:
                return SpeechResult.all_failed(len(jobs), "timed out")
            if res is None:
                return SpeechResult.all_failed(len(jobs), tail)
            result = SpeechResult.from_worker(res)
            if self.lib_path and result.lib and Path(result.lib).resolve() != Path(self.lib_path).resolve():
                return SpeechResult.all_failed(len(jobs), f"the worker loaded {result.lib}, not {self.lib_path}")
            return result

    def voices(self) -> list[str]:
        with _workdir(None) as tmp:
            res, _ = self._run({"jobs": [], "list_voices": True}, tmp, WORKER_TIMEOUT_S)
            return res["voices"] if res else []


@contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        try:
            yield given
        finally:
            import shutil

            shutil.rmtree(given, ignore_errors=True)
        return
    with tempfile.TemporaryDirectory(prefix="shortgen-tts-") as tmp:
        yield Path(tmp)


def _library_file(library: str) -> str:
    """The libespeak-ng file a worker asked for `library` will map."""
    if library == "wheel":
        import espeakng_loader

        return str(Path(espeakng_loader.get_library_path()).resolve())
    if library == "system":
        # where the dynamic loader finds the soname (without ctypes.util.find_library, which runs
        # ldconfig and gcc: 30 ms on every render)
        import glob

        for pat in (
            "/usr/lib/*/libespeak-ng.so.1",
            "/usr/lib64/libespeak-ng.so.1",
            "/usr/lib/libespeak-ng.so.1",
            "/usr/local/lib/libespeak-ng.so.1",
        ):
            for p in sorted(glob.glob(pat)):
                return str(Path(p).resolve())
        raise TTSError(
            "speech_library is 'system', but no libespeak-ng.so.1 is installed "
            "(apt-get install libespeak-ng1), or use the default, 'wheel'"
        )
    given = Path(library).expanduser()
    if not given.is_file():
        raise TTSError(f"speech_library: no such file: {library}")
    return str(given.resolve())


@lru_cache(maxsize=4)
def _espeak_engine_id(lib: str) -> str:
    """pyttsx3's version and a digest of the exact espeak library: a new engine invalidates the cache."""
    return f"pyttsx3-{_pyttsx3_version()}/espeak-ng-{file_digest(Path(lib))[:12]}"


def _pyttsx3_version() -> str:
    """From the installed dist-info's name: importlib.metadata scans every package (35 ms per render)."""
    import importlib.util

    spec = importlib.util.find_spec("pyttsx3")
    if spec and spec.origin:
        for info in Path(spec.origin).parent.parent.glob("pyttsx3-*.dist-info"):
            return info.name[len("pyttsx3-") : -len(".dist-info")]
    from importlib.metadata import version

    return version("pyttsx3")


# ---- the stage ----------------------------------------------------------------------------------


@contextmanager
def _one_speaker(cache: Cache, names: list[str]) -> Iterator[None]:
    """Hold the narrations `names` (no two processes, on any machine sharing the cache, speak the same
    one at once), then the machine's speech engine: one at a time per machine (a batch renders parts in
    parallel processes; a cluster's workers may share a machine). Measured: two espeak workers side by
    side sometimes cut an utterance short or cancelled it, and a cut one can pass for complete; speech is
    a fraction of a second per part, so queueing costs nothing. The narrations are taken in sorted order,
    before the engine, so two holders never wait on each other."""
    from contextlib import ExitStack

    from ..cache import HOST

    with ExitStack() as held:
        for name in sorted(set(names)):
            held.enter_context(cache.locked(f"narration:{name}"))
        held.enter_context(cache.locked(f"tts-engine:{HOST}"))
        yield


def _speak(requests, todo: list[int], paths, engine: Engine, cache: Cache, stats: Stats, on_progress) -> dict[int, str]:
    """One attempt at the requests `todo`; each that passes enters the cache. Returns those that failed."""
    jobs: list[dict[str, Any]] = []
    for i in todo:
        paths[i][0].parent.mkdir(parents=True, exist_ok=True)
        jobs.append(
            {
                "text": requests[i].text,
                "voice": requests[i].voice,
                "rate": requests[i].rate,
                "wav": str(cache.tmp_path("speech.wav")),
                "events": str(cache.tmp_path("events.json")),
            }
        )
    if on_progress:
        on_progress(len(requests) - len(todo), len(requests))
    try:
        res = engine.speak(jobs, cache.tmp_path("tts"))
    finally:
        stats.tts += 1
    if res.unknown_voice:
        _remove_jobs(jobs)
        bad = res.unknown_voice
        req = next(r for r in requests if r.voice == bad)
        hint = get_close_matches(bad, res.voices, n=3)
        raise VoiceError(
            req.voice_where or Where(req.label),
            "settings.voice",
            f"unknown voice {bad!r}" + (f"; did you mean {', '.join(hint)}?" if hint else ""),
        )
    failed = {}
    for n, i in enumerate(todo):
        job = jobs[n]
        problem = res.failed.get(n)
        if problem and problem.startswith("disk full"):
            _remove_jobs(jobs)
            raise DiskFullError(f"{requests[i].label}: {problem}")
        problem = (
            problem
            or _check_audio(job["wav"], job["events"], requests[i])
            or verify_rate(res.reports.get(n), job["wav"], requests[i])
        )
        if problem:
            failed[i] = problem
            _remove_jobs([job])
        else:
            # events first, then the audio: an entry exists only once both are complete
            os.replace(job["events"], paths[i][1])
            os.replace(job["wav"], paths[i][0])
    return failed


def _cached(requests: Sequence[Request], engine: Engine, cache: Cache) -> tuple[list[str], list[tuple[Path, Path]]]:
    """Each request's narration key, and the cache paths of its WAV and its word events."""
    names = [keys.narration(engine.id, r.text, r.voice, r.rate) for r in requests]
    return names, [(cache.path("narration", k, ".wav"), cache.path("narration", k, ".json")) for k in names]


def unspoken(requests: Sequence[Request], engine: Engine, cache: Cache) -> list[str]:
    """The texts of `requests` that are not in the cache yet."""
    return [r.text for r, (w, j) in zip(requests, _cached(requests, engine, cache)[1]) if not cache.has(w, j)]


def narrate(
    requests: Sequence[Request], engine: Engine, cache: Cache, stats: Stats | None = None, on_progress=None, on_speak=None
) -> list[Narration]:
    """Speak every request, from the cache where possible. Raises TTSError/VoiceError naming the segment.
    `on_speak(texts)` hears which texts are about to be spoken: work that needs only the words can start
    while the engine speaks. Nothing enters the cache before `verify` accepts it."""
    stats = stats or Stats()
    names, paths = _cached(requests, engine, cache)
    todo = [i for i, (w, j) in enumerate(paths) if not cache.has(w, j)]
    stats.hits["narration"] += len(requests) - len(todo)

    if todo:
        cache.sweep()  # what an interrupted run left behind
    if todo and on_speak:
        on_speak([requests[i].text for i in todo])
    if todo:
        # new speech is aligned with numpy afterwards: import it while the engine's process speaks
        import importlib
        import threading

        threading.Thread(target=importlib.import_module, args=("numpy",), daemon=True).start()
    failed: dict[int, str] = {}
    for _attempt in (1, 2):  # a rare utterance fails (an empty WAV, a wrong rate): speak it again, alone
        if not todo:
            break
        with _one_speaker(cache, [names[i] for i in todo]):
            todo = [i for i in todo if not cache.has(*paths[i])]  # spoken meanwhile by another worker
            if todo:
                failed = _speak(requests, todo, paths, engine, cache, stats, on_progress)
            todo = list(failed) if todo else []
    if todo:
        i = todo[0]
        raise TTSError(f"{requests[i].label}: speech synthesis failed twice: {failed[i]}")
    if on_progress:
        on_progress(len(requests), len(requests))

    out = []
    for r, (wav, js) in zip(requests, paths):
        # Aligned words are cached beside the events, so a fully cached run reads no audio samples.
        aligned = js.with_name(f"{js.stem}.words-v{ALIGN_VERSION}.json")
        try:
            d = json.loads(aligned.read_text())
            sr, samples, words = d["sample_rate"], d["samples"], tuple(SpokenWord(*w) for w in d["words"])
        except (OSError, ValueError, KeyError, TypeError):
            pcm, sr = read_wav(wav)
            samples = len(pcm)
            words = align(r.text, json.loads(js.read_text()), pcm, sr)
            with cache.writing(aligned) as tmp:
                tmp.write_text(
                    json.dumps(
                        {"sample_rate": sr, "samples": samples, "words": [[w.text, w.char_start, w.start, w.end] for w in words]}
                    )
                )
        out.append(Narration(text=r.text, voice=r.voice, rate=r.rate, wav=wav, sample_rate=sr, samples=samples, words=words))
    return out


def _remove_jobs(jobs: Sequence[dict]) -> None:
    for job in jobs:
        for f in (job["wav"], job["events"]):
            Path(f).unlink(missing_ok=True)


def verify_rate(report: RateReport | None, wav: str, req: Request) -> str | None:
    """Hold an utterance to the rate it was asked for, before it may be cached. The engine reports the
    rate it had in effect while it spoke (espeak's own parameter, read on its synthesis thread) and the
    length of a second synthesis of the same text, made after setting the rate again from scratch:
    espeak is deterministic, so the two lengths agree within RATE_TOLERANCE unless one of them was not
    spoken at the requested rate. The measured rate is the requested rate scaled by that ratio."""
    if not report:
        return "the engine did not report the rate it spoke at"
    seen = report.rates_seen
    if any(r != req.rate for r in seen) or not seen:
        return f"spoken at {', '.join(map(str, seen)) or 'an unknown rate'} wpm, not {req.rate}"
    try:
        with wave.open(wav) as w:
            n = w.getnframes()
    except (OSError, wave.Error, EOFError):
        return "unreadable output"
    ref = report.reference_samples
    if n != report.samples or ref <= 0:
        return "the audio is not the length the engine reported"
    if abs(n - ref) > RATE_TOLERANCE * ref + RATE_SLACK_SAMPLES:
        return f"spoken at about {req.rate * ref / n:.0f} wpm, not {req.rate} (measured against a second synthesis)"
    return None


def _check_audio(wav: str, events: str, req: Request) -> str | None:
    """Non-empty, voiced, and long enough to hold every word the engine said it spoke."""
    try:
        with wave.open(wav) as w:
            n = w.getnframes()
        evs = json.loads(Path(events).read_text())
    except (OSError, wave.Error, EOFError, json.JSONDecodeError) as e:
        return f"unreadable output ({str(e).strip()[:80] or 'not a WAV file'})"
    if n == 0:
        return "empty WAV"
    if not evs:
        return "no word events"
    # an event past the audio's end means audio is missing, unless the speech had already passed its
    # position (espeak-ng 1.51 repeats a stale event at the end of some utterances, at a space)
    reached = max((e["pos"] for e in evs if e["sample"] < n), default=0)
    if any(e["sample"] >= n and e["pos"] > reached for e in evs):
        return "audio shorter than its word events"
    # a cut-short utterance can end cleanly: its word events then stop before the text does (the last
    # word may share an event with the one before it, so the second-last is the bar)
    words = tokens(req.text)
    if len(words) >= 2 and max(e["pos"] - 1 for e in evs) < words[-2][1]:
        return "the speech stopped before the end of the text"
    return None
