"""The episode's audio track, the render's second lane: each segment's narration mastered and encoded
to AAC on its own (cached by its narration, so an edit re-encodes one chunk and moving a segment none),
spliced frame by frame, and measured without a pass over the whole track."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import keys
from ..cache import Cache, Stats
from ..errors import MediaReadError
from ..plan import Plan
from ..settings import Settings, give_back_freed_memory
from ..video.encode import AAC_FRAME, AAC_RATE, POST_ROLL, PRE_ROLL, Encoder


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
            m = sound.master(*_speech(sound, wavs[seg.audio_key], settings))
            with cache.writing(path) as tmp:
                encoder.encode_voice(m.samples.tobytes(), m.rate, ch.lead, ch.encoded, settings.audio_bitrate, tmp)
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


PIECE_FRAMES = 512  # 11 s: the mixed track is encoded in pieces this long at most, two at a time


WINDOW_STEP = 1 << 16  # samples of the mix made at a time (1.4 s)

VERIFY_PIECES = False  # tests set it before a first render: a piece found by its inputs is made anyway and held to
# the samples it was made from


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
    """The episode's AAC track with a music bed (music.py): the mix planned for the whole episode from
    its stems' energies and peaks, then made window by window and encoded on the voice's chunk grid,
    in pieces, each fed its neighbours' audio around it (AAC frames overlap: both encoders at a join
    then saw the same signal, so the splice is seamless under music too). A piece is cached by a digest
    of what makes its samples (music.window_inputs, the stems' keys), relative to where it starts: an
    edit re-encodes the pieces whose sound changed, two at a time (the bed is laid per segment, so those
    are the edited segment's, as a rule), and never makes the others' samples. `narrations`: audio key -> (wav,
    spoken words). The figures go to `info`."""
    from concurrent.futures import ThreadPoolExecutor

    progress("audio", "music")
    mix = _Mix.planned(plan, narrations, settings, cache, where)
    give_back_freed_memory()  # what planning it freed
    parts = piece_layout(mix.chs, mix.spoken, mix.mp.release)
    # each piece is cached by a digest of what makes its samples
    paths = [cache.path("segments", keys.mixed_chunk(mix.inputs(*_span(part)), part[2], settings), ".aac") for part in parts]
    many = sum(not cache.has(path) for path in paths) > FEW_PIECES

    def encode(i: int) -> Path:
        return _piece(mix, parts[i], paths[i], many, plan, settings, encoder, cache, stats, progress)

    # two ffmpeg processes at a time: each is single-threaded, and an edit leaves the video lane idle;
    # an edit's few pieces (a segment's two long ones and its short last one) all at once, so the short
    # one does not wait for a long one; the pieces of segments spoken anew first (an edit's encodes
    # start at once)
    order = sorted(range(len(parts)), key=lambda i: parts[i][0] not in mix.fresh)
    with ThreadPoolExecutor(max_workers=2 if many else 3) as pool:
        made = dict(zip(order, pool.map(encode, order)))
    done = [made[i] for i in range(len(parts))]
    pieces = [(path, 0, count + 1) if first == 0 else (path, 1, count) for (_, first, count), path in zip(parts, done)]
    progress("audio", "splice")
    with cache.writing(out) as tmp:
        encoder.splice_audio(pieces, tmp)
    # each piece's true peak is cached beside it: `measure_music` takes the largest, beside the join
    mixed_figures = {"integrated_lufs": round(mix.mp.lufs, 2), "music": mix.mp.figures, "chunks": [str(p) for p in done]}
    with cache.writing(_pending(info)) as tmp:
        tmp.write_text(json.dumps(mixed_figures))


def _span(part) -> tuple[int, int]:
    """The samples a piece's encoder is fed: its frames with PRE_ROLL before and POST_ROLL after."""
    _, first, count = part
    return (first - PRE_ROLL) * AAC_FRAME, (first + count + POST_ROLL) * AAC_FRAME


def _piece(mix: _Mix, part, path: Path, many: bool, plan: Plan, settings: Settings, encoder: Encoder, cache: Cache,
           stats: Stats, progress: Callable) -> Path:  # fmt: skip
    """One piece of the mixed track, encoded (or found by its inputs), with its true peak or a bound."""
    import hashlib

    import numpy as np

    segment, _, count = part
    a, b = _span(part)
    if cache.has(path):
        stats.hits["segments"] += 1
        if VERIFY_PIECES:  # tests: the inputs' digest stands for the samples it skipped making
            digest = hashlib.sha256(mix.window(a, b).tobytes()).hexdigest()
            if digest != path.with_suffix(".pcm").read_text():
                raise AssertionError(f"mixed piece {path.name}: same inputs, other samples")
        return path
    block = mix.window(a, b)
    pcm = block.data.cast("B")  # its bytes as they are: a copy was 7 MB more per piece in flight
    seg = plan.segments[segment]
    progress("audio", f"{seg.number or seg.kind} {seg.name}")
    if VERIFY_PIECES:  # what it was made from, for the check above (hashing each piece costs 8 ms)
        with cache.writing(path.with_suffix(".pcm")) as tmp:
            tmp.write_text(hashlib.sha256(pcm).hexdigest())
    peak = float(max(block.max(initial=0.0), -block.min(initial=0.0)))  # |x| at most, without a copy of x
    quiet = peak < BOUND_BELOW  # music alone: a bound stands for its meter, see _bound
    if quiet:
        with cache.writing(path.with_suffix(".tpb")) as tmp:
            tmp.write_text(json.dumps(round(20 * np.log10(max(peak, 1e-6)) + BOUND_DB, 2)))
    # many pieces (a cold render): each loud one is metered as it is encoded, in the same ffmpeg run; an
    # edit's few are metered by `measure_music`, beside the join, and encode sooner
    with cache.writing(path) as tmp:
        tp = encoder.encode_pcm(pcm, count, settings.audio_bitrate, tmp, meter=not quiet and many)
    del pcm, block
    give_back_freed_memory()  # the window's arrays: see render._encoded
    if tp is not None:
        with cache.writing(path.with_suffix(".tp")) as tmp:
            tmp.write_text(json.dumps(tp))
    return path


class _Mix:
    """The planned mix of an episode: its stems and plan, and any window of its samples on demand."""

    def __init__(self, chs, total, starts, offsets, floors, voices, voice_ids, fresh, spoken, bed, mp, stings, extras):
        import hashlib

        self.chs, self.total, self.starts, self.offsets, self.floors = chs, total, starts, offsets, floors
        self.voices = voices  # (first sample, length, its samples in the cache: ondisk.OnDisk)
        self.voice_ids, self.fresh, self.spoken = voice_ids, fresh, spoken
        self.track, self.bed_id = bed
        self.mp, self.stings, self.extras = mp, stings, extras
        self.sounds = [(s.at, s.x.shape, hashlib.sha256(s.x.tobytes()).hexdigest()) for s in stings + extras]

    @classmethod
    def planned(cls, plan: Plan, narrations: dict, settings: Settings, cache: Cache, where: str) -> _Mix:
        """The stems gathered and the mix planned for the whole episode. The bed is decoded (or read from
        the cache) and laid while the narrations are brought to 48 kHz, two at a time (cold, the audio
        lane is the longer one: this gives it a fairer share of the cores); the plan works from the stems'
        energies and peaks per bin, samples are read per window."""
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        from . import beds, meters, music, sound

        chs = sound.chunks(plan)
        total = (chs[-1].first + chs[-1].count) * AAC_FRAME
        nb = total // meters.BIN
        starts = [ch.first * AAC_FRAME for ch in chs]
        offsets = beds.bed_offsets(starts)
        # where each segment's join may start to crossfade: past its speech and tail (where its last piece
        # is cut) and past the frame the piece before it hears after its end
        floors = [(ch.first + min(ch.encoded + POST_ROLL, ch.count)) * AAC_FRAME for ch in chs]

        def bed():
            track, track_e, track_pb, track_lufs, bed_id = _bed(settings, total + beds.BED_GRID, cache)
            return track, *beds.lay_bins(track_e, track_pb, starts, offsets, nb, floors), track_lufs, bed_id

        pool = ThreadPoolExecutor(max_workers=3)
        bedding = pool.submit(bed) if keys.has_music(settings) else None
        prepared = [
            pool.submit(
                _voice_48k, plan.segments[ch.segment], narrations[plan.segments[ch.segment].audio_key][0], settings, cache
            )
            for ch in chs
        ]
        try:
            voices, voice_ids, fresh, spoken, voice_e, voice_pb = _voices(plan, chs, narrations, prepared, nb)
            if bedding is not None:
                track, bed_e, bed_pb, track_lufs, bed_id = bedding.result()
            else:  # only clips' own sounds
                track, bed_e, bed_pb, track_lufs = np.zeros((2, 0), np.int16), np.zeros(nb), np.zeros(nb), -np.inf
                bed_id = "none"
            stings = _stings(plan, settings, total)
            extras = _clip_sounds(plan, settings, total)
            args = (voice_e, voice_pb, spoken, bed_e, bed_pb, track_lufs, stings, extras, settings, total, _fade_end(plan, chs))
            mp = music.analyse(*args)
        except music.AudioError as e:  # passed at load, failed now: changed since, or silent further in
            raise MediaReadError(f"{where or settings.music}: settings.music: {e}") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return cls(chs, total, starts, offsets, floors, voices, voice_ids, fresh, spoken, (track, bed_id), mp, stings, extras)

    def window(self, a: int, b: int):
        """Samples [a, b) of the mix, interleaved stereo; silence outside the episode. Made WINDOW_STEP
        samples at a time (every operation is per sample: the same samples): a piece's window made at
        once held some 40 MB of arrays beside its 8 MB of samples."""
        import numpy as np

        from . import beds, music

        block = np.zeros((b - a, 2), np.float32)
        for lo in range(max(a, 0), min(b, self.total), WINDOW_STEP):
            hi = min(lo + WINDOW_STEP, b, self.total)
            voice = np.zeros(hi - lo, np.float32)
            for at, n_x, x in self.voices:
                i, j = max(lo, at), min(hi, at + n_x)
                if j > i:
                    voice[i - lo : j - lo] += x[i - at : j - at]
            bed = beds.lay(self.track, self.starts, self.offsets, lo, hi, self.floors)
            block[lo - a : hi - a] = music.render(self.mp, lo, hi, voice, bed, self.stings, self.extras).T
        return block

    def inputs(self, a: int, b: int) -> str:
        """A digest of what makes samples [a, b) of the mix (music.window_inputs), with the stems there."""
        import hashlib

        from . import music

        lo, hi = max(a, 0), min(b, self.total)
        got = [a - lo, b - lo, len(self.stings), len(self.extras), self.bed_id, self.track.dtype.str, self.track.shape[1]]
        if hi > lo:
            got.append(music.window_inputs(self.mp, lo, hi, self.starts, self.offsets, self.floors))
            got.append([(at - lo, n_x, k) for (at, n_x, _), k in zip(self.voices, self.voice_ids) if at < hi and at + n_x > lo])
            got.append([(at - lo, shape, h) for at, shape, h in self.sounds if at < hi and at + shape[1] > lo])
        return hashlib.sha256(repr(got).encode()).hexdigest()


def _voices(plan: Plan, chs: list, narrations: dict, prepared: list, nb: int) -> tuple:
    """The narrations placed on the track: (voices, their keys, the segments spoken anew, each chunk's
    (start, end, [(word start, word end)]), the voice's energy and peak per bin)."""
    import numpy as np

    from . import meters

    voices, voice_ids, fresh, spoken = [], [], set(), []
    voice_e, voice_pb = np.zeros(nb), np.zeros(nb)
    for ch, preparing in zip(chs, prepared):
        seg = plan.segments[ch.segment]
        words = narrations[seg.audio_key][1]
        x, n_x, e, pb, vkey, spoken_anew = preparing.result()
        if spoken_anew:
            fresh.add(ch.segment)  # its pieces are made first
        at = (ch.first + ch.lead) * AAC_FRAME
        voices.append((at, n_x, x))
        voice_ids.append(vkey)
        b0 = at // meters.BIN
        meters._add_bins(voice_e, b0, e)
        n = max(0, min(len(pb), nb - b0))
        np.maximum(voice_pb[b0 : b0 + n], pb[:n], out=voice_pb[b0 : b0 + n])
        r = AAC_RATE / seg.sample_rate
        timed = [(at + round(w.start * r), at + round(w.end * r)) for w in words]
        spoken.append((ch.first * AAC_FRAME, (ch.first + ch.count) * AAC_FRAME, timed))
    return voices, voice_ids, fresh, spoken, voice_e, voice_pb


def _fade_end(plan: Plan, chs: list) -> int:
    """Where the fade out ends: where the last segment's own narration and length place the episode's
    end, on its chunk's grid (the true end, as rounded to AAC frames, moves by one with edits before it,
    and would re-encode the last segment's pieces): at most 32 ms before the end, or 11 ms after it."""
    last, last_seg = chs[-1], plan.segments[chs[-1].segment]
    after_narration = (last_seg.start + last_seg.frames - last_seg.narration_start) * AAC_RATE // plan.fps
    return (last.first + last.lead + after_narration // AAC_FRAME) * AAC_FRAME


def piece_layout(chs: list, spoken: list, release: int) -> list[tuple[int, int, int]]:
    """The mixed track's pieces, (segment, first AAC frame, frames), tiling the episode. Each chunk in
    pieces of PIECE_FRAMES up to where its speech and tail end, then what is left: an edit that moves a
    later chunk by a frame more or less than the next one (the frames' rounding) changes that last piece
    only (the bed's crossfade to the next segment lies in it). Where the last phrase's release (`release`
    samples) may still sound in the next chunk, a frame either way (a short lead-in: the outro's), the
    rounding moves it there too: that piece then runs on into the next chunk as far as a release
    reaches, and the next chunk's first long piece starts there. `spoken`: per chunk, (start, end,
    [(word start, word end)]) in samples."""
    cuts = [min(ch.encoded, ch.count) for ch in chs]
    head = -(-(release + AAC_FRAME) // AAC_FRAME) + PRE_ROLL  # a release from the join on, and a frame, not heard

    def reaches(i: int) -> bool:  # chunk i-1's last release, a frame either way, past chunk i's pre-roll?
        ends = [b for _, b in spoken[i - 1][2]]
        return bool(ends) and max(ends) + release + 2 * AAC_FRAME > (chs[i].first - PRE_ROLL) * AAC_FRAME

    heads = [0] + [min(head, cuts[i]) if reaches(i) else 0 for i in range(1, len(chs))]
    parts = []
    for i, ch in enumerate(chs):
        own = [*range(heads[i], cuts[i], PIECE_FRAMES), cuts[i]]
        parts += [(ch.segment, ch.first + a, b - a) for a, b in zip(own, own[1:]) if b > a]
        end = ch.count + (heads[i + 1] if i + 1 < len(chs) else 0)
        if end > cuts[i]:
            parts.append((ch.segment, ch.first + cuts[i], end - cuts[i]))
    return parts


def _pending(info: Path) -> Path:
    return info.with_name(info.name + ".mix")


def measure_music(encoder: Encoder, cache: Cache, info: Path) -> None:
    """The mixed track's figures, written to `info`: its loudness from the mix, its true peak the
    largest of its encoded chunks' (ffmpeg's ebur128 meter, cached beside each chunk). A quiet piece's
    bound is enough where a metered piece is louder; otherwise it is metered too, so the figure is
    always a meter's."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    figures = json.loads(_pending(info).read_text())
    chunks = [Path(p) for p in figures.pop("chunks")]
    bounds = [_bound(cache, p) for p in chunks]
    with ThreadPoolExecutor(max_workers=2) as pool:
        meter = lambda ps: list(pool.map(lambda p: _peak(encoder, cache, p), ps))  # noqa: E731
        metered = max(meter([p for p, b in zip(chunks, bounds) if b is None]), default=-np.inf)
        unsure = [p for p, b in zip(chunks, bounds) if b is not None and b >= metered]
        figures["true_peak"] = max([metered, *meter(unsure)])
    with cache.writing(info) as tmp:
        tmp.write_text(json.dumps(figures))


# A piece whose samples stay under -12 dBFS (the music alone, between and around the words) is not
# metered unless it could be the loudest: its true peak after AAC is taken as at most its sample peak
# + 6 dB. Measured: Part 4's seven quiet pieces +0.04 dB at most; a naive square wave, as peaky as
# music gets, +3.6 dB. Metering decodes a piece again and oversamples it four times (in its encoder's
# run, 0.03 s of CPU less a piece than a run of its own: Part 4 has twelve loud pieces).
BOUND_BELOW = 10 ** (-12 / 20)
BOUND_DB = 6.0
FEW_PIECES = 8  # an edit's new pieces: metered beside the join, not in their encoders' runs


def _bound(cache: Cache, piece: Path) -> float | None:
    """A quiet piece's bound on its true peak, where it has one and no meter reading."""
    bound = piece.with_suffix(".tpb")
    if cache.has(piece.with_suffix(".tp")) or not cache.has(bound):
        return None
    return json.loads(bound.read_text())


def _peak(encoder: Encoder, cache: Cache, piece: Path) -> float:
    """An encoded piece's true peak (ffmpeg's ebur128 meter on the decoded AAC), cached beside it."""
    tp_path = piece.with_suffix(".tp")
    if not cache.has(tp_path):
        tp = encoder.loudness(piece, skip=AAC_FRAME)[1]
        with cache.writing(tp_path) as tmp:
            tmp.write_text(json.dumps(tp))
    return json.loads(tp_path.read_text())


def _voice_48k(seg, wav: Path, settings: Settings, cache: Cache):
    """A segment's narration mastered as on its own, at 48 kHz, its K-weighted energy and its true-peak
    envelope's maximum per bin (meters.BIN samples): cached."""
    import numpy as np

    from . import meters, sound
    from .ondisk import OnDisk

    # v6: the samples in a file of their own, read per window (ondisk.py), the bins beside them
    path = cache.path("segments", keys.voice(seg, settings, -1, -1), ".48k-v6.npy")
    bins = path.with_suffix(".npz")
    if cache.has(path, bins):
        with np.load(bins) as z:
            return OnDisk(path), int(z["n"]), z["e"], z["pb"], path.name, False
    m = sound.master(*_speech(sound, wav, settings))
    x = m.samples if m.rate == AAC_RATE else sound.resample(m.samples, m.rate, AAC_RATE)
    # the mastering already measured this narration: its energy and its true-peak envelope carry over to
    # 48 kHz (the same band-limited signal) by spreading each bin, and by holding each sample's envelope
    # over the samples it spans, with its neighbour's (measured on our narrations: the bound's maximum
    # within 0.02 dB of the 48 kHz signal's own true peak; the limiter's 3 ms look-ahead covers the
    # two grids' offsets, and the ceiling keeps 1 dB for the AAC encoder)
    e = meters.spread_energy(m.energy, sound.BIN, sound.RATE, len(x))
    assert m.peak is not None
    pb = meters.spread_peaks(m.peak, m.rate, len(x))
    with cache.writing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, x)
    with cache.writing(bins) as tmp, open(tmp, "wb") as f:
        np.savez(f, e=e, pb=pb, n=len(x))
    return OnDisk(path), len(x), e, pb, path.name, True


def _speech(sound, wav: Path, settings: Settings) -> tuple:
    """What sound.master takes for a narration: its samples, the targets, and its own rate."""
    x, rate = sound.load_speech(wav)
    return x, settings.loudness_lufs, settings.true_peak_dbtp, rate


def _bed(settings: Settings, total: int, cache: Cache):
    """The music decoded (looped, or stopping) for at least `total` samples, as 16-bit (what was
    decoded), with its K-weighted energy and a bound on its true peak per bin, and its loudness (which
    sets the bed's gain): cached."""
    import numpy as np

    from . import beds, meters, music
    from .ondisk import OnDisk

    info = music.probe(settings.music or "")
    if settings.music_allow_short:
        import dataclasses

        info = dataclasses.replace(info, allow_short=True)
    key = keys.bed(info.digest, settings, -(-total // (beds.BED_STEP_S * AAC_RATE)))
    # v8: looped in numpy, its energy reused per copy; the samples apart from the bins, read per window
    # (ondisk.py: the mix reads the few seconds each piece needs, not all 23 MB)
    path, bins = cache.path("segments", key, ".bed-v8.npy"), cache.path("segments", key, ".bed-v8.npz")
    if cache.has(path, bins):
        with np.load(bins) as z:
            return OnDisk(path), z["e"], z["pb"], float(z["lufs"]), path.name
    x16, e, pb = beds.bed(info, total, settings.music_start_s, settings.music_loop)
    lufs = meters._gated_bins(e)
    with cache.writing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, x16)
    del x16  # read back per window, as an edit reads it
    with cache.writing(bins) as tmp, open(tmp, "wb") as f:
        np.savez(f, e=e, pb=pb, lufs=lufs)
    return OnDisk(path), e, pb, lufs, path.name


def _stings(plan: Plan, settings: Settings, total: int) -> list:
    """Where the sting plays (at the start, or at every segment change), levelled to its setting."""
    import numpy as np

    from . import beds, meters, music, sound

    if not settings.sting or settings.sting.lower() == "none":
        return []
    info = music.probe(settings.sting)
    x = beds.to_array(beds.decode(info, 0.0, min(info.duration, 30.0)))
    k = np.vstack([sound.k_weight(ch, meters.RATE) for ch in x])
    lufs = -0.691 + 10 * np.log10(max(float(np.einsum("ij,ij->", k, k)) / max(x.shape[1], 1), 1e-20))
    x = x * 10 ** ((settings.sting_level_lufs - lufs) / 20)
    starts = [0] if settings.sting_at == "intro" else [seg.start for seg in plan.segments if seg.kind == "concept"]
    return [music.placed(f * AAC_RATE // plan.fps, x) for f in starts if f * AAC_RATE // plan.fps < total]


def _clip_sounds(plan: Plan, settings: Settings, total: int) -> list:
    """The sound of each clip that asks for it (`audio: true`), under its segment, at the music's level."""
    import numpy as np

    from . import beds, meters, music

    out = []
    for seg in plan.segments:
        v = seg.visual
        if v is None or not v.audio:
            continue
        info = music.probe(v.file, any_type=True)
        x = beds.clip_sound(info, v.start * v.fps_den / max(v.fps_num, 1), seg.frames / plan.fps, v.clip_end == "loop")
        lufs = meters.loudness(x)
        if not np.isfinite(lufs):
            continue  # a silent soundtrack adds nothing
        at = seg.start * AAC_RATE // plan.fps
        out.append(music.placed(at, x[:, : max(0, total - at)] * np.float32(10 ** ((settings.music_level_lufs - lufs) / 20))))
    return out
