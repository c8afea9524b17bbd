"""Every cache key, in one place: what invalidates what.

A key is a hash of everything its entry's bytes depend on, and a version string that is bumped when
the code that makes the entry changes. Reading down this file answers "what does an edit redo?":

  narration  text, voice, rate, speech engine (pyttsx3 version and the espeak library's digest)
  card       the card's texts, layout, theme, fonts, drawing version (draw.card_key_inputs)
  card       ... and its picture, background and caption look (draw.look_key_inputs), media by content hash
  overlay    a caption state's cue, highlighted word, pop step, theme, fonts (captions.overlay_key_inputs)
  picture    a state's overlay and its moment of the moving visual, background and progress bar
  run        one cue's pictures (card + overlays) and its inner keyframes, encoder settings
  segment    the card, every overlay and how long each shows, encoder settings
  voice      one segment's narration, mastering settings and its place on the AAC grid
  audio      every narration and where it starts, the episode's length, mastering settings; the music
             and sting files by content and every music setting, where there is music
  mixed      a chunk of the mixed track: a hash of its samples (an edit re-encodes what it changed)
  bed        the music decoded and looped to the episode's length, rounded up to 30 s
  final      every segment and the audio track: the whole MP4
  thumbs     the intro card's inputs, the concept names, the theme and fonts
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cache import key_of

if TYPE_CHECKING:
    from .plan import Plan, SegmentPlan
    from .settings import Settings

NARRATION = "narration-v2"  # v2: each narration spoken by a fresh espeak (no state from the one before)
RECORDING = "recording-v1"
CARD = "card"
OVERLAY = "overlay"
PICTURE = "picture-v2"  # v2: a cover fit scales only what covers its box; 16-bit greys scaled to 8 bits
RUN = "run-v3"  # v2: cue runs at a constant quantiser, without SEI; v3: one PPS for all runs (stitchable)
SEGMENT = "segment-v5"  # v5: one PPS for all runs (stitchable)
VOICE = "voice-v5"
AUDIO = "audio-v5"
FINAL = "final-v1"
MIX = "mix-v1"
MIXED = "mixed-v2"  # v2: keyed by the window's inputs (music.window_inputs), not its samples
BED = "bed-v2"
THUMBS = "thumbs-v1"


def narration(engine_id: str, text: str, voice: str, rate: int) -> str:
    return key_of(NARRATION, engine_id, text, voice, rate)


def recording(digest: str, text: str, reference: str, version: int, rule: float, others: list) -> str:
    """A recording, trimmed and aligned: its content, the text, the engine's speech it was aligned to
    (which carries the engine, voice and rate), the aligner's version, its mismatch rule and the other
    segments' speech it was compared with."""
    return key_of(RECORDING, digest, text, reference, version, rule, others)


@dataclass(frozen=True)
class SegmentKeys:
    card: str
    overlays: list  # per state: the caption picture's identity (a hash), or None where none shows
    segment: str  # the encoded segment: its pictures, their durations, the encoder settings


@dataclass(frozen=True)
class Inputs:
    """What the keys need from the lanes that make the entries, handed in by the driver (render), so
    that this module imports no lane: the drawing's inputs of a card and of a caption picture, the fonts'
    digests (picture/draw.py), and a media file's content digest (audio/audiofile.py's probe)."""

    card: Callable[..., Any]  # (seg, plan, settings, fonts) -> the card's inputs
    overlay: Callable[..., Any]  # (seg, state, settings, fonts) -> a caption picture's inputs, or None
    fonts: Callable[[Settings], dict]
    digest: Callable[[str], str]


def segment(plan: Plan, seg: SegmentPlan, settings: Settings, fonts: dict, inputs: Inputs) -> SegmentKeys:
    card = key_of(CARD, inputs.card(seg, plan, settings, fonts))
    overlays = [key_of(OVERLAY, k) if (k := inputs.overlay(seg, st, settings, fonts)) else None for st in seg.states]
    # where more than the caption moves, a picture is also its moment of the visual, background and bar
    # (a still's motion path spans the segment: its length is part of each step); the card's key names
    # the media themselves
    overlays = [
        key_of(PICTURE, o, st.vis, st.bg, st.bar, seg.frames if st.vis >= 0 else None)
        if (st.vis, st.bg, st.bar) != (-1, -1, -1)
        else o
        for o, st in zip(overlays, seg.states)
    ]
    whole = key_of(SEGMENT, card, overlays, [st.end - st.start for st in seg.states], settings.encoder_key())
    return SegmentKeys(card, overlays, whole)


