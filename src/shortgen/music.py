"""The music bed: a creator's track under the narration, ducked while the voice speaks, mixed and
mastered with it.

pydub does what it is good at: decoding any format through the bundled ffmpeg (only the span the
episode needs), slicing, looping with a crossfade, fades at the ends. numpy does what must be fast or
exact: resampling, the ducking envelope (from the narration's word timings, sample-accurate), the mix,
loudness (BS.1770) and the true-peak limiter, at 48 kHz stereo.

Ducking follows the voice, not the segments: each spoken phrase (words less than PHRASE_GAP_MS apart)
pulls the bed down by `music_duck_db`, the dip complete as its first word starts (`music_attack_ms` of
look-ahead) and released `music_release_ms` after its last; the bed rises in the pauses and under the
title cards. Where the bed is loud enough that the usual dip would leave it less than
`music_separation_lu` below the voice, that phrase dips further: speech stays intelligible by rule, and
the manifest reports the separation each segment gets, measured on the two stems.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import sound
from .encode import AAC_RATE, ffmpeg_exe

RATE = AAC_RATE  # the mix runs at the file's rate: music keeps its top octave
PHRASE_GAP_MS = 250  # words closer than this are one phrase: the bed does not pump between them
CROSSFADE_MS = 400  # a looping track joins itself with this crossfade
AUDIO_TYPES = (".wav", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac", ".mp4")
MAX_SECONDS = 6 * 3600


class AudioError(ValueError):
    """An audio file that cannot be used; str() is the reason."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    digest: str
    codec: str  # ffmpeg's decoder for its first audio stream
    rate: int
    channels: int
    duration: float


