"""A creator's take as people make them: any rate, channel count and format, kept at the track's rate,
judged by whether it says the text (calibrated on human readings), refused in one line when unusable."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import helpers
from shortgen.audio.sound import resample
from shortgen.cache import Cache
from shortgen.cli import main
from shortgen.render import render_episode
from shortgen.script.load import load_episode
from shortgen.speech import heard, record
from shortgen.speech.narrate import EspeakEngine, Request, narrate
from shortgen.video.encode import FfmpegEncoder, ffmpeg_exe

FIX = Path(__file__).parent / "fixtures"
HUMAN = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "human-speech"
T = record.TAKE_RATE
TEXT = "Overfitting. Memorising the noise, not the pattern."


def episode(tmp_path: Path, recording: str, segment: int = 1, text: str | None = None) -> Path:
    """The short fixture with `recording:` on one segment (and, if given, that segment's narration)."""
    lines = (FIX / "short.yaml").read_text().split("\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("  - name:")][segment]
    lines.insert(at + 1, f"    recording: {recording}")
    p = tmp_path / "ep.yaml"
    p.write_text("\n".join(lines))
    if text is not None:
        ep = load_episode(p)
        p.write_text(p.read_text().replace(ep.segments[segment].narration.strip(), text))
    return p


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


# ---- decoding: every rate, layout and format at its true length ---------------------------------

FORMATS = [  # (file name, sample rate, channels, encoder options)
    ("s16-44k-mono.wav", 44100, 1, ["-c:a", "pcm_s16le"]),
    ("s16-44k-stereo.wav", 44100, 2, ["-c:a", "pcm_s16le"]),
    ("s24-48k-stereo.wav", 48000, 2, ["-c:a", "pcm_s24le"]),
    ("s32-96k-mono.wav", 96000, 1, ["-c:a", "pcm_s32le"]),
    ("f32-192k-stereo.wav", 192000, 2, ["-c:a", "pcm_f32le"]),
    ("s16-8k-mono.wav", 8000, 1, ["-c:a", "pcm_s16le"]),
    ("s16-22k-mono.wav", 22050, 1, ["-c:a", "pcm_s16le"]),
    ("surround-51.wav", 48000, 6, ["-c:a", "pcm_s16le"]),
    ("surround-71.flac", 48000, 8, ["-c:a", "flac"]),
    ("take-44k-stereo.flac", 44100, 2, ["-c:a", "flac"]),
    ("take-44k-stereo.mp3", 44100, 2, ["-c:a", "libmp3lame", "-b:a", "128k"]),
    ("take-48k-mono.mp3", 48000, 1, ["-c:a", "libmp3lame", "-b:a", "96k"]),
    ("take-48k-stereo.m4a", 48000, 2, ["-c:a", "aac", "-b:a", "128k"]),
    ("take-44k-51.m4a", 44100, 6, ["-c:a", "aac", "-b:a", "256k"]),
    ("take-48k-stereo.ogg", 48000, 2, ["-c:a", "libvorbis"]),
    ("take-48k-stereo.opus", 48000, 2, ["-c:a", "libopus", "-b:a", "96k"]),
    ("voice-memo-alac.m4a", 48000, 1, ["-c:a", "alac"]),  # a phone's lossless voice memo
    ("phone-recorder.amr", 8000, 1, ["-c:a", "libopencore_amrnb", "-b:a", "12.2k"]),  # an Android recorder's AMR-NB
]


@pytest.mark.parametrize("name, rate, channels, codec", FORMATS, ids=[f[0] for f in FORMATS])
def test_a_take_decodes_at_its_true_length_whatever_its_rate_layout_and_format(tmp_path, name, rate, channels, codec):
    seconds = 4.0
    f = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=300:sample_rate={rate}:duration={seconds}", "-ac", str(channels), *codec, str(f))
    info = record.probe(f, 30.0)
    assert info.rate == rate and info.channels == channels
    x = record.decode(info)
    assert abs(len(x) / T - seconds) <= 1 / 30, len(x) / T  # within one frame
    # and at its own pitch: 300 Hz, not moved by a wrong rate
    spectrum = np.abs(np.fft.rfft(x[: T * 2]))
    assert abs(np.argmax(spectrum) * T / (T * 2) - 300) <= 2


def test_a_phone_videos_sound_is_a_take_too(tmp_path):
    f = tmp_path / "take.mov"
    tone = "sine=frequency=300:sample_rate=44100:duration=3"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=3:s=64x64:r=30", "-f", "lavfi", "-i", tone, "-c:v", "libx264", "-c:a", "aac", str(f))
    x = record.decode(record.probe(f, 30.0))
    assert abs(len(x) / T - 3.0) <= 1 / 30


# ---- a take keeps its quality: mastered and mixed at 48 kHz --------------------------------------


@pytest.mark.e2e
def test_a_takes_top_octave_survives_into_the_aac(tmp_path):
    """A take at 48 kHz with energy at 12-14 kHz (a voice's air, sibilance) keeps it in the final AAC:
    at the engine's 22.05 kHz that band would be gone."""
    take = narrate([Request(TEXT, "gmw/en-gb-x-rp", 160, "take")], EspeakEngine(), Cache(tmp_path / "speech"))[0]
    x = resample(helpers.read_pcm(take.wav), 22050, T)
    rng = np.random.default_rng(0)
    band = np.fft.rfft(rng.standard_normal(len(x)))
    freqs = np.fft.rfftfreq(len(x), 1 / T)
    band[(freqs < 12000) | (freqs > 14000)] = 0
    air = np.fft.irfft(band, len(x)).astype(np.float32)
    x = x + air * (0.05 * np.abs(x).max() / np.abs(air).max())
    helpers.write_wav(tmp_path / "take.wav", x, T)
    p = episode(tmp_path, "take.wav")
    layer = {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}
    res = render_episode(load_episode(p, layer), EspeakEngine(), FfmpegEncoder(), Cache(layer["cache_dir"]))
    m = json.loads(res.files["manifest"].read_text())
    seg = next(s for s in m["segments"] if s["name"] == "Overfitting")
    out = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(res.files["video"]), "-map", "0:a", "-ac", "1", "-f", "f32le", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    y = np.frombuffer(out, np.float32)
    y = y[seg["start_frame"] * T // 30 : (seg["start_frame"] + seg["frames"]) * T // 30]
    p2 = np.abs(np.fft.rfft(y)) ** 2
    f2 = np.fft.rfftfreq(len(y), 1 / T)
    high = p2[(f2 > 12000) & (f2 < 14000)].sum()
    speech = p2[(f2 > 300) & (f2 < 4000)].sum()
    assert 10 * np.log10(high / speech) > -45, 10 * np.log10(high / speech)
    assert m["recordings"][0]["file"] == "take.wav"  # as the script names it, not this machine's path
    assert 0 <= m["recordings"][0]["least_heard_stretch_heard"] <= 1 and isinstance(m["recordings"][0]["heard"], str)


# ---- bad takes: one line, naming the field --------------------------------------------------------


def test_a_damaged_take_is_refused_naming_both_lengths(tmp_path, capsys):
    f = tmp_path / "damaged.ogg"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=20", "-c:a", "libvorbis", str(f))
    data = bytearray(f.read_bytes())
    data[len(data) // 4 : 3 * len(data) // 4] = bytes(len(data) // 2)  # the middle overwritten
    f.write_bytes(bytes(data))
    p = episode(tmp_path, "damaged.ogg")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{p}:17:16: segments[1].recording: damaged.ogg decodes to " in err[0] and "of the 20.00 s its header claims" in err[0]


def test_allow_short_takes_a_damaged_take_as_it_decodes(tmp_path, capsys):
    f = tmp_path / "damaged.ogg"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=20", "-c:a", "libvorbis", str(f))
    data = bytearray(f.read_bytes())
    data[len(data) // 4 : 3 * len(data) // 4] = bytes(len(data) // 2)
    f.write_bytes(bytes(data))
    p = episode(tmp_path, "{file: damaged.ogg, allow_short: true}")
    main(["check", "--cache-dir", str(tmp_path / "c"), str(p)])
    err = capsys.readouterr().err
    assert "decodes to" not in err and "segments[1].recording" in err  # what decodes is judged: a tone is no speech
    assert "holds no speech" in err, err


def test_a_take_of_steady_noise_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(1)
    helpers.write_wav(tmp_path / "hiss.wav", rng.standard_normal(T * 5).astype(np.float32) * 0.05, T)
    p = episode(tmp_path, "hiss.wav")
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segments[1].recording: hiss.wav holds no speech" in err[0], err


# ---- human speech: genuine takes pass, takes of another segment do not ---------------------------

SONNET_2 = (HUMAN / "sonnet-002.txt").read_text().splitlines() if HUMAN.exists() else []


def human_take(tmp_path: Path, name: str, start: float, end: float) -> Path:
    """A span of the shared human reading, as a 44.1 kHz stereo MP3 take (the reading's own format)."""
    f = tmp_path / name
    ffmpeg("-ss", str(start), "-to", str(end), "-i", str(HUMAN / "sonnet-002.mp3"), "-c:a", "libmp3lame", "-b:a", "64k", str(f))
    return f


@pytest.mark.skipif(not HUMAN.exists(), reason="the shared human readings are not beside this checkout")
def test_human_takes_are_accepted_and_a_take_of_another_segment_is_refused(tmp_path, capsys):
    # lines 1-3 and lines 4-6 of Sonnet 2, cut in the pauses after lines 0 and 3 (found by their energy)
    human_take(tmp_path, "a.mp3", 2.8, 13.1)
    human_take(tmp_path, "b.mp3", 13.1, 22.5)
    text_a, text_b = " ".join(SONNET_2[1:4]), " ".join(SONNET_2[4:7])
    p = episode(tmp_path, "a.mp3", 0, text_a)
    p.write_text(p.read_text().replace(load_episode(p).segments[1].narration.strip(), text_b))
    lines = p.read_text().split("\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("  - name:")][1]
    lines.insert(at + 1, "    recording: b.mp3")
    p.write_text("\n".join(lines))
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 0
    out = capsys.readouterr().out
    assert out.count("alignment cost") == 2 and "NOT ITS TEXT" not in out, out
    assert out.count("least-heard stretch heard") == 2, out  # what the recogniser made of each take
    # the takes swapped: each is refused as the other segment's
    p.write_text(p.read_text().replace("recording: a.mp3", "recording: X").replace("recording: b.mp3", "recording: a.mp3")
                 .replace("recording: X", "recording: b.mp3"))  # fmt: skip
    assert main(["check", "--cache-dir", str(tmp_path / "c"), str(p)]) == 2
    err = capsys.readouterr().err
    assert "does not say this segment's narration: it sounds like segments[" in err, err


@pytest.mark.skipif(not HUMAN.exists(), reason="the shared human readings are not beside this checkout")
def test_a_readers_long_pause_falls_between_words_and_the_next_word_starts_with_its_sound(tmp_path):
    """Sonnet 3 opens "3", two seconds of silence, then "Look in thy glass". The pause used to pair with
    the engine's quiet first frame, which put every word one late ("Look" on "in", 0.23 s out). Truth:
    the end of the pause, where the reading's energy rises 12 dB over its floor (2.97 s in the reading)."""
    f = tmp_path / "three.mp3"
    ffmpeg("-ss", "0.38", "-to", "4.3", "-i", str(HUMAN / "sonnet-003.mp3"), "-c:a", "libmp3lame", "-b:a", "64k", str(f))
    text = "3 Look in thy glass"
    cache = Cache(tmp_path / "c")
    ref = narrate([Request(text, "gmw/en-us", 175, "ref")], EspeakEngine(), cache)[0]
    n, v = record.narration(f, record.probe(f, 30.0), text, ref, cache, 30.0)
    assert v.mismatch is None
    starts = {w.text: w.start / n.sample_rate for w in n.words}
    # the words' times are in the trimmed take: the trim is the take's lead less the engine's
    lead = record.speech_span(record.decode(record.probe(f, 30.0)), record.TAKE_RATE)[0] / record.TAKE_RATE
    shift = lead - record.speech_span(helpers.read_pcm(ref.wav))[0] / ref.sample_rate
    assert abs(starts["Look"] + shift - (2.97 - 0.38)) < 0.1, starts
    assert starts["3"] + shift < 0.5, starts  # the number stays where it was said


def spliced(tmp_path: Path, name: str, spans: list[tuple[float, float]]) -> Path:
    """Spans of Sonnet 2's reading joined into one 44.1 kHz MP3 take, each cut in a pause."""
    f = tmp_path / name
    parts = "".join(f"[0:a]atrim={a}:{b},asetpts=PTS-STARTPTS[p{i}];" for i, (a, b) in enumerate(spans))
    joined = "".join(f"[p{i}]" for i in range(len(spans))) + f"concat=n={len(spans)}:v=0:a=1[out]"
    ffmpeg("-i", str(HUMAN / "sonnet-002.mp3"), "-filter_complex", parts + joined, "-map", "[out]", "-c:a", "libmp3lame",
           "-b:a", "64k", str(f))  # fmt: skip
    return f


@pytest.mark.skipif(not HUMAN.exists(), reason="the shared human readings are not beside this checkout")
def test_a_human_take_with_a_line_left_out_or_one_added_is_refused_saying_which(tmp_path):
    """Lines 1-3 of Sonnet 2 as read (accepted), then without line 2, then with line 4 read after line 1.
    A human voice is too unlike the engine's for the sounds alone to show the gap: the recogniser hears it."""
    text = " ".join(SONNET_2[1:4])  # When forty winters ... / And dig deep trenches ... / Thy youth's proud livery ...
    cache = Cache(tmp_path / "c")
    ref = narrate([Request(text, "gmw/en-us", 175, "ref")], EspeakEngine(), cache)[0]

    def verdict(f: Path) -> record.Verdict:
        return record.narration(f, record.probe(f, 30.0), text, ref, cache, 30.0, refuse=False)[1]

    whole = verdict(spliced(tmp_path, "whole.mp3", [(2.8, 13.1)]))
    assert whole.mismatch is None and whole.said is not None and whole.said >= 0.3, whole
    assert "trenches" in whole.heard  # what the recogniser heard, without being told the text
    skipped = verdict(spliced(tmp_path, "skipped.mp3", [(2.8, 6.0), (9.4, 13.1)]))
    assert skipped.mismatch and "skipped?" in skipped.mismatch, skipped
    added = verdict(spliced(tmp_path, "added.mp3", [(2.8, 6.0), (13.2, 16.8), (6.0, 13.1)]))
    assert added.mismatch and "added?" in added.mismatch, added
    # the recogniser alone catches both, naming the line left out and where the added one is
    for f, why in (("skipped.mp3", "And dig deep"), ("added.mp3", "at about ")):
        x = record.decode(record.probe(tmp_path / f, 30.0))
        said = heard.mismatch(text, heard.judge(text, heard.recognise(x, T)))
        assert said is not None and why in said, (f, said)
    x = record.decode(record.probe(tmp_path / "added.mp3", 30.0))
    h = heard.judge(text, heard.recognise(x, T))
    assert 2.9 < h.extra_at_s < 6.7, h  # the added line runs from 3.2 s to 6.8 s of the take
