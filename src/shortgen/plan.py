"""Stage 3: a pure, JSON-serialisable timeline in integer frames.

Nothing here touches files, engines or clocks: the same inputs always give the same plan, which is why
`shortgen check` and `shortgen plan --json` can work from it with no video rendering.
Seconds appear only at the edges (SRT/VTT, ffmpeg arguments), via `frames_to_ms`.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from dataclasses import asdict, dataclass, field

PLAN_VERSION = 2  # 2: visuals, and states that split where something moves
SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
PHRASE_END = re.compile(r"([,;:]|—|–)[\"')\]]*$|—")
CUE_MAX_CHARS = 34  # two caption lines of about 17-20 characters at the caption size
CUE_MIN_CHARS = 12  # do not end a cue at a comma before it holds this much
CUE_HOLD_FRAMES = 8  # keep a cue up this long after its last word ...
CUE_BRIDGE_FRAMES = 12  # ... and bridge a gap this short to the next cue rather than flash off


@dataclass(frozen=True)
class SampleWord:
    """A spoken word, timed in samples of its narration (the planner's input)."""

    text: str
    start: int  # sample offset inside the segment's narration
    end: int


@dataclass(frozen=True)
class SegmentInput:
    """What the planner needs about one segment: its text and its measured narration."""

    kind: str  # "intro" | "concept" | "outro"
    name: str
    one_liner: str
    reference: str
    number: int | None  # 1-based concept number, None for intro/outro
    samples: int
    sample_rate: int
    words: tuple[SampleWord, ...]
    rate: int
    voice: str
    audio_key: str  # which narration file (cache key)
    source: str = ""  # file:line:col of the segment, for messages
    visual: Visual | None = None


@dataclass(frozen=True)
class FrameWord:
    """A spoken word, timed in absolute frames of the episode (the plan)."""

    text: str
    start: int  # absolute frames
    end: int


@dataclass(frozen=True)
class Cue:
    start: int
    end: int
    first: int  # index of its first word in the segment's words
    last: int  # index of its last word (inclusive)
    text: str


@dataclass(frozen=True)
class State:
    """One distinct picture: a span of frames showing one cue with one word highlighted (or none), and
    where something moves, which moment of it: the visual's sample (a still's motion step or a clip's
    source frame), the background clip's source frame, the active word's pop step, the progress bar's
    length in pixels. -1 (0 for pop) where that layer does not move."""

    start: int
    end: int
    cue: int | None
    word: int | None
    vis: int = -1
    bg: int = -1
    pop: int = 0
    bar: int = -1


@dataclass(frozen=True)
class Visual:
    """A segment's picture or footage (or the episode's background), measured at load: plain data.
    `rect` is where it shows in the frame; a clip's frames are counted at its own rate fps_num/fps_den."""

    file: str
    digest: str  # the content hash: part of every cache key the visual touches
    kind: str  # "still" | "clip"
    width: int
    height: int
    rect: tuple[int, int, int, int]
    fit: str = "cover"  # "cover" | "contain"
    motion: str = "none"  # none | zoom-in | zoom-out | pan-left | pan-right | pan-up | pan-down
    zoom: float = 1.1  # how far a motion zooms (or, for a pan, how much spare picture it crosses)
    fps_num: int = 0
    fps_den: int = 1
    frames: int = 0  # a clip's frame count
    start: int = 0  # the first clip frame shown
    clip_end: str = "loop"  # a clip shorter than its span: "loop" or "hold" the last frame
    source: str = ""  # file:line:col: field, for messages
    audio: bool = False  # a clip's own sound plays under the voice
    reveal: int = 0  # a generated visual shown in this many steps (0: whole throughout)
    steps: tuple[int, ...] = ()  # ... where steps 1, 2 ... begin: frames from the segment's start (plan_segment)

    @property
    def moving(self) -> bool:
        return self.kind == "clip" or self.motion != "none" or self.reveal > 1


@dataclass(frozen=True)
class Motion:
    """The planner's rules for frames that change within a state (settings resolved by the caller)."""

    hold_max: int = 4  # a still's motion steps at least every this many frames
    step_px: float = 0.5  # ... and sooner when it would move further than this in one step
    pop: bool = False  # the active word pops in over POP_FRAMES frames
    bar_px: int = 0  # a progress bar this many pixels long (0: none)


@dataclass(frozen=True)
class SegmentPlan:
    index: int
    kind: str
    name: str
    one_liner: str
    reference: str
    number: int | None
    start: int
    end: int
    lead_in: int
    narration_start: int
    narration_frames: int
    samples: int
    sample_rate: int
    rate: int
    voice: str
    audio_key: str
    source: str
    words: tuple[FrameWord, ...]
    cues: tuple[Cue, ...]
    states: tuple[State, ...]
    visual: Visual | None = None

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Plan:
    series: str
    part: int
    title: str
    fps: int
    width: int
    height: int
    total_frames: int
    segments: tuple[SegmentPlan, ...]
    version: int = PLAN_VERSION
    extra: dict = field(default_factory=dict)
    background: Visual | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for s, sp in zip(d["segments"], self.segments):
            s["frames"] = sp.frames
        return d

    def concepts(self) -> list[SegmentPlan]:
        return [s for s in self.segments if s.kind == "concept"]


def samples_to_frames(samples: int, sample_rate: int, fps: int) -> int:
    """Nearest frame, in exact integer arithmetic."""
    return (2 * samples * fps + sample_rate) // (2 * sample_rate)


def narration_frames(samples: int, sample_rate: int, fps: int) -> int:
    """Frames a narration occupies: rounded up, so the audio never gets cut. Rate fitting and the
    planner both use this one figure."""
    return -(-samples * fps // sample_rate)


def frames_to_ms(frames: int, fps: int) -> int:
    return (2 * frames * 1000 + fps) // (2 * fps)


def group_cues(words: list[str], max_chars: int = CUE_MAX_CHARS, min_chars: int = CUE_MIN_CHARS) -> list[tuple[int, int]]:
    """Split words into caption cues at sentence and phrase boundaries; returns (first, last) index pairs.

    A cue always ends at a sentence end; it ends at a comma/colon/dash once it holds min_chars; and it never
    grows past max_chars unless a single word is longer (the drawer then shrinks the type or fails clearly).
    """
    cues: list[tuple[int, int]] = []
    first = 0
    length = 0
    for i, w in enumerate(words):
        added = len(w) if i == first else length + 1 + len(w)
        if i > first and added > max_chars:
            cut = _best_phrase_cut(words, first, i, min_chars)
            cues.append((first, cut))
            first = cut + 1
            length = len(" ".join(words[first : i + 1]))
        else:
            length = added
        if SENTENCE_END.search(w) or (length >= min_chars and PHRASE_END.search(w)):
            cues.append((first, i))
            first, length = i + 1, 0
    if first < len(words):
        cues.append((first, len(words) - 1))
    return cues


def cue_texts(narration: str) -> list[str]:
    """The caption cues a narration will have: they follow from its words alone, not their timing."""
    words = narration.split()
    return [" ".join(words[a : b + 1]) for a, b in group_cues(words)]


def _best_phrase_cut(words: list[str], first: int, i: int, min_chars: int) -> int:
    """Where to end a cue that would overflow at word i: the last phrase boundary if one is late enough."""
    for k in range(i - 1, first, -1):
        if PHRASE_END.search(words[k]) and len(" ".join(words[first : k + 1])) >= min_chars:
            return k
    return i - 1


def plan_segment(
    inp: SegmentInput,
    index: int,
    start: int,
    fps: int,
    lead_in: int,
    tail: int,
    motion: Motion | None = None,
    background: Visual | None = None,
) -> SegmentPlan:
    narration_start = start + lead_in
    n_frames = narration_frames(inp.samples, inp.sample_rate, fps)
    end = narration_start + n_frames + tail
    words = tuple(
        FrameWord(
            w.text,
            narration_start + samples_to_frames(w.start, inp.sample_rate, fps),
            max(
                narration_start + samples_to_frames(w.end, inp.sample_rate, fps),
                narration_start + samples_to_frames(w.start, inp.sample_rate, fps) + 1,
            ),
        )
        for w in inp.words
    )
    groups = group_cues([w.text for w in words])
    cues = []
    for n, (a, b) in enumerate(groups):
        c_start = words[a].start
        nxt = words[groups[n + 1][0]].start if n + 1 < len(groups) else end
        c_end = min(nxt, words[b].end + CUE_HOLD_FRAMES)
        if nxt - c_end <= CUE_BRIDGE_FRAMES:
            c_end = nxt
        cues.append(Cue(c_start, max(c_end, c_start + 1), a, b, " ".join(w.text for w in words[a : b + 1])))
    visual = _revealed(inp.visual, words, start)
    states = _states(start, end, words, cues)
    if motion is not None:
        states = split_states(states, start, end, words, fps, visual, background, motion)
    return SegmentPlan(
        index=index,
        kind=inp.kind,
        name=inp.name,
        one_liner=inp.one_liner,
        reference=inp.reference,
        number=inp.number,
        start=start,
        end=end,
        lead_in=lead_in,
        narration_start=narration_start,
        narration_frames=n_frames,
        samples=inp.samples,
        sample_rate=inp.sample_rate,
        rate=inp.rate,
        voice=inp.voice,
        audio_key=inp.audio_key,
        source=inp.source,
        words=words,
        cues=tuple(cues),
        states=tuple(states),
        visual=visual,
    )


def _revealed(v: Visual | None, words: tuple[FrameWord, ...], start: int) -> Visual | None:
    return dataclasses.replace(v, steps=reveal_frames(v.reveal, words, start)) if v is not None and v.reveal > 1 else v


def reveal_frames(n: int, words: tuple[FrameWord, ...], start: int) -> tuple[int, ...]:
    """Where steps 1 .. n-1 of a revealed visual begin (frames from the segment's start): step k as the
    narration reaches its k/n-th word, so each term, line or layer arrives with the words about it. Step
    0 shows from the segment's start."""
    if not words:
        return ()
    return tuple(words[len(words) * k // n].start - start for k in range(1, n))


def _states(start: int, end: int, words: tuple[FrameWord, ...], cues: list[Cue]) -> list[State]:
    """Cover [start, end) with distinct pictures: no caption, or a cue with its current word highlighted."""
    out: list[State] = []
    t = start
    for ci, c in enumerate(cues):
        if c.start > t:
            out.append(State(t, c.start, None, None))
        for wi in range(c.first, c.last + 1):
            a = max(words[wi].start, c.start)
            b = words[wi + 1].start if wi < c.last else c.end
            b = min(max(b, a), c.end)
            if b > a:
                out.append(State(a, b, ci, wi))
        t = c.end
    if t < end:
        out.append(State(t, end, None, None))
    # merge accidental zero-gaps and make the cover exact
    fixed: list[State] = []
    for s in out:
        if fixed and s.start != fixed[-1].end:
            s = State(fixed[-1].end, s.end, s.cue, s.word)
        if s.end > s.start:
            fixed.append(s)
    return fixed


def build_plan(
    series: str,
    part: int,
    title: str,
    fps: int,
    width: int,
    height: int,
    inputs: list[SegmentInput],
    lead_in: int,
    tail: int,
    extra: dict | None = None,
    motion: Motion | None = None,
    background: Visual | None = None,
) -> Plan:
    segs = []
    t = 0
    for i, inp in enumerate(inputs):
        lead = lead_in if inp.kind == "concept" else 0
        sp = plan_segment(inp, i, t, fps, lead, tail, motion, background)
        segs.append(sp)
        t = sp.end
    return Plan(
        series=series,
        part=part,
        title=title,
        fps=fps,
        width=width,
        height=height,
        total_frames=t,
        segments=tuple(segs),
        extra=dict(extra or {}),
        background=background,
    )


def moves(seg: SegmentPlan) -> bool:
    """Whether more than the caption changes from frame to frame: a moving visual, background or bar. A
    revealed visual's steps do not count: they change the picture a few times, as captions do, and its
    pictures encode in runs by cue at a constant quantiser like a still's (as one run at x264's rate
    control, a revealed series rendered 12% slower)."""
    revealed = seg.visual is not None and seg.visual.reveal > 1 and seg.visual.motion == "none"
    return any((st.vis >= 0 and not revealed) or st.bg >= 0 or st.bar >= 0 for st in seg.states)


def runs(seg: SegmentPlan, keyint: int) -> list[tuple[list[int], tuple[int, ...]]]:
    """A segment's states in runs, one per cue (and one per stretch without a caption; one in all where
    the picture moves): (state indices,
    keyframes inside the run, counted from its first picture). Every run opens with a keyframe; only a
    run longer than the keyframe interval gets keyframes inside it."""
    groups: list[list[int]] = []
    # where the picture moves, every picture depends on the segment's length (a motion spans it), so
    # runs by cue would save no re-encoding after an edit, and each would cost a keyframe
    whole = moves(seg)
    for i, st in enumerate(seg.states):
        if groups and (whole or seg.states[groups[-1][-1]].cue == st.cue):
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
            if nxt - last > keyint:
                inner.append(k)
                last = seg.states[i].start
        out.append((idx, tuple(inner)))
    return out


# ---- frames that change within a state: motion, footage, pops, progress --------------------------

PANEL_BOX = (96, 880, 984, 1480)  # the visual's panel at 1080x1920: the safe zone below the card's text
AUTO_MOTIONS = ("zoom-in", "pan-right", "zoom-out", "pan-left")  # a still's gentle motion, by segment


def visual_rect(layout: str, width: int, height: int) -> tuple[int, int, int, int]:
    """Where a segment's visual shows: the panel (even pixels, for 4:2:0 chroma) or the whole frame."""
    if layout == "full":
        return (0, 0, width, height)
    sx, sy = width / 1080, height / 1920
    x0, y0, x1, y1 = PANEL_BOX
    return (2 * round(x0 * sx / 2), 2 * round(y0 * sy / 2), 2 * round(x1 * sx / 2), 2 * round(y1 * sy / 2))


POP_SCALES = (1.24, 1.14, 1.06)  # the active word's size on its first frames: a short pop


def clip_frame(v: Visual, offset: int, fps: int) -> int:
    """The clip's source frame shown `offset` output frames into its span: from `v.start` at the clip's
    own rate, then looping back to `v.start` or holding the last frame. Exact integer arithmetic."""
    k = v.start + offset * v.fps_num // (v.fps_den * fps)
    if k < v.frames:
        return k
    if v.clip_end == "hold" or v.frames - v.start <= 0:
        return max(v.frames - 1, 0)
    return v.start + (k - v.start) % (v.frames - v.start)


def motion_hold(v: Visual, frames: int, hold_max: int, step_px: float) -> int:
    """How many frames a still's motion holds each step: as long as the picture moves at most `step_px`
    a step (its fastest point: a zoom's corner, a pan's every pixel), and at most `hold_max`."""
    w, h = v.rect[2] - v.rect[0], v.rect[3] - v.rect[1]
    if v.motion in ("zoom-in", "zoom-out"):
        travel = (v.zoom - 1) / v.zoom * (w * w + h * h) ** 0.5 / 2
    else:
        travel = (v.zoom - 1) / v.zoom * (w if v.motion in ("pan-left", "pan-right") else h)
    speed = travel / max(frames, 1)  # pixels per frame
    return max(1, min(hold_max, int(step_px / speed) if speed > 0 else hold_max))


def clip_sample(v: Visual | None, offset: int, fps: int) -> int:
    """The source frame a clip shows `offset` frames into its span, or the step a revealed visual shows;
    -1 where there is neither (a moving still's steps are placed by split_states, which knows the
    picture's other changes)."""
    if v is not None and v.reveal > 1:
        return bisect.bisect_right(v.steps, offset)
    return clip_frame(v, offset, fps) if v is not None and v.kind == "clip" else -1


def split_states(
    states: list[State],
    start: int,
    end: int,
    words: tuple[FrameWord, ...],
    fps: int,
    visual: Visual | None,
    background: Visual | None,
    motion: Motion,
) -> list[State]:
    """Split each state where its picture changes: the visual's motion step or clip frame, the
    background clip's frame (counted from the episode's start, so it runs on across segments), the
    active word's pop steps, the progress bar's pixels. A segment with none of them keeps its states."""
    frames = end - start
    moving = (visual is not None and visual.moving) or (background is not None and background.moving) or motion.pop
    if not moving and not motion.bar_px:
        return states

    still_moves = visual is not None and visual.kind == "still" and visual.motion != "none"
    hold = motion_hold(visual, frames, motion.hold_max, motion.step_px) if visual is not None and still_moves else 0

    def at(t: int, st: State) -> State:
        pop = 0
        if motion.pop and st.word is not None and 0 <= t - words[st.word].start < len(POP_SCALES):
            pop = t - words[st.word].start + 1
        return State(
            t,
            t + 1,
            st.cue,
            st.word,
            vis=-1 if still_moves else clip_sample(visual, t - start, fps),
            bg=clip_sample(background, t, fps),
            pop=pop,
            bar=(motion.bar_px * (t - start)) // frames if motion.bar_px else -1,
        )

    # A still's motion steps at most `hold` frames apart, counted from the last change of picture for
    # whatever reason (a caption, a pop): a picture made anyway carries the motion's current step, so
    # the motion costs no extra pictures where the captions already change often.
    out: list[State] = []
    for st in states:
        for t in range(st.start, st.end):
            s = at(t, st)
            last = out[-1] if out else None
            same = last is not None and (last.cue, last.word, last.bg, last.pop, last.bar) == (s.cue, s.word, s.bg, s.pop, s.bar)
            if same and last is not None and (last.vis == s.vis if not still_moves else t - last.start < hold):
                out[-1] = dataclasses.replace(last, end=t + 1)
            else:
                out.append(dataclasses.replace(s, vis=t - start) if still_moves else s)
    return out