_STREAM = re.compile(r"Stream #\S+.*?: Audio: (\w+)[^,]*, (\d+) Hz, ([^,]+)")
_DUR = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def probe(path: Path | str) -> AudioInfo:
    """What an audio file is, from ffmpeg's report (imageio-ffmpeg has no ffprobe); raises AudioError."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"no such file: {path}")
    if p.is_dir():
        raise AudioError(f"{path} is a folder; expected an audio file")
    st = p.stat()
    return _probe(str(p.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=32)
def _probe(path: str, mtime_ns: int, size: int) -> AudioInfo:
    name = Path(path).name
    if Path(path).suffix.lower() not in AUDIO_TYPES:
        raise AudioError(f"unsupported file type {Path(path).suffix or '(none)'!r}: use WAV, MP3, OGG, FLAC or M4A/AAC")
    if size == 0:
        raise AudioError(f"{name} is empty")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"cannot read {name}: {e.strerror or e}") from None
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path], capture_output=True, timeout=60)
    text = proc.stderr.decode(errors="replace")
    m, d = _STREAM.search(text), _DUR.search(text)
    if "Invalid data" in text or (not m and not d):
        raise AudioError(f"{name} is not a readable audio file (corrupt, or another format under this name)")
    if not m:
        raise AudioError(f"{name} has no audio stream")
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    if duration <= 0:
        raise AudioError(f"{name}: an audio stream with no duration")
    if duration > MAX_SECONDS:
        raise AudioError(f"{name} lasts {duration / 3600:.1f} hours; at most {MAX_SECONDS // 3600}")
    layout = m.group(3).strip().split("(")[0].strip()
    counted = re.match(r"(\d+) channels", layout)
    channels = _LAYOUTS.get(layout) or (int(counted.group(1)) if counted else 2)
    from .cache import file_digest

    return AudioInfo(path, file_digest(Path(path)), m.group(1), int(m.group(2)), channels, duration)


def _pydub():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydub import AudioSegment
    AudioSegment.converter = ffmpeg_exe()
    return AudioSegment


def decode(info: AudioInfo, start_s: float, seconds: float):
    """The span [start_s, start_s + seconds) of a file (less if it ends first) as a pydub AudioSegment:
    ffmpeg decodes only that span (the decoder named up front, so pydub needs no ffprobe)."""
    seg_cls = _pydub()  # first: it imports pydub with its import-time warnings silenced
    from pydub.exceptions import CouldntDecodeError

    want = max(0.0, min(seconds, info.duration - start_s))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = seg_cls.from_file(info.path, codec=info.codec, start_second=start_s or None, duration=want + 0.05)
    except (CouldntDecodeError, OSError, ValueError, IndexError) as e:
        last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or [type(e).__name__]
        raise AudioError(f"{Path(info.path).name} cannot be decoded ({last[0].strip()[:120]})") from None
    if len(got) == 0:
        raise AudioError(f"{Path(info.path).name}: no audio in the span asked for (from {start_s:g} s)")
    return got


def to_array(seg) -> np.ndarray:
    """A pydub AudioSegment as float32 stereo (2, n) at RATE: mono doubled, surround folded down (ITU
    coefficients, LFE dropped), resampled by FFT."""
    seg = seg.set_sample_width(2)
    x = np.array(seg.get_array_of_samples(), dtype=np.float32).reshape(-1, seg.channels).T / 32768.0
    if seg.channels == 1:
        x = np.vstack([x, x])
    elif seg.channels > 2:  # FL FR FC LFE BL BR (SL SR): ffmpeg's order
        c = x[2] * 0.7071 if seg.channels > 2 else 0
        rest = x[4:]
        left = x[0] + c + (rest[0::2].sum(axis=0) * 0.7071 if len(rest) else 0)
        right = x[1] + c + (rest[1::2].sum(axis=0) * 0.7071 if len(rest) else 0)
        x = np.vstack([left, right]).astype(np.float32)
    if seg.frame_rate != RATE:
        x = np.vstack([sound.resample(ch, seg.frame_rate, RATE) for ch in x])
    return x


def bed(info: AudioInfo, total: int, start_s: float, loop: bool, fade_in_ms: int, fade_out_ms: int) -> np.ndarray:
    """The track laid under `total` samples: from `start_s`, looped with a crossfade (or stopping) when
    it is shorter, faded in and out at the episode's ends."""
    need_ms = total * 1000 // RATE + 1
    seg = decode(info, start_s, need_ms / 1000)
    if len(seg) < need_ms and loop:
        whole = seg if start_s == 0 else decode(info, 0.0, info.duration)
        while len(seg) < need_ms:
            seg = seg.append(whole, crossfade=min(CROSSFADE_MS, len(whole) // 4, len(seg) // 4))
    seg = seg[:need_ms]
    seg = seg.fade_in(min(fade_in_ms, len(seg) // 2)).fade_out(min(fade_out_ms, len(seg) // 2))
    x = to_array(seg)
    out = np.zeros((2, total), np.float32)
    n = min(total, x.shape[1])
    out[:, :n] = x[:, :n]
    return out


def phrases(words: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Spoken spans (start, end) in samples, merged where the silence between them is under `gap`."""
    out: list[list[int]] = []
    for a, b in sorted(words):
        if out and a - out[-1][1] < gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def duck_db(total: int, spans: list[tuple[int, int, float]], attack: int, release: int) -> np.ndarray:
    """The bed's gain in dB at every sample: 0 in the pauses, -depth under each (start, end, depth) span,
    reached by a linear ramp over `attack` samples ending at its start and left over `release` samples
    from its end (where spans' ramps overlap, the deeper gain holds)."""
    g = np.zeros(total, np.float32)
    for a, b, depth in spans:
        lo, hi = max(0, a - attack), min(total, b + release)
        if hi <= lo:
            continue
        t = np.arange(lo, hi, dtype=np.float64)
        ramp = np.minimum((t - (a - attack)) / max(attack, 1), ((b + release) - t) / max(release, 1))
        np.minimum(g[lo:hi], (-depth * np.clip(ramp, 0.0, 1.0)).astype(np.float32), out=g[lo:hi])
    return g


def loudness(x: np.ndarray) -> float:
    """BS.1770-4 integrated loudness of a (channels, n) signal at RATE."""
    if x.shape[1] < int(0.4 * RATE):
        return -np.inf
    k = np.vstack([sound.k_weight(ch, RATE) for ch in x])
    return sound.gated_loudness_multi(k, RATE)


def span_loudness(x: np.ndarray, spans: list[tuple[int, int]]) -> float:
    """Loudness (ungated mean square, K-weighted) of a stereo signal over these spans: what a listener
    hears during them, the figure the separation rule holds."""
    if not spans:
        return -np.inf
    k = np.vstack([sound.k_weight(ch, RATE) for ch in x])
    e = sum(float(np.einsum("ij,ij->", k[:, a:b], k[:, a:b])) for a, b in spans)
    n = sum(b - a for a, b in spans)
    return -0.691 + 10 * np.log10(max(e / max(n, 1), 1e-20))


# ---- the mix ------------------------------------------------------------------------------------


@dataclass
class Mixed:
    samples: np.ndarray  # (2, total) float32 at RATE: voice and bed, mastered
    lufs: float
    true_peak: float  # of the PCM, 4x oversampled (the file's is measured on the encoded chunks)
    figures: dict  # the music's own figures, for the manifest


def _energy(k: np.ndarray, a: int, b: int) -> float:
    """Mean square of K-weighted channels (channels, n) over [a, b), summed over channels."""
    seg = k[:, a:b].astype(np.float64)
    return float(np.einsum("ij,ij->", seg, seg)) / max(b - a, 1)


def _blocks(k: np.ndarray, step: int) -> np.ndarray:
    """Energy per `step` samples, summed over channels."""
    n = k.shape[1] // step
    e = np.zeros(n)
    for ch in k:
        seg = ch[: n * step].astype(np.float64).reshape(n, step)
        e += np.einsum("ij,ij->i", seg, seg)
    return e


def _voice_gain(kv: np.ndarray, km: np.ndarray, target: float) -> float:
    """The gain on the voice that brings voice + music to `target` integrated loudness (BS.1770-4 blocks
    built from 100 ms steps of the two K-weighted stems and their cross term)."""
    step = RATE // 10
    ev = 2 * _blocks(kv, step)  # the voice plays on both channels
    em = _blocks(km, step)
    n = len(ev)
    ec = np.zeros(n)
    for ch in km:
        ec += 2 * np.einsum("ij,ij->i", kv[0, : n * step].reshape(n, step).astype(np.float64), ch[: n * step].reshape(n, step))

    def loud(g: float) -> float:
        e = g * g * ev + g * ec + em
        if len(e) < 4:
            return -np.inf
        return sound._gated((e[:-3] + e[1:-2] + e[2:-1] + e[3:]) / (4 * step))

    # the voice is raised by up to 3 dB (a sparse narration under a bed), never lowered: where the bed
    # alone would pass the target, the whole mix comes down instead (the separation rule is kept)
    lo, hi = 1.0, 10 ** (3 / 20)
    if not np.isfinite(loud(1.0)) or loud(lo) >= target:
        return 1.0
    if loud(hi) < target:
        return hi
    for _ in range(30):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if loud(mid) < target else (lo, mid)
    return (lo * hi) ** 0.5


def _lufs(e: float) -> float:
    return -0.691 + 10 * np.log10(max(e, 1e-20))


def mix(
    voice: np.ndarray,
    segments: list[tuple[int, int, list[tuple[int, int]]]],
    bed_x: np.ndarray,
    stings: list[tuple[int, np.ndarray]],
    settings,
) -> Mixed:
    """Voice (mono, placed, mastered) and bed (2, total) into the mastered stereo mix.

    `segments`: per segment (first sample, end sample, its words as (start, end) samples). The bed is
    levelled to `music_level_lufs`, ducked under each phrase (deeper where the separation rule needs
    it), the stings laid over it, the sum brought to the loudness target and limited under the ceiling.
    """
    total = voice.shape[0]
    # K-weighting is linear and the bed's gain moves slowly (over 100 ms and more) against the filters'
    # few milliseconds of memory: so the voice and the bed are weighted once, and every later figure
    # (the mix, the music as heard) is a gain-weighted sum of those two (the tests check against
    # ffmpeg's meter on the finished file)
    kb = np.vstack([sound.k_weight(ch, RATE) for ch in bed_x])
    bed_lufs = sound.gated_loudness_multi(kb, RATE)
    if not np.isfinite(bed_lufs):
        raise AudioError("the music is silent where the episode needs it")
    level = settings.music_level_lufs - bed_lufs  # dB
    kv = sound.k_weight(voice, RATE)[None, :]
    gap = PHRASE_GAP_MS * RATE // 1000
    spans: list[tuple[int, int, float]] = []
    seg_phrases: list[list[tuple[int, int]]] = []
    for _, _, words in segments:
        ph = phrases(words, gap)
        seg_phrases.append(ph)
        for a, b in ph:
            # voice on both channels: twice the mono energy; the bed at its level, before the dip
            v = _lufs(2 * _energy(kv, a, b))
            m = _lufs(_energy(kb, a, b)) + level
            need = settings.music_separation_lu + 0.5 - (v - m)
            spans.append((a, b, max(settings.music_duck_db, need)))
    attack, release = settings.music_attack_ms * RATE // 1000, settings.music_release_ms * RATE // 1000
    gain = 10 ** ((duck_db(total, spans, attack, release) + level) / 20)
    music = bed_x * gain
    km = kb * gain
    del kb
    for at, x in stings:
        n = min(x.shape[1], total - at)
        if n > 0:
            music[:, at : at + n] += x[:, :n]
            km[:, at : at + n] += np.vstack([sound.k_weight(ch, RATE) for ch in x[:, :n]])
    # The target: the voice is mastered to it already and the bed adds a little. The bed keeps its set
    # level; the voice takes the correction (found on 100 ms block energies: no pass over the signal)
    gv = _voice_gain(kv, km, settings.loudness_lufs)
    lufs = sound.gated_loudness_multi(kv * gv + km, RATE)
    whole = 10 ** ((settings.loudness_lufs - lufs) / 20) if np.isfinite(lufs) else 1.0  # ~1 unless the bed is loud
    gv, music, km = gv * whole, music * whole, km * whole
    out = voice[None, :] * gv + music
    env = np.maximum(*(sound.tp_envelope(ch) for ch in out))
    curve = sound.gain_curve(env, settings.true_peak_dbtp - sound.TP_MARGIN_DB, rate=RATE)
    out *= curve
    tp = float(20 * np.log10(max(float((env * curve).max()), 1e-12)))
    # the stems, as heard in the file: the music's level in the pauses, and under each segment's speech
    km *= curve
    kvoice = kv * (gv * curve)
    final_lufs = sound.gated_loudness_multi(kvoice + km, RATE)
    per: list[dict | None] = []
    for ph in seg_phrases:
        if not ph:
            per.append(None)
            continue
        n = sum(b - a for a, b in ph)
        ev = sum(2 * _energy(kvoice, a, b) * (b - a) for a, b in ph) / n
        em = sum(_energy(km, a, b) * (b - a) for a, b in ph) / n
        v, m = _lufs(ev), _lufs(em)
        per.append({"voice_lufs": round(v, 2), "music_lufs": round(m, 2), "separation_lu": round(v - m, 2)})
    speaking = np.zeros(total, bool)
    for a, b, _ in spans:
        speaking[max(0, a - attack) : b + release] = True
    fade = (settings.music_fade_in_ms * RATE // 1000, total - settings.music_fade_out_ms * RATE // 1000)
    pauses = ~speaking
    pauses[: fade[0]] = False
    pauses[max(fade[1], 0) :] = False
    gaps = _lufs(float(np.einsum("ij,ij->", km[:, pauses], km[:, pauses])) / max(int(pauses.sum()), 1)) if pauses.any() else None
    figures = {
        "level_in_pauses_lufs": None if gaps is None else round(gaps, 2),
        "target_in_pauses_lufs": settings.music_level_lufs,
        "duck_db": settings.music_duck_db,
        "deepest_duck_db": round(max((d for _, _, d in spans), default=0.0), 2),
        "separation_rule_lu": settings.music_separation_lu,
        "segments": per,
    }
    return Mixed(out.astype(np.float32), final_lufs, tp, figures)
