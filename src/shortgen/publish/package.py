"""What an upload needs, beside the video: a description with chapters, a title within the platforms'
limits, tags and hashtags, all of it as JSON too (the storyboard is drawn by storyboard.py). Everything
comes from the plan (frames), turned into seconds here, at the edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..plan import Plan

# The platforms' limits, as documented by each (YouTube's Help Center; TikTok and Instagram caption
# limits). The description and title are held to the strictest of them.
TITLE_MAX = 100  # YouTube: a title of at most 100 characters
DESCRIPTION_MAX = 5000  # YouTube: at most 5,000 bytes
TAGS_MAX = 500  # YouTube: tags total at most 500 characters (a tag with a space counts its quotes)
HASHTAGS_MAX = 15  # YouTube ignores every hashtag of a video that has more than 60; Instagram allows 30
CAPTION_MAX = 2200  # TikTok and Instagram: a caption (title, hashtags) of at most 2,200 characters
CHAPTER_MIN_S = 10  # YouTube's chapters: the first at 0:00, at least three, each at least 10 s
CHAPTERS_MIN = 3


@dataclass(frozen=True)
class Chapter:
    frame: int
    seconds: int  # where a viewer lands: the frame's time, rounded to the second
    title: str

    @property
    def stamp(self) -> str:
        h, rest = divmod(self.seconds, 3600)
        m, s = divmod(rest, 60)
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _plain(text: str) -> str:
    """Text as the platforms take it: YouTube refuses '<' and '>' in titles and descriptions."""
    return re.sub(r"\s+", " ", text.replace("<", "\u2039").replace(">", "\u203a")).strip()


def chapters(plan: Plan) -> tuple[list[Chapter], str]:
    """YouTube's chapters from the plan's segments: the intro and outro are merged into their neighbours
    where they are under 10 s, as is any other segment too short to be a chapter. Returns the chapters
    and, where the rules cannot be met (then none are given), why."""
    fps = plan.fps
    total_s = plan.total_frames / fps
    marks = [(seg.start, seg.name if seg.kind == "concept" else seg.kind.capitalize()) for seg in plan.segments]
    chs = [Chapter(f, round(f / fps), t) for f, t in marks]

    def length(i: int) -> float:
        end = chs[i + 1].seconds if i + 1 < len(chs) else total_s
        return end - chs[i].seconds

    changed = True
    while changed and len(chs) > 1:
        changed = False
        for i in range(len(chs)):
            if length(i) >= CHAPTER_MIN_S:
                continue
            if i == 0:  # the first chapter starts at 0:00 and takes the next one's title
                nxt = chs.pop(1)
                chs[0] = Chapter(0, 0, nxt.title)
            else:  # the previous chapter runs on over it
                chs.pop(i)
            changed = True
            break
    chs[0] = Chapter(0, 0, chs[0].title)
    if len(chs) < CHAPTERS_MIN:
        return [], f"{len(chs)} chapters of at least {CHAPTER_MIN_S} s: YouTube needs {CHAPTERS_MIN}"
    if any(length(i) < CHAPTER_MIN_S for i in range(len(chs))):
        return [], f"a chapter is shorter than {CHAPTER_MIN_S} s"
    return chs, ""


def hashtag(text: str) -> str:
    """A name as a hashtag: its words joined, each capitalised ('Activation Functions' -> #ActivationFunctions);
    an acronym with its expansion in parentheses keeps the acronym."""
    text = re.sub(r"\s*\(.*?\)\s*", " ", text)
    words = re.findall(r"[^\W_]+", text)
    return "#" + "".join(w if not w.islower() else w.capitalize() for w in words) if words else ""


def title(plan: Plan) -> str:
    t = _plain(plan.title or f"{plan.series} #{plan.part}")
    if len(t) <= TITLE_MAX:
        return t
    cut = t[: TITLE_MAX - 1].rsplit(" ", 1)[0]
    return cut + "\u2026"


def tags(plan: Plan) -> list[str]:
    """The concepts' names (and the acronyms' expansions) and the series: YouTube's tag field."""
    out: list[str] = []
    for seg in plan.concepts():
        m = re.fullmatch(r"(.+?)\s*\((.+)\)", seg.name)
        out += [m.group(1), m.group(2)] if m else [seg.name]
    out.append(plan.series)
    seen: set[str] = set()
    kept: list[str] = []
    used = 0
    for t in (_plain(t).replace(",", " ") for t in out):
        cost = len(t) + (2 if " " in t else 0) + (1 if kept else 0)
        if t.casefold() in seen or not t or used + cost > TAGS_MAX:
            continue
        seen.add(t.casefold())
        kept.append(t)
        used += cost
    return kept


def hashtags(plan: Plan) -> list[str]:
    out = [hashtag(plan.series)] + [hashtag(seg.name) for seg in plan.concepts()] + ["#Shorts"]
    seen: set[str] = set()
    return [h for h in out if len(h) > 1 and not (h.casefold() in seen or seen.add(h.casefold()))][:HASHTAGS_MAX]  # type: ignore[func-returns-value]


def description(plan: Plan, chs: list[Chapter], tags_: list[str]) -> str:
    lines = [title(plan), ""]
    for seg in plan.concepts():
        lines.append(f"{seg.number}. {_plain(seg.name)}" + (f": {_plain(seg.one_liner)}" if seg.one_liner else ""))
    if chs:
        lines += ["", "Chapters"] + [f"{c.stamp} {_plain(c.title)}" for c in chs]
    refs = [seg for seg in plan.concepts() if seg.reference]
    if refs:
        lines += ["", "References"] + [f"{_plain(seg.name)}: {_plain(seg.reference)}" for seg in refs]
    if plan.extra.get("next"):
        lines += ["", f"Next: {_plain(plan.extra['next'])}"]
    lines += ["", " ".join(tags_)]
    text = "\n".join(lines) + "\n"
    while len(text.encode("utf-8")) > DESCRIPTION_MAX:  # the references go first, then the one-liners' ends
        text = text[: len(text) - 100].rsplit("\n", 1)[0] + "\n"
    return text


def metadata(plan: Plan, files: dict[str, str]) -> dict:
    """Everything an upload form asks for, machine-readable."""
    chs, why = chapters(plan)
    ht = hashtags(plan)
    desc = description(plan, chs, ht)
    fps = plan.fps
    caption = f"{title(plan)} {' '.join(ht)}"
    return {
        "title": title(plan),
        "description": desc,
        "chapters": [{"time": c.stamp, "seconds": c.seconds, "frame": c.frame, "title": c.title} for c in chs],
        **({"chapters_note": why} if why else {}),
        "tags": tags(plan),
        "hashtags": ht,
        "caption": caption[:CAPTION_MAX],
        "one_liners": [{"concept": s.name, "one_liner": s.one_liner} for s in plan.concepts() if s.one_liner],
        "references": [{"concept": s.name, "reference": s.reference} for s in plan.concepts() if s.reference],
        "duration_s": round(plan.total_frames / fps, 3),
        "files": files,
        "limits": {
            "title_chars": TITLE_MAX,
            "description_bytes": DESCRIPTION_MAX,
            "tags_chars": TAGS_MAX,
            "caption_chars": CAPTION_MAX,
            "chapter_min_s": CHAPTER_MIN_S,
            "chapters_min": CHAPTERS_MIN,
        },
    }


# ---- the storyboard ------------------------------------------------------------------------------
