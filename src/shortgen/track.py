"""The episode's audio track, the render's second lane: each segment's narration mastered and encoded
to AAC on its own (cached by its narration, so an edit re-encodes one chunk and moving a segment none),
spliced frame by frame, and measured without a pass over the whole track."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from . import keys
from .cache import Cache, Stats
from .encode import AAC_FRAME, AAC_RATE, Encoder
from .errors import MediaReadError
from .plan import Plan
from .settings import Settings


def voice_chunks(plan: Plan, settings: Settings) -> Iterator[tuple]:
    """Per audio chunk: (chunk, cache key) of its mastered, encoded narration."""
    from . import sound

    for ch in sound.chunks(plan):
        yield ch, keys.voice(plan.segments[ch.segment], settings, ch.lead, ch.encoded)


def make(
    plan: Plan, wavs: dict, settings: Settings, encoder: Encoder, cache: Cache, out: Path, stats: Stats, progress: Callable
) -> None:
    """The episode's AAC track, at `out`."""
    import numpy as np

    from . import sound  # numpy loads only when audio is actually made

    pieces = []
    for ch, key in voice_chunks(plan, settings):
        seg = plan.segments[ch.segment]
        path, meta, bins = (cache.path("segments", key, ext) for ext in (".aac", ".json", ".npy"))
        if cache.has(path, meta, bins):
            stats.hits["segments"] += 1
        else:
            progress("audio", f"{seg.number or seg.kind} {seg.name}")
            m = sound.master(sound.load_speech(wavs[seg.audio_key]), settings.loudness_lufs, settings.true_peak_dbtp)
            with cache.writing(path) as tmp:
                encoder.encode_voice(m.samples.tobytes(), sound.RATE, ch.lead, ch.encoded, settings.audio_bitrate, tmp)
            with cache.writing(bins) as tmp, open(tmp, "wb") as f:
                np.save(f, m.energy)
            with cache.writing(meta) as tmp:
                tmp.write_text(json.dumps({"lufs": m.lufs, "true_peak": m.true_peak, "gain_db": m.gain_db}))
        # a voice file's frame 0 codes the silence before the chunk: the episode's priming frame, for chunk 0
        pieces.append((path, 0, ch.count + 1) if ch.segment == 0 else (path, 1, ch.count))
    progress("audio", "splice")
    with cache.writing(out) as tmp:
        encoder.splice_audio(pieces, tmp)


