"""Child process that speaks text with pyttsx3 + espeak-ng. Run as `python -m shortgen.espeak_worker JOBS.json`.

Why a separate process: espeak initialises once per process, pyttsx3 can hang on a later call, and the
driver prints `Audio saved to ...` on stdout. The parent gives us a timeout, a clean stdout and a retry.

Input JSON: {"jobs": [{"text", "voice", "rate", "wav", "events"}], "result": path}
For every job we write the WAV and a JSON of word events {"pos", "len", "sample"} (pos is 1-based chars).
The result file says which jobs succeeded; a voice the engine lacks is reported, not silently replaced.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time


def _prepare_env() -> str:
    """Make libespeak-ng loadable by pyttsx3: a system install if present, else the espeakng-loader wheel.

    pyttsx3 dlopens "libespeak-ng.so.1" by name; preloading the wheel's file makes that name resolve to it.
    """
    # dlopen by soname finds a system install directly; ctypes.util.find_library would run ldconfig and gcc
    try:
        ctypes.CDLL("libespeak-ng.so.1")
        return "libespeak-ng.so.1"
    except OSError:
        pass
    import espeakng_loader

    lib = espeakng_loader.get_library_path()
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    # Without a valid data path espeak exits the whole process with status 1.
    os.environ.setdefault("ESPEAK_DATA_PATH", espeakng_loader.get_data_path())
    return lib


def voice_ids(engine) -> dict[str, str]:
    """Every accepted spelling of a voice -> its id: 'gmw/en-us', 'en-us', 'English (America)'."""
    out: dict[str, str] = {}
    for v in engine.getProperty("voices"):
        out[v.id.lower()] = v.id
        out[v.id.rsplit("/", 1)[-1].lower()] = v.id
        out[v.name.lower()] = v.id
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(open(argv[0], encoding="utf-8").read())
    # The driver prints on stdout; keep our stdout clean by pointing fd 1 at stderr.
    os.dup2(2, 1)
    lib = _prepare_env()
    import pyttsx3
    from pyttsx3.drivers import _espeak

    engine = pyttsx3.init("espeak")
    driver = engine.proxy._driver
    known = voice_ids(engine)
    result: dict = {"lib": lib, "ok": [], "failed": {}, "unknown_voice": None, "voices": sorted(set(known.values()))}

    if spec.get("list_voices"):
        _write_json(spec["result"], result)
        return 0

    events: list[tuple[int, int, int]] = []
    original = driver._onSynth

    def on_synth(wav, numsamples, evs):
        # pyttsx3's driver drops audio positions; we read them here, then hand over to the driver.
        i = 0
        while evs[i].type != _espeak.EVENT_LIST_TERMINATED:
            e = evs[i]
            if e.type == _espeak.EVENT_WORD:
                events.append((e.text_position, e.length, e.sample))
            i += 1
        return original(wav, numsamples, evs)

    _espeak.SetSynthCallback(on_synth)
    done = threading.Event()
    state = {"completed": False}

    def finished(name, completed):
        state["completed"] = completed
        done.set()

    engine.connect("finished-utterance", finished)

    current = (None, None)
    for n, job in enumerate(spec["jobs"]):
        voice = known.get(job["voice"].lower())
        if voice is None:
            result["unknown_voice"] = job["voice"]
            break
        if (voice, job["rate"]) != current:
            engine.setProperty("voice", voice)
            engine.setProperty("rate", int(job["rate"]))
            if current != (None, None):
                # measured: without this pause a change between utterances sometimes leaves a stale
                # file; before the first utterance the setting is reliable without it
                time.sleep(0.05)
            current = (voice, job["rate"])
        # espeak reports the end of an utterance before its own thread has quite finished; a new one
        # queued while IsPlaying() still says yes makes pyttsx3 cancel it (completed=False). Measured
        # with two workers side by side: 1 in 7 second utterances failed that way; with this wait, about
        # 1 in 200 worker runs. (narrate also keeps to one worker at a time per cache.)
        deadline = time.monotonic() + 2.0
        while _espeak.IsPlaying() and time.monotonic() < deadline:
            time.sleep(0.002)
        events.clear()
        done.clear()
        tmp = job["wav"] + f".tmp{os.getpid()}.wav"
        engine.save_to_file(job["text"], tmp)
        engine.runAndWait()
        # runAndWait can return before espeak finishes; the callback is the real signal.
        if not done.wait(60) or not state["completed"] or not os.path.exists(tmp):
            result["failed"][str(n)] = "utterance did not complete"
            continue
        os.replace(tmp, job["wav"])
        _write_json(job["events"], [{"pos": p, "len": ln, "sample": s} for p, ln, s in events])
        result["ok"].append(n)
    _write_json(spec["result"], result)
    return 0


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
