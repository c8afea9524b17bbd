"""The pipeline for one episode: speak and plan, check, draw and encode each segment (video lane) beside
the audio track (audio lane), join, and publish the files as one set.

Every stage is cached by a hash of its real inputs (keys.py), so a no-op run does no TTS, drawing or
encoding, and editing one segment redraws and re-encodes only that segment before a stream-copy rejoin.
The new files are staged privately and swapped into place in one step (outputs.publish); a lock in the
cache serialises two renders of the same part. A whole series is batch.py.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from . import check, keys
from .audio import track
from .cache import Cache, Stats
from .picture import captions, draw, frames, typeset
from .plan import Plan, SegmentPlan, cue_texts
from .plan import moves as plan_moves
from .plan import runs as plan_runs
from .publish import outputs
from .script import load
from .script.load import Episode
from .settings import Settings, give_back_freed_memory
from .speech.narrate import Engine
from .timeline import Ahead, Timeline, speak_and_plan
from .video.encode import Encoder, VideoSettings

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
        self.sink({"episode": self.episode, "stage": stage, "segment": segment, "done": done, "total": total, "eta": eta})


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
    rendered: bool  # False when the final file was already up to date


def render_episode(
    ep: Episode,
    engine: Engine,
    encoder: Encoder,
    cache: Cache,
    sink: Sink | None = None,
    stats: Stats | None = None,
    ahead: Ahead | None = None,
) -> RenderResult:
    """Render one episode into its output folder, as one set. `ahead`: its speech, already asked for."""
    t0 = time.monotonic()
    settings, stats, progress = ep.settings, stats or Stats(), Progress(sink, ep.slug)
    out_dir, names = settings.output_dir / ep.slug, outputs.file_names(ep.slug)
    cache.sweep()  # temporaries of runs that were killed
    tiles = captions.TileCache(settings, tile_map=frames.ycc)
    timed = _speak_and_check(ep, engine, cache, stats, progress, tiles, ahead)
    plan = timed.plan
    progress.total_frames = plan.total_frames
    ek = keys.episode(plan, settings, key_inputs())

    def result(loudness: tuple[float, float], rendered: bool) -> RenderResult:
        progress("done")
        files = {role: out_dir / name for role, name in names.items()}
        return RenderResult(ep, out_dir, files, plan, stats, time.monotonic() - t0, timed.fits, loudness, rendered)

    with cache.locked(out_dir):
        outputs.recover(out_dir)
        outputs.clear_staging(out_dir)
        previous = outputs.read_manifest(out_dir / names["manifest"])
        if previous.get("final_key") == ek.final and all((out_dir / n).is_file() for n in names.values()):
            stats.hits["segments"] += len(plan.segments)
            loud = previous.get("loudness", {})
            return result((loud.get("integrated_lufs", 0.0), loud.get("true_peak_dbtp", 0.0)), rendered=False)
        pictures = _check_and_draw_covers(timed, ek, cache, previous, out_dir, names)
        staging = outputs.staging_dir(cache.tmp_dir, out_dir)
        try:
            probe, loudness = _encode(timed, ek, encoder, cache, stats, progress, tiles, staging / names["video"],
                                      lambda board: _write_package(staging, names, timed, board))  # fmt: skip
            progress("outputs")
            _write_set(staging, names, timed, ek, probe, loudness, pictures, _looks(timed, ek, cache, stats))
            # the unchanged pictures, and whatever else the user keeps in the folder, go along
            keep = set() if pictures else {names["thumbnail"], names["cover"]}
            outputs.carry_over(out_dir, staging, keep, {*names.values(), ".lock"})
            outputs.fault("publish:before")
            progress("publish")
            outputs.publish(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return result(loudness[:2], rendered=True)


def _speak_and_check(ep: Episode, engine: Engine, cache: Cache, stats: Stats, progress: Progress,
                     tiles: captions.TileCache, ahead: Ahead | None) -> Timeline:  # fmt: skip
    """The speech and the plan, with the episode's audio files checked beside the speech (a first check
    of a file decodes its first 30 s: 0.1 s that would otherwise come before the speech starts), and
    the budget enforced before anything is written."""
    progress("narrate")
    checking = ThreadPoolExecutor(max_workers=1)
    audio_checked = checking.submit(load.check_audio, ep)
    checking.shutdown(wait=False)
    timed = speak_and_plan(ep, engine, cache, stats, on_progress=lambda d, n: progress("narrate", "", d, n),
                           on_speak=lambda texts: _warm_captions(tiles, texts), ahead=ahead)  # fmt: skip
    audio_checked.result()
    check.enforce(timed)  # refuse over-budget scripts before writing anything
    return timed


def _check_and_draw_covers(timed: Timeline, ek: keys.EpisodeKeys, cache: Cache, previous: dict, out_dir: Path,
                           names: dict) -> tuple | None:  # fmt: skip
    """Everything that can fail on the text fails now, before any encoding and long before the set is
    replaced: the rules `check` runs, for the card and captions of each segment still to be encoded and
    the thumbnail and cover if they are to be drawn (what is kept passed them when it was made; laying
    out every card again was 3% of a one-word edit). Returns the new thumbnail and cover, or None where
    the folder's are kept."""
    plan, settings = timed.plan, timed.episode.settings
    fresh = [seg for seg, k in zip(plan.segments, ek.segments) if not cache.has(cache.path("segments", k.segment, ".h264"))]
    kept = all((out_dir / names[k]).is_file() for k in ("thumbnail", "cover"))
    covers = previous.get("thumbs_key") != ek.thumbs or not kept
    check.enforce_fits(timed, fresh, fresh, covers)
    if not covers:
        return None
    # as their files' bytes: two full pictures held through the render were 12 MB of its peak
    return tuple(outputs.jpeg_bytes(d(plan, settings).painted()) for d in (draw.draw_thumbnail, draw.draw_cover))


