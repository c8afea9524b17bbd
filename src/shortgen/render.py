"""The pipeline for one episode, and for a whole series in parallel worker processes.

Every stage is cached by a hash of its real inputs, so a no-op run does no TTS, drawing or encoding,
and editing one segment redraws and re-encodes only that segment before a stream-copy rejoin.
Final files appear only by atomic rename; a lock file serialises two renders of the same part.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import __version__, check, draw, outputs
from .cache import Cache, Stats, key_of
from .encode import AAC_FRAME, AAC_RATE, Encoder, VideoSettings, planes420, ycc
from .errors import EncodeError
from .load import Episode
from .narrate import Engine
from .plan import Plan, SegmentPlan, cue_texts

Sink = Callable[[dict], None]


@dataclass
class Progress:
    """Turns pipeline events into progress records with an ETA; the CLI decides how to show them."""

    sink: Sink | None
    episode: str
    total_frames: int = 0
    done_frames: int = 0
    started: float = field(default_factory=time.monotonic)

    def __call__(self, stage: str, segment: str = "", done: int = 0, total: int = 0) -> None:
        if not self.sink:
            return
        eta = None
        if self.total_frames and self.done_frames:
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done_frames * (self.total_frames - self.done_frames)
        self.sink({"episode": self.episode, "stage": stage, "segment": segment, "done": done, "total": total,
                   "eta": eta})


@dataclass
class RenderResult:
    episode: Episode
    out_dir: Path
    files: dict[str, Path]
    plan: Plan
    stats: Stats
    seconds: float
    fits: list
    loudness: tuple[float, float]
    rendered: bool          # False when the final file was already up to date


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)      # a second render of the same part waits, then finds it done
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class SegmentKeys:
    card: str
    overlays: list          # per state: the caption picture's identity (a hash), or None where none shows
    segment: str            # the encoded segment: its pictures, their durations, the encoder settings


def _segment_keys(plan: Plan, seg: SegmentPlan, settings, fonts: dict) -> SegmentKeys:
    card = key_of("card", draw.card_key_inputs(seg, plan, settings, fonts))
    overlays = [key_of("overlay", k) if (k := draw.overlay_key_inputs(seg, st, settings, fonts)) else None
                for st in seg.states]
    seg_key = key_of("segment-v4", card, overlays, [st.end - st.start for st in seg.states], settings.encoder_key())
    return SegmentKeys(card, overlays, seg_key)


def render_episode(ep: Episode, engine: Engine, encoder: Encoder, cache: Cache,
                   sink: Sink | None = None, stats: Stats | None = None) -> RenderResult:
    t0 = time.monotonic()
    s = ep.settings
    stats = stats or Stats()
    progress = Progress(sink, ep.slug)
    out_dir = s.output_dir / ep.slug

    cache.sweep()                          # temporaries of runs that were killed
    progress("narrate")
    tiles = draw.TileCache(s, tile_map=ycc)

    def warm_captions(texts: list[str]) -> None:
        # new narrations mean new pictures: draw their caption tiles while the engine speaks
        import threading
        cues = [c for t in texts for c in cue_texts(t)]
        threading.Thread(target=tiles.warm, args=(cues,), daemon=True, name="warm-captions").start()

    m = check.measure(ep, engine, cache, stats, on_progress=lambda d, n: progress("narrate", "", d, n),
                      on_speak=warm_captions)
    check.enforce(m)                       # refuse over-budget scripts before writing anything
    plan = m.plan
    progress.total_frames = plan.total_frames

    fonts = draw.font_digests(s)
    # One x264 at a time, with a thread per core this render may use: measured as fast as two
    # single-threaded encoders side by side in half the memory, and as fast as x264's own choice (1.5
    # threads per core) in 20 MB less.
    threads = min(s.jobs, os.cpu_count() or 1)
    vs = VideoSettings(s.width, s.height, s.fps, s.preset, s.crf, threads=threads, mode=s.encoder,
                       keyint=s.keyint_frames)
    wavs = {seg.audio_key: n.wav for seg, n in zip(plan.segments, m.narrations)}
    # everything the spliced track depends on (the chunk geometry is a function of these)
    audio_key = key_of("audio-v5", [(seg.audio_key, seg.narration_start, seg.samples, seg.sample_rate)
                                    for seg in plan.segments],
                       plan.total_frames, s.fps, s.loudness_lufs, s.true_peak_dbtp, s.audio_bitrate)
    keyed = [_segment_keys(plan, seg, s, fonts) for seg in plan.segments]
    final_key = key_of("final-v1", [k.segment for k in keyed], audio_key)

    names = outputs.file_names(ep.slug)
    with _locked(cache.lock_path(out_dir)):
        outputs.recover(out_dir)
        _clear_staging(out_dir)
        previous = _read_manifest(out_dir / "manifest.json")
        if previous.get("final_key") == final_key and all((out_dir / n).is_file() for n in names.values()):
            stats.hits["segments"] += len(plan.segments)
            progress("done")
            return RenderResult(ep, out_dir, _files(out_dir, ep.slug), plan, stats, time.monotonic() - t0, m.fits,
                                tuple(previous.get("loudness", {}).get(k, 0.0) for k in ("integrated_lufs", "true_peak_dbtp")),
                                rendered=False)

        # Everything that can fail on the text fails now, before any encoding and long before the set
        # is replaced: the rules `check` runs, for every card, the thumbnail, the cover and each caption
        # still to be encoded (an encoded segment's captions passed them when it was made).
        check.enforce_fits(m, [g for g, k in zip(plan.segments, keyed)
                               if not cache.has(cache.path("segments", k.segment, ".h264"))])
        # the pictures depend on the names and the look only: an edit to a narration keeps them
        thumbs_key = key_of("thumbs-v1", [draw.card_key_inputs(g, plan, s, fonts) for g in plan.segments
                                          if g.kind == "intro"], [g.name for g in plan.concepts()],
                            plan.series, plan.part, s.theme.__dict__, fonts)
        pictures = None
        if previous.get("thumbs_key") != thumbs_key or not all(
                (out_dir / names[k]).is_file() for k in ("thumbnail", "cover")):
            pictures = draw.draw_thumbnail(plan, s).image, draw.draw_cover(plan, s).image

        seg_paths: list[Path] = []
        futures: list[Future] = []
        staging = _staging_dir(cache, out_dir, ep.slug)
        try:
            # two lanes: the video segments one after another, and the audio (master, AAC, loudness) beside them
            with ThreadPoolExecutor(max_workers=1) as audio, ThreadPoolExecutor(max_workers=1) as video:
                audio_path = cache.path("segments", audio_key, ".aac")
                mastered_info = cache.path("segments", audio_key, ".json")
                measuring: Future | None = None
                if not cache.has(audio_path, mastered_info):
                    futures.append(audio.submit(_make_audio, plan, wavs, s, encoder, cache, audio_path, stats, progress))
                    # the figures are for the manifest only: the join need not wait for them
                    measuring = audio.submit(_measure_audio, plan, s, encoder, cache, mastered_info)
                else:
                    stats.hits["segments"] += 1
                for seg, keys in zip(plan.segments, keyed):
                    seg_path = cache.path("segments", keys.segment, ".h264")
                    seg_paths.append(seg_path)
                    label = f"{seg.number or seg.kind} {seg.name}"
                    if cache.has(seg_path):
                        stats.hits["segments"] += 1
                        progress.done_frames += seg.frames
                        continue
                    progress("draw", label)
                    card = _card(plan, seg, keys, s, cache, stats)
                    futures.append(video.submit(_encode_segment, encoder, cache, card, seg, keys, s, vs, seg_path,
                                               progress, label, stats, tiles))
                try:
                    for f in futures:
                        f.result()              # re-raise the first failure ...
                    progress("join")
                    mp4 = staging / names["video"]
                    encoder.join(seg_paths, audio_path, plan.fps, mp4)
                    outputs.fault("join:after")
                    progress("measure")
                    probe = encoder.probe(mp4)
                    if measuring:
                        measuring.result()
                except BaseException:
                    for f in futures + [measuring]:
                        if f:
                            f.cancel()          # ... without starting queued work; `with` waits for the rest
                    raise
            # the final file carries the audio track by stream copy: its figures were taken with the chunks
            measured = json.loads(mastered_info.read_text())
            lufs, tp = measured["integrated_lufs"], measured["true_peak"]

            progress("outputs")
            outputs.write_text(staging / names["srt"], outputs.srt(plan))
            outputs.write_text(staging / names["vtt"], outputs.vtt(plan))
            if pictures:
                outputs.save_jpeg(pictures[0], staging / names["thumbnail"])
                outputs.save_jpeg(pictures[1], staging / names["cover"])
            outputs.write_json(staging / names["manifest"], outputs.manifest(
                plan,
                tool={"name": "shortgen", "version": __version__},
                video={"codec": probe.codec, "profile": probe.profile, "pix_fmt": probe.pix_fmt, "colour": probe.colour,
                       "preset": s.preset, "crf": s.crf, "frames": probe.frames, "fps": float(probe.fps),
                       "width": probe.width, "height": probe.height},
                audio={"codec": probe.audio, "sample_rate": probe.audio_rate, "channels": probe.audio_channels,
                       "bitrate": s.audio_bitrate},
                loudness={"integrated_lufs": lufs, "true_peak_dbtp": tp, "target_lufs": s.loudness_lufs,
                          "ceiling_dbtp": s.true_peak_dbtp,
                          "meter": "BS.1770-4: integrated over the mastered narration; true peak by ffmpeg ebur128 "
                                   "on each encoded AAC chunk"},
                fits=[f.__dict__ for f in m.fits],
                inputs={"script": str(ep.path), "script_sha256": ep.source_sha256,
                        "narration": {str(seg.index): seg.audio_key for seg in plan.segments},
                        "segments": {str(seg.index): k.segment for seg, k in zip(plan.segments, keyed)},
                        "audio": audio_key, "fonts": fonts, "tts_engine": m.engine_id},
                final_key=final_key, thumbs_key=thumbs_key,
            ))
            # the unchanged pictures, and whatever else the user keeps in the folder, go along
            outputs.carry_over(out_dir, staging, set() if pictures else {names["thumbnail"], names["cover"]},
                               {*names.values(), ".lock"})
            outputs.fault("publish:before")
            progress("publish")
            outputs.publish(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    progress("done")
    return RenderResult(ep, out_dir, _files(out_dir, ep.slug), plan, stats, time.monotonic() - t0, m.fits,
                        (lufs, tp), rendered=True)


def _files(out_dir: Path, slug: str) -> dict[str, Path]:
    return {role: out_dir / name for role, name in outputs.file_names(slug).items()}


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def _staging_dir(cache: Cache, out_dir: Path, slug: str) -> Path:
    """A private folder for the new set, on the output's file system (the set moves in by rename):
    the cache's tmp/ where it shares that file system, else a hidden folder beside the output."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    cache.tmp_dir.mkdir(parents=True, exist_ok=True)
    if _same_fs(cache.tmp_dir, out_dir.parent):
        path = cache.tmp_path(f"staging-{slug}")
    else:
        path = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    return path


