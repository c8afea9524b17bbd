"""Stage 2 and 3 together: speak an episode (narrate) and plan its timeline on the measured speech,
fitting the speaking rate where the script allows. `check`, `plan --json` and `render` all start here,
so they agree by construction."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .cache import Cache, Stats
from .plan import AUTO_MOTIONS, Motion, Plan, SampleWord, SegmentInput, Visual, build_plan, narration_frames, visual_rect
from .script.load import Episode, Segment, VisualSpec
from .speech.narrate import Engine, Narration, Request, narrate, unspoken


@dataclass(frozen=True)
class Fit:
    segment: int
    from_rate: int
    to_rate: int


@dataclass
class Timeline:
    """An episode measured from its speech: the narrations, the plan built on them, the rate fits."""

    episode: Episode
    plan: Plan
    narrations: list[Narration]
    fits: list[Fit] = field(default_factory=list)
    engine_id: str = ""
    alignment: dict = field(default_factory=dict)  # concept index -> a recording's record.Verdict


def _texts(ep: Episode) -> list[tuple[str, str, int | None, Segment | None]]:
    """(kind, text, concept number, segment) for intro, concepts and outro, in order."""
    settings = ep.settings
    out: list = []
    if settings.intro:
        out.append(("intro", f"{ep.series}. Part {ep.part}.", None, None))
    out += [("concept", seg.narration, seg.index + 1, seg) for seg in ep.segments]
    if settings.outro:
        tail = f" Next: {ep.next}." if ep.next else ""
        out.append(("outro", settings.outro_text + tail, None, None))
    return out


def _request(ep: Episode, text: str, seg, rate: int) -> Request:
    label = f"{ep.segment_where(seg)}: segments[{seg.index}]" if seg else str(ep.path)
    return Request(text=text, voice=ep.settings.voice, rate=rate, label=label, voice_where=ep.where("voice"))


def _requests(ep: Episode) -> list[Request]:
    """The episode's narrations at the script's rates, in order."""
    return [_request(ep, text, seg, seg.rate if seg else ep.settings.rate) for _, text, _, seg in _texts(ep)]


def _engine(ep: Episode, engine: Engine) -> Engine:
    if hasattr(engine, "with_library"):  # the speech library the settings name
        return engine.with_library(ep.settings.speech_library)
    return engine


class Ahead:
    """An episode's narrations being spoken on a thread (`speak_ahead`): `texts` are the ones not yet
    in the cache; `speak_and_plan` takes the rest from here."""

    def __init__(self, ep: Episode, engine: Engine, cache: Cache) -> None:
        import threading
        from concurrent.futures import Future

        engine = _engine(ep, engine)
        self.requests = _requests(ep)
        self.texts = unspoken(self.requests, engine, cache)
        self.stats = Stats()
        self._heard: tuple[int, int] | None = None
        self._listener: Callable | None = None
        self._lock = threading.Lock()
        self._done: Future = Future()

        def speak() -> None:
            try:
                self._done.set_result(narrate(self.requests, engine, cache, self.stats, self._progress))
            except BaseException as e:  # raised where it is waited for, by speak_and_plan
                self._done.set_exception(e)

        threading.Thread(target=speak, daemon=True, name="speak-ahead").start()

    def _progress(self, done: int, total: int) -> None:
        with self._lock:
            self._heard = (done, total)
            listener = self._listener
        if listener:
            listener(done, total)

    def result(self, stats: Stats | None, on_progress: Callable | None) -> list[Narration]:
        """The narrations, once spoken; progress from now on goes to `on_progress`, and the counts to `stats`."""
        with self._lock:
            self._listener, heard = on_progress, self._heard
        if on_progress and heard:
            on_progress(*heard)
        narrs = self._done.result()
        if stats is not None:
            stats.tts += self.stats.tts
            for k, n in self.stats.hits.items():
                stats.hits[k] = stats.hits.get(k, 0) + n
        return narrs


def speak_ahead(ep: Episode, engine: Engine, cache: Cache) -> Ahead:
    """Start speaking the episode's new narrations now, on a thread: a render of one part asks for its
    speech before it imports the renderer (0.1 s in which the engine, a process of its own, would
    otherwise wait). Its errors are raised by `speak_and_plan`, as they would have been."""
    return Ahead(ep, engine, cache)


def speak_and_plan(
    ep: Episode,
    engine: Engine,
    cache: Cache,
    stats: Stats | None = None,
    on_progress: Callable | None = None,
    on_speak: Callable | None = None,
    ahead: Ahead | None = None,
) -> Timeline:
    """Speak every segment (cached), plan the timeline on the measured speech and, where the script
    allows, fit the rate: durations always come from the audio. `ahead`: this episode's speech, already
    asked for (`speak_ahead`)."""
    settings = ep.settings
    engine = _engine(ep, engine)
    texts = _texts(ep)
    reqs = _requests(ep)
    if ahead is not None and ahead.requests == reqs:
        if on_speak and ahead.texts:
            on_speak(ahead.texts)
        narrs = ahead.result(stats, on_progress)
    else:
        narrs = narrate(reqs, engine, cache, stats, on_progress, on_speak)
    alignment: dict = {}
    spoken = {seg.index: n for (_, _, _, seg), n in zip(texts, narrs) if seg is not None}  # the engine's, for every text
    for i, (_, text, _, seg) in enumerate(texts):
        if seg is not None and seg.recording is not None:
            # the creator's voice: the engine's speech of the same text times its words
            others = {k: n for k, n in spoken.items() if k != seg.index}
            narrs[i], alignment[seg.index] = _recorded(ep, seg, text, narrs[i], cache, others)
    fits = _fit_rates(ep, engine, cache, stats, texts, narrs) if settings.fit == "rate" else []
    plan = _plan(ep, texts, narrs)
    return Timeline(ep, plan, narrs, fits, engine.id, alignment)


def _fit_rates(ep: Episode, engine: Engine, cache: Cache, stats: Stats | None, texts: list, narrs: list) -> list[Fit]:
    """`fit: rate`: each over-budget segment spoken again faster, only as much as needed and at most
    fit_max_rate_factor its rate (`narrs` updated in place). A recording is what it is: no rate to fit."""
    settings = ep.settings
    fits: list[Fit] = []
    available = settings.segment_budget_frames - settings.lead_in_frames - settings.tail_frames
    for i, ((_, text, _, seg), n) in enumerate(zip(texts, narrs)):
        if seg is None or seg.recording is not None or _narr_frames(n, settings.fps) <= available:
            continue
        ceiling = int(seg.rate * settings.fit_max_rate_factor)
        rate = seg.rate
        while _narr_frames(n, settings.fps) > available and rate < ceiling:
            # speech time scales roughly inversely with rate; aim 2% past the need, then verify
            rate = min(ceiling, max(rate + 1, math.ceil(rate * _narr_frames(n, settings.fps) / available * 1.02)))
            n = narrate([_request(ep, text, seg, rate)], engine, cache, stats)[0]
        narrs[i] = n
        if rate != seg.rate:
            fits.append(Fit(seg.index, seg.rate, rate))
    return fits


def _plan(ep: Episode, texts: list, narrs: list) -> Plan:
    """The timeline, on the measured speech."""
    settings = ep.settings
    inputs = [
        SegmentInput(
            kind=kind,
            name=seg.name if seg else ("Intro" if kind == "intro" else "Outro"),
            one_liner=seg.one_liner if seg else "",
            reference=seg.reference if seg else "",
            number=num,
            samples=n.samples,
            sample_rate=n.sample_rate,
            words=tuple(SampleWord(w.text, w.start, w.end) for w in n.words),
            rate=n.rate,
            voice=n.voice,
            audio_key=n.wav.stem,
            source=str(ep.segment_where(seg)) if seg else str(ep.path),
            visual=plan_visual(seg.visual, ep, seg.index) if seg and seg.visual else None,
        )
        for (kind, _, num, seg), n in zip(texts, narrs)
    ]
    bar = settings.width - 2 * round(96 * settings.width / 1080) if settings.progress_bar else 0
    return build_plan(
        ep.series,
        ep.part,
        ep.title,
        settings.fps,
        settings.width,
        settings.height,
        inputs,
        settings.lead_in_frames,
        settings.tail_frames,
        extra={"next": ep.next},
        motion=Motion(settings.motion_hold_frames, 0.5, settings.caption_pop, bar),
        background=plan_visual(ep.background, ep, 0, full=True) if ep.background else None,
    )


def _recorded(ep: Episode, seg: Segment, text: str, reference: Narration, cache: Cache, others: dict) -> tuple[Narration, object]:
    from .errors import ScriptError
    from .speech import record

    assert seg.recording is not None
    field = f"segments[{seg.index}].recording"
    try:
        budget = ep.settings.segment_budget_frames / ep.settings.fps
        refuse = ep.settings.recording_mismatch == "refuse"
        info = record.probe(seg.recording, budget)
        return record.narration(seg.recording, info, text, reference, cache, budget, refuse, others, seg.recording_allow_short)
    except record.RecordingError as e:
        raise ScriptError(ep.field_where(seg, "recording"), field, str(e)) from None


def _narr_frames(n: Narration, fps: int) -> int:
    return narration_frames(n.samples, n.sample_rate, fps)


def plan_visual(spec: VisualSpec, ep: Episode, index: int, full: bool = False) -> Visual:
    """A measured visual as the plan's plain data: its place in the frame, its motion resolved."""
    s, m = ep.settings, spec.media
    motion = spec.motion
    if motion == "auto":
        motion = "none" if m.kind == "clip" else AUTO_MOTIONS[index % len(AUTO_MOTIONS)]
    rect = visual_rect("full" if full else s.visual_layout, s.width, s.height)
    if spec.generated and rect[1] > 0:  # a drawing of lines and text: above the captions, none of it under them
        rect = (rect[0], rect[1], rect[2], band_bottom(s))
    if m.kind == "clip" and spec.fit == "cover":
        _bounded_cover(spec, rect)
    return Visual(
        file=m.path,
        digest=m.digest,
        kind=m.kind,
        width=m.width,
        height=m.height,
        rect=rect,
        fit=spec.fit,
        motion=motion,
        zoom=s.motion_zoom,
        fps_num=m.fps.numerator,
        fps_den=m.fps.denominator,
        frames=m.frames,
        start=round(spec.start * m.fps),
        clip_end=spec.clip_end,
        source=spec.where,
        audio=spec.audio,
        reveal=spec.reveal,
    )


