"""Check a rendered episode's folder: probe its MP4 and hold the manifest to the budget and to a fresh
plan of its script."""

from __future__ import annotations

import json
from pathlib import Path

from .cache import Cache
from .check import Row
from .speech.narrate import Engine
from .timeline import speak_and_plan


def check_rendered(
    out_dir: Path, encoder, engine: Engine, cache: Cache, layer: dict | None = None
) -> tuple[list[Row], list[str]]:
    """Check a rendered episode: probe its MP4, then hold each segment's span in the manifest to the budget
    and to a fresh plan of the script, each within one frame. `encoder` is anything with `probe(path)`.
    The folder is opened once and every file read through that handle, so a render that replaces the
    set meanwhile cannot make the check read a manifest of one set and the video of another."""
    import os

    from .errors import ProbeError
    from .script.load import load_episode

    shown = Path(out_dir)
    try:
        fd = os.open(shown, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise ProbeError(f"{shown}: {e.strerror or e}") from None
    handle = f"/proc/{os.getpid()}/fd/{fd}"  # a path ffmpeg, another process, can open too
    try:
        rows, msgs = _check_rendered(
            Path(handle) if Path(handle).is_dir() else shown, shown, encoder, engine, cache, layer, ProbeError, load_episode
        )
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
        raise ProbeError(f"{shown / 'manifest.json'}: unreadable manifest ({e or 'a field is missing'})") from None

    label = str(shown)
    p = encoder.probe(mp4)
    facts = _stream_facts(p, width, height, fps, total)
    msgs = [f"{mp4}: {f}" for f in facts]
    out = [Row(label, "(rendered file)", p.frames, total, fps, not facts, "; ".join(facts), failure="BAD")]

    plan = None
    if script.is_file():
        ep = load_episode(script, layer or {})
        if ep.settings.fps == fps:
            plan = speak_and_plan(ep, engine, cache).plan
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
        out.append(
            Row(
                label,
                f"{num}. {name}",
                end - start,
                budget,
                fps,
                not notes,
                "; ".join(notes),
                failure="OVER" if end - start > budget else "BAD",
            )
        )
        msgs += [f"{shown}: segment {num} {name!r}: {n}" for n in notes]
    out.append(Row(label, "(episode total)", total, cap, fps, total <= cap))
    return out, msgs


def _stream_facts(p, width: int, height: int, fps: int, total: int) -> list[str]:
    """What is wrong with a rendered file's probe against its manifest, and what a player streaming it
    meets (read from the MP4's sample tables)."""
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
    if p.frame_lengths != 1:
        facts.append(f"frames of {p.frame_lengths} different lengths (a variable frame rate)")
    if not p.index_first:
        facts.append("the index (moov) comes after the media: nothing plays until the whole file is loaded")
    if p.interleave_s > 0.5:
        facts.append(f"audio and video are stored up to {p.interleave_s:.1f} s apart (not interleaved: it streams badly)")
    return facts