def key_inputs() -> keys.Inputs:
    """What the cache keys need from the picture and audio lanes (keys.py imports no lane)."""
    from .audio.audiofile import probe  # the probe only: no numpy on a no-op

    return keys.Inputs(draw.card_key_inputs, captions.overlay_key_inputs, typeset.font_digests, lambda p: probe(p).digest)


def _looks(timed: Timeline, ek: keys.EpisodeKeys, cache: Cache, stats: Stats) -> dict:
    """Each picture's look (scrims, contrast), kept beside its card, for the manifest."""
    out = {}
    plan, settings = timed.plan, timed.episode.settings
    for seg, k in zip(plan.segments, ek.segments):
        if seg.visual is not None or plan.background is not None:  # a card over a picture
            look = frames.read_look(frames.ensure_card(plan, seg, k.card, settings, cache, stats))
            if look is not None:
                scrims = [{"what": s.what, "box": list(s.box), "opacity": round(s.alpha, 3)} for s in look.scrims]
                out[seg.index] = {"scrims": scrims, "contrast": look.contrast}
    return out


def _write_set(
    staging: Path, names: dict, timed: Timeline, ek: keys.EpisodeKeys, probe, loudness: tuple, pictures, looks: dict
) -> None:
    """The set's files besides the video, into the staging folder: captions, pictures, manifest."""
    from .picture import generated

    plan, ep = timed.plan, timed.episode
    outputs.write_text(staging / names["srt"], outputs.srt(plan))
    outputs.write_text(staging / names["vtt"], outputs.vtt(plan))
    if pictures:
        outputs.atomic_write_bytes(staging / names["thumbnail"], pictures[0])
        outputs.atomic_write_bytes(staging / names["cover"], pictures[1])
    inputs = {
        "script": str(ep.path),
        "script_sha256": ep.source_sha256,
        "narration": {str(seg.index): seg.audio_key for seg in plan.segments},
        "segments": {str(seg.index): k.segment for seg, k in zip(plan.segments, ek.segments)},
        "audio": ek.audio,
        **({"music_sha256": key_inputs().digest(str(ep.settings.music))} if keys.has_music(ep.settings) else {}),
        "fonts": ek.fonts,
        "tts_engine": timed.engine_id,
    }
    manifest = outputs.episode_manifest(plan, ep.settings, probe, loudness[:2], timed.fits, inputs, looks,
                                        final_key=ek.final, thumbs_key=ek.thumbs)  # fmt: skip

    def as_named(f: str | Path | None) -> str | None:
        """A file the script names, relative to the script: an output folder moved to another machine
        says the same (the content hashes beside them say which file it was)."""
        return None if not f or str(f).lower() == "none" else os.path.relpath(str(f), ep.path.parent)

    for s in manifest["segments"]:
        if "visual" in s and (kind := generated.kind_of(s["visual"]["file"], ep.settings.cache_dir)):
            s["visual"]["generated"], s["visual"]["file"] = kind, None  # named by its kind, not a cache path
        elif "visual" in s:
            s["visual"]["file"] = as_named(s["visual"]["file"])
    if "background" in manifest:
        manifest["background"]["file"] = as_named(manifest["background"]["file"])
    if loudness[2] is not None:
        manifest["music"] = {"file": as_named(ep.settings.music), "sting": as_named(ep.settings.sting), **loudness[2]}
        manifest["loudness"]["meter"] = (
            "BS.1770-4: integrated over the mix of voice and music; true peak by ffmpeg ebur128 on each encoded AAC piece"
        )
    if timed.alignment:  # the creator's recordings, and how sure their words' timing is
        from .speech.record import MISMATCH_RATIO

        manifest["recordings"] = [
            {
                "segment": k,
                "file": as_named(ep.segments[k].recording),
                "take_seconds": round(v.take_s, 3),
                "alignment_cost": round(v.cost, 3),
                "rule": MISMATCH_RATIO,
                "weakest_at_seconds": round(v.at_s, 2),
            }
            | ({"least_heard_stretch_heard": v.said, "heard": v.heard} if v.said is not None else {})
            | ({"mismatch": v.mismatch} if v.mismatch else {})
            for k, v in sorted(timed.alignment.items())
        ]
    outputs.write_json(staging / names["manifest"], manifest)


