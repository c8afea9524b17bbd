"""The 30-second promise: measure an episode from its synthesised audio and hold it to the budget.

One small function per rule. Durations always come from the audio (via the plan); a word-count figure
appears only as a hint about how much to cut.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import draw
from .cache import Cache, Stats, key_of
from .errors import BudgetError, TextOverflowError
from .load import Episode
from .narrate import Engine, Narration, Request, narrate, tokens
from .plan import Plan, SegmentInput, TimedWord, build_plan


@dataclass(frozen=True)
class Fit:
    segment: int
    from_rate: int
    to_rate: int


@dataclass
class Measured:
    episode: Episode
    plan: Plan
    narrations: list[Narration]
    fits: list[Fit] = field(default_factory=list)
    engine_id: str = ""


def _texts(ep: Episode) -> list[tuple[str, str, int | None, object]]:
    """(kind, text, concept number, segment) for intro, concepts and outro, in order."""
    s = ep.settings
    out: list = []
    if s.intro:
        out.append(("intro", f"{ep.series}. Part {ep.part}.", None, None))
    out += [("concept", seg.narration, seg.index + 1, seg) for seg in ep.segments]
    if s.outro:
        tail = f" Next: {ep.next}." if ep.next else ""
        out.append(("outro", s.outro_text + tail, None, None))
    return out


def _request(ep: Episode, text: str, seg, rate: int) -> Request:
    label = f"{ep.segment_where(seg)}: segments[{seg.index}]" if seg else str(ep.path)
    return Request(text=text, voice=ep.settings.voice, rate=rate, label=label, voice_where=ep.where("voice"))


def measure(ep: Episode, engine: Engine, cache: Cache, stats: Stats | None = None,
            on_progress: Callable | None = None, on_speak: Callable | None = None) -> Measured:
    """Speak every segment (cached), plan the timeline and, where the script allows, fit the rate."""
    s = ep.settings
    if hasattr(engine, "with_library"):          # the speech library the settings name
        engine = engine.with_library(s.speech_library)
    texts = _texts(ep)
    rates = [seg.rate if seg else s.rate for _, _, _, seg in texts]
    reqs = [_request(ep, text, seg, r) for (_, text, _, seg), r in zip(texts, rates)]
    narrs = narrate(reqs, engine, cache, stats, on_progress, on_speak)
    fits: list[Fit] = []

    if s.fit == "rate":
        available = s.segment_budget_frames - s.lead_in_frames - s.tail_frames
        for i, ((kind, text, _, seg), n) in enumerate(zip(texts, narrs)):
            if kind != "concept" or _narr_frames(n, s.fps) <= available:
                continue
            ceiling = int(seg.rate * s.fit_max_rate_factor)
            rate = seg.rate
            while _narr_frames(n, s.fps) > available and rate < ceiling:
                # speech time scales roughly inversely with rate; aim 2% past the need, then verify
                rate = min(ceiling, max(rate + 1, math.ceil(rate * _narr_frames(n, s.fps) / available * 1.02)))
                n = narrate([_request(ep, text, seg, rate)], engine, cache, stats)[0]
            narrs[i] = n
            if rate != seg.rate:
                fits.append(Fit(seg.index, seg.rate, rate))

    inputs = [
        SegmentInput(kind=kind, name=seg.name if seg else ("Intro" if kind == "intro" else "Outro"),
                     one_liner=seg.one_liner if seg else "", reference=seg.reference if seg else "",
                     number=num, samples=n.samples, sample_rate=n.sample_rate,
                     words=tuple(TimedWord(w.text, w.start, w.end) for w in n.words), rate=n.rate,
                     voice=n.voice, audio_key=n.wav.stem,
                     source=str(ep.segment_where(seg)) if seg else str(ep.path))
        for (kind, _, num, seg), n in zip(texts, narrs)
    ]
    plan = build_plan(ep.series, ep.part, ep.title, s.fps, s.width, s.height, inputs, s.lead_in_frames, s.tail_frames,
                      extra={"next": ep.next})
    return Measured(ep, plan, narrs, fits, engine.id)


def _narr_frames(n: Narration, fps: int) -> int:
    return -(-n.samples * fps // n.sample_rate)


# ---- rules --------------------------------------------------------------------------------------

def rule_segment_budget(m: Measured) -> list[str]:
    s = m.episode.settings
    out = []
    for sp, n in zip(m.plan.segments, m.narrations):
        if sp.kind != "concept" or sp.frames <= s.segment_budget_frames:
            continue
        fps = s.fps
        over = sp.frames - s.segment_budget_frames
        available = s.segment_budget_frames - sp.lead_in - (sp.frames - sp.lead_in - sp.narration_frames)
        fit_rate = math.ceil(sp.rate * sp.narration_frames / max(1, available))
        words = len(tokens(n.text))
        cut = math.ceil(over / fps * words / max(0.1, n.seconds))
        seg = m.episode.segments[sp.number - 1]
        note = f" (already fitted from {seg.rate} wpm)" if sp.rate != seg.rate else ""
        out.append(
            f"{sp.source}: segments[{sp.number - 1}] {sp.name!r} runs {sp.frames / fps:.2f} s, "
            f"{over / fps:.2f} s over the {s.segment_budget_frames / fps:.2f} s budget at {sp.rate} wpm{note}; "
            f"a rate of {fit_rate} wpm would fit, or cut about {cut} words")
    return out


def rule_episode_budget(m: Measured) -> list[str]:
    s = m.episode.settings
    if m.plan.total_frames <= s.episode_budget_frames:
        return []
    return [f"{m.episode.path}: the episode runs {m.plan.total_frames / s.fps:.2f} s, over the "
            f"{s.episode_budget_frames / s.fps:.0f} s cap by {(m.plan.total_frames - s.episode_budget_frames) / s.fps:.2f} s"]


RULES = (rule_segment_budget, rule_episode_budget)


def fit_problems(m: Measured, captions: list | None = None) -> list[str]:
    """Every text box of the episode held to the fit rules a render draws with (cards, captions of
    `captions`, default all, thumbnail, cover), each problem placed at its field: file:line:col: field."""
    ep = m.episode
    out = []
    for e in draw.check_fits(m.plan, ep.settings, captions):
        where, name = ep.locate(e.source)
        out.append(f"{where}: {name + ': ' if name else ''}{e.detail}")
    return out


def enforce_fits(m: Measured, captions: list | None = None) -> None:
    found = fit_problems(m, captions)
    if found:
        raise TextOverflowError(found[0] if len(found) == 1 else
                                f"{len(found)} texts do not fit:\n  " + "\n  ".join(found))


def problems(m: Measured) -> list[str]:
    return [p for rule in RULES for p in rule(m)]


def enforce(m: Measured) -> None:
    found = problems(m)
    if found:
        raise BudgetError(found)


# ---- reports ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    episode: str
    segment: str
    frames: int
    budget: int
    fps: int
    ok: bool
    note: str = ""
    failure: str = "OVER"       # the status word when not ok: OVER, BAD (rendered file), ERROR (script)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def rows(m: Measured) -> list[Row]:
    s = m.episode.settings
    fits = {f.segment: f for f in m.fits}
    out = []
    for sp in m.plan.segments:
        if sp.kind != "concept":
            continue
        f = fits.get(sp.number - 1)
        note = f"rate fitted {f.from_rate}->{f.to_rate} wpm" if f else ""
        out.append(Row(str(m.episode.path), f"{sp.number}. {sp.name}", sp.frames, s.segment_budget_frames, s.fps,
                       sp.frames <= s.segment_budget_frames, note))
    out.append(Row(str(m.episode.path), "(episode total)", m.plan.total_frames, s.episode_budget_frames, s.fps,
                   m.plan.total_frames <= s.episode_budget_frames))
    return out


def error_row(path: Path | str, message: str, what: str = "(script)", failure: str = "ERROR") -> Row:
    return Row(str(path), what, 0, 0, 1, False, message, failure=failure)


def format_table(all_rows: list[Row]) -> str:
    head = ("episode", "segment", "measured", "budget", "status")
    body = [(r.episode, r.segment, f"{r.seconds:6.2f} s" if r.budget else "-",
             f"{r.budget / r.fps:6.2f} s" if r.budget else "-",
             ("OK" if r.ok else r.failure) + (f"  {r.note}" if r.note else ""))
            for r in all_rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in [head, *body]]
    return "\n".join(lines)


def format_json(all_rows: list[Row], messages: list[str]) -> str:
    return json.dumps({
        "ok": all(r.ok for r in all_rows),
        "segments": [{"episode": r.episode, "segment": r.segment, "frames": r.frames, "seconds": round(r.seconds, 3),
                      "budget_frames": r.budget, "fps": r.fps, "ok": r.ok,
                      "status": "OK" if r.ok else r.failure, "note": r.note} for r in all_rows],
        "problems": messages,
    }, indent=2)


def format_junit(all_rows: list[Row], messages: list[str]) -> str:
    """One test case per segment, so a CI page shows which segment broke the promise."""
    from xml.sax.saxutils import escape, quoteattr    # only CI asks for JUnit
    by_ep: dict[str, list[Row]] = {}
    for r in all_rows:
        by_ep.setdefault(r.episode, []).append(r)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites name="shortgen check" tests="{len(all_rows)}" failures="{sum(not r.ok for r in all_rows)}">']
    for ep, rs in by_ep.items():
        out.append(f'  <testsuite name={quoteattr(ep)} tests="{len(rs)}" failures="{sum(not r.ok for r in rs)}">')
        for r in rs:
            out.append(f'    <testcase classname={quoteattr(ep)} name={quoteattr(r.segment)} time="{r.seconds:.3f}">')
            if not r.ok:
                detail = next((m for m in messages if r.segment.split(". ", 1)[-1] in m and ep in m), r.note or "over budget")
                out.append(f'      <failure message={quoteattr(detail)}>{escape(detail)}</failure>')
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out)


def plan_key(m: Measured) -> str:
    return key_of(m.plan.to_dict())


# ---- the rendered file --------------------------------------------------------------------------

def check_rendered(out_dir: Path, encoder, engine: Engine, cache: Cache, layer: dict | None = None
                   ) -> tuple[list[Row], list[str]]:
    """Check a rendered episode: probe its MP4, then hold each segment's span in the manifest to the budget
    and to a fresh plan of the script, each within one frame. `encoder` is anything with `probe(path)`.
    The folder is opened once and every file read through that handle, so a render that replaces the
    set meanwhile cannot make the check read a manifest of one set and the video of another."""
    import os

    from .errors import ProbeError
    from .load import load_episode

    shown = Path(out_dir)
    try:
        fd = os.open(shown, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise ProbeError(f"{shown}: {e.strerror or e}") from None
    handle = f"/proc/{os.getpid()}/fd/{fd}"       # a path ffmpeg, another process, can open too
    try:
        rows, msgs = _check_rendered(Path(handle) if Path(handle).is_dir() else shown,
                                     shown, encoder, engine, cache, layer, ProbeError, load_episode)
    except ProbeError as e:
        raise ProbeError(str(e).replace(handle, str(shown))) from None
    finally:
        os.close(fd)
    return rows, [m.replace(handle, str(shown)) for m in msgs]


def _check_rendered(out_dir: Path, shown: Path, encoder, engine, cache, layer, ProbeError, load_episode):
    try:
        man = json.loads((out_dir / "manifest.json").read_text())
        fps, total, width, height = man["fps"], man["total_frames"], man["width"], man["height"]
        spans = [(s["kind"], s.get("number"), s["name"], s["start_frame"], s["end_frame"]) for s in man["segments"]]
        script = Path(man["inputs"]["script"])
        mp4 = out_dir / f"{shown.name}.mp4"
        mp4 = mp4 if mp4.exists() else next(iter(sorted(out_dir.glob("*.mp4"))), mp4)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ProbeError(f"{shown / 'manifest.json'}: unreadable manifest ({type(e).__name__}: {e})") from None

    label = str(shown)
    p = encoder.probe(mp4)
    facts = []
    if (p.width, p.height) != (width, height):
        facts.append(f"size {p.width}x{p.height}, expected {width}x{height}")
    if p.fps != fps:
        facts.append(f"{float(p.fps):g} fps, expected {fps}")
    if p.codec != "h264":
        facts.append(f"video codec {p.codec}, expected h264")
    if not p.audio:
        facts.append("no audio stream")
    if abs(p.frames - total) > 1:
        facts.append(f"{p.frames} video frames, the manifest says {total}")
    if abs(p.duration - total / fps) > 1 / fps + 1e-6:
        facts.append(f"lasts {p.duration:.3f} s, the manifest says {total / fps:.3f} s")
    # what a player streaming the file meets (read from the MP4's sample tables)
    if p.frame_lengths != 1:
        facts.append(f"frames of {p.frame_lengths} different lengths (a variable frame rate)")
    if not p.index_first:
        facts.append("the index (moov) comes after the media: nothing plays until the whole file is loaded")
    if p.interleave_s > 0.5:
        facts.append(f"audio and video are stored up to {p.interleave_s:.1f} s apart (not interleaved: it streams badly)")
    msgs = [f"{mp4}: {f}" for f in facts]
    out = [Row(label, "(rendered file)", p.frames, total, fps, not facts, "; ".join(facts), failure="BAD")]

    plan = None
    if script.is_file():
        ep = load_episode(script, layer or {})
        if ep.settings.fps == fps:
            plan = measure(ep, engine, cache).plan
        budget, cap = ep.settings.segment_budget_frames, ep.settings.episode_budget_frames
    else:
        budget, cap = 30 * fps, 180 * fps
    planned = {(sp.kind, sp.number, sp.name): (sp.start, sp.end) for sp in plan.segments} if plan else {}
    for kind, num, name, start, end in spans:
        if kind != "concept":
            continue
        notes = []
        if end - start > budget:
            notes.append(f"over budget by {(end - start - budget) / fps:.2f} s")
        want = planned.get((kind, num, name))
        if plan and want is None:
            notes.append("not in the current plan of the script (re-render?)")
        elif want and (abs(want[0] - start) > 1 or abs(want[1] - end) > 1):
            notes.append(f"spans frames {start}-{end}, the plan says {want[0]}-{want[1]}")
        out.append(Row(label, f"{num}. {name}", end - start, budget, fps, not notes, "; ".join(notes),
                       failure="OVER" if end - start > budget else "BAD"))
        msgs += [f"{shown}: segment {num} {name!r}: {n}" for n in notes]
    out.append(Row(label, "(episode total)", total, cap, fps, total <= cap))
    return out, msgs
