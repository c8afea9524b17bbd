"""The music bed: a creator's track under the narration, ducked while the voice speaks, mixed and
mastered with it.

pydub does what it is good at: decoding any format through the bundled ffmpeg (only the span the
episode needs), slicing, looping with a crossfade. numpy does what must be fast or exact, or must not
change the decoded bed (cached across edits): the fades at the episode's ends, resampling, the ducking
envelope (from the narration's word timings, sample-accurate), the mix, loudness (BS.1770) and the
true-peak limiter, at 48 kHz stereo.

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


def probe(path: Path | str, any_type: bool = False) -> AudioInfo:
    """What an audio file is, from ffmpeg's report (imageio-ffmpeg has no ffprobe); raises AudioError.
    `any_type`: a clip's sound, whatever its container."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"no such file: {path}")
    if p.is_dir():
        raise AudioError(f"{path} is a folder; expected an audio file")
    st = p.stat()
    return _probe(str(p.resolve()), st.st_mtime_ns, st.st_size, any_type)


@lru_cache(maxsize=32)
def _probe(path: str, mtime_ns: int, size: int, any_type: bool = False) -> AudioInfo:
    name = Path(path).name
    if Path(path).suffix.lower() not in AUDIO_TYPES and not any_type:
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
    x = np.frombuffer(seg.raw_data, dtype="<i2").astype(np.float32).reshape(-1, seg.channels).T
    x *= np.float32(1 / 32768.0)
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


BED_STEP_S = 30  # a bed is decoded to a whole number of these: an edit that changes the length reuses it


