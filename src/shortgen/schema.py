"""The episode and series file schema, in pydantic: imported only when a file's content is new (see
load._validate), because building these models costs more than everything else a no-op render does."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["EpisodeModel", "SeriesModel", "ValidationError"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ThemeModel(_Strict):
    background: str | None = None
    background2: str | None = None
    accent: str | None = None
    text: str | None = None
    muted: str | None = None
    caption: str | None = None
    highlight: str | None = None
    outline: str | None = None
    font_bold: str | None = None
    font_medium: str | None = None
    font_regular: str | None = None

    @field_validator("background", "background2", "accent", "text", "muted", "caption", "highlight", "outline")
    @classmethod
    def _colour(cls, v: str | None) -> str | None:
        if v is not None:
            from PIL import ImageColor
            try:
                ImageColor.getrgb(v)
            except ValueError:
                raise ValueError(f"not a colour: {v!r}") from None
        return v


class SettingsModel(_Strict):
    fps: int | None = Field(None, ge=1, le=120)
    width: int | None = Field(None, ge=16, le=4096, multiple_of=2)
    height: int | None = Field(None, ge=16, le=4096, multiple_of=2)
    voice: str | None = Field(None, min_length=1)
    rate: int | None = Field(None, ge=80, le=450)
    theme: ThemeModel | None = None
    lead_in_frames: int | None = Field(None, ge=0, le=300)
    tail_frames: int | None = Field(None, ge=0, le=300)
    intro: bool | None = None
    outro: bool | None = None
    outro_text: str | None = None
    segment_budget_frames: int | None = Field(None, ge=1)
    episode_budget_frames: int | None = Field(None, ge=1)
    fit: Literal["none", "rate"] | None = None
    fit_max_rate_factor: float | None = Field(None, ge=1.0, le=2.0)
    segments_per_part: int | None = Field(None, ge=1, le=20)
    loudness_lufs: float | None = Field(None, ge=-40, le=-5)
    true_peak_dbtp: float | None = Field(None, ge=-20, le=0)
    audio_bitrate: str | None = None
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] | None = None
    crf: int | None = Field(None, ge=0, le=51)
    encoder: Literal["skip", "full"] | None = None
    keyint_frames: int | None = Field(None, ge=1, le=3000)


class SegmentModel(_Strict):
    name: str = Field(min_length=1, max_length=80)
    narration: str = Field(min_length=1, max_length=2000)
    one_liner: str = Field(min_length=1, max_length=200)
    reference: str = Field(min_length=1, max_length=300)
    rate: int | None = Field(None, ge=80, le=450)   # per-segment speaking rate override


class EpisodeModel(_Strict):
    series: str | None = Field(None, min_length=1)
    part: int = Field(ge=1, le=999)
    title: str | None = None
    next: str | None = None          # teaser for the outro, e.g. "Part 5"
    settings: SettingsModel | None = None
    segments: list[SegmentModel] = Field(min_length=1, max_length=20)


class SeriesModel(_Strict):
    series: str = Field(min_length=1)
    parts: list[str] = Field(min_length=1)
    settings: SettingsModel | None = None