def measure(plan: Plan, settings: Settings, encoder: Encoder, cache: Cache, info: Path) -> None:
    """The track's figures, written to `info`: the true peak is the largest chunk's, measured on its
    encoded AAC (the joins are silent; cached beside the chunk), and the integrated loudness is summed
    from each chunk's K-weighted energy (see sound.place_energy)."""
    import numpy as np

    from . import sound

    chunks, energy = [], []
    for ch, key in voice_chunks(plan, settings):
        path, meta, bins, peak = (cache.path("segments", key, ext) for ext in (".aac", ".json", ".npy", ".tp"))
        if not cache.has(peak):
            tp = encoder.loudness(path, skip=AAC_FRAME)[1]
            with cache.writing(peak) as tmp:
                tmp.write_text(json.dumps(tp))
        chunks.append({**json.loads(meta.read_text()), "aac_true_peak": json.loads(peak.read_text())})
        at = ((ch.first + ch.lead) * AAC_FRAME * sound.RATE + AAC_RATE // 2) // AAC_RATE  # narration start
        energy.append((at, np.load(bins)))
    lufs = sound.integrated_from_energy(sound.place_energy(-(-plan.total_frames * sound.RATE // plan.fps), energy))
    tp = max(c["aac_true_peak"] for c in chunks)
    with cache.writing(info) as tmp:
        tmp.write_text(json.dumps({"segments": chunks, "integrated_lufs": round(lufs, 2), "true_peak": tp}))


def make_music(
    plan: Plan,
    narrations: dict,
    settings: Settings,
    encoder: Encoder,
    cache: Cache,
    out: Path,
    info: Path,
    stats: Stats,
    progress: Callable,
    where: str = "",
) -> None:
    """The episode's AAC track with a music bed (music.py): the whole mix made at once in numpy, then
    encoded in the same per-segment chunks as the voice alone is, each chunk fed its neighbours' audio
    around it (AAC frames overlap: both encoders at a join then saw the same signal, so the splice is
    seamless under music too). A chunk is cached by a hash of its samples: an edit re-encodes the
    chunks whose sound changed. `narrations`: audio key -> (wav, spoken words). The figures go to `info`."""
    import hashlib

    import numpy as np

    from . import music, sound
    from .encode import POST_ROLL, PRE_ROLL

    chs = sound.chunks(plan)
    total = (chs[-1].first + chs[-1].count) * AAC_FRAME
    progress("audio", "music")
    voice = np.zeros(total, np.float32)
    spoken = []
    for ch in chs:
        seg = plan.segments[ch.segment]
        wav, words = narrations[seg.audio_key]
        x = _voice_48k(seg, wav, settings, cache)
        at = (ch.first + ch.lead) * AAC_FRAME
        n = max(0, min(len(x), total - at))
        voice[at : at + n] += x[:n]
        r = AAC_RATE / seg.sample_rate
        timed = [(at + round(w.start * r), at + round(w.end * r)) for w in words]
        spoken.append((ch.first * AAC_FRAME, (ch.first + ch.count) * AAC_FRAME, timed))
    try:
        bed = _bed(settings, total, cache)
        stings = _stings(plan, settings, total)
        mixed = music.mix(voice, spoken, bed, stings, settings)
    except music.AudioError as e:  # passed at load, failed now: changed since, or silent further in
        raise MediaReadError(f"{where or settings.music}: settings.music: {e}") from None
    del voice, bed
    pieces, peaks = [], []
    for ch in chs:
        a, b = (ch.first - PRE_ROLL) * AAC_FRAME, (ch.first + ch.count + POST_ROLL) * AAC_FRAME
        block = np.zeros((b - a, 2), np.float32)
        lo, hi = max(a, 0), min(b, total)
        block[lo - a : hi - a] = mixed.samples[:, lo:hi].T
        pcm = block.tobytes()
        key = keys.mixed_chunk(hashlib.sha256(pcm).hexdigest(), ch.count, settings)
        path, peak = cache.path("segments", key, ".aac"), cache.path("segments", key, ".tp")
        if cache.has(path):
            stats.hits["segments"] += 1
        else:
            seg = plan.segments[ch.segment]
            progress("audio", f"{seg.number or seg.kind} {seg.name}")
            with cache.writing(path) as tmp:
                encoder.encode_pcm(pcm, ch.count, settings.audio_bitrate, tmp)
        if not cache.has(peak):
            tp = encoder.loudness(path, skip=AAC_FRAME)[1]
            with cache.writing(peak) as tmp:
                tmp.write_text(json.dumps(tp))
        peaks.append(json.loads(peak.read_text()))
        pieces.append((path, 0, ch.count + 1) if ch.segment == 0 else (path, 1, ch.count))
    progress("audio", "splice")
    with cache.writing(out) as tmp:
        encoder.splice_audio(pieces, tmp)
    figures = {"integrated_lufs": round(mixed.lufs, 2), "true_peak": max(peaks), "music": mixed.figures}
    with cache.writing(info) as tmp:
        tmp.write_text(json.dumps(figures))


def _voice_48k(seg, wav: Path, settings: Settings, cache: Cache):
    """A segment's narration mastered as on its own, at 48 kHz (cached)."""
    import numpy as np

    from . import sound

    path = cache.path("segments", keys.voice(seg, settings, -1, -1), ".48k.npy")
    if cache.has(path):
        return np.load(path)
    m = sound.master(sound.load_speech(wav), settings.loudness_lufs, settings.true_peak_dbtp)
    x = sound.resample(m.samples, sound.RATE, AAC_RATE)
    with cache.writing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, x)
    return x


def _bed(settings: Settings, total: int, cache: Cache):
    """The music under `total` samples, decoded, looped and faded (cached, as 16-bit)."""
    import numpy as np

    from . import music

    info = music.probe(settings.music or "")
    key = keys.bed(info.digest, settings, total)
    path = cache.path("segments", key, ".bed.npy")
    if cache.has(path):
        return np.load(path).astype(np.float32) / 32767.0
    x = music.bed(info, total, settings.music_start_s, settings.music_loop, settings.music_fade_in_ms, settings.music_fade_out_ms)
    with cache.writing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16))
    return x


def _stings(plan: Plan, settings: Settings, total: int) -> list:
    """Where the sting plays (at the start, or at every segment change), levelled to its setting."""
    import numpy as np

    from . import music, sound

    if not settings.sting or settings.sting.lower() == "none":
        return []
    info = music.probe(settings.sting)
    x = music.to_array(music.decode(info, 0.0, min(info.duration, 30.0)))
    k = np.vstack([sound.k_weight(ch, music.RATE) for ch in x])
    lufs = -0.691 + 10 * np.log10(max(float(np.einsum("ij,ij->", k, k)) / max(x.shape[1], 1), 1e-20))
    x = x * 10 ** ((settings.sting_level_lufs - lufs) / 20)
    starts = [0] if settings.sting_at == "intro" else [seg.start for seg in plan.segments if seg.kind == "concept"]
    return [(f * AAC_RATE // plan.fps, x) for f in starts if f * AAC_RATE // plan.fps < total]
