"""Settings resolve once: built-in defaults < series file < episode file < CLI flags.

The result is one frozen object passed down the pipeline; there is no global state.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"


def _default_cache_dir() -> Path:
    if os.environ.get("SHORTGEN_CACHE_DIR"):
        return Path(os.environ["SHORTGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shortgen"


@dataclass(frozen=True)
class Theme:
    background: str = "#101426"
    background2: str = "#1d2450"   # gradient end
    accent: str = "#ffb000"
    text: str = "#ffffff"
    muted: str = "#b8c0e0"
    caption: str = "#ffffff"
    highlight: str = "#ffd23f"
    outline: str = "#000000"
    font_bold: str = "Roboto-Black.ttf"
    font_medium: str = "Roboto-Bold.ttf"
    font_regular: str = "Roboto-Regular.ttf"


@dataclass(frozen=True)
class Settings:
    # picture
    width: int = 1080
    height: int = 1920
    fps: int = 30
    theme: Theme = field(default_factory=Theme)
    fonts_dir: Path = ASSETS / "fonts"
    fonts: tuple[Path, ...] = ()    # the creator's fonts for characters the theme's lack (CJK, say)
    # voice
    voice: str = "gmw/en-us"
    speech_library: str = "wheel"   # libespeak-ng: the wheel's (same speech everywhere), "system", or a path
    rate: int = 175                 # words per minute, espeak's unit
    # timing, in frames at fps
    lead_in_frames: int = 24        # the title card alone before narration starts
    tail_frames: int = 12           # breath after the last word
    intro: bool = True
    outro: bool = True
    outro_text: str = "Follow for more."
    # budget
    segment_budget_frames: int = 900      # 30 s at 30 fps
    episode_budget_frames: int = 5400     # 180 s, the platforms' vertical-video cap
    fit: str = "none"                     # "none" or "rate"
    fit_max_rate_factor: float = 1.2
    segments_per_part: int | None = None
    # sound
    loudness_lufs: float = -14.0
    true_peak_dbtp: float = -1.0
    audio_bitrate: str = "160k"
    # encoder
    encoder: str = "skip"           # "skip": distinct pictures + P-skip frames; "full": x264 sees every frame
    preset: str = "veryfast"        # affordable because x264 sees only the distinct pictures; gives High profile
    crf: int = 20
    keyint_frames: int = 60         # a keyframe at least every 2 s at 30 fps, for seeking
    jobs: int = max(1, os.cpu_count() or 1)
    # places
    cache_dir: Path = field(default_factory=_default_cache_dir)
    output_dir: Path = Path("output")

    def with_(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def encoder_key(self) -> dict:
        """What the encoded bytes depend on, for cache keys."""
        return {"w": self.width, "h": self.height, "fps": self.fps, "preset": self.preset, "crf": self.crf,
                "mode": self.encoder, "keyint": self.keyint_frames}


def resolve(*layers: Mapping[str, Any] | None, base: Settings | None = None) -> Settings:
    """Apply layers in order (later wins). Each layer is a plain mapping of already-validated values."""
    s = base or Settings()
    for layer in layers:
        if not layer:
            continue
        changes = {k: v for k, v in layer.items() if v is not None and k != "theme"}
        theme = layer.get("theme")
        if theme:
            changes["theme"] = dataclasses.replace(s.theme, **{k: v for k, v in theme.items() if v is not None})
        for k in ("cache_dir", "output_dir", "fonts_dir"):
            if k in changes:
                changes[k] = Path(changes[k])
        if "fonts" in changes:
            changes["fonts"] = tuple(Path(f) for f in changes["fonts"])
        s = dataclasses.replace(s, **changes)
    return s