def _write_package(staging: Path, names: dict, timed: Timeline, board: list[Path]) -> None:
    """The upload package: description and metadata (package.py), and the storyboard (storyboard.py)."""
    import numpy as np

    from .picture import storyboard
    from .picture.typeset import font_path
    from .publish import package

    plan, settings = timed.plan, timed.episode.settings
    files = {role: names[role] for role in ("video", "srt", "vtt", "thumbnail", "cover", "storyboard")}
    meta = package.metadata(plan, files)
    outputs.write_text(staging / names["description"], meta["description"])
    outputs.write_json(staging / names["upload"], meta)
    strips = []
    for path in board:
        with np.load(path) as z:
            strips.append(z["strip"])
    sheet = storyboard.contact_sheet(plan, strips, font_path(settings, "bold"))
    outputs.save_png(sheet, staging / names["storyboard"])


def _warm_captions(tiles: captions.TileCache, texts: list[str]) -> None:
    """New narrations mean new pictures, and new sound to master: draw their caption tiles, and import
    what mastering loads a narration with (pydub: 22 ms, the first thing an edit's audio lane did),
    while the engine speaks."""
    import threading

    cues = [c for t in texts for c in cue_texts(t)]
    threading.Thread(target=tiles.warm, args=(cues,), daemon=True, name="warm-captions").start()
    threading.Thread(target=_import_pydub, daemon=True, name="warm-pydub").start()


def _import_pydub() -> None:
    from .audio import sound  # numpy with it: the speech's alignment imports it meanwhile too

    sound._pydub()


def _encode(
    timed: Timeline,
    ek: keys.EpisodeKeys,
    encoder: Encoder,
    cache: Cache,
    stats: Stats,
    progress: Progress,
    tiles: captions.TileCache,
    mp4: Path,
    storyboard: Callable[[list[Path]], None],
) -> tuple:
    """Two lanes: the video segments one after another, and the audio track (master, AAC, loudness)
    beside them; then the join into `mp4`. Returns (its probe, (integrated LUFS, true peak))."""
    import json

    plan = timed.plan
    audio_path = cache.path("segments", ek.audio, ".aac")
    figures = cache.path("segments", ek.audio, ".json")
    futures: list[Future] = []
    seg_paths: list[Path] = []
    # a third lane for the storyboard: its tiles and sheet wait for no one and no one waits for them
    # until the join is done (in an edit with music the audio lane is the long one, cold the video lane)
    with (
        ThreadPoolExecutor(max_workers=1) as audio,
        ThreadPoolExecutor(max_workers=1) as video,
        ThreadPoolExecutor(max_workers=1, initializer=_background) as board_lane,
    ):
        measuring = _start_audio(audio, timed, encoder, cache, audio_path, figures, stats, progress, futures)
        mixing = futures[0] if futures and keys.mixes(plan, timed.episode.settings) else None  # see CARDS_BESIDE_AUDIO
        boards = _start_video(video, board_lane, timed, ek, encoder, cache, stats, progress, tiles, futures, seg_paths, mixing)
        sheet = board_lane.submit(lambda: storyboard([b.result() for b in boards]))
        try:
            for f in futures:
                f.result()  # re-raise the first failure ...
            progress("join")
            encoder.join(seg_paths, audio_path, plan.fps, mp4)
            outputs.fault("join:after")
            progress("measure")
            probe = encoder.probe(mp4, count=False)  # its frames from its sample table: ffmpeg just wrote it
            if measuring:
                measuring.result()
            sheet.result()
        except BaseException:
            for f in futures + boards + [sheet] + ([measuring] if measuring else []):
                f.cancel()  # ... without starting queued work; `with` waits for the rest
            raise
    # the final file carries the audio track by stream copy: its figures were taken with the chunks
    measured = json.loads(figures.read_text())
    return probe, (measured["integrated_lufs"], measured["true_peak"], measured.get("music"))


