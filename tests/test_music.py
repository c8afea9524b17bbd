"""Music: a bed under the voice, ducked while it speaks. Tests on generated signals: the fake engine's
words are 220 Hz bursts at known samples, the bed a steady 2 kHz tone; a band split tells them apart."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import bad_audio, long_wav, tone_wav
from shortgen.audio import beds, meters, music, sound
from shortgen.cache import Cache, Stats
from shortgen.cli import main
from shortgen.render import render_episode
from shortgen.script.load import load_episode
from shortgen.settings import Settings
from shortgen.testing import FakeEncoder, FakeEngine
from shortgen.video.encode import FfmpegEncoder, ffmpeg_exe

FIX = Path(__file__).parent / "fixtures"
R = meters.RATE


def mix(voice: np.ndarray, segments, bed: np.ndarray, settings) -> music.Mixed:
    return music.mix(voice, segments, bed, settings)


def band(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The part of a signal between lo and hi Hz (an FFT mask)."""
    f = np.fft.rfftfreq(x.shape[-1], 1 / R)
    return np.fft.irfft(np.fft.rfft(x) * ((f >= lo) & (f <= hi)), x.shape[-1])


def envelope_db(x: np.ndarray, win: int = R // 100) -> np.ndarray:
    """RMS level in dB per 10 ms."""
    n = len(x) // win
    rms = np.sqrt((x[: n * win].reshape(n, win) ** 2).mean(axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-9))


# ---- the ducking envelope, pure ------------------------------------------------------------------


def test_words_close_together_are_one_phrase():
    assert music.phrases([(0, 100), (150, 300), (1000, 1100)], gap=100) == [(0, 300), (1000, 1100)]


def test_the_dip_is_complete_as_the_phrase_starts_and_released_after_it():
    attack, release = 4800, 24000  # 100 ms, 500 ms
    g = music.duck_at(np.arange(200_000), [(50_000, 100_000, 12.0)], attack, release)
    assert g[:45_000].max() == 0.0  # untouched before the attack
    assert abs(g[50_000 - attack // 2] + 6.0) < 0.1  # half-way down, half-way through the attack
    assert np.allclose(g[50_000:100_000], -12.0, atol=1e-3)  # all the way down under the phrase
    assert abs(g[100_000 + release // 2] + 6.0) < 0.1
    assert g[100_000 + release + 48 :].max() == 0.0


# ---- the mix, on signals ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed():
    s = Settings().with_(music_level_lufs=-24.0, music_duck_db=12.0, music_attack_ms=120, music_release_ms=500)
    total = 20 * R
    voice = np.zeros(total, np.float32)
    words = [(1 * R, 9 * R), (12 * R, 19 * R)]  # two long phrases with a 3 s pause between them
    for a, b in words:
        t = np.arange(b - a) / R
        voice[a:b] = 0.25 * np.sin(2 * np.pi * 220 * t)
    t = np.arange(total) / R
    bed = np.vstack([0.3 * np.sin(2 * np.pi * 2000 * t)] * 2).astype(np.float32)
    m = mix(voice, [(0, total, words)], bed, s)
    return m, words, s


def test_the_bed_sits_at_its_level_in_the_pauses_and_dips_under_the_voice(mixed):
    m, words, s = mixed
    bed_heard = band(m.samples[0], 1500, 2500)
    env = envelope_db(bed_heard)
    pause, under = env[960:1150].mean(), env[450:550].mean()  # 9.6-11.5 s: the pause; 4.5-5.5 s: a word
    assert abs((pause - under) - 12.0) < 0.3, (pause, under)
    # the level in the pauses: the stem measured as BS.1770 does, against the setting
    stem = np.vstack([bed_heard, band(m.samples[1], 1500, 2500)])[:, 96 * R // 10 : 115 * R // 10]
    assert abs(meters.loudness(stem) - s.music_level_lufs) < 0.6
    assert m.figures["level_in_pauses_lufs"] == pytest.approx(s.music_level_lufs, abs=0.6)


def test_attack_and_release_land_within_a_frame(mixed):
    m, words, s = mixed
    env = envelope_db(band(m.samples[0], 1500, 2500))
    full, low = env[960:1150].mean(), env[450:550].mean()
    frame_bins = 100 / 30  # 10 ms bins per video frame
    a, b = words[1][0] // (R // 100), words[0][1] // (R // 100)
    # down by the word's start: the dip is complete (within 0.5 dB) no later than a frame after it
    done = next(i for i in range(a - 30, a + 30) if env[i] <= low + 0.5)
    assert a - frame_bins - s.music_attack_ms / 10 / 2 <= done <= a + frame_bins
    # it starts falling about an attack before: 1 dB down no sooner than attack + a frame ahead
    starts = next(i for i in range(a - 60, a) if env[i] <= full - 1.0)
    assert a - s.music_attack_ms / 10 - frame_bins <= starts
    # back up within 0.5 dB a release after the word ends, within a frame
    back = next(i for i in range(b, b + 100) if env[i] >= full - 0.5)
    assert abs(back - (b + s.music_release_ms / 10)) <= frame_bins + 1


def test_the_mix_meets_the_loudness_target_and_the_ceiling(mixed):
    m, _, s = mixed
    assert abs(m.lufs - s.loudness_lufs) < 0.5
    assert meters.loudness(m.samples) == pytest.approx(s.loudness_lufs, abs=0.5)
    assert max(sound.true_peak_db(ch) for ch in m.samples) <= s.true_peak_dbtp


def test_a_loud_bed_dips_deeper_to_keep_the_voice_clear():
    s = Settings().with_(music_level_lufs=-12.0, music_duck_db=3.0, music_separation_lu=15.0)
    total = 12 * R
    voice = np.zeros(total, np.float32)
    voice[4 * R : 8 * R] = 0.2 * np.sin(2 * np.pi * 220 * np.arange(4 * R) / R)
    t = np.arange(total) / R
    bed = np.vstack([0.3 * np.sin(2 * np.pi * 2000 * t)] * 2).astype(np.float32)
    m = mix(voice, [(0, total, [(4 * R, 8 * R)])], bed, s)
    seg = m.figures["segments"][0]
    assert seg["separation_lu"] >= 15.0
    assert m.figures["deepest_duck_db"] > 3.0
    # measured independently on the file's two components
    v = np.vstack([band(ch, 150, 300) for ch in m.samples])[:, 5 * R : 7 * R]
    b = np.vstack([band(ch, 1500, 2500) for ch in m.samples])[:, 5 * R : 7 * R]
    assert meters.loudness(v) - meters.loudness(b) >= 15.0


# ---- rendering with music -----------------------------------------------------------------------


def episode(tmp_path: Path, music_line: str) -> Path:
    p = tmp_path / "short.yaml"
    text = (FIX / "short.yaml").read_text().replace("settings:\n", f"settings:\n  {music_line}\n")
    p.write_text(text)
    return p


def test_render_with_music_measures_on_target_and_reports_the_music(tmp_path):
    tone_wav(tmp_path / "bed.wav", 4.0, rate=22050)  # shorter than the episode: it loops
    p = episode(tmp_path, "music: bed.wav")
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    res = render_episode(load_episode(p, layer), FakeEngine(), FfmpegEncoder(), Cache(layer["cache_dir"]))
    mp4 = res.files["video"]
    lufs, tp = FfmpegEncoder().loudness(mp4)
    assert abs(lufs + 14.0) <= 0.5 and tp <= -1.0
    m = json.loads(res.files["manifest"].read_text())
    assert m["music"]["level_in_pauses_lufs"] == pytest.approx(-24.0, abs=1.0)
    for seg in m["music"]["segments"]:
        assert seg is None or seg["separation_lu"] >= 15.0
    # the music really is under the pauses of the file: decode and look between the words
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(mp4), "-f", "f32le", "-ac", "1", "-ar", str(R), "-"],
                         capture_output=True, check=True).stdout  # fmt: skip
    x = np.frombuffer(raw, np.float32)
    env = envelope_db(band(x, 1500, 2500))
    assert env[50:].max() > -40  # the bed is audible somewhere after the fade-in


class _Meter:
    """Stands in for ffmpeg's meter: each piece's true peak from a table, and which pieces were metered."""

    def __init__(self, peaks: dict):
        self.peaks, self.metered = peaks, []

    def loudness(self, path, skip=0):
        self.metered.append(Path(path).name)
        return -14.0, self.peaks[Path(path).name]


def test_a_quiet_piece_is_metered_only_where_its_bound_could_be_the_tracks_true_peak(tmp_path):
    """The track's true peak is always a meter's reading: a quiet piece's bound
    (its sample peak + 6 dB) stands in for metering it only while a metered piece is louder than the bound."""
    from shortgen.audio import track

    cache = Cache(tmp_path / "c")
    pieces = {}
    for name, bound in (("loud", None), ("quiet", -12.0), ("near", -1.5)):
        pieces[name] = cache.path("segments", name, ".aac")
        pieces[name].parent.mkdir(parents=True, exist_ok=True)
        pieces[name].write_bytes(b"aac")
        if bound is not None:
            pieces[name].with_suffix(".tpb").write_text(json.dumps(bound))
    info = tmp_path / "figures.json"

    def measure(names: list[str], peaks: dict) -> tuple[float, list[str]]:
        for p in pieces.values():
            p.with_suffix(".tp").unlink(missing_ok=True)
        info.with_name(info.name + ".mix").write_text(json.dumps({"chunks": [str(pieces[n]) for n in names]}))
        meter = _Meter({f"{n}.aac": v for n, v in peaks.items()})
        track.measure_music(meter, cache, info)
        return json.loads(info.read_text())["true_peak"], sorted(meter.metered)

    peaks = {"loud": -2.0, "quiet": -15.2, "near": -1.6}
    assert measure(["loud", "quiet"], peaks) == (-2.0, ["loud.aac"])  # -12 < -2: the quiet one stays unmetered
    # a bound above the loudest reading: metered, and the reading counts
    assert measure(["loud", "quiet", "near"], peaks) == (-1.6, ["loud.aac", "near.aac"])
    assert measure(["quiet"], peaks) == (-15.2, ["quiet.aac"])  # nothing metered but it: metered


def test_a_quiet_pieces_bound_is_above_its_meter_reading(tmp_path):
    """The bound rests on a measurement: music alone, encoded to AAC, read by ffmpeg's true-peak meter,
    stays within 6 dB of its sample peak (here as peaky a signal as music gets: a naive square wave)."""
    from shortgen.audio import track
    from shortgen.video.encode import AAC_FRAME, POST_ROLL, PRE_ROLL

    frames = 94
    t = np.arange((PRE_ROLL + frames + POST_ROLL) * AAC_FRAME) / 48000
    x = (10 ** (-13 / 20) * np.sign(np.sin(2 * np.pi * 997 * t))).astype(np.float32)
    pcm = np.stack([x, x], 1)
    piece = tmp_path / "piece.aac"
    FfmpegEncoder().encode_pcm(pcm.tobytes(), frames, "160k", piece)
    sample = 20 * np.log10(np.abs(pcm).max())
    assert np.abs(pcm).max() < track.BOUND_BELOW
    assert FfmpegEncoder().loudness(piece, skip=AAC_FRAME)[1] <= sample + track.BOUND_DB


def test_a_piece_metered_as_it_is_encoded_reads_what_its_kept_frames_read_alone(tmp_path):
    """The meter in the encoder's own run (its packets decoded back) reads the piece's frames as a meter
    of the written piece does, the same bytes written; a louder neighbour in the pre-roll or post-roll
    is not counted."""
    from shortgen.video.encode import AAC_FRAME, POST_ROLL, PRE_ROLL

    rng = np.random.default_rng(4)
    frames = 94
    n = (PRE_ROLL + frames + POST_ROLL) * AAC_FRAME
    t = np.arange(n) / 48000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    x = (x + 0.03 * rng.standard_normal(n)).astype(np.float32)
    loud = x.copy()
    loud[: PRE_ROLL * AAC_FRAME] *= 2.5
    loud[-POST_ROLL * AAC_FRAME :] *= 2.5
    enc = FfmpegEncoder()
    for y in (x, loud):
        pcm = np.stack([y, 0.8 * y], 1).tobytes()
        alone, metered = tmp_path / "alone.aac", tmp_path / "metered.aac"
        assert enc.encode_pcm(pcm, frames, "160k", alone) is None
        tp = enc.encode_pcm(pcm, frames, "160k", metered, meter=True)
        assert metered.read_bytes() == alone.read_bytes()
        assert tp == enc.loudness(alone, skip=AAC_FRAME)[1]
        own = 20 * np.log10(np.abs(y[PRE_ROLL * AAC_FRAME : -POST_ROLL * AAC_FRAME]).max())
        assert abs(tp - own) < 1.0  # the piece's own peak, not its louder neighbours' (+8 dB)


def test_changing_the_music_re_encodes_audio_only(tmp_path):
    tone_wav(tmp_path / "a.wav", 30.0)
    tone_wav(tmp_path / "b.wav", 30.0, freq=1000.0)
    p = episode(tmp_path, "music: a.wav")
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    cache = Cache(layer["cache_dir"])
    render_episode(load_episode(p, layer), FakeEngine(), FakeEncoder(), cache)
    for old, new in [("music: a.wav", "music: b.wav"), ("music: b.wav", "music: b.wav\n  music_duck_db: 18")]:
        p.write_text(p.read_text().replace(old, new))
        enc, st = FakeEncoder(), Stats()
        res = render_episode(load_episode(p, layer), FakeEngine(), enc, cache, stats=st)
        assert res.rendered and st.encodes == 0  # no video segment encoded again
        kinds = [c[0] for c in enc.calls]
        assert "audio" in kinds and "join" in kinds and "runs" not in kinds and "frames" not in kinds


def test_music_none_turns_a_series_bed_off(tmp_path):
    tone_wav(tmp_path / "a.wav", 30.0)
    p = episode(tmp_path, "music: none")
    ep = load_episode(p, {"cache_dir": tmp_path / "c"})
    from shortgen import keys

    assert not keys.has_music(ep.settings)


def surround_flac(path: Path) -> Path:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=500:d=12:r=96000",
                    "-af", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0", "-c:a", "flac", str(path)], check=True)  # fmt: skip
    return path


@pytest.mark.parametrize("make", ["mono8k", "surround", "long", "mp3"])
def test_unusual_but_valid_files_work(tmp_path, make):
    if make == "mono8k":
        f = tone_wav(tmp_path / "m.wav", 20.0, rate=8000)
    elif make == "surround":
        f = surround_flac(tmp_path / "s.flac")
    elif make == "long":
        f = long_wav(tmp_path / "long.wav")
    else:
        f = tmp_path / "t.mp3"
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=800:d=15", "-c:a", "libmp3lame", str(f)], check=True
        )
    p = episode(tmp_path, f"music: {f.name}")
    decoded = []
    real = beds.decode

    def spy(info, start, seconds):
        decoded.append(seconds)
        return real(info, start, seconds)

    beds.decode = spy
    try:
        args = ["--cache-dir", str(tmp_path / "c"), "--output-dir", str(tmp_path / "o")]
        assert main(["render", "-q", *args, str(p)]) == 0
    finally:
        beds.decode = real
    assert max(decoded) < 60  # only what the episode needs, never the whole three hours
    m = json.loads((tmp_path / "o" / "part9" / "manifest.json").read_text())
    assert abs(m["loudness"]["integrated_lufs"] + 14) <= 0.5


def test_bad_music_files_fail_in_one_line_naming_the_setting(tmp_path, capsys):
    for name, phrase in bad_audio(tmp_path).items():
        p = episode(tmp_path, f"music: {name}")
        assert main(["check", str(p)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"{p}:7:10: settings.music: " in err[0] and phrase in err[0], err[0]


# ---- the bed: decoded, looped, measured ----------------------------------------------------------


def _stereo_wav(path: Path, seconds: float, rate: int = 48000) -> Path:
    """A stereo track whose two channels differ and whose end does not meet its start (a loop's join
    is heard): a chord that swells, and noise."""
    import wave

    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * rate)) / rate
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * t / seconds)
    left = 0.25 * swell * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 3300 * t)) + 0.02 * rng.standard_normal(len(t))
    right = 0.25 * swell * np.sin(2 * np.pi * 277 * t) + 0.02 * rng.standard_normal(len(t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.stack([left, right], 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("start_s, loop, seconds", [(0.0, True, 70), (2.5, True, 70), (0.0, False, 40), (9.7, True, 31)])
def test_a_looped_beds_bins_are_what_the_laid_bed_measures(tmp_path, start_s, loop, seconds):
    """A loop's copies reuse the decoded track's energy and peaks, and only its joins are measured
    anew: the bins equal those of the whole laid bed, K-weighted and measured directly."""
    info = music.probe(_stereo_wav(tmp_path / "t.wav", 10.0))
    total = seconds * R
    x, e, pb = beds.bed(info, total, start_s, loop)
    assert x.dtype == np.int16 and x.shape[0] == 2 and x.shape[1] >= total and x.shape[1] % (beds.BED_STEP_S * R) == 0
    direct = np.zeros(x.shape[1] // meters.BIN)
    for ch in x:
        direct += meters.energy_bins(sound.k_weight(ch.astype(np.float64) * beds.BED_SCALE, R)[None, :])
    assert len(e) == len(direct) and np.abs(e - direct).max() <= 1e-5 * direct.max()
    assert np.array_equal(pb, beds.bed_peaks(x))
    played = int((10.0 - start_s) * R)
    # the track from its start offset, unchanged
    assert np.abs(x[0, :1000].astype(float) / 32767 - beds.to_array(beds.decode(info, start_s, 0.1))[0, :1000]).max() < 1e-4
    if not loop:
        assert not x[:, played + R // 10 :].any()  # then silence
        return
    # looped: each copy of the track starts on a bin, after a crossfade with no jump in level
    level = envelope_db(x[0].astype(float) / 32767)
    assert np.abs(np.diff(level[5:-5])).max() < 6.0
    assert x[:, -R:].any()


def test_a_bed_from_late_in_a_long_file_decodes_only_what_the_episode_needs(tmp_path, monkeypatch):
    info = music.probe(long_wav(tmp_path / "long.wav"))  # three hours
    asked = []
    real = beds.decode
    monkeypatch.setattr(beds, "decode", lambda i, s, n: asked.append(n) or real(i, s, n))
    x, e, pb = beds.bed(info, 20 * R, info.duration - 5.0, True)  # 5 s left: looped from the file's start
    assert x.shape[1] == beds.BED_STEP_S * R and max(asked) <= beds.BED_STEP_S


def test_a_render_checks_its_music_beside_the_speech_and_refuses_a_bad_file_before_drawing(tmp_path):
    """The render loads its script without the music's decode check and runs it beside the speech:
    a bad file is refused with the same line `check` gives, nothing encoded, the earlier render intact."""
    from shortgen.errors import ScriptError

    tone_wav(tmp_path / "bed.wav", 4.0)
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    res = render_episode(
        load_episode(episode(tmp_path, "music: bed.wav"), layer), FakeEngine(), FakeEncoder(), Cache(tmp_path / "c")
    )
    before = {f: f.read_bytes() for f in res.out_dir.iterdir()}
    for name, phrase in bad_audio(tmp_path).items():
        p = episode(tmp_path, f"music: {name}")
        with pytest.raises(ScriptError) as refused:
            load_episode(p, layer)
        ep = load_episode(p, layer, audio=False)  # as `shortgen render` loads it
        enc = FakeEncoder()
        with pytest.raises(ScriptError) as got:
            render_episode(ep, FakeEngine(), enc, Cache(tmp_path / "c"))
        assert str(got.value) == str(refused.value) and phrase in str(got.value), name
        assert str(got.value).startswith(f"{p}:7:10: settings.music: ")
        assert enc.calls == []  # nothing drawn or encoded
        assert {f: f.read_bytes() for f in res.out_dir.iterdir()} == before


# ---- rendering by window: an edit re-makes only what it changed -----------------------------------


def test_a_window_of_the_mix_is_the_same_samples_as_the_whole():
    """The track renders the mix window by window and keys each encoded piece by its samples: a window
    must be bit for bit the same samples of the whole, across ducks, the limiter, stings, clips' sounds,
    the bed's joins and the fades."""
    s = Settings().with_(music_level_lufs=-16.0, music_duck_db=12.0)
    rng = np.random.default_rng(1)
    total = 30 * R
    starts = [0, 7 * R + 1024 * 5, 19 * R + 1024 * 11]
    voice = np.zeros(total, np.float32)
    segments = []
    for k, a in enumerate(starts):
        w0 = a + R
        voice[w0 : w0 + 4 * R] = 0.5 * np.sin(2 * np.pi * 200 * np.arange(4 * R) / R) * rng.uniform(0.5, 1.0)
        end = starts[k + 1] if k + 1 < len(starts) else total
        segments.append((a, end, [(w0, w0 + 2 * R), (w0 + 2 * R + R // 10, w0 + 4 * R)]))
    track = (rng.standard_normal((2, 40 * R)) * 0.2).astype(np.float32)
    offsets = beds.bed_offsets(starts)
    bed = beds.lay(track, starts, offsets, 0, total)
    sting = (0.3 * np.sin(np.arange(R // 2) / 5)).astype(np.float32)
    st = [music.placed(starts[1], np.vstack([sting, sting]))]
    ex = [music.placed(starts[2] + 777, (rng.standard_normal((2, 3 * R)) * 0.05).astype(np.float32))]
    voice_e = meters.energy_bins(sound.k_weight(voice, R)[None, :])
    bed_e = meters.energy_bins(np.vstack([sound.k_weight(ch, R) for ch in bed]))
    voice_pb = meters.peak_bins(sound.tp_envelope(voice))
    bed_pb = meters.peak_bins(np.abs(bed).max(axis=0) * 1.41)
    mp = music.analyse(voice_e, voice_pb, segments, bed_e, bed_pb, -20.0, st, ex, s, total)
    whole = music.render(mp, 0, total, voice, bed, st, ex)
    assert mp.limiter.min() < 1.0  # the limiter is at work somewhere: the test covers it
    edges = [0, 12_345, 7 * R + 1024 * 5 - 3000, 19 * R + 1, 25 * R + 17, total]
    for a, b in zip(edges, edges[1:]):
        part = music.render(mp, a, b, voice[a:b], beds.lay(track, starts, offsets, a, b), st, ex)
        assert np.array_equal(part, whole[:, a:b]), (a, b)


def test_a_segments_bed_stays_put_when_an_earlier_segment_changes_length():
    track = np.vstack([np.arange(60 * R, dtype=np.float32)] * 2)  # each sample holds its own position
    starts = [0, 3 * R, 21 * R, 40 * R]
    moved = [0, 3 * R, 21 * R + 3 * 1024, 40 * R + 3 * 1024]  # the second segment grew by three frames
    for st in (starts, moved):
        offs = beds.bed_offsets(st)
        x = beds.lay(track, st, offs, 0, 50 * R)[0]
        for k in range(1, len(st)):
            # inside a segment the bed runs on, from its grid point: continuous, no jump
            seg = x[st[k] : st[k] + R]
            assert np.array_equal(seg, np.arange(offs[k], offs[k] + R, dtype=np.float32))
            assert offs[k] % beds.BED_GRID == 0 and offs[k] <= max(st[k], beds.BED_GRID)
    a, b = beds.bed_offsets(starts), beds.bed_offsets(moved)
    assert a == b  # the same places in the track: the later segments' music, and their chunks, are reused
    # at a join the old bed hands over to the next one's by a crossfade that ends before the next start
    x = beds.lay(track, starts, a, 0, 50 * R)[0]
    z1 = starts[2] - beds.JOIN_GAP
    assert x[z1 - beds.JOIN - 1] == starts[2] - beds.JOIN - beds.JOIN_GAP - 1 + (a[1] - starts[1])
    assert x[z1] == a[2] - beds.JOIN_GAP  # the next segment's bed from here on


def _stems(starts: list[int], total: int, seed: int, edited: int | None = None, fade_end: int | None = None):
    """Voices, bed, a sting and a clip's sound laid on `starts`; each segment's stems the same relative
    to its start, whatever the segment before it did (the `edited` one's voice at another pitch)."""
    s = Settings().with_(music_level_lufs=-16.0, music_duck_db=12.0)
    voice = np.zeros(total, np.float32)
    segments, ids = [], []  # the voices' places and what they are (the track keys them by their narration)
    for k, a in enumerate(starts):
        w0 = a + R
        pitch = 200 + 40 * k + (90 if k == edited else 0)
        voice[w0 : w0 + 4 * R] = 0.5 * np.sin(2 * np.pi * pitch * np.arange(4 * R) / R)
        ids.append((w0, 4 * R, pitch))
        end = starts[k + 1] if k + 1 < len(starts) else total
        segments.append((a, end, [(w0, w0 + 2 * R), (w0 + 2 * R + R // 10, w0 + 4 * R)]))
    track = (np.random.default_rng(seed).standard_normal((2, 60 * R)) * 0.2).astype(np.float32)
    offsets = beds.bed_offsets(starts)
    floors = [a + 5 * R + 4096 for a in starts]
    bed = beds.lay(track, starts, offsets, 0, total, floors)
    sting = (0.3 * np.sin(np.arange(R // 2) / 5)).astype(np.float32)
    st = [music.placed(a, np.vstack([sting, sting])) for a in starts[1:]]
    ex = [music.placed(starts[2] + 777, (np.random.default_rng(7).standard_normal((2, 3 * R)) * 0.05).astype(np.float32))]
    voice_e = meters.energy_bins(sound.k_weight(voice, R)[None, :])
    bed_e = meters.energy_bins(np.vstack([sound.k_weight(ch, R) for ch in bed]))
    mp = music.analyse(voice_e, meters.peak_bins(sound.tp_envelope(voice)), segments, bed_e,
                       meters.peak_bins(np.abs(bed).max(axis=0) * 1.41), -20.0, st, ex, s, total, fade_end)  # fmt: skip
    return mp, voice, track, offsets, floors, st, ex, ids


def test_windows_with_the_same_inputs_are_the_same_samples_wherever_they_sit():
    """The track keys each encoded piece by the inputs of its window (music.window_inputs), relative to
    where it starts, instead of making its samples to hash them: equal inputs must mean equal samples.
    Here the first concept grows by three AAC frames and its voice changes; the windows after it move."""
    grow = 3 * 1024
    base = [0, 7 * R + 1024 * 5, 19 * R + 1024 * 11, 33 * R]
    # the outro's rounding: the episode's end moves by a frame more or not; the fade out ends at the
    # end, or where the last segment places it (as the track has it: then it moves with that segment)
    for total_extra, anchored in ((0, False), (1024, True), (1024, False)):
        runs = []
        for k, extra in enumerate((0, grow)):
            starts = [base[0], base[1], *(a + extra for a in base[2:])]
            total = 45 * R + extra + (total_extra if k else 0)
            fade_end = 45 * R + extra if anchored else None
            runs.append((starts, total, *_stems(starts, total, 3, edited=1 if k else None, fade_end=fade_end)))
        same = differ = 0
        for lo in [0, 2 * R, base[1] + R, base[2] - 2048, base[2] + 3 * R, base[3] - 4096, base[3] + R, 41 * R, 43 * R - 512]:
            got = []
            for (starts, total, mp, voice, track, offsets, floors, st, ex, ids), shift in zip(runs, (0, grow)):
                a = lo + shift if lo >= base[2] - 2048 else lo
                b = min(a + 2 * R + 512, total)
                x = music.render(mp, a, b, voice[a:b], beds.lay(track, starts, offsets, a, b, floors), st, ex)
                voices = [(w0 - a, n, pitch) for w0, n, pitch in ids if w0 < b and w0 + n > a]
                got.append((repr([music.window_inputs(mp, a, b, starts, offsets, floors), voices]), x))
            if got[0][0] == got[1][0]:
                same += 1
                assert np.array_equal(got[0][1], got[1][1]), lo
            else:
                differ += 1
        # later windows are found again; the edited segment's are not, nor the fade-out's when its end moved
        assert (same, differ) == (8, 1) if not total_extra or anchored else same >= 5 and differ >= 2, (same, differ)


def test_a_phrase_that_runs_past_a_window_gives_it_the_same_inputs_however_far_it_runs():
    """A one-word edit late in a phrase moves the phrase's end: the windows at its start, where the dip
    is at its full depth either way, keep their inputs (and so their encoded pieces)."""
    starts = [0, 7 * R, 19 * R]
    mp, voice, track, offsets, floors, st, ex, _ = _stems(starts, 30 * R, 3)
    a, b = 20 * R, 22 * R
    bed = beds.lay(track, starts, offsets, a, b, floors)

    def window(spans):
        other = dataclasses.replace(mp, spans=spans)
        return repr(music.window_inputs(other, a, b, starts, offsets, floors)), music.render(other, a, b, voice[a:b], bed, st, ex)

    key, x = window(((19 * R, 25 * R, 12.0), (27 * R, 28 * R, 12.0)))
    for same in (((18 * R, 29 * R, 12.0),), ((a, b, 12.0),), ((19 * R, 25 * R, 12.0), (27 * R, 29 * R, 9.0))):
        k, y = window(same)
        assert k == key and np.array_equal(x, y), same
    for other in (((19 * R, 21 * R, 12.0),), ((21 * R, 25 * R, 12.0),), ((19 * R, 25 * R, 9.0),), ((a + 1, b, 12.0),)):
        k, y = window(other)
        assert k != key and not np.array_equal(x, y), other


def test_the_voice_gain_is_the_step_that_meets_the_target_best():
    """The voice's gain is rounded to 0.5 dB steps (so that an edit elsewhere leaves every other piece
    of the track alone); of the nearest step and those either side, the one that meets the target best.
    Part 4 sat where the nearest step missed by 0.25 LU and the next by 0.06 (the limiter took 0.31 of
    its 0.5 dB): taking the nearest wherever it was within half a step, a one-word edit flipped the
    episode between the two, and every piece of its track was encoded again."""
    part4 = {-1: -0.75, 0: -0.25, 1: -0.06, 2: 0.40, 3: 0.87}.__getitem__  # the loudness at step k, less the target
    assert music._best_step(part4, 0.25) == 1
    # the same episode a little louder or quieter (an edit): the same step, far from the edge
    assert {music._best_step(lambda k, d=d: part4(k) + d, 0.25) for d in (-0.05, -0.02, 0.02, 0.05)} == {1}
    assert music._best_step(lambda k: -0.05 + 0.5 * k, 0.25) == 0  # the nearest is best: kept
    assert music._best_step(lambda k: -0.9 + 0.19 * k, 0.25) == 3  # up, while each step is better
    assert music._best_step(lambda k: 0.3 + 0.5 * k, 0.25) == -1  # the nearest overshoots: one down
    assert music._best_step(lambda k: 0.2 + 0.5 * k, 0.25) == 0
    assert music._best_step(lambda k: float("inf"), 0.25) == 0  # silence: nothing to weigh


def test_a_release_into_the_next_chunk_lies_in_the_piece_across_the_join():
    """The track's pieces tile the episode. Where a segment's last phrase is released into the next
    chunk (the outro's short lead-in), the piece across the join takes that release, a frame either way
    of the rounding, so that the next chunk's first long piece, fed from PRE_ROLL frames before it, never
    hears it: an edit that moves the join by a frame re-encodes the short piece only."""
    from shortgen.audio.sound import Chunk
    from shortgen.audio.track import PIECE_FRAMES, piece_layout
    from shortgen.video.encode import AAC_FRAME, PRE_ROLL

    release = Settings().music_release_ms * R // 1000
    chs = [Chunk(0, 0, 700, 8, 640), Chunk(1, 700, 300, 8, 280), Chunk(2, 1000, 160, 8, 150)]

    def spoken(last_ends: list[int]) -> list:
        return [(ch.first * AAC_FRAME, (ch.first + ch.count) * AAC_FRAME, [(ch.first * AAC_FRAME + 9000, e)])
                for ch, e in zip(chs, last_ends)]  # fmt: skip

    early, late = (chs[1].first - 40) * AAC_FRAME, (chs[2].first - 2) * AAC_FRAME
    for ends in ([early, early, 0], [early, late, 0]):
        parts = piece_layout(chs, spoken(ends), release)
        assert parts[0][1] == 0 and all(p[1] + p[2] == q[1] for p, q in zip(parts, parts[1:]))
        assert parts[-1][1] + parts[-1][2] == chs[-1].first + chs[-1].count and max(p[2] for p in parts) <= PIECE_FRAMES
        firsts = {p[1] for p in parts}
        assert chs[1].first in firsts  # the first concept's release ends well before the next chunk
        if ends[1] == late:
            across = next(p for p in parts if p[1] < chs[2].first < p[1] + p[2])
            assert across[0] == 1 and across[1] == chs[1].first + chs[1].encoded
            after = across[1] + across[2]  # the outro's first long piece, and where its encoder starts listening
            assert (after - PRE_ROLL) * AAC_FRAME >= late + AAC_FRAME + release
        else:
            assert chs[2].first in firsts


def test_the_fade_out_ends_at_its_end_and_is_silent_after_it():
    t = np.arange(10 * R, dtype=np.float64)
    g = music.fade_at(t, 8 * R, R, 2 * R)
    assert g[0] == 0.0 and g[R // 2] == pytest.approx(0.5, abs=1e-3) and g[R] == 1.0 and g[6 * R - 1] == 1.0
    assert g[7 * R] == pytest.approx(0.5, abs=1e-3) and g[8 * R - 1] == 0.0 and not g[8 * R :].any()
    assert np.all(np.diff(g[6 * R : 8 * R]) <= 0)


def test_the_window_inputs_follow_every_setting_of_the_mix():
    starts = [0, 7 * R, 19 * R]
    mp, voice, track, offsets, floors, st, ex, _ = _stems(starts, 30 * R, 3)
    key = repr(music.window_inputs(mp, 20 * R, 22 * R, starts, offsets, floors))
    for change in ({"bed_gain": mp.bed_gain * 1.01}, {"voice_gain": mp.voice_gain * 1.01}, {"whole": 0.5},
                   {"attack": mp.attack + 1}, {"fade_out": 9 * R}, {"limiter": mp.limiter * 0.99},
                   {"spans": ((20 * R, 21 * R, 3.0),)}):  # fmt: skip
        other = dataclasses.replace(mp, **change)
        assert repr(music.window_inputs(other, 20 * R, 22 * R, starts, offsets, floors)) != key, change
    assert repr(music.window_inputs(mp, 20 * R, 22 * R, starts, [*offsets[:2], offsets[2] + 2 * R], floors)) != key


def test_editing_one_segments_words_re_encodes_only_its_audio(tmp_path, monkeypatch):
    from shortgen.audio import track

    monkeypatch.setattr(track, "VERIFY_PIECES", True)  # every piece found by its inputs is held to its samples
    tone_wav(tmp_path / "bed.wav", 30.0)
    p = episode(tmp_path, "music: bed.wav")
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    cache = Cache(layer["cache_dir"])
    first = FakeEncoder()
    render_episode(load_episode(p, layer), FakeEngine(), first, cache)
    pieces = sum(1 for c in first.calls if c[0] == "audio")
    p.write_text(p.read_text().replace("Memorising the noise", "Memorising all the noise"))
    enc = FakeEncoder()
    render_episode(load_episode(p, layer), FakeEngine(), enc, cache)
    again = sum(1 for c in enc.calls if c[0] == "audio")
    # the intro and the first concept keep their pieces; the edited segment's (and the outro's, which
    # it moved across the bed's grid or not) are made again
    assert 1 <= again <= pieces - 2, (again, pieces)
    # more edits, each rendered (the pieces found by their inputs are checked against their samples)
    louder = ("music: bed.wav", "music: bed.wav\n  music_level_lufs: -20")
    for before, after in (("Memorising all the noise", "Memorising noise"), louder):
        p.write_text(p.read_text().replace(before, after))
        render_episode(load_episode(p, layer), FakeEngine(), FakeEncoder(), cache)


def test_a_probe_is_remembered_by_the_files_stat_and_made_again_when_the_file_changes(tmp_path, monkeypatch):
    from shortgen.audio import audiofile  # where music.probe lives (no numpy: a no-op reads it)

    f = tone_wav(tmp_path / "bed.wav", 3.0)
    kept = tmp_path / "checks"
    first = music.probe(f, remember=kept)
    assert len(list(kept.glob("probe-*.json"))) == 1

    def no_ffmpeg(*a, **k):
        raise AssertionError("probed again")

    monkeypatch.setattr(audiofile, "_PROBED", {})  # a new run: only the folder remembers
    monkeypatch.setattr(audiofile, "_probe", no_ffmpeg)
    assert music.probe(f, remember=kept) == first
    monkeypatch.undo()

    tone_wav(f, 5.0)  # the same name, other content: its stat changed
    monkeypatch.setattr(audiofile, "_PROBED", {})
    again = music.probe(f, remember=kept)
    assert (again.duration, again.digest) != (first.duration, first.digest) and abs(again.duration - 5.0) < 0.05
    for p in kept.glob("probe-*.json"):  # an unreadable memory is probed again, not trusted
        p.write_text("{not json")
    monkeypatch.setattr(audiofile, "_PROBED", {})
    assert music.probe(f, remember=kept) == again


def test_speech_asked_for_ahead_is_the_speech_the_render_uses_and_its_errors_are_the_renders(tmp_path):
    """`shortgen render` of one part asks for its speech before it imports the renderer (speak_ahead):
    the render then speaks nothing twice, plans on the same narrations, and a failure to speak is raised
    by the render as it would have been, nothing written."""
    from shortgen.errors import TTSError
    from shortgen.timeline import speak_ahead

    p = episode(tmp_path, "music: none")
    runs = []
    for ahead in (False, True):
        layer = {"cache_dir": tmp_path / f"c{ahead}", "output_dir": tmp_path / f"o{ahead}"}
        ep, engine, cache = load_episode(p, layer), FakeEngine(), Cache(layer["cache_dir"])
        early = speak_ahead(ep, engine, cache) if ahead else None
        if early is not None:
            assert early.texts == [r.text for r in early.requests]  # nothing cached yet: all of them
        stats = Stats()
        res = render_episode(ep, engine, FakeEncoder(), cache, stats=stats, ahead=early)
        runs.append((res.plan, engine.calls, stats.tts, stats.hits["narration"]))
    (plan, calls, tts, hits), (plan2, calls2, tts2, hits2) = runs
    assert plan2 == plan and (calls2, tts2, hits2) == (calls, tts, hits) == (1, 1, 0)  # one batch, spoken once

    layer = {"cache_dir": tmp_path / "cx", "output_dir": tmp_path / "ox"}
    ep, engine, cache = load_episode(p, layer), FakeEngine(fail_with="espeak fell over"), Cache(layer["cache_dir"])
    with pytest.raises(TTSError, match="espeak fell over"):
        render_episode(ep, engine, FakeEncoder(), cache, ahead=speak_ahead(ep, engine, cache))
    assert not (tmp_path / "ox").exists()


def test_an_array_on_disk_reads_the_spans_asked_for(tmp_path):
    from shortgen.audio.ondisk import OnDisk

    rng = np.random.default_rng(3)
    one, two = rng.standard_normal(1000).astype(np.float32), rng.integers(-3000, 3000, (2, 777)).astype(np.int16)
    np.save(tmp_path / "one.npy", one)
    np.save(tmp_path / "two.npy", two)
    a, b = OnDisk(tmp_path / "one.npy"), OnDisk(tmp_path / "two.npy")
    assert (a.shape, a.dtype, b.shape, b.dtype) == (one.shape, one.dtype, two.shape, two.dtype)
    for i, j in [(0, 1000), (10, 11), (500, 400), (990, 1200), (-5, 1000), (0, 0)]:
        assert np.array_equal(a[i:j], one[i:j])
        assert np.array_equal(b[:, i:j], two[:, i:j]) and b[:, i:j].flags.writeable
    for bad in [5, slice(0, 10, 2), (0, slice(0, 3))]:
        with pytest.raises(TypeError):
            b[bad]
    with pytest.raises(TypeError):
        a[:, 0:3]
    (tmp_path / "two.npy").unlink()  # a cache cleaned meanwhile: the open file still reads
    assert np.array_equal(b[:, 700:777], two[:, 700:777])
    with open(tmp_path / "one.npy", "r+b") as f:  # cut short since
        f.truncate(f.seek(0, 2) - 40)
    with pytest.raises(OSError, match="cut short"):
        a[900:1000]