def band_bottom(s) -> int:
    """Where a generated visual's panel ends: above the tallest caption's ink (two lines of the largest
    type, centred in the caption box, a popped word and a pill around it), even for 4:2:0 chroma."""
    from .picture.captions import CAPTION_SIZES
    from .picture.draw import caption_origin

    _, y0, _, y1 = caption_origin(s)
    block = round(CAPTION_SIZES[0] * 1.25) + CAPTION_SIZES[0]
    return 2 * ((y0 + (y1 - y0 - block) // 2 - round(BAND_GAP * s.height / 1920)) // 2)


BAND_GAP = 40  # between a generated visual and the captions' ink: a popped word grows, a pill reaches out
MAX_COVER_AREA = 4  # a clip scaled to cover its box may be at most this many times the box's area


def _bounded_cover(spec: VisualSpec, rect: tuple[int, int, int, int]) -> None:
    """Refuse a clip whose cover fit would have ffmpeg make frames far larger than the box they fill (a
    7 x 4999 clip covering the panel: 888 x 634,000 pixels a frame). Stills crop before they scale."""
    from .errors import ScriptError

    m, (w, h) = spec.media, (rect[2] - rect[0], rect[3] - rect[1])
    scale = max(w / m.width, h / m.height)
    cw, ch = math.ceil(m.width * scale), math.ceil(m.height * scale)
    if cw * ch > MAX_COVER_AREA * w * h:
        raise ScriptError(
            spec.where,  # type: ignore[arg-type]  # "file:line:col: field", formatted as a Where is
            "",
            f"{Path(m.path).name} is {m.width} x {m.height} pixels: to cover the {w} x {h} box it would be scaled to "
            f"{cw:,} x {ch:,}; use `fit: contain`, or crop the clip nearer the box's shape",
        )