def bed(info: AudioInfo, total: int, start_s: float, loop: bool) -> np.ndarray:
    """The track laid under at least `total` samples (rounded up to BED_STEP_S, so the bed survives
    edits): from `start_s`, looped with a crossfade (or stopping, then silence) when it is shorter."""
    need_ms = -(-total * 1000 // RATE // (BED_STEP_S * 1000)) * BED_STEP_S * 1000
    seg = decode(info, start_s, need_ms / 1000)
    if len(seg) < need_ms and loop:
        whole = seg if start_s == 0 else decode(info, 0.0, info.duration)
        while len(seg) < need_ms:
            seg = seg.append(whole, crossfade=min(CROSSFADE_MS, len(whole) // 4, len(seg) // 4))
    x = to_array(seg[:need_ms])
    del seg
    n_out = need_ms * RATE // 1000
    if x.shape[1] >= n_out:
        return np.ascontiguousarray(x[:, :n_out])
    out = np.zeros((2, n_out), np.float32)
    out[:, : x.shape[1]] = x
    return out


def fades(total: int, fade_in_ms: int, fade_out_ms: int) -> np.ndarray:
    """The bed's fade in and out at the episode's ends, as a gain per sample (raised-cosine ramps)."""
    g = np.ones(total, np.float32)
    for n, at_start in ((min(fade_in_ms * RATE // 1000, total // 2), True), (min(fade_out_ms * RATE // 1000, total // 2), False)):
        if n > 0:
            ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(np.float32)
            if at_start:
                g[:n] *= ramp
            else:
                g[total - n :] *= ramp[::-1]
    return g


BIN = 16  # samples per energy bin: 1024 (an AAC frame, where voices are placed) is a whole number of them


def energy_bins(k: np.ndarray) -> np.ndarray:
    """Energy per BIN samples of K-weighted channels (channels, n), summed over channels (float64)."""
    n = k.shape[-1] // BIN
    e = np.zeros(n)
    for ch in np.atleast_2d(k):
        seg = ch[: n * BIN].reshape(n, BIN)  # a view: sums of 16 squares are exact enough in float32
        e += np.einsum("ij,ij->i", seg, seg)
    return e


def spread_energy(e: np.ndarray, bin_in: int, rate_in: int, n_out: int) -> np.ndarray:
    """Energy bins of a signal at `rate_in` (`bin_in` samples each) as BIN-sample bins of the same signal
    at RATE, `n_out` samples long: each bin's energy spread evenly over the time it covers, scaled by the
    ratio of sample counts (the same mean square over more samples)."""
    n = n_out // BIN
    if n == 0 or len(e) == 0:
        return np.zeros(n)
    # cumulative energy (per input sample) at each output bin edge, interpolated in time
    edges_in = np.arange(len(e) + 1) * bin_in / rate_in
    cum = np.concatenate([[0.0], np.cumsum(e)])
    edges_out = np.arange(n + 1) * BIN / RATE
    return np.diff(np.interp(edges_out, edges_in, cum)) * (RATE / rate_in)


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


# ---- the mix ------------------------------------------------------------------------------------


@dataclass
class Mixed:
    samples: np.ndarray  # (2, total) float32 at RATE: voice and bed, mastered
    lufs: float
    true_peak: float  # of the PCM, 4x oversampled (the file's is measured on the encoded chunks)
    figures: dict  # the music's own figures, for the manifest


def _lay(signal: np.ndarray, energy: np.ndarray, at: int, x: np.ndarray) -> None:
    """Add a short sound `x` (2, n) into a signal from sample `at`, and its K-weighted energy into the
    signal's energy bins (what lies past the end is dropped)."""
    n = min(x.shape[1], signal.shape[1] - at)
    if n <= 0:
        return
    signal[:, at : at + n] += x[:, :n]
    e = energy_bins(np.vstack([sound.k_weight(ch, RATE) for ch in x[:, :n]]))
    energy[at // BIN : at // BIN + len(e)] += e[: len(energy) - at // BIN]


def _gated_bins(e: np.ndarray) -> float:
    """BS.1770-4 gated loudness from energy bins (BIN samples each, summed over channels)."""
    step = RATE // 10 // BIN  # 100 ms
    n = len(e) // step
    if n < 4:
        return -np.inf
    s100 = e[: n * step].reshape(n, step).sum(axis=1)
    return sound._gated((s100[:-3] + s100[1:-2] + s100[2:-1] + s100[3:]) / (4 * step * BIN))


def _span_energy(e: np.ndarray, spans: list[tuple[int, int]]) -> float:
    """Mean square over these sample spans, from energy bins."""
    tot = sum(float(e[a // BIN : b // BIN].sum()) for a, b in spans)
    n = sum((b // BIN - a // BIN) * BIN for a, b in spans)
    return tot / max(n, 1)


def _lufs(e: float) -> float:
    return -0.691 + 10 * np.log10(max(e, 1e-20))


def _per_bin(x: np.ndarray, n: int) -> np.ndarray:
    """A slowly moving per-sample gain, squared, at bin resolution (its value mid-bin)."""
    return x[BIN // 2 : n * BIN : BIN].astype(np.float64) ** 2


def mix(
    voice: np.ndarray,
    voice_e: np.ndarray,
    segments: list[tuple[int, int, list[tuple[int, int]]]],
    bed_x: np.ndarray,
    bed_e: np.ndarray,
    stings: list[tuple[int, np.ndarray]],
    settings,
    voice_peak: np.ndarray | None = None,
    bed_peak: np.ndarray | None = None,
    extras: list[tuple[int, np.ndarray]] = (),  # type: ignore[assignment]
) -> Mixed:
    """Voice (mono, placed, mastered) and bed (2, >= total) into the mastered stereo mix.

    `voice_e`, `bed_e`: their K-weighted energy in BIN-sample bins. K-weighting is linear and every gain
    here moves slowly (over 100 ms and more) against the filters' few milliseconds of memory, so every
    loudness figure (the bed's level, each phrase's, the mix's, the stems as heard) comes from those bins
    and the gains, without weighting the mix again; the voice and the bed are uncorrelated, so their
    energies add (the tests check the result against ffmpeg's meter on the finished file).
    `segments`: per segment (first sample, end sample, its words as (start, end) samples).
    `voice_peak`, `bed_peak`: their true-peak envelopes (4x oversampled, per sample), when known: the
    limiter then works on their gained sum, a bound on the mix's own (exact where one of them is silent,
    never under), instead of oversampling the mix again.
    `extras`: (first sample, stereo samples) of other sounds under the voice, already at their level
    (a clip's own sound): ducked with the bed. With no bed (`bed_x` silent), they are the music.
    """
    total = voice.shape[0]
    nb = total // BIN
    voice_e, bed_e = voice_e[:nb], bed_e[:nb]
    fade = fades(total, settings.music_fade_in_ms, settings.music_fade_out_ms)
    bed_lufs = _gated_bins(bed_e * _per_bin(fade, nb))
    if not np.isfinite(bed_lufs) and not extras:
        raise AudioError("the music is silent where the episode needs it")
    level_lin = 10 ** ((settings.music_level_lufs - bed_lufs) / 20) if np.isfinite(bed_lufs) else 0.0
    # in place, to hold the memory down (a minute and a half at 48 kHz stereo is 35 MB an array): the
    # caller's bed array becomes the bed at its level, plus the other sounds at theirs
    base = bed_x[:, :total]
    base *= np.float32(level_lin)
    base_e = bed_e * level_lin**2
    for at, x in extras:
        _lay(base, base_e, at, x)
    gap = PHRASE_GAP_MS * RATE // 1000
    spans: list[tuple[int, int, float]] = []
    seg_phrases: list[list[tuple[int, int]]] = []
    for _, _, words in segments:
        ph = phrases(words, gap)
        seg_phrases.append(ph)
        for a, b in ph:
            v = _lufs(2 * _span_energy(voice_e, [(a, b)]))  # the voice plays on both channels
            m = _lufs(_span_energy(base_e, [(a, b)]))
            need = settings.music_separation_lu + 0.5 - (v - m)
            spans.append((a, b, max(settings.music_duck_db, need)))
    attack, release = settings.music_attack_ms * RATE // 1000, settings.music_release_ms * RATE // 1000
    gain = duck_db(total, spans, attack, release)  # in place from here: dB -> linear, faded
    gain /= 20
    np.power(np.float32(10), gain, out=gain)
    gain *= fade
    del fade
    music = base
    music *= gain
    music_e = base_e * _per_bin(gain, nb)
    for at, x in stings:
        _lay(music, music_e, at, x)
    # The target: the voice is mastered to it already and the bed adds a little. The bed keeps its set
    # level; the voice takes the correction, up to +3 dB (a sparse narration); where the bed alone would
    # pass the target, the whole mix comes down instead (so the separation rule still holds)
    voice_e2 = 2 * voice_e
    gv = 1.0
    if _gated_bins(voice_e2 + music_e) < settings.loudness_lufs:
        lo, hi = 1.0, 10 ** (3 / 20)
        for _ in range(30):
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if _gated_bins(mid * mid * voice_e2 + music_e) < settings.loudness_lufs else (lo, mid)
        gv = hi
    lufs = _gated_bins(gv * gv * voice_e2 + music_e)
    whole = 10 ** ((settings.loudness_lufs - lufs) / 20) if np.isfinite(lufs) else 1.0  # ~1 unless the bed is loud
    gv *= whole
    music *= np.float32(whole)
    music_e *= whole * whole
    ceiling = settings.true_peak_dbtp - sound.TP_MARGIN_DB
    if voice_peak is not None and bed_peak is not None:
        # the limiter works on a bound of the mix's true peak built from the stems' envelopes; it takes a
        # little loudness off the voice's peaks, which the voice gets back (one correction is enough:
        # the limiter acts on a few peaks only)
        rest = gain * np.float32(whole * level_lin)
        rest *= bed_peak[:total]
        for at, x in extras:
            n = min(x.shape[1], total - at)
            if n > 0:
                rest[at : at + n] += np.abs(x[:, :n]).max(axis=0) * gain[at : at + n] * whole * 1.1
        for at, x in stings:
            n = min(x.shape[1], total - at)
            if n > 0:
                rest[at : at + n] += np.abs(x[:, :n]).max(axis=0) * whole * 1.1  # a short sound: its sample peak, with room
        for _ in range(2):
            env = voice_peak[:total] * np.float32(gv)
            env += rest
            curve = sound.gain_curve(env, ceiling, rate=RATE)
            c2 = _per_bin(curve, nb)
            final_lufs = _gated_bins((voice_e2 * gv * gv + music_e) * c2)
            if not np.isfinite(final_lufs) or abs(final_lufs - settings.loudness_lufs) < 0.05:
                break
            gv *= 10 ** ((settings.loudness_lufs - final_lufs) / 20)
        out = music  # the mix, in place of the music: only its energy is needed from here on
        out += voice[None, :] * np.float32(gv)
    else:
        out = music
        out += voice[None, :] * np.float32(gv)
        env = np.maximum(*(sound.tp_envelope(ch) for ch in out))
        curve = sound.gain_curve(env, ceiling, rate=RATE)
        c2 = _per_bin(curve, nb)
    out *= curve
    tp = float(20 * np.log10(max(float((env * curve).max()), 1e-12)))
    music_e *= c2
    heard_voice = voice_e2 * (gv * gv) * c2
    final_lufs = _gated_bins(heard_voice + music_e)
    # the stems, as heard in the file: the music's level in the pauses, and under each segment's speech
    per: list[dict | None] = []
    for ph in seg_phrases:
        if not ph:
            per.append(None)
            continue
        v, m = _lufs(_span_energy(heard_voice, ph)), _lufs(_span_energy(music_e, ph))
        per.append({"voice_lufs": round(v, 2), "music_lufs": round(m, 2), "separation_lu": round(v - m, 2)})
    speaking = np.zeros(nb, bool)
    for a, b, _ in spans:
        speaking[max(0, a - attack) // BIN : (b + release) // BIN + 1] = True
    pauses = ~speaking
    pauses[: settings.music_fade_in_ms * RATE // 1000 // BIN] = False
    pauses[max(0, total - settings.music_fade_out_ms * RATE // 1000) // BIN :] = False
    gaps = _lufs(float(music_e[pauses].sum()) / (int(pauses.sum()) * BIN)) if pauses.any() else None
    figures = {
        "level_in_pauses_lufs": None if gaps is None else round(gaps, 2),
        "target_in_pauses_lufs": settings.music_level_lufs,
        "duck_db": settings.music_duck_db,
        "deepest_duck_db": round(max((d for _, _, d in spans), default=0.0), 2),
        "separation_rule_lu": settings.music_separation_lu,
        "segments": per,
    }
    return Mixed(out.astype(np.float32), final_lufs, tp, figures)


def clip_sound(info: AudioInfo, start_s: float, seconds: float, loop: bool) -> np.ndarray:
    """A clip's own sound for a segment: from its start offset, looped with the picture (or stopping
    where the clip ends, as its held last frame is silent), levelled later."""
    seg = decode(info, start_s, min(seconds, info.duration - start_s))
    need_ms = int(seconds * 1000) + 1
    if len(seg) < need_ms and loop:
        while len(seg) < need_ms:
            seg = seg.append(decode(info, start_s, info.duration - start_s), crossfade=min(CROSSFADE_MS, len(seg) // 4))
    return to_array(seg[:need_ms])
