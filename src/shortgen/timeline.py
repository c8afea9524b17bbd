"""Stage 2 and 3 together: speak an episode (narrate) and plan its timeline on the measured speech,
fitting the speaking rate where the script allows. `check`, `plan --json` and `render` all start here,
so they agree by construction."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .cache import Cache, Stats
from .load import Episode, Segment, VisualSpec
from .narrate import Engine, Narration, Request, narrate
from .plan import AUTO_MOTIONS, Motion, Plan, SampleWord, SegmentInput, Visual, build_plan, narration_frames, visual_rect


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
    alignment: dict = field(default_factory=dict)  # concept index -> a recording's (worst alignment cost, mismatch or None)


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


def speak_and_plan(
    ep: Episode,
    engine: Engine,
    cache: Cache,
    stats: Stats | None = None,
    on_progress: Callable | None = None,
    on_speak: Callable | None = None,
) -> Timeline:
    """Speak every segment (cached), plan the timeline on the measured speech and, where the script
    allows, fit the rate: durations always come from the audio."""
    settings = ep.settings
    if hasattr(engine, "with_library"):  # the speech library the settings name
        engine = engine.with_library(settings.speech_library)
    texts = _texts(ep)
    rates = [seg.rate if seg else settings.rate for _, _, _, seg in texts]
    reqs = [_request(ep, text, seg, r) for (_, text, _, seg), r in zip(texts, rates)]
    narrs = narrate(reqs, engine, cache, stats, on_progress, on_speak)
    alignment: dict[int, tuple[float, str | None]] = {}
    for i, (_, text, _, seg) in enumerate(texts):
        if seg is not None and seg.recording is not None:
            # the creator's voice: the engine's speech of the same text times its words
            narrs[i], alignment[seg.index] = _recorded(ep, seg, text, narrs[i], cache)
    fits: list[Fit] = []

    if settings.fit == "rate":
        available = settings.segment_budget_frames - settings.lead_in_frames - settings.tail_frames
        for i, ((_, text, _, seg), n) in enumerate(zip(texts, narrs)):
            if seg is None or seg.recording is not None or _narr_frames(n, settings.fps) <= available:
                continue  # a recording is what it is: no rate to fit
            ceiling = int(seg.rate * settings.fit_max_rate_factor)
            rate = seg.rate
            while _narr_frames(n, settings.fps) > available and rate < ceiling:
                # speech time scales roughly inversely with rate; aim 2% past the need, then verify
                rate = min(ceiling, max(rate + 1, math.ceil(rate * _narr_frames(n, settings.fps) / available * 1.02)))
                n = narrate([_request(ep, text, seg, rate)], engine, cache, stats)[0]
            narrs[i] = n
            if rate != seg.rate:
                fits.append(Fit(seg.index, seg.rate, rate))

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
    plan = build_plan(
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
    return Timeline(ep, plan, narrs, fits, engine.id, alignment)


def _recorded(ep: Episode, seg: Segment, text: str, reference: Narration, cache: Cache) -> tuple[Narration, tuple]:
    from . import record
    from .errors import ScriptError

    assert seg.recording is not None
    field = f"segments[{seg.index}].recording"
    try:
        budget = ep.settings.segment_budget_frames / ep.settings.fps
        refuse = ep.settings.recording_mismatch == "refuse"
        n, worst, mismatch = record.narration(
            seg.recording, record.probe(seg.recording, budget), text, reference, cache, budget, refuse
        )
        return n, (worst, mismatch)
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
    return Visual(
        file=m.path,
        digest=m.digest,
        kind=m.kind,
        width=m.width,
        height=m.height,
        rect=visual_rect("full" if full else s.visual_layout, s.width, s.height),
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
    )