def run(keys: SegmentKeys, states: list[int], inner: tuple[int, ...], settings: Settings) -> str:
    """A run's key names its pictures, not how long each shows: an edit that retimes a segment or
    rewords one cue finds every other cue's run already encoded."""
    return key_of(RUN, keys.card, [keys.overlays[i] for i in states], list(inner), settings.encoder_key())


def voice(seg: SegmentPlan, settings: Settings, lead: int, encoded: int) -> str:
    return key_of(VOICE, seg.audio_key, settings.loudness_lufs, settings.true_peak_dbtp, settings.audio_bitrate, lead, encoded)


def audio(plan: Plan, settings: Settings, digest: Callable[[str], str]) -> str:
    """Everything the spliced track depends on (the chunk geometry is a function of these), and the
    music and its settings where there is music."""
    return key_of(
        AUDIO,
        [(seg.audio_key, seg.narration_start, seg.samples, seg.sample_rate) for seg in plan.segments],
        plan.total_frames,
        settings.fps,
        settings.loudness_lufs,
        settings.true_peak_dbtp,
        settings.audio_bitrate,
        *([music_inputs(plan, settings, digest)] if mixes(plan, settings) else []),
    )


def has_music(settings: Settings) -> bool:
    return bool(settings.music) and str(settings.music).lower() != "none"


def mixes(plan: Plan, settings: Settings) -> bool:
    """Whether the track is a mix: a music bed, or a clip that brings its own sound."""
    return has_music(settings) or any(seg.visual is not None and seg.visual.audio for seg in plan.segments)


def music_inputs(plan: Plan, settings: Settings, digest: Callable[[str], str]) -> dict:
    """What the mix takes besides the voice: the files by content (`digest`), every music setting, where
    the segments start (a sting may play at each), the clips that bring their sound and their spans."""
    out = {k: getattr(settings, k) for k in settings.__dataclass_fields__ if k.startswith(("music_", "sting_"))}
    out["music"] = digest(settings.music or "") if has_music(settings) else None
    out["clips"] = [
        [seg.index, seg.start, seg.frames, seg.visual.digest, seg.visual.start, seg.visual.clip_end]
        for seg in plan.segments
        if seg.visual is not None and seg.visual.audio
    ]
    if settings.sting and settings.sting.lower() != "none":
        out["sting"] = digest(settings.sting)
        out["starts"] = [seg.start for seg in plan.segments]
    return {"v": MIX, **out}


def mixed_chunk(inputs_digest: str, frames: int, settings: Settings) -> str:
    """A chunk of the mixed track: what makes its samples (with what is around them), length, AAC settings."""
    return key_of(MIXED, inputs_digest, frames, settings.audio_bitrate)


def bed(digest: str, settings: Settings, steps: int) -> str:
    """The decoded bed: the track, where it starts, whether it loops, how many BED_STEP_S it spans."""
    return key_of(BED, digest, settings.music_start_s, settings.music_loop, steps)


def final(segments: list[SegmentKeys], audio_key: str) -> str:
    return key_of(FINAL, [k.segment for k in segments], audio_key)


def thumbs(plan: Plan, settings: Settings, fonts: dict, inputs: Inputs) -> str:
    """The pictures depend on the names and the look only: an edit to a narration keeps them."""
    return key_of(
        THUMBS,
        [inputs.card(g, plan, settings, fonts) for g in plan.segments if g.kind == "intro"],
        [g.name for g in plan.concepts()],
        plan.series,
        plan.part,
        settings.theme.__dict__,
        fonts,
    )


@dataclass(frozen=True)
class EpisodeKeys:
    """Every key of one render of an episode."""

    fonts: dict
    segments: list[SegmentKeys]
    audio: str
    final: str
    thumbs: str


def episode(plan: Plan, settings: Settings, inputs: Inputs) -> EpisodeKeys:
    fonts = inputs.fonts(settings)
    segments = [segment(plan, seg, settings, fonts, inputs) for seg in plan.segments]
    audio_key = audio(plan, settings, inputs.digest)
    return EpisodeKeys(fonts, segments, audio_key, final(segments, audio_key), thumbs(plan, settings, fonts, inputs))