def _clear_staging(out_dir: Path) -> None:
    """Staging folders beside the output, left by renders that were killed (we hold the lock)."""
    from .cache import _alive
    for p in out_dir.parent.glob(f".{out_dir.name}.staging-*"):
        pid = p.name.rsplit(".staging-", 1)[1].split("-")[0]
        if not (pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid()):
            shutil.rmtree(p, ignore_errors=True)


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _card_layout(s) -> tuple[list[int], int, int]:
    """Where a cached card's parts end: Y, Cb, Cr planes, then the caption band in YCbCr; and the band's rows."""
    _, y0, _, y1 = draw.caption_origin(s)                        # even rows
    w, h = s.width, s.height
    return list(itertools.accumulate((w * h, w * h // 4, w * h // 4, w * (y1 - y0) * 3))), y0, y1


def _card(plan: Plan, seg: SegmentPlan, keys: SegmentKeys, s, cache: Cache, stats: Stats) -> Path:
    """Make sure the segment's card is cached as the encoder takes it: its yuv420p planes, and its
    caption band in full-resolution YCbCr (the painter's canvas). Raw, not PNG: a card takes ~10 ms to
    draw and ~15 ms to convert, while writing and reading back a PNG took ~35 ms (measured)."""
    ends, y0, y1 = _card_layout(s)
    path = cache.path("frames", keys.card, ".yuv")
    if cache.has(path) and path.stat().st_size == ends[-1]:
        stats.hits["frames"] += 1
    else:
        base = ycc(draw.draw_card(seg, plan, s).image)
        with cache.writing(path) as tmp:
            tmp.write_bytes(b"".join((*planes420(base), base.crop((0, y0, s.width, y1)).tobytes())))
        stats.draws += 1
    return path


def _load_card(path: Path, s) -> tuple:
    """A cached card, read when its segment is encoded (so only one is held at a time)."""
    from PIL import Image
    ends, y0, y1 = _card_layout(s)
    mv = memoryview(path.read_bytes())
    if len(mv) != ends[-1]:
        raise EncodeError(f"{path}: a card of {len(mv)} bytes, expected {ends[-1]}")
    planes = tuple(mv[a:b] for a, b in zip([0] + ends[:2], ends[:3]))
    return planes, Image.frombytes("RGB", (s.width, y1 - y0), mv[ends[2]:])


def _pictures(card: Path, seg: SegmentPlan, s, painter: draw.CaptionPainter, states) -> Iterator[tuple]:
    """Raw yuv420p pictures of these states of a segment. Captions only touch a band of rows, so each
    picture is, plane by plane, the card's rows above the band (a shared view), the band with the cue
    painted (in YCbCr: the painter's tiles are converted once), and the rows below."""
    planes, band = _load_card(card, s)
    w = s.width
    _, y0, _, y1 = draw.caption_origin(s)
    # where the band starts and ends in each plane: Y has w bytes a row, Cb and Cr w/2 bytes every 2 rows
    cuts = [(y0 * w, y1 * w), (y0 * w // 4, y1 * w // 4), (y0 * w // 4, y1 * w // 4)]
    for st in states:
        if st.cue is None:
            yield planes
            continue
        hl = None if st.word is None else st.word - seg.cues[st.cue].first
        fresh = planes420(painter.paint(band, st.cue, hl))
        yield tuple(part for p, (a, b), f in zip(planes, cuts, fresh) for part in (p[:a], f, p[b:]))


def _runs(seg: SegmentPlan, keys: SegmentKeys, s) -> list[tuple[str, list[int], tuple[int, ...]]]:
    """A segment's states in runs, one per cue (and one per stretch without a caption): (key, state
    indices, keyframes inside the run). A run's key names its pictures, not how long each shows, so an
    edit that retimes a segment or rewords one cue finds every other cue's run already encoded. Only a
    run longer than the keyframe interval gets keyframes inside it, and then they are part of its key."""
    groups: list[list[int]] = []
    for i, st in enumerate(seg.states):
        if groups and seg.states[groups[-1][-1]].cue == st.cue:
            groups[-1].append(i)
        else:
            groups.append([i])
    out = []
    for idx in groups:
        # as late as possible: picture k must be a keyframe if the next chance (the next picture, or
        # the next run's first) comes more than keyint frames after the last keyframe
        inner, last = [], seg.states[idx[0]].start
        for k, i in enumerate(idx[1:], 1):
            nxt = seg.states[idx[k + 1]].start if k + 1 < len(idx) else seg.states[idx[-1]].end
            if nxt - last > s.keyint_frames:
                inner.append(k)
                last = seg.states[i].start
        key = key_of("run-v1", keys.card, [keys.overlays[i] for i in idx], inner, s.encoder_key())
        out.append((key, idx, tuple(inner)))
    return out


def _encode_segment(encoder: Encoder, cache: Cache, card: Path, seg: SegmentPlan, keys: SegmentKeys, s,
                    vs: VideoSettings, out: Path, progress: Progress, label: str, stats: Stats,
                    tiles: draw.TileCache) -> None:
    progress("encode", label)
    painter = draw.CaptionPainter(seg, s, tiles=tiles)
    repeats = [st.end - st.start for st in seg.states]
    with cache.writing(out) as tmp:
        if vs.mode == "full":
            encoder.encode_frames(_pictures(card, seg, s, painter, seg.states), repeats, vs, tmp)
            stats.pictures += len(seg.states)
        else:
            runs = _runs(seg, keys, s)
            paths = {k: cache.path("segments", k, ".run") for k, _, _ in runs}
            todo = {k: (idx, inner) for k, idx, inner in runs if not cache.has(paths[k])}   # met twice: encoded once
            if todo:
                scratch = tmp.with_name(tmp.name + ".runs.h264")
                states = [seg.states[i] for idx, _ in todo.values() for i in idx]
                try:
                    made = encoder.encode_runs(_pictures(card, seg, s, painter, states),
                                               [(len(idx), inner) for idx, inner in todo.values()], vs, scratch)
                finally:
                    scratch.unlink(missing_ok=True)
                for k, data in zip(todo, made):
                    with cache.writing(paths[k]) as part:
                        part.write_bytes(data)
                stats.pictures += len(states)
            encoder.assemble([paths[k].read_bytes() for k, _, _ in runs],
                             [[repeats[i] for i in idx] for _, idx, _ in runs], tmp)
    stats.draws += painter.cues_drawn
    stats.encodes += 1
    progress.done_frames += seg.frames
    progress("encoded", label)


def _voice_chunks(plan: Plan, s):
    """Per audio chunk: (chunk, cache key) of its mastered, encoded narration."""
    from . import sound
    for ch in sound.chunks(plan):
        seg = plan.segments[ch.segment]
        yield ch, key_of("voice-v5", seg.audio_key, s.loudness_lufs, s.true_peak_dbtp, s.audio_bitrate, ch.lead,
                         ch.encoded)


def _make_audio(plan: Plan, wavs: dict, s, encoder: Encoder, cache: Cache, out: Path, stats: Stats,
                progress: Progress) -> None:
    """The episode's AAC track: each segment's chunk mastered and encoded alone (cached by its narration,
    so an edit re-encodes one chunk, and moving a segment none), then spliced frame by frame."""
    import numpy as np

    from . import sound      # numpy loads only when audio is actually made
    pieces = []
    for ch, key in _voice_chunks(plan, s):
        seg = plan.segments[ch.segment]
        path, meta, bins = (cache.path("segments", key, ext) for ext in (".aac", ".json", ".npy"))
        if cache.has(path, meta, bins):
            stats.hits["segments"] += 1
        else:
            progress("audio", f"{seg.number or seg.kind} {seg.name}")
            m = sound.master(sound.load_speech(wavs[seg.audio_key]), s.loudness_lufs, s.true_peak_dbtp)
            with cache.writing(path) as tmp:
                encoder.encode_voice(m.samples.tobytes(), sound.RATE, ch.lead, ch.encoded, s.audio_bitrate, tmp)
            with cache.writing(bins) as tmp, open(tmp, "wb") as f:
                np.save(f, m.energy)
            with cache.writing(meta) as tmp:
                tmp.write_text(json.dumps({"lufs": m.lufs, "true_peak": m.true_peak, "gain_db": m.gain_db}))
        # a voice file's frame 0 codes the silence before the chunk: the episode's priming frame, for chunk 0
        pieces.append((path, 0, ch.count + 1) if ch.segment == 0 else (path, 1, ch.count))
    progress("audio", "splice")
    with cache.writing(out) as tmp:
        encoder.splice_audio(pieces, tmp)


def _measure_audio(plan: Plan, s, encoder: Encoder, cache: Cache, info: Path) -> None:
    """The track's figures, with no pass over the whole track: the true peak is the largest chunk's,
    measured on its encoded AAC (the joins are silent; cached beside the chunk), and the integrated
    loudness is summed from each chunk's K-weighted energy (see sound.place_energy)."""
    import numpy as np

    from . import sound
    chunks, energy = [], []
    for ch, key in _voice_chunks(plan, s):
        path, meta, bins, peak = (cache.path("segments", key, ext) for ext in (".aac", ".json", ".npy", ".tp"))
        if not cache.has(peak):
            tp = encoder.loudness(path, skip=AAC_FRAME)[1]
            with cache.writing(peak) as tmp:
                tmp.write_text(json.dumps(tp))
        chunks.append({**json.loads(meta.read_text()), "aac_true_peak": json.loads(peak.read_text())})
        at = ((ch.first + ch.lead) * AAC_FRAME * sound.RATE + AAC_RATE // 2) // AAC_RATE   # narration start
        energy.append((at, np.load(bins)))
    lufs = sound.integrated_from_energy(sound.place_energy(-(-plan.total_frames * sound.RATE // plan.fps), energy))
    tp = max(c["aac_true_peak"] for c in chunks)
    with cache.writing(info) as tmp:
        tmp.write_text(json.dumps({"segments": chunks, "integrated_lufs": round(lufs, 2), "true_peak": tp}))


# ---- a whole series -----------------------------------------------------------------------------

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


_events = None     # the progress queue, set in each worker process by _init_worker


def _init_worker(queue) -> None:
    global _events
    _events = queue


def _render_one(path: str, layer: dict, engine_factory, encoder_factory) -> Outcome:
    """Render one part in a worker process; every failure becomes an Outcome, never an escaped exception."""
    from .errors import ShortgenError
    from .load import load_episode

    t0 = time.monotonic()
    name = Path(path).stem
    sink = _events.put if _events is not None else None
    try:
        ep = load_episode(path, layer)
        name = ep.slug
        res = render_episode(ep, engine_factory(), encoder_factory(), Cache(ep.settings.cache_dir), sink=sink)
        return Outcome(path, name, True, res.plan.total_frames / res.plan.fps, res.seconds, res.rendered,
                       stats=res.stats.as_dict())
    except ShortgenError as e:
        return Outcome(path, name, False, seconds=time.monotonic() - t0, error=str(e), exit_code=e.exit_code)
    except OSError as e:
        code = 7 if e.errno == 28 else 1
        return Outcome(path, name, False, seconds=time.monotonic() - t0,
                       error=f"{path}: {e.strerror or e}: {e.filename or ''}", exit_code=code)


def _real_engine():
    from .narrate import EspeakEngine
    return EspeakEngine()


def _real_encoder():
    from .encode import FfmpegEncoder
    return FfmpegEncoder()


def render_many(paths: list[Path], layer: dict, jobs: int | None = None, sink: Sink | None = None,
                engine_factory=_real_engine, encoder_factory=_real_encoder) -> list[Outcome]:
    """Render parts in parallel worker processes (`jobs`, default the CPU count). A failing part is
    reported in its Outcome; the others still finish. Factories must be picklable (module-level)."""
    import multiprocessing as mp
    import os
    import queue as queue_mod
    import threading
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    cpus = os.cpu_count() or 1
    workers = max(1, min(jobs or cpus, len(paths)))
    # The cores are shared: each part's own segment pool gets its share of them.
    layer = {**layer, "jobs": layer.get("jobs_per_part") or max(1, cpus // workers)}
    layer.pop("jobs_per_part", None)
    ctx = mp.get_context("spawn")       # a clean interpreter per worker: espeak and threads do not survive fork
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
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(q,)) as pool:
            futs = [pool.submit(_render_one, str(p), layer, engine_factory, encoder_factory) for p in paths]
            for p, f in zip(paths, futs):
                try:
                    outcomes.append(f.result())
                except BrokenProcessPool:
                    outcomes.append(Outcome(str(p), p.stem, False, error=f"{p}: the worker process died",
                                            exit_code=1))
    finally:
        stop.set()
        t.join(timeout=2)
    return outcomes