# Cards drawn while the audio lane makes its track: the first two (the encoder's first work), the rest
# after it. Drawing a card over a picture composites full RGBA frames; beside the mix's planning and its
# encoders it made the render's peak (Part 4 as shipped, cold: the tree's PSS 534-563 -> 431-452 MB).
CARDS_BESIDE_AUDIO = 2


def _start_video(video: ThreadPoolExecutor, board_lane: ThreadPoolExecutor, timed: Timeline, ek: keys.EpisodeKeys,
                 encoder: Encoder, cache: Cache, stats: Stats, progress: Progress, tiles: captions.TileCache,
                 futures: list[Future], seg_paths: list[Path], audio: Future | None) -> list[Future]:  # fmt: skip
    """The video lane's work, submitted: each segment not cached, its card drawn here and its pictures
    encoded on `video` (added to `futures`); every segment's path in `seg_paths`. `audio`: the audio
    lane's track, while it is made (see CARDS_BESIDE_AUDIO). Returns the storyboard
    strips' futures: a segment's strip is made once it is encoded, in an edit while the video lane is
    idle (made beside the encode, it took the cores the edit's audio lane was waiting for)."""
    plan, settings = timed.plan, timed.episode.settings
    vs = _video_settings(settings)
    boards, before = [], len(futures)
    for seg, k in zip(plan.segments, ek.segments):
        seg_path = cache.path("segments", k.segment, ".h264")
        seg_paths.append(seg_path)
        label = f"{seg.number or seg.kind} {seg.name}"
        card, encoding = None, None
        if cache.has(seg_path):
            stats.hits["segments"] += 1
            progress.done_frames += seg.frames
        else:
            if audio is not None and len(futures) - before >= CARDS_BESIDE_AUDIO:
                wait([audio])  # the rest after the audio lane's track (its failure is reported by the join)
            progress("draw", label)
            card = frames.ensure_card(plan, seg, k.card, settings, cache, stats)
            give_back_freed_memory()  # what drawing it freed: see _encoded
            args = (encoder, cache, card, plan, seg, k, vs, seg_path, progress, label, stats, tiles)
            encoding = video.submit(_encode_segment, *args)
            futures.append(encoding)
        boards.append(board_lane.submit(_board, plan, seg, k, card, settings, cache, stats, tiles, encoding))
    give_back_freed_memory()  # what drawing the cards freed
    return boards


def _video_settings(settings: Settings) -> VideoSettings:
    """One x264 at a time, with a thread per core (see Settings.x264_threads): measured as fast as two
    single-threaded encoders side by side in half the memory, and as fast as x264's own choice (1.5
    threads per core) in 20 MB less."""
    return VideoSettings(
        settings.width,
        settings.height,
        settings.fps,
        settings.preset,
        settings.crf,
        threads=settings.x264_threads,
        mode=settings.encoder,
        keyint=settings.keyint_frames,
    )


def _start_audio(audio: ThreadPoolExecutor, timed: Timeline, encoder: Encoder, cache: Cache, audio_path: Path,
                 figures: Path, stats: Stats, progress: Progress, futures: list[Future]) -> Future | None:  # fmt: skip
    """The audio lane's work, submitted: the track (a mix where there is music or a clip's sound), added
    to `futures`, which the join waits for; and its figures for the manifest, returned (the join need
    not wait for them). None where the track is cached."""
    plan, settings = timed.plan, timed.episode.settings
    if cache.has(audio_path, figures):
        stats.hits["segments"] += 1
        return None
    if keys.mixes(plan, settings):
        spoken = {seg.audio_key: (n.wav, n.words) for seg, n in zip(plan.segments, timed.narrations)}
        where = str(timed.episode.where("music"))
        args = (plan, spoken, settings, encoder, cache, audio_path, figures, stats, progress, where)
        futures.append(audio.submit(_freeing, track.make_music, *args))
        return audio.submit(track.measure_music, encoder, cache, figures)  # beside the join
    wavs = {seg.audio_key: n.wav for seg, n in zip(plan.segments, timed.narrations)}
    futures.append(audio.submit(track.make, plan, wavs, settings, encoder, cache, audio_path, stats, progress))
    return audio.submit(track.measure, plan, settings, encoder, cache, figures)


