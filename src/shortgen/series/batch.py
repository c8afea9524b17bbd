"""A whole series: one worker process per part, in parallel, each rendering its episode; progress
events come back on a queue, and every part ends as an Outcome (a failing part stops no other)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import Cache
from ..render import Sink, render_episode
from ..settings import usable_cpus


@dataclass
class Outcome:
    """How one part of a batch ended. Plain data, so it crosses the process boundary."""

    path: str
    name: str
    ok: bool
    duration: float = 0.0
    seconds: float = 0.0
    rendered: bool = False
    error: str = ""
    exit_code: int = 0
    stats: dict = field(default_factory=dict)
    out_dir: str = ""  # where its files are (the gallery is written beside them)


_events = None  # the progress queue, set in each worker process by _init_worker


def _init_worker(queue) -> None:
    global _events
    _events = queue
    from ..errors import quiet_libraries
    from ..settings import keep_freed_memory

    quiet_libraries()  # a worker process starts with Python's default filters
    keep_freed_memory()  # ... and glibc's default arenas and thresholds


def _render_one(path: str, layer: dict, engine_factory, encoder_factory, sink: Sink | None = None) -> Outcome:
    """Render one part in a worker process; every failure becomes an Outcome, never an escaped exception.
    Progress goes to `sink`, else to the pool's queue."""
    from ..errors import ShortgenError, describe, status_of
    from ..script.load import load_episode

    t0 = time.monotonic()
    name = Path(path).stem
    sink = sink or (_events.put if _events is not None else None)
    try:
        ep = load_episode(path, layer, audio=False)  # render_episode checks its audio files
        name = ep.slug
        res = render_episode(ep, engine_factory(), encoder_factory(), Cache(ep.settings.cache_dir), sink=sink)
        return Outcome(
            path,
            name,
            True,
            res.plan.total_frames / res.plan.fps,
            res.seconds,
            res.rendered,
            stats=res.stats.as_dict(),
            out_dir=str(res.out_dir),
        )
    except (ShortgenError, OSError) as e:
        message = describe(e) if isinstance(e, ShortgenError) else f"{path}: {describe(e)}"
        return Outcome(path, name, False, seconds=time.monotonic() - t0, error=message, exit_code=int(status_of(e)))


def _real_engine():
    from ..speech.narrate import EspeakEngine

    return EspeakEngine()


def _real_encoder():
    from ..video.encode import FfmpegEncoder

    return FfmpegEncoder()


def render_many(
    paths: list[Path],
    layer: dict,
    jobs: int | None = None,
    sink: Sink | None = None,
    engine_factory=_real_engine,
    encoder_factory=_real_encoder,
) -> list[Outcome]:
    """Render parts in parallel worker processes (`jobs`, default the CPU count). A failing part is
    reported in its Outcome; the others still finish. Factories must be picklable (module-level)."""
    import multiprocessing as mp
    import queue as queue_mod
    import threading
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    workers = max(1, min(jobs or usable_cpus(), len(paths)))
    ctx = mp.get_context("spawn")  # a clean interpreter per worker: espeak and threads do not survive fork
    q = ctx.Queue()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set() or not q.empty():
            try:
                ev = q.get(timeout=0.1)
            except (queue_mod.Empty, OSError, EOFError):
                continue
            if sink:
                sink(ev)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    outcomes: list[Outcome] = []
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(q,)) as pool:
            futs = [pool.submit(_render_one, str(p), layer, engine_factory, encoder_factory) for p in paths]
            for p, f in zip(paths, futs):
                try:
                    outcomes.append(f.result())
                except BrokenProcessPool:
                    outcomes.append(Outcome(str(p), p.stem, False, error=f"{p}: the worker process died", exit_code=1))
    finally:
        stop.set()
        t.join(timeout=2)
    return outcomes
