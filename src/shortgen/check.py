"""The 30-second promise: measure an episode from its synthesised audio and hold it to the budget.

One small function per rule. Durations always come from the audio (via the plan); a word-count figure
appears only as a hint about how much to cut.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import BudgetError, TextOverflowError
from .picture import captions
from .speech.narrate import tokens
from .timeline import Timeline

# ---- rules --------------------------------------------------------------------------------------


def rule_segment_budget(m: Timeline) -> list[str]:
    settings = m.episode.settings
    out = []
    for sp, n in zip(m.plan.segments, m.narrations):
        if sp.kind != "concept" or sp.frames <= settings.segment_budget_frames:
            continue
        fps = settings.fps
        over = sp.frames - settings.segment_budget_frames
        available = settings.segment_budget_frames - sp.lead_in - (sp.frames - sp.lead_in - sp.narration_frames)
        fit_rate = math.ceil(sp.rate * sp.narration_frames / max(1, available))
        words = len(tokens(n.text))
        cut = math.ceil(over / fps * words / max(0.1, n.seconds))
        k = (sp.number or 0) - 1
        seg = m.episode.segments[k]
        if seg.recording is not None:
            verdict = m.alignment.get(k)
            hint = verdict.trim_hint() if verdict is not None else ""
            out.append(
                f"{sp.source}: segments[{k}] {sp.name!r} runs {sp.frames / fps:.2f} s with its recording "
                f"({n.seconds:.2f} s of speech, trimmed), {over / fps:.2f} s over the "
                f"{settings.segment_budget_frames / fps:.2f} s budget: trim {seg.recording.name} or re-record it "
                f"(a recording's rate cannot be fitted){hint}"
            )
            continue
        note = f" (already fitted from {seg.rate} wpm)" if sp.rate != seg.rate else ""
        out.append(
            f"{sp.source}: segments[{k}] {sp.name!r} runs {sp.frames / fps:.2f} s, "
            f"{over / fps:.2f} s over the {settings.segment_budget_frames / fps:.2f} s budget at {sp.rate} wpm{note}; "
            f"a rate of {fit_rate} wpm would fit, or cut about {cut} words"
        )
    return out


def rule_episode_budget(m: Timeline) -> list[str]:
    settings = m.episode.settings
    if m.plan.total_frames <= settings.episode_budget_frames:
        return []
    fps, total, cap = settings.fps, m.plan.total_frames, settings.episode_budget_frames
    return [
        f"{m.episode.path}: the episode runs {total / fps:.2f} s, over the {cap / fps:.0f} s cap by {(total - cap) / fps:.2f} s"
    ]


RULES = (rule_segment_budget, rule_episode_budget)


def fit_problems(m: Timeline, cues: list | None = None, cards: list | None = None, covers: bool = True) -> list[str]:
    """Every text box of the episode held to the fit rules a render draws with (cards of `cards` and
    captions of `cues`' segments, default all, the thumbnail and cover), each problem placed at its field:
    file:line:col: field."""
    ep = m.episode
    out = []
    for e in captions.check_fits(m.plan, ep.settings, cues, cards, covers):
        where, name = ep.locate(e.source)
        out.append(f"{where}: {name + ': ' if name else ''}{e.detail}")
    return out


def enforce_fits(m: Timeline, captions: list | None = None, cards: list | None = None, covers: bool = True) -> None:
    found = fit_problems(m, captions, cards, covers)
    if found:
        raise TextOverflowError(found[0] if len(found) == 1 else f"{len(found)} texts do not fit:\n  " + "\n  ".join(found))


def problems(m: Timeline) -> list[str]:
    return [p for rule in RULES for p in rule(m)]


def enforce(m: Timeline) -> None:
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
    failure: str = "OVER"  # the status word when not ok: OVER, BAD (rendered file), ERROR (script)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def rows(m: Timeline) -> list[Row]:
    settings = m.episode.settings
    fits = {f.segment: f for f in m.fits}
    out = []
    for sp in m.plan.segments:
        if sp.kind != "concept":
            continue
        f = fits.get((sp.number or 0) - 1)
        note = f"rate fitted {f.from_rate}->{f.to_rate} wpm" if f else ""
        verdict = m.alignment.get((sp.number or 0) - 1)
        if verdict is not None:  # a creator's take: how sure its alignment is, before anything renders
            note = verdict.summary() + (f"; NOT ITS TEXT: {verdict.mismatch}" if verdict.mismatch else "")
        out.append(
            Row(
                str(m.episode.path),
                f"{sp.number}. {sp.name}",
                sp.frames,
                settings.segment_budget_frames,
                settings.fps,
                sp.frames <= settings.segment_budget_frames,
                note,
            )
        )
    out.append(
        Row(
            str(m.episode.path),
            "(episode total)",
            m.plan.total_frames,
            settings.episode_budget_frames,
            settings.fps,
            m.plan.total_frames <= settings.episode_budget_frames,
        )
    )
    return out


def error_row(path: Path | str, message: str, what: str = "(script)", failure: str = "ERROR") -> Row:
    return Row(str(path), what, 0, 0, 1, False, message, failure=failure)


def format_table(all_rows: list[Row]) -> str:
    head = ("episode", "segment", "measured", "budget", "status")
    body = [
        (
            r.episode,
            r.segment,
            f"{r.seconds:6.2f} s" if r.budget else "-",
            f"{r.budget / r.fps:6.2f} s" if r.budget else "-",
            ("OK" if r.ok else r.failure) + (f"  {r.note}" if r.note else ""),
        )
        for r in all_rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in [head, *body]]
    return "\n".join(lines)


def format_json(all_rows: list[Row], messages: list[str]) -> str:
    return json.dumps(
        {
            "ok": all(r.ok for r in all_rows),
            "segments": [
                {
                    "episode": r.episode,
                    "segment": r.segment,
                    "frames": r.frames,
                    "seconds": round(r.seconds, 3),
                    "budget_frames": r.budget,
                    "fps": r.fps,
                    "ok": r.ok,
                    "status": "OK" if r.ok else r.failure,
                    "note": r.note,
                }
                for r in all_rows
            ],
            "problems": messages,
        },
        indent=2,
    )


def format_junit(all_rows: list[Row], messages: list[str]) -> str:
    """One test case per segment, so a CI page shows which segment broke the promise."""
    from xml.sax.saxutils import escape, quoteattr  # only CI asks for JUnit

    by_ep: dict[str, list[Row]] = {}
    for r in all_rows:
        by_ep.setdefault(r.episode, []).append(r)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites name="shortgen check" tests="{len(all_rows)}" failures="{sum(not r.ok for r in all_rows)}">',
    ]
    for ep, rs in by_ep.items():
        out.append(f'  <testsuite name={quoteattr(ep)} tests="{len(rs)}" failures="{sum(not r.ok for r in rs)}">')
        for r in rs:
            out.append(f'    <testcase classname={quoteattr(ep)} name={quoteattr(r.segment)} time="{r.seconds:.3f}">')
            if not r.ok:
                detail = next((m for m in messages if r.segment.split(". ", 1)[-1] in m and ep in m), r.note or "over budget")
                out.append(f"      <failure message={quoteattr(detail)}>{escape(detail)}</failure>")
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out)
