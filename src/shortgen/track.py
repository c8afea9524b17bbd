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
