"""Settings resolve once: built-in defaults < series file < episode file < CLI flags.

The result is one frozen object passed down the pipeline; there is no global state. Each setting is
declared here once: its default, the rule a file's (or a flag's) value must meet, and whether it is a
command-line flag. The file schema (schema.py), its JSON Schema (`shortgen schema`) and the CLI's flags
(cli.py) are all derived from these declarations.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .rules import Rule, _colour

ASSETS = Path(str(resources.files(__package__))) / "assets"  # fonts ship inside the package


def keep_freed_memory() -> None:
    """Set glibc's malloc thresholds from the start of a render process: arrays of 8 MB or more mapped
    (and unmapped when freed), at most 16 MB of freed memory kept. glibc's own dynamic rule ends at 32 and
    64 MB, after the first large free; before it, every frame buffer is mapped afresh and faulted in page
    by page. Measured on Part 4 as shipped, cold (50 ms sampler, process tree's PSS): 32/64 MB peaked at
    588-682 MB in 10.8-10.9 s; 8/16 MB at 557-585 MB in 10.7 s; 4/8 MB 11.3 s; 1/2 MB 519 MB but 15.5 s
    (system time 3.6 -> 9.5 s, in page faults). And two arenas for the whole process, where glibc gives
    each thread its own up to 8 per core, each keeping freed memory: a render's lanes and pools are a
    dozen threads (the tree's peak 716 -> 590 MB, time unchanged; one arena: 601)."""
    libc = _glibc()
    if libc is not None:  # else not glibc: nothing is set
        libc.mallopt(-3, 8 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 16 * 1024 * 1024)  # M_TRIM_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX


def give_back_freed_memory() -> None:
    """Return the free pages inside malloc's heaps to the system (glibc's malloc_trim). The trim threshold
    only releases the top of a heap: a render's frames and arrays, freed between live ones, stayed as
    90 MB of free heap through the rest of a cold render of Part 4. Called once a piece of work is done
    and its arrays freed: the mix planned, each audio piece made, each card drawn, each segment encoded,
    the track made. What is given back is faulted in again when used: interleaved cold renders of Part 4
    with and without these trims differed by +4% and -2% CPU in two sets of rounds, the machine's noise."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc():
    """The C library, where it is glibc (it has mallopt and malloc_trim); else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@functools.cache
def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, and a container's CPU quota (cgroup v2 or v1)
    where one is set. os.cpu_count() reports the host's cores, which in a container limited to two of
    them made every pool and encoder oversubscribe the two."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    for read in (
        lambda: (cgroup / "cpu.max").read_text().split(),  # v2: "QUOTA PERIOD", or "max PERIOD"
        lambda: [(cgroup / "cpu" / f"cpu.cfs_{k}_us").read_text() for k in ("quota", "period")],  # v1: -1 for none
    ):
        try:
            quota, period = (t.strip() for t in read()[:2])
            if quota not in ("max", "-1") and int(period) > 0:
                n = min(n, max(1, -(-int(quota) // int(period))))
        except (OSError, ValueError):
            continue
    return max(1, n)


# x264's output depends on its thread count (frame threads narrow the motion search), so the count is
# a property of the machine, not of how many parts run at once: a part rendered by the pool, alone or by a
# cluster worker on this machine is the same bytes. At most 4: beyond that x264 gains little on the
# few distinct pictures it sees, and each thread holds frames.
X264_THREADS_MAX = 4


def _default_cache_dir() -> Path:
    if os.environ.get("SHORTGEN_CACHE_DIR"):
        return Path(os.environ["SHORTGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shortgen"


def setting(
    default: Any = dataclasses.MISSING,
    rule: Rule | None = None,
    flag: str | None = None,
    help: str = "",
    factory: Any = dataclasses.MISSING,
) -> Any:
    """One setting: its default, the rule a script's value must meet (None: not settable in a file),
    and its command-line flag with the flag's help (None: no flag)."""
    meta = {"rule": rule, "flag": flag, "help": help}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _colour_setting(default: str) -> Any:
    return setting(default, Rule("str", check=_colour))


@dataclass(frozen=True)
class Theme:
    background: str = _colour_setting("#101426")
    background2: str = _colour_setting("#1d2450")  # gradient end
    accent: str = _colour_setting("#ffb000")
    text: str = _colour_setting("#ffffff")
    muted: str = _colour_setting("#b8c0e0")
    caption: str = _colour_setting("#ffffff")
    highlight: str = _colour_setting("#ffd23f")
    outline: str = _colour_setting("#000000")
    font_bold: str = setting("Roboto-Black.ttf", Rule("str"))
    font_medium: str = setting("Roboto-Bold.ttf", Rule("str"))
    font_regular: str = setting("Roboto-Regular.ttf", Rule("str"))


@dataclass(frozen=True)
class Settings:
    # picture
    width: int = setting(1080, Rule("int", ge=16, le=4096, multiple_of=2))
    height: int = setting(1920, Rule("int", ge=16, le=4096, multiple_of=2))
    fps: int = setting(30, Rule("int", ge=1, le=120), "--fps", "frames per second")
    theme: Theme = setting(rule=None, factory=Theme)  # a nested model: see rules_of
    fonts_dir: Path = setting(ASSETS / "fonts")
    # the creator's fonts for characters the theme's lack (CJK, say), relative to the file naming them
    fonts: tuple[Path, ...] = setting((), Rule("list", max_len=20, of=Rule("str", min_len=1)))
    # look: what shows besides the card (see docs/scripts.md, "Visuals")
    background: str | None = setting(None, Rule("str", min_len=1, max_len=1000))  # an image or looping clip; "none": off
    visual_layout: str = setting("panel", Rule("choice", choices=("panel", "full")))  # the safe zone's lower part, or full-bleed
    motion_zoom: float = setting(1.1, Rule("float", ge=1.0, le=1.5))  # how far a still's motion zooms or pans
    motion_hold_frames: int = setting(4, Rule("int", ge=1, le=6))  # a motion step shows at most this long
    caption_style: str = setting("highlight", Rule("choice", choices=("highlight", "box")))
    caption_pop: bool = setting(False, Rule("bool"))  # the active word pops in
    caption_position: str = setting("bottom", Rule("choice", choices=("bottom", "middle")))
    progress_bar: bool = setting(False, Rule("bool"))  # a bar that fills over each segment
    # voice
    voice: str = setting("gmw/en-us", Rule("str", min_len=1), "--voice", "espeak voice, e.g. gmw/en-us")
    speech_library: str = setting(
        "wheel",
        Rule("str", min_len=1),
        "--speech-library",
        "libespeak-ng to speak with: wheel (default, the same on every machine), system, or a path",
    )
    rate: int = setting(175, Rule("int", ge=80, le=450), "--rate", "speaking rate in words per minute")
    # timing, in frames at fps
    lead_in_frames: int = setting(24, Rule("int", ge=0, le=300))  # the title card alone before narration
    tail_frames: int = setting(12, Rule("int", ge=0, le=300))  # breath after the last word
    intro: bool = setting(True, Rule("bool"), "--no-intro", "leave out the intro")
    outro: bool = setting(True, Rule("bool"), "--no-outro", "leave out the outro")
    outro_text: str = setting("Follow for more.", Rule("str"))
    # music: a bed under the voice, ducked while it speaks (see docs/scripts.md, "Music")
    music: str | None = setting(None, Rule("str", min_len=1, max_len=1000))  # an audio file; "none": off
    music_level_lufs: float = setting(-24.0, Rule("float", ge=-50, le=-10))  # the bed in the pauses
    music_duck_db: float = setting(12.0, Rule("float", ge=0, le=40))  # how far it dips under the voice
    music_separation_lu: float = setting(15.0, Rule("float", ge=6, le=40))  # at least this far below the voice
    music_attack_ms: int = setting(120, Rule("int", ge=5, le=2000))  # the dip, complete as a word starts
    music_release_ms: int = setting(500, Rule("int", ge=5, le=5000))  # the rise after the last word of a phrase
    music_fade_in_ms: int = setting(1500, Rule("int", ge=0, le=30000))
    music_fade_out_ms: int = setting(2500, Rule("int", ge=0, le=30000))
    music_start_s: float = setting(0.0, Rule("float", ge=0, le=86400))  # where in the track to start
    music_loop: bool = setting(True, Rule("bool"))  # a track shorter than the episode loops, or stops
    music_allow_short: bool = setting(False, Rule("bool"))  # a damaged track that decodes short is used as it decodes
    sting: str | None = setting(None, Rule("str", min_len=1, max_len=1000))  # a short sound; "none": off
    sting_at: str = setting("intro", Rule("choice", choices=("intro", "segments")))  # once, or at every segment change
    sting_level_lufs: float = setting(-20.0, Rule("float", ge=-50, le=-6))
    # a recording that does not say its segment's text: refused (default), or rendered with a warning in
    # the manifest (for a take the aligner misjudges: its rule was measured on synthetic speech)
    recording_mismatch: str = setting("refuse", Rule("choice", choices=("refuse", "warn")))
    # budget
    segment_budget_frames: int = setting(900, Rule("int", ge=1))  # 30 s at 30 fps
    episode_budget_frames: int = setting(5400, Rule("int", ge=1))  # 180 s, the platforms' vertical-video cap
    fit: str = setting("none", Rule("choice", choices=("none", "rate")))
    fit_max_rate_factor: float = setting(1.2, Rule("float", ge=1.0, le=2.0))
    segments_per_part: int | None = setting(None, Rule("int", ge=1, le=20))
    # sound
    loudness_lufs: float = setting(-14.0, Rule("float", ge=-40, le=-5))
    true_peak_dbtp: float = setting(-1.0, Rule("float", ge=-20, le=0))
    audio_bitrate: str = setting("160k", Rule("str"))
    # encoder: "skip" encodes the distinct pictures and holds them with P-skip frames; "full" sends every
    # frame through x264. veryfast is affordable because x264 sees only the distinct pictures.
    encoder: str = setting("skip", Rule("choice", choices=("skip", "full")))
    preset: str = setting(
        "veryfast",
        Rule("choice", choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")),
        "--preset",
        "x264 preset (ultrafast ... medium)",
    )
    crf: int = setting(20, Rule("int", ge=0, le=51), "--crf", "x264 quality (lower is better; 20 by default)")
    keyint_frames: int = setting(60, Rule("int", ge=1, le=3000))  # a keyframe at least every 2 s, for seeking
    jobs: int = setting(usable_cpus())  # a series' parts rendered at once (a part's own lanes are fixed)
    # places
    cache_dir: Path = setting(
        factory=_default_cache_dir, flag="--cache-dir", help="default: $SHORTGEN_CACHE_DIR or ~/.cache/shortgen"
    )
    output_dir: Path = setting(Path("output"), flag="--output-dir", help="default: output/")

    def with_(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def encoder_key(self) -> dict:
        """What the encoded bytes depend on, for cache keys."""
        return {
            "w": self.width,
            "h": self.height,
            "fps": self.fps,
            "preset": self.preset,
            "crf": self.crf,
            "mode": self.encoder,
            "keyint": self.keyint_frames,
            "threads": self.x264_threads,
        }

    @property
    def x264_threads(self) -> int:
        return min(X264_THREADS_MAX, usable_cpus())


def rules_of(cls: type) -> dict[str, Rule]:
    """The file rules of a settings class, in declaration order (the nested theme as a model)."""
    out: dict[str, Rule] = {}
    for f in fields(cls):
        if f.name == "theme":
            out["theme"] = Rule("model", of=rules_of(Theme))
        elif f.metadata.get("rule") is not None:
            out[f.name] = f.metadata["rule"]
    return out


def flags() -> list[tuple[str, str, str, Rule | None]]:
    """The command-line flags: (setting name, flag, help, rule)."""
    return [
        (f.name, f.metadata["flag"], f.metadata["help"], f.metadata.get("rule"))
        for f in fields(Settings)
        if f.metadata.get("flag")
    ]


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


def table() -> str:
    """Every setting a script may hold, as a Markdown table generated from the declarations above (its
    key, default, what it accepts, its flag, and its comment): docs/scripts.md carries it, and a test
    holds the two equal, so the documentation cannot drift from the code."""
    import inspect
    import re

    notes: dict[str, str] = {}
    for cls in (Settings, Theme):
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+): .*?= (?:setting|_colour_setting)\(.*\)\s+#\s*(.+)$", line)
            if m:
                notes[m.group(1)] = m.group(2).strip()

    def accepts(r: Rule) -> str:
        if r.kind == "choice":
            return " \\| ".join(f"`{c}`" for c in r.choices)
        if r.kind in ("int", "float"):
            lo = "" if r.ge is None else f"{r.ge:g}"
            hi = "" if r.le is None else f"{r.le:g}"
            step = ", even" if r.multiple_of == 2 else (f", a multiple of {r.multiple_of}" if r.multiple_of else "")
            return f"{r.kind}, {lo} to {hi}{step}"
        if r.kind == "list":
            return f"a list of up to {r.max_len}" if r.max_len else "a list"
        if r.check is _colour:
            return "a colour (`#rrggbb` or a CSS name)"
        return {"str": "text", "bool": "`true` \\| `false`"}.get(r.kind, r.kind)

    def shown(v: Any) -> str:
        if isinstance(v, bool):
            return f"`{str(v).lower()}`"
        if v is None or v == ():
            return "(none)"
        return f"`{v}`"

    rows = ["| key | default | accepts | flag | what it does |", "|---|---|---|---|---|"]
    for prefix, cls in (("", Settings), ("theme.", Theme)):
        for f in fields(cls):
            rule = f.metadata.get("rule")
            if rule is None:
                continue
            default = f.default if f.default is not dataclasses.MISSING else "(computed)"
            flag = f"`{f.metadata['flag']}`" if f.metadata.get("flag") else ""
            note = notes.get(f.name) or f.metadata.get("help", "")
            rows.append(f"| `{prefix}{f.name}` | {shown(default)} | {accepts(rule)} | {flag} | {note} |")
    return "\n".join(rows) + "\n"
