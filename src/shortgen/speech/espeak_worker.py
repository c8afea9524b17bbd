"""Child process that speaks text with pyttsx3 + espeak-ng. Run as `python -m shortgen.speech.espeak_worker JOBS.json`,
or as `... --standby LIBRARY`, started ahead of need, reading the job file's path from stdin (start_standby).

Why a separate process: espeak initialises once per process, pyttsx3 can hang on a later call, and the
driver prints `Audio saved to ...` on stdout. The parent gives us a timeout, a clean stdout and a retry.
The worker dies with its parent (a killed render leaves no speaker behind).

Input JSON: {"jobs": [{"text", "voice", "rate", "wav", "events"}], "result": path, "library": "wheel"|"system"|path}
For every job we write the WAV and a JSON of word events {"pos", "len", "sample"} (pos is 1-based chars).
The result file says which jobs succeeded and, per job, what the engine itself measured: the speaking
rate in effect while it synthesised, and the length of a second, independent synthesis of the same
text (see `_speak_verified`). A voice the engine lacks is reported, not silently replaced.

Why every utterance sets its voice and rate afresh: espeak runs asynchronously (pyttsx3 starts it in
AUDIO_OUTPUT_RETRIEVAL mode), so espeak_SetParameter only queues a command for espeak's own thread, and
an espeak_Cancel or a stale end-of-message from an earlier utterance can leave a worker speaking at the
driver's initial 200 wpm while we believe 175 is set. Setting the rate only when it changed (as we did)
made every later utterance of such a worker inherit the fault. Now each utterance waits until espeak is
idle, sets voice and rate, and waits until espeak's own parameter reads back the value before it speaks.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import sys
import threading
import time

IDLE_TIMEOUT_S = 10.0  # espeak idle before the next utterance; far above the ~1 ms it normally takes
APPLY_TIMEOUT_S = 5.0  # a queued parameter change reaching espeak's thread


def _die_with_parent(parent: str | None = None) -> None:
    """Linux: the kernel sends us SIGKILL when the render that started us dies (even by kill -9)."""
    parent = parent or os.environ.get("SHORTGEN_PARENT_PID")
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)


def _prepare_env(library: str = "wheel") -> str:
    """Load libespeak-ng before pyttsx3 does, so pyttsx3's dlopen("libespeak-ng.so.1") resolves to it.

    "wheel" (the default): the espeakng-loader wheel's 1.52, the same engine on every machine, even
    where a system espeak-ng exists (preloaded with RTLD_GLOBAL, its SONAME answers pyttsx3's dlopen).
    "system": the distribution's library. Anything else: a path to a libespeak-ng shared object.
    """
    if library == "system":
        ctypes.CDLL("libespeak-ng.so.1", mode=ctypes.RTLD_GLOBAL)
        return "system"
    if library != "wheel":
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
        return library
    import espeakng_loader

    lib = espeakng_loader.get_library_path()
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    # Without a valid data path espeak exits the whole process with status 1.
    os.environ["ESPEAK_DATA_PATH"] = espeakng_loader.get_data_path()
    return lib


def loaded_library() -> str:
    """The file the process really mapped for libespeak-ng (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libespeak-ng" in line:
                    return os.path.realpath(line.split()[-1])
    except OSError:
        pass
    return ""


def voice_ids(engine) -> dict[str, str]:
    """Every accepted spelling of a voice -> its id: 'gmw/en-us', 'en-us', 'English (America)'."""
    out: dict[str, str] = {}
    for v in engine.getProperty("voices"):
        out[v.id.lower()] = v.id
        out[v.id.rsplit("/", 1)[-1].lower()] = v.id
        out[v.name.lower()] = v.id
    return out


class Speaker:
    """One pyttsx3 engine, speaking one utterance at a time into a file, with the rate it really used."""

    def __init__(self, engine, espeak) -> None:
        self.engine, self.espeak = engine, espeak
        self.driver = engine.proxy._driver
        # pyttsx3's GetParameter prototype drops the `current` argument (so it returns the default,
        # 175, whatever is set): declare the real one
        get = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int)(("espeak_GetParameter", espeak.dll))
        self.rate_now = lambda: get(espeak.RATE, 1)
        self.events: list[tuple[int, int, int, int]] = []
        self.rates_seen: set[int] = set()
        self.write_error: OSError | None = None
        self.done = threading.Event()
        self.completed = False
        original = self.driver._onSynth

        def on_synth(wav, numsamples, evs):
            # called on espeak's own thread: the rate it reports here is the one this audio is made at
            self.rates_seen.add(self.rate_now())
            i = 0
            while evs[i].type != espeak.EVENT_LIST_TERMINATED:
                e = evs[i]
                if e.type == espeak.EVENT_WORD:
                    # pyttsx3's driver drops audio positions; we read them here
                    self.events.append((e.text_position, e.length, e.sample, e.audio_position))
                i += 1
            try:
                return original(wav, numsamples, evs)
            except Exception as e:  # the driver could not save the WAV (disk full, ...)
                cause = e.__cause__ or e.__context__
                self.write_error = cause if isinstance(cause, OSError) else OSError(str(e))
                # end the driver's run loop as its own end-of-message would (it raised before doing so)
                self.driver._speaking = False
                self.driver.endLoop()
                engine.proxy.setBusy(False)
                self.done.set()
                return 1  # abort this synthesis

        espeak.SetSynthCallback(on_synth)

        def finished(name, completed):
            self.completed = completed
            self.done.set()

        engine.connect("finished-utterance", finished)

    def idle(self) -> bool:
        """espeak's queue is empty and pyttsx3 has seen the end of the last utterance (its driver's
        `_speaking` clears on the end-of-message event; pyttsx3's own busy flag starts out set)."""
        deadline = time.monotonic() + IDLE_TIMEOUT_S
        while self.espeak.IsPlaying() or self.driver._speaking:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def apply(self, voice: str, rate: int) -> bool:
        """Set voice and rate now (not through pyttsx3's queue) and wait until espeak's thread has them."""
        self.driver.setProperty("voice", voice)
        self.driver.setProperty("rate", int(rate))
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while self.rate_now() != int(rate) or self.espeak.IsPlaying():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def say(self, text: str, path: str) -> tuple[str | None, list]:
        """Speak text into path. Returns (problem or None, word events)."""
        self.events.clear()
        self.rates_seen.clear()
        self.done.clear()
        self.completed = False
        self.write_error = None
        self.engine.save_to_file(text, path)
        self.engine.runAndWait()
        # runAndWait can return before espeak finishes; the callback is the real signal.
        if not self.done.wait(60):
            return "utterance did not complete", []
        if self.write_error is not None:
            return _describe(self.write_error, path), []
        if not self.completed or not os.path.exists(path):
            return "utterance did not complete", []
        return None, list(self.events)


def _describe(err: OSError, path: str) -> str:
    if err.errno == errno.ENOSPC or "No space left" in str(err):
        return f"disk full: {path}"
    return f"cannot write {path}: {err.strerror or err}"


def _wav_frames(path: str) -> int:
    import wave

    with wave.open(path, "rb") as w:
        return w.getnframes()


def _other_rate(rate: int) -> int:
    """A rate far enough from `rate` that speech at it can never pass for speech at `rate`."""
    return rate + 40 if rate + 40 <= 450 else rate - 40


def _speak_verified(sp: Speaker, voice: str, rate: int, text: str, wav: str) -> tuple[str | None, dict]:
    """Speak `text` twice: once after setting voice and rate, and once more after setting another rate
    and then this one again, from scratch. espeak is deterministic (the same text, voice and rate give
    the same samples, measured), so the second length is the reference the first is held to: a rate
    that did not take in either utterance shows as a length that differs (see narrate.verify_rate)."""
    first = f"{wav}.a{os.getpid()}.wav"
    second = f"{wav}.b{os.getpid()}.wav"
    try:
        if not sp.idle():
            return "the speech engine stayed busy", {}
        if not sp.apply(voice, rate):
            return f"the speech engine did not take rate {rate}", {}
        problem, events = sp.say(text, first)
        if problem:
            return problem, {}
        rates = set(sp.rates_seen)
        if not sp.idle():
            return "the speech engine stayed busy", {}
        if not (sp.apply(voice, _other_rate(rate)) and sp.apply(voice, rate)):
            return f"the speech engine did not take rate {rate}", {}
        problem, _ = sp.say(text, second)
        if problem:
            return problem, {}
        info = {
            "samples": _wav_frames(first),
            "reference_samples": _wav_frames(second),
            "rates_seen": sorted(rates | sp.rates_seen),
        }
        os.replace(first, wav)
        return None, {"events": events, **info}
    finally:
        for f in (first, second):
            try:
                os.unlink(f)
            except OSError:
                pass


def _fresh_engine(work):
    """Run `work(engine, espeak, voice_ids)` in a child forked for it, whose espeak starts from its initial state, and
    return what it returns (JSON data). espeak carries state from one utterance to the next (the pitch
    flutter's phase and more: function statics that no call resets), so the same text came out a few
    samples longer or shorter depending on what the process had spoken before, and a render's sound
    depended on what the cache already held. Forked before espeak starts its thread; costs ~30 ms."""
    r, w = os.pipe()
    me = str(os.getpid())
    pid = os.fork()
    if pid == 0:  # the child: speak, write the answer, leave without running the parent's cleanup
        os.close(r)
        code = 0
        try:
            _die_with_parent(me)  # and the worker's children die with it
            import pyttsx3
            from pyttsx3.drivers import _espeak

            engine = pyttsx3.init("espeak")
            answer = work(engine, _espeak, voice_ids(engine))
            with os.fdopen(w, "w", encoding="utf-8") as f:
                json.dump(answer, f)
        except BaseException as e:  # noqa: BLE001 - reported by the parent as this job's failure
            print(f"speech engine: {type(e).__name__}: {e}", file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, encoding="utf-8") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        code = os.waitstatus_to_exitcode(status)  # negative: the signal that killed it
        why = f"signal {-code}" if code < 0 else f"exit status {code}"
        return {"problem": f"the speech engine process died ({why})"}
    return json.loads(data)


def _job(job: dict):
    def work(engine, espeak, known: dict) -> dict:
        voice = known.get(job["voice"].lower())
        if voice is None:
            return {"unknown_voice": job["voice"], "voices": sorted(set(known.values()))}
        problem, info = _speak_verified(Speaker(engine, espeak), voice, int(job["rate"]), job["text"], job["wav"])
        if problem:
            return {"problem": problem}
        events = info.pop("events")
        try:
            _write_json(job["events"], [{"pos": p, "len": ln, "sample": s, "ms": ms} for p, ln, s, ms in events])
        except OSError as e:
            return {"problem": _describe(e, job["events"]), "stop": True}
        return {"info": info}

    return work


def main(argv: list[str]) -> int:
    # The driver prints on stdout; keep our stdout clean by pointing fd 1 at stderr.
    os.dup2(2, 1)
    _die_with_parent()
    standby = argv[:1] == ["--standby"]  # started ahead of need (start_standby): the job file comes on stdin
    spec = None if standby else _read_spec(argv[0])
    library = argv[1] if spec is None else spec.get("library") or "wheel"
    lib = _prepare_env(library)
    import pyttsx3  # noqa: F401 - imported once here, before the children fork
    from pyttsx3.drivers import _espeak  # noqa: F401

    if spec is None:
        line = sys.stdin.readline().strip()
        if not line:
            return 0  # not needed: the render had all its speech cached, or ended
        spec = _read_spec(line)
        if (spec.get("library") or "wheel") != library:
            print(f"speech engine: started for library {library!r}, asked for {spec.get('library')!r}", file=sys.stderr)
            return 1
    return _serve(spec, lib)


def _read_spec(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _serve(spec: dict, lib: str) -> int:
    result: dict = {"lib": loaded_library() or lib, "ok": [], "failed": {}, "jobs": {}, "unknown_voice": None, "voices": []}
    if spec.get("list_voices"):
        result["voices"] = _fresh_engine(lambda engine, espeak, known: sorted(set(known.values())))
        _write_json(spec["result"], result)
        return 0
    for n, job in enumerate(spec["jobs"]):
        answer = _fresh_engine(_job(job))
        if "unknown_voice" in answer:
            result["unknown_voice"], result["voices"] = answer["unknown_voice"], answer["voices"]
            break
        problem = answer.get("problem")
        if problem:
            result["failed"][str(n)] = problem
            if problem.startswith("disk full") or answer.get("stop"):
                break  # every later job would fail the same way: report it now
            continue
        result["jobs"][str(n)] = answer["info"]
        result["ok"].append(n)
    _write_json(spec["result"], result)
    return 0


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---- the parent's side --------------------------------------------------------------------------


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shortgen.speech.espeak_worker", *args]


def worker_env() -> dict:
    """The parent's environment, with this package importable and the parent named (_die_with_parent)."""
    from pathlib import Path

    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # .../src, above shortgen/speech/
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["SHORTGEN_PARENT_PID"] = str(os.getpid())
    return env


_STANDBY: dict = {}  # library -> a worker started ahead of need, not yet given its jobs


def start_standby(library: str = "wheel") -> None:
    """Start a worker now: Python, pyttsx3 and the espeak library load while the render imports and
    loads the script (70 ms of a one-word edit's critical path), then it waits for its job file's path
    on stdin. Unused (all speech cached), it reads end-of-file when this process exits, and leaves.
    Only the standard library is imported here: this runs before anything else of a render."""
    import subprocess

    if library in _STANDBY:
        return
    try:
        _STANDBY[library] = subprocess.Popen(
            command("--standby", library, "--for", str(os.getpid())),  # named for ps and pgrep
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=worker_env(),
        )
    except OSError:
        pass  # the worker is started when needed, as without a standby


def stop_standby() -> None:
    """Let the unused standby workers go: each reads end-of-file and leaves."""
    import subprocess

    while _STANDBY:
        _, proc = _STANDBY.popitem()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def take_standby(library: str):
    """The standby worker for `library`, if one is waiting (each serves one batch of jobs), else None."""
    proc = _STANDBY.pop(library, None)
    return proc if proc is not None and proc.poll() is None else None


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown (10 to 15 ms): the render waits for this process to end