def _freeing(work: Callable, *args) -> None:
    """`work(*args)`, then what it freed given back (its arrays, gone when it returns)."""
    try:
        work(*args)
    finally:
        give_back_freed_memory()


def _background() -> None:
    """Run this thread at a lower priority: the storyboard waits for no one, and in an edit with music
    it took the cores from the audio lane, which the join waits for (Linux schedules threads one by
    one; elsewhere this does nothing)."""
    import os
    import threading

    try:
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + 10))
    except (AttributeError, OSError):
        pass


def _board(plan: Plan, seg: SegmentPlan, k: keys.SegmentKeys, card: Path | None, settings: Settings, cache: Cache,
           stats: Stats, tiles: captions.TileCache, after: Future | None) -> Path:  # fmt: skip
    if after is not None:
        after.result()
    card = card or frames.ensure_card(plan, seg, k.card, settings, cache, stats)
    return frames.board_tiles(card, plan, seg, k.segment, settings, tiles, cache)


def _encode_segment(
    encoder: Encoder,
    cache: Cache,
    card: Path,
    plan: Plan,
    seg: SegmentPlan,
    k: keys.SegmentKeys,
    vs: VideoSettings,
    out: Path,
    progress: Progress,
    label: str,
    stats: Stats,
    tiles: captions.TileCache,
) -> None:
    settings: Settings = tiles.settings
    progress("encode", label)
    painter = captions.CaptionPainter(seg, settings, tiles=tiles)
    repeats = [st.end - st.start for st in seg.states]
    board = frames.board_path(cache, k.segment)
    tap = None if cache.has(board) else frames.BoardTap(plan, seg, settings)

    def pictures(states):
        made = frames.pictures(card, seg, settings, painter, states, plan)
        return made if tap is None else tap.watch(states, made)

    with cache.writing(out) as tmp:
        if vs.mode == "full":
            encoder.encode_frames(pictures(seg.states), repeats, vs, tmp)
            stats.pictures += len(seg.states)
        else:
            runs = [(keys.run(k, idx, inner, settings), idx, inner) for idx, inner in plan_runs(seg, settings.keyint_frames)]
            paths = {key: cache.path("segments", key, ".run") for key, _, _ in runs}
            todo = {key: (idx, inner) for key, idx, inner in runs if not cache.has(paths[key])}  # met twice: once
            if todo:
                scratch = tmp.with_name(tmp.name + ".runs.h264")
                states = [seg.states[i] for idx, _ in todo.values() for i in idx]
                try:
                    made = encoder.encode_runs(
                        pictures(states),
                        [(len(idx), inner) for idx, inner in todo.values()],
                        # a moving segment is one run, encoded alone: x264's rate control serves it
                        vs if plan_moves(seg) else dataclasses.replace(vs, rate="cqp"),
                        scratch,
                    )
                finally:
                    scratch.unlink(missing_ok=True)
                for key, data in zip(todo, made):
                    with cache.writing(paths[key]) as part:
                        part.write_bytes(data)
                stats.pictures += len(states)
            encoder.assemble(
                [paths[key].read_bytes() for key, _, _ in runs], [[repeats[i] for i in idx] for _, idx, _ in runs], tmp
            )
    _encoded(plan, seg, tiles, tap, board, cache)
    stats.draws += painter.cues_drawn
    stats.encodes += 1
    progress.done_frames += seg.frames
    progress("encoded", label)


def _encoded(plan: Plan, seg: SegmentPlan, tiles: captions.TileCache, tap, board: Path, cache: Cache) -> None:
    """After a segment's encode: its storyboard strip saved where the encode passed its pictures by (else
    the board lane composes what did not pass by) and then its caption tiles let go (a later cue that
    needs one draws it again); and what its pictures freed given back: malloc kept 40-60 MB of freed
    frames resident through the rest of a cold render (a trim costs ~1 ms, and the pages it faults in
    again)."""
    if tap is not None:
        tap.save(board, cache)
        later = [cue.text for s in plan.segments if s.start > seg.start for cue in s.cues]
        tiles.release([cue.text for cue in seg.cues], later)
    give_back_freed_memory()
