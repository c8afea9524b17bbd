"""Benchmark: shortgen against naive moviepy and against the bare ffmpeg encode, in one run.

    python tests/bench/bench_render.py [--runs 3] [--script scripts/part4.yaml] [--moviepy-segments 1]

Not part of the pytest run. Prints a table and writes JSON to tests/bench/results/. Wall times on shared
machines are noisy, so the report leads with ratios of things measured in the same run.

What is measured:
  cold       `shortgen render` as a subprocess with an empty cache (median of --runs)
  no-op      the same render again, nothing changed
  edit       one word of segment 3's narration changed (a different word each run)
             (--runs rounds of the three, each round in that order: the ratios are taken within rounds)
  moviepy    the naive way: CompositeVideoClip of ImageClips (the same cards and caption images, drawn
             beforehand and not timed) plus the mastered audio, write_videofile(libx264, default preset,
             30 fps). Only --moviepy-segments segments are run; the rest is extrapolated per frame.
  bare       ffmpeg alone encoding the same pictures at the same x264 settings, from memory, nothing
             else: (a) the distinct pictures as our pipeline feeds x264, already yuv420p (the limit for
             our method: x264's own work); (a') the same, with the episode's AAC track encoded at our
             settings in a second ffmpeg beside it (the file's two encodes, nothing else); (b) the same
             distinct pictures as RGB, converted by ffmpeg (what a bare encode of drawn pictures does);
             (c) every frame of the episode, as RGB (the limit for a conventional encoder).
  memory     peak of the cold render's whole process tree, sampled every 20 ms from /proc in cold runs of
             their own (--memory-runs; the sampling costs CPU, so timed runs are not sampled): PSS (shared
             pages split between processes) and summed RSS; and the largest single process (getrusage).

The rows above run on the script without its `visual:` entries and with the series' music off (the
episode as it was before visuals and music); the visuals rows keep the music off too.
The visuals section renders it three more ways, cold, in the same run, in --runs rounds, each opening
with a cold render of the script without visuals (stills / cold is taken over those rounds):
  stills      every concept with a still picture and `motion: none` (the clip's segment gets a still of
              the clip's last frame)
  moving      the script as shipped: gentle motion on each still, and the 5 s clip
  vis. edit   the moving render again after one segment's picture is replaced by another
  moviepy/vis the same composition the naive way: CompositeVideoClip of the card, the picture (an
              ImageClip resized per frame for the zoom or pan, or the VideoFileClip), the scrim and card
              text, and the caption ImageClips (--moviepy-segments segments, extrapolated per frame)
The shipped section renders the script as shipped (pictures, motion, the clip, music) cold and as a
no-op in --runs rounds, once more cold with memory sampled, and the whole series as shipped cold and as
a no-op in --series-runs rounds: each against the issue's target.
The preview row runs `shortgen preview` on the shipped script and times --runs + 2 one-word edits, from the
save to the server offering the new render.
The music section renders the script without visuals with the series' bed, --music-runs rounds of: a
cold render without the bed, a cold render with it, and a one-word edit with it; the ratios are taken
within those rounds (the machine's speed drifts over minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import helpers  # noqa: E402
from shortgen import plan as planning  # noqa: E402
from shortgen.audio import sound  # noqa: E402
from shortgen.cache import Cache  # noqa: E402
from shortgen.picture import captions, draw  # noqa: E402
from shortgen.preview import child_pids  # noqa: E402
from shortgen.script.load import load_episode  # noqa: E402
from shortgen.settings import Settings  # noqa: E402
from shortgen.speech.narrate import EspeakEngine  # noqa: E402
from shortgen.timeline import speak_and_plan  # noqa: E402
from shortgen.video.encode import AAC_RATE, COLOUR_TAGS, VideoSettings, distinct_args, ffmpeg_exe, run_args, voice_args  # noqa: E402

# ---- process-tree memory --------------------------------------------------------------------------


def _tree_memory(pid: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) of a process and its descendants, in bytes. RSS counts pages shared by
    processes (the same ffmpeg binary, Python's libraries) once per process; PSS splits them fairly, so
    its sum is the memory the tree really occupies. A child that is its parent's memory (spawned by
    vfork, before its exec: Python's subprocess does that) is not counted again: one sample in a few
    caught a render's main process twice over."""
    rss = pss = 0
    todo = [(pid, None)]
    while todo:
        p, parent = todo.pop()
        kids = [(c, p) for c in child_pids(p)]
        if parent is not None and _same_memory(p, parent):
            todo += kids
            continue
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
        todo += kids
    return rss, pss


def _same_memory(a: int, b: int) -> bool:
    """Whether two processes share one address space (Linux kcmp KCMP_VM; False where it cannot tell)."""
    kcmp = _kcmp()
    return kcmp is not None and kcmp(a, b) == 0


@functools.cache
def _kcmp():
    """kcmp(a, b, KCMP_VM) by its syscall number, loaded once (the sampler asks every 20 ms per child)."""
    import ctypes
    import platform

    number = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
    if number is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    return lambda a, b: libc.syscall(number, a, b, 1, 0, 0)


def run_cli(args: list[str], env: dict, sample_rss: bool = False) -> tuple[float, list[int]]:
    """Wall seconds of a `shortgen` subprocess, and its peak process-tree [RSS, PSS] in bytes (if sampled)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from shortgen.cli import run; run()", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = [0, 0]
    if sample_rss:
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                rss, pss = _tree_memory(proc.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                time.sleep(0.02)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if sample_rss:
        stop.set()
        t.join()
    if proc.returncode != 0:
        raise SystemExit(f"shortgen {' '.join(args)} failed:\n{err.decode()}")
    return wall, peak


# ---- baselines ----------------------------------------------------------------------------------


def episode_pictures(plan, s):
    """Per segment: the distinct pictures (PIL images), how many frames each is held, and which are
    keyframes (the first of each cue's run, and any inside a long run), as the renderer places them."""
    out = []
    for seg in plan.segments:
        card = draw.draw_card(seg, plan, s)
        pics = [helpers.draw_state(card, seg, st, s).image.convert("RGB") for st in seg.states]
        keyframes = [idx[k] for idx, inner in planning.runs(seg, s.keyint_frames) for k in (0, *inner)]
        out.append((pics, [st.end - st.start for st in seg.states], keyframes))
    return out


def rgb_args(args: list[str]) -> list[str]:
    """distinct_args, but fed RGB24 and converted by ffmpeg (BT.709 tv range), as a conventional encode is."""
    i = args.index("-i")
    head = [a for a in args[:i] if a not in COLOUR_TAGS]
    head[head.index("-pix_fmt") + 1] = "rgb24"
    return head + args[i : i + 2] + ["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"] + args[i + 2 :]


def bare_encode(segments, s: Settings, tmp: Path, every_frame: bool, rgb: bool, track=None) -> float:
    """ffmpeg alone, fed raw pictures from memory, at our x264 settings (threads=auto: it gets both cores).
    rgb=False: the yuv420p pictures our pipeline feeds x264 (converted beforehand, untimed): x264 alone.
    rgb=True: the RGB pictures, converted to yuv420p by ffmpeg: what a conventional bare encode does.
    track: also encode this mastered narration (mono float32 at sound.RATE) to AAC at our settings, in
    a second ffmpeg beside x264, as the render does: the file's two encodes and nothing else."""
    if rgb:
        raws = [([p.tobytes() for p in pics], reps) for pics, reps, _ in segments]
    else:
        raws = [([b"".join(helpers.yuv420(p)) for p in pics], reps) for pics, reps, _ in segments]
    vs = VideoSettings(s.width, s.height, s.fps, s.preset, s.crf, threads=0, mode=s.encoder, keyint=s.keyint_frames)
    if every_frame:
        args = distinct_args(ffmpeg_exe(), vs, s.keyint_frames, tmp / "bare.h264")
    else:  # keyframes where the renderer puts them
        at = itertools.accumulate([0, *(len(pics) for pics, _, _ in segments)])
        args = run_args(ffmpeg_exe(), vs, [a + k for a, (_, _, kf) in zip(at, segments) for k in kf], tmp / "bare.h264")
    if rgb:
        args = rgb_args(args)
    audio = None
    if track is not None:
        pcm = track.astype("<f4").tobytes()
        samples = -(-len(track) * AAC_RATE // sound.RATE)
        audio = voice_args(ffmpeg_exe(), sound.RATE, 0, samples, s.audio_bitrate, tmp / "bare.aac")
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if audio:
        aproc = subprocess.Popen(audio, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        feeder = threading.Thread(target=lambda: (aproc.stdin.write(pcm), aproc.stdin.close()))
        feeder.start()
    for pics, reps in raws:
        for raw, n in zip(pics, reps):
            for _ in range(n if every_frame else 1):
                proc.stdin.write(raw)
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"bare encode failed: {' '.join(args)}")
    if audio:
        feeder.join()
        if aproc.wait() != 0:
            raise SystemExit(f"bare audio encode failed: {' '.join(audio)}")
    return time.perf_counter() - t0


def moviepy_baseline(plan, s: Settings, track, tmp: Path, n_segments: int) -> tuple[float, int]:
    """The peers' way, for the first n concept segments: returns (wall seconds, frames encoded)."""
    from moviepy import AudioFileClip, CompositeVideoClip, ImageClip

    x0, y0, _, _ = draw.caption_origin(s)
    master = tmp / "master.wav"
    helpers.write_wav(master, track)
    total_s, frames = 0.0, 0
    for seg in plan.concepts()[:n_segments]:
        card_path = tmp / f"card{seg.index}.png"
        draw.draw_card(seg, plan, s).image.save(card_path)
        layers = []
        for i, st in enumerate(seg.states):
            if st.cue is None:
                continue
            cue = seg.cues[st.cue]
            p = tmp / f"cap{seg.index}-{i}.png"
            captions.draw_overlay(seg, st.cue, None if st.word is None else st.word - cue.first, s).image.save(p)
            layers.append((p, (st.start - seg.start) / s.fps, (st.end - st.start) / s.fps))
        # --- timed from here: what a peer's script does ---
        t0 = time.perf_counter()
        dur = seg.frames / s.fps
        clips = [ImageClip(str(card_path)).with_duration(dur)]
        clips += [ImageClip(str(p)).with_start(a).with_duration(d).with_position((x0, y0)) for p, a, d in layers]
        audio = AudioFileClip(str(master)).subclipped(seg.start / s.fps, seg.end / s.fps)
        video = CompositeVideoClip(clips, size=(s.width, s.height)).with_audio(audio).with_duration(dur)
        video.write_videofile(str(tmp / f"moviepy{seg.index}.mp4"), fps=s.fps, codec="libx264", audio_codec="aac", logger=None)
        total_s += time.perf_counter() - t0
        frames += seg.frames
        video.close()
        audio.close()
    return total_s, frames


# ---- the run ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--script", type=Path, default=ROOT / "scripts" / "part4.yaml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--moviepy-segments", type=int, default=1)
    ap.add_argument("--memory-runs", type=int, default=2, help="extra cold runs that sample memory")
    ap.add_argument("--music-runs", type=int, default=5, help="rounds of the music rows (plain cold, cold, edit)")
    ap.add_argument("--series-runs", type=int, default=2, help="rounds of the series rows (cold, no-op)")
    a = ap.parse_args()

    # compiled once, as installing a wheel does: where PYTHONDONTWRITEBYTECODE is set (as on these
    # machines), every run would otherwise compile our sources again, about 50 ms each
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "shortgen")], check=True)
    work = Path(tempfile.mkdtemp(prefix="shortgen-bench-"))
    try:
        scripts = work / "scripts"
        scripts.mkdir()
        for f in a.script.parent.glob("*.yaml"):
            shutil.copy(f, scripts / f.name)
        for f in scripts.glob("*.yaml"):  # the files they name, where they are
            f.write_text(_absolute(f.read_text(), a.script.parent))
        script = scripts / a.script.name
        shipped = script.read_text()
        script.write_text(_plain(shipped))
        original = script.read_text()
        cache, out = work / "cache", work / "out"
        env = {**os.environ, "SHORTGEN_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT / "src")}
        args = ["render", "-q", "--output-dir", str(out), str(script)]

        ep = load_episode(script, {"cache_dir": cache})
        s = ep.settings
        seg3 = ep.segments[2]
        colds, noops, edits, peaks = [], [], [], []
        # in rounds of a cold render, a no-op and a one-word edit: the machine's speed drifts over
        # minutes, so each ratio is taken within rounds. Timed runs are not sampled (reading /proc every
        # 20 ms takes CPU from the render); memory is taken in cold runs of their own
        for i in range(a.runs):
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            colds.append(run_cli(args, env)[0])
            noops.append(run_cli(args, env)[0])
            script.write_text(_replace_word(original, seg3, i))
            edits.append(run_cli(args, env)[0])
            script.write_text(original)
        for _ in range(a.memory_runs):
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            peaks.append(run_cli(args, env, sample_rss=True)[1])
        import resource

        max_single = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        run_cli(args, env)  # the original script rendered again, for the rows below

        m = speak_and_plan(load_episode(script, {"cache_dir": cache}), EspeakEngine(), Cache(cache))
        plan = m.plan
        video_s = plan.total_frames / plan.fps

        segments = episode_pictures(plan, s)
        wavs = {seg.audio_key: n.wav for seg, n in zip(plan.segments, m.narrations)}
        track = helpers.episode_track(plan, wavs, s.loudness_lufs, s.true_peak_dbtp)
        bare_distinct = statistics.median(bare_encode(segments, s, work, False, rgb=False) for _ in range(a.runs))
        bare_av = statistics.median(bare_encode(segments, s, work, False, rgb=False, track=track) for _ in range(a.runs))
        bare_rgb = statistics.median(bare_encode(segments, s, work, False, rgb=True) for _ in range(a.runs))
        bare_all = bare_encode(segments, s, work, every_frame=True, rgb=True)

        mp_s, mp_frames = moviepy_baseline(plan, s, track, work, a.moviepy_segments)
        moviepy_full = mp_s / mp_frames * plan.total_frames

        vis = visual_rows(a, script, shipped, work, env, args, track)
        mus = music_rows(a, script, shipped, env, args)
        shp = shipped_rows(a, script, shipped, work, env)
        shp["preview_s"] = preview_rows(a, script, shipped, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cold = statistics.median(colds)
    noop, edit = statistics.median(noops), statistics.median(edits)
    r = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "script": str(a.script),
        "video_seconds": video_s,
        "frames": plan.total_frames,
        "distinct_pictures": sum(len(p) for p, _, _ in segments),
        "settings": {"preset": s.preset, "crf": s.crf, "encoder": s.encoder},
        "cold_s": colds,
        "noop_s": noops,
        "edit_s": edits,
        "bare_distinct_s": bare_distinct,
        "bare_distinct_with_audio_s": bare_av,
        "bare_distinct_rgb_s": bare_rgb,
        "bare_every_frame_s": bare_all,
        "moviepy_measured_s": mp_s,
        "moviepy_measured_frames": mp_frames,
        "moviepy_extrapolated_s": moviepy_full,
        "peak_tree_pss_mb": max(p[1] for p in peaks) / 1e6,
        "peak_tree_rss_sum_mb": max(p[0] for p in peaks) / 1e6,
        "peak_single_process_rss_mb": max_single / 1e6,
        "ratios": {
            "moviepy_over_cold": moviepy_full / cold,
            "cold_over_bare_distinct": cold / bare_distinct,
            "cold_over_bare_distinct_with_audio": cold / bare_av,
            "cold_over_bare_distinct_rgb": cold / bare_rgb,
            "cold_over_bare_every_frame": cold / bare_all,
            "edit_over_cold": edit / cold,
            "noop_over_cold": noop / cold,
            "stills_over_cold": statistics.median(vis["stills_s"]) / statistics.median(vis["plain_cold_s"]),
            "moving_realtime": video_s / statistics.median(vis["moving_s"]),
            "moviepy_over_moving": vis["moviepy_extrapolated_s"] / statistics.median(vis["moving_s"]),
            "visual_edit_over_moving": statistics.median(vis["visual_edit_s"]) / statistics.median(vis["moving_s"]),
            "music_over_cold": statistics.median(mus["cold_s"]) / statistics.median(mus["plain_cold_s"]),
            "music_edit_over_music_cold": statistics.median(mus["edit_s"]) / statistics.median(mus["cold_s"]),
            "series_noop_over_cold": statistics.median(shp["series_noop_s"]) / statistics.median(shp["series_cold_s"]),
        },
        "visuals": vis,
        "music": mus,
        "shipped": shp,
    }
    res = ROOT / "tests" / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    path = res / f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(r, indent=2) + "\n")

    def row(name, secs, note=""):
        return f"  {name:34s} {secs:8.2f} s  {video_s / secs:7.1f}x realtime  {note}"

    print(
        f"{a.script}: {video_s:.1f} s of video, {plan.total_frames} frames, {r['distinct_pictures']} distinct pictures,"
        f" {os.cpu_count()} CPUs, x264 {s.preset} crf {s.crf}"
    )
    print(row("cold render (median)", cold, "runs: " + ", ".join(f"{x:.2f}" for x in colds)))
    print(row("no-op render (median)", noop))
    print(row("one-word edit, segment 3 (median)", edit))
    print(row("bare encode, distinct, yuv420p", bare_distinct, "x264 alone on the pictures our pipeline feeds it"))
    print(row("bare encode, distinct + AAC", bare_av, "x264 as above, and the AAC track beside it"))
    print(row("bare encode, distinct, RGB", bare_rgb, "ffmpeg converting the RGB pictures + x264"))
    print(row("bare encode, every frame, RGB", bare_all, "a conventional encode of all the frames"))
    print(
        row(
            "naive moviepy (extrapolated)",
            moviepy_full,
            f"measured {mp_s:.1f} s for {mp_frames} frames ({a.moviepy_segments} segment), scaled per frame",
        )
    )
    print(
        f"  peak memory, cold render process tree: {r['peak_tree_pss_mb']:.0f} MB PSS (<= 400 MB); summed RSS"
        f" {r['peak_tree_rss_sum_mb']:.0f} MB counts shared pages once per process; largest single process"
        f" {r['peak_single_process_rss_mb']:.0f} MB RSS"
    )
    print("ratios (target):")
    q = r["ratios"]
    print(f"  naive moviepy / cold             {q['moviepy_over_cold']:6.1f}x   (>= 25x)")
    print(f"  cold / bare (distinct, yuv420p)  {q['cold_over_bare_distinct']:6.2f}x   (<= 1.5x)")
    print(f"  cold / bare (distinct + AAC)     {q['cold_over_bare_distinct_with_audio']:6.2f}x")
    print(f"  cold / bare (distinct, RGB)      {q['cold_over_bare_distinct_rgb']:6.2f}x")
    print(f"  cold / bare (every frame, RGB)   {q['cold_over_bare_every_frame']:6.2f}x")
    print(f"  edit / cold                      {q['edit_over_cold']:6.1%}   (<= 25%)")
    print(f"  no-op / cold                     {q['noop_over_cold']:6.1%}   (<= 5%)")
    print("visuals (cold renders of the same script, in rounds, each beside a cold render without visuals):")
    print(row("cold render without visuals (median)", statistics.median(vis["plain_cold_s"])))
    print(row("stills, no motion (median)", statistics.median(vis["stills_s"])))
    print(row("motion on every still + a 5 s clip", statistics.median(vis["moving_s"]), f"{vis['moving_pictures']} pictures"))
    print(row("one segment's picture replaced", statistics.median(vis["visual_edit_s"])))
    print(row("naive moviepy, same layers (extrap.)", vis["moviepy_extrapolated_s"],
              f"measured {vis['moviepy_measured_s']:.1f} s for {vis['moviepy_measured_frames']} frames"))  # fmt: skip
    print(f"  stills / cold (no visuals)       {q['stills_over_cold']:6.2f}x   (<= 1.2x)")
    print(f"  moving: realtime factor          {q['moving_realtime']:6.1f}x   (>= 5x)")
    print(f"  naive moviepy / moving           {q['moviepy_over_moving']:6.1f}x   (>= 50x)")
    print(f"  picture edit / moving cold       {q['visual_edit_over_moving']:6.1%}   (<= 30%)")
    print("music (the script without visuals, with the series' bed, each round beside a cold render without):")
    print(row("cold render without music (median)", statistics.median(mus["plain_cold_s"]),
              "runs: " + ", ".join(f"{x:.2f}" for x in mus["plain_cold_s"])))  # fmt: skip
    print(row("cold render with music (median)", statistics.median(mus["cold_s"]),
              "runs: " + ", ".join(f"{x:.2f}" for x in mus["cold_s"])))  # fmt: skip
    print(row("one-word edit with music (median)", statistics.median(mus["edit_s"]),
              "runs: " + ", ".join(f"{x:.2f}" for x in mus["edit_s"])))  # fmt: skip
    print(f"  cold with music / cold without   {q['music_over_cold']:6.2f}x   (<= 1.15x)")
    print(f"  edit / cold, with music          {q['music_edit_over_music_cold']:6.1%}   (<= 25%)")
    print("as shipped (the script with its pictures, motion, clip and music; the whole series):")
    p4 = statistics.median(shp["cold_s"])
    print(row("Part 4 cold (median)", p4, "runs: " + ", ".join(f"{x:.2f}" for x in shp["cold_s"]) + "   (<= 10.5 s)"))
    print(row("Part 4 no-op (median)", statistics.median(shp["noop_s"]), "   (<= 0.3 s)"))
    print(f"  Part 4 cold, peak memory of the process tree: {shp['peak_tree_pss_mb']:.0f} MB PSS   (<= 400 MB)")
    sc = statistics.median(shp["series_cold_s"])
    print(f"  series cold (median)               {sc:8.2f} s  {shp['series_video_s'] / sc:7.1f}x realtime"
          f"  for {shp['series_video_s']:.0f} s of video   (<= 26 s)")  # fmt: skip
    print(f"  series no-op / series cold       {q['series_noop_over_cold']:6.1%}   (<= 3%)")
    pv = statistics.median(shp["preview_s"])
    print(f"  preview: a one-word edit saved -> its render served {pv:5.2f} s   (<= 3 s)   runs: "
          + ", ".join(f"{x:.2f}" for x in shp["preview_s"]))  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


def preview_rows(a, script: Path, shipped: str, work: Path, env: dict) -> list[float]:
    """`shortgen preview` of Part 4 as shipped: from saving a one-word edit of segment 1's narration to
    the server offering the new render (its state names another video file), --runs + 2 edits."""
    import signal
    import urllib.request

    script.write_text(shipped)
    env = {**env, "SHORTGEN_CACHE_DIR": str(work / "cache-preview")}
    args = ["preview", "--output-dir", str(work / "out-preview"), str(script)]
    proc = subprocess.Popen([sys.executable, "-c", "from shortgen.cli import run; run()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        url = proc.stdout.readline().split()[2] if proc.stdout else ""

        def state() -> dict:
            return json.loads(urllib.request.urlopen(url + "state").read())

        while not state()["parts"] or state()["rendering"]:
            time.sleep(0.2)
        times = []
        for word in ["quickly", "gently", "steadily", "neatly", "simply", "plainly", "calmly"][: a.runs + 2]:
            before = state()["parts"][0]["video"]
            script.write_text(shipped.replace("They introduce nonlinearity", f"They {word} introduce nonlinearity"))
            t0 = time.perf_counter()
            while (s := state())["rendering"] or s["parts"][0]["video"] == before:
                time.sleep(0.02)
            times.append(time.perf_counter() - t0)
            time.sleep(0.5)
        return times
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        script.write_text(shipped)


def shipped_rows(a, script: Path, shipped: str, work: Path, env: dict) -> dict:
    """Part 4 as shipped (pictures, motion, the clip, music), cold and no-op in --runs rounds and one
    cold run sampled for memory; the whole series as shipped, cold and no-op in --series-runs rounds."""
    script.write_text(shipped)
    cache, out = work / "cache-shipped", work / "out-shipped"
    env = {**env, "SHORTGEN_CACHE_DIR": str(cache)}
    one = ["render", "-q", "--output-dir", str(out), str(script)]
    many = ["render", "-q", "--output-dir", str(out), str(script.parent / "series.yaml")]

    def fresh() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)

    colds, noops, s_colds, s_noops = [], [], [], []
    for _ in range(a.runs):
        fresh()
        colds.append(run_cli(one, env)[0])
        noops.append(run_cli(one, env)[0])
    fresh()
    peak = run_cli(one, env, sample_rss=True)[1]
    for _ in range(a.series_runs):
        fresh()
        s_colds.append(run_cli(many, env)[0])
        s_noops.append(run_cli(many, env)[0])
    video = sum(json.loads(m.read_text())["total_frames"] / json.loads(m.read_text())["fps"] for m in out.glob("*/manifest.json"))
    return {"cold_s": colds, "noop_s": noops, "peak_tree_pss_mb": peak[1] / 1e6, "series_cold_s": s_colds,
            "series_noop_s": s_noops, "series_video_s": video}  # fmt: skip


# ---- visuals ------------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """The episode as it was before visuals and music: no `visual:` entries, the series' bed off."""
    return _without_music(_without_visuals(text))


def _without_music(text: str) -> str:
    assert "\nsettings:" not in text, "the episode has settings of its own: add `music: none` to them"
    return text.replace("\nsegments:", "\nsettings:\n  music: none\nsegments:", 1)


def music_rows(a, script: Path, shipped: str, env: dict, args: list[str]) -> dict:
    """Cold and one-word-edit renders of the script without visuals, with the series' music, each round
    beside a cold render without it: the machine's speed drifts over minutes, so the ratio is taken
    within rounds, not against the cold renders at the start of the run."""
    cache, out = Path(env["SHORTGEN_CACHE_DIR"]), Path(args[args.index("--output-dir") + 1])
    text = _without_visuals(shipped)
    ep = load_episode(script, {"cache_dir": cache})
    res: dict = {"plain_cold_s": [], "cold_s": [], "edit_s": []}

    def cold(version: str) -> float:
        script.write_text(version)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        return run_cli(args, env)[0]

    for i in range(a.music_runs):
        res["plain_cold_s"].append(cold(_without_music(text)))
        res["cold_s"].append(cold(text))
        script.write_text(_replace_word(text, ep.segments[2], i))
        res["edit_s"].append(run_cli(args, env)[0])
    script.write_text(shipped)
    return res


def _without_visuals(text: str) -> str:
    """The script with its `visual:` entries (a line, or a mapping and its indented lines) removed."""
    out, skip = [], None
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip())
        if skip is not None and (indent > skip or not line.strip()) and line.strip():
            continue
        skip = None
        if line.lstrip().startswith("visual:"):
            skip = indent
            continue
        out.append(line)
    return "".join(out)


def _stills(text: str, work: Path, script: Path) -> str:
    """The script with every visual a still and `motion: none`: a clip becomes its last frame."""
    import re

    import imageio_ffmpeg

    def still(m: re.Match) -> str:
        name = m.group(2)
        if name.endswith((".mp4", ".mov", ".webm")):
            png = work / (Path(name).stem + "-last.png")
            src = (script.parent / name).resolve() if not Path(name).is_absolute() else Path(name)
            subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-sseof", "-0.2", "-i", str(src),
                            "-frames:v", "1", str(png)], check=True)  # fmt: skip
            name = str(png)
        return f"{m.group(1)}visual:\n{m.group(1)}  file: {name}\n{m.group(1)}  motion: none\n"

    flat = _flatten_visuals(text)
    return re.sub(r"(?m)^( *)visual: (\S+)\n", still, flat)


def _flatten_visuals(text: str) -> str:
    """Each `visual:` as the one-line form, its file only."""
    import re

    return re.sub(r"(?m)^( *)visual:[^\n]*\n(?:\1  +file: (\S+)\n)?(?:\1  +\S.*\n)*",
                  lambda m: f"{m.group(1)}visual: {m.group(2)}\n" if m.group(2) else m.group(0), text)  # fmt: skip


def _absolute(text: str, base: Path) -> str:
    import re

    return re.sub(
        r"(?m)^( *(?:visual|file|music|sting|background): )(\.\./\S+)",
        lambda m: m.group(1) + str((base / m.group(2)).resolve()),
        text,
    )


def visual_rows(a, script: Path, shipped: str, work: Path, env: dict, args: list[str], track) -> dict:
    cache, out = Path(env["SHORTGEN_CACHE_DIR"]), Path(args[args.index("--output-dir") + 1])
    shipped = _absolute(shipped, a.script.parent)
    res: dict = {"plain_cold_s": [], "stills_s": [], "moving_s": [], "visual_edit_s": []}

    def cold(text: str) -> float:
        script.write_text(text)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        return run_cli(args, env)[0]

    # the visuals alone: the series' music off, as in the rows they are compared with; each round opens
    # with a cold render of the script without them (the machine's speed drifts over minutes)
    plain = _plain(shipped)
    shipped = _without_music(shipped)
    stills = _stills(shipped, work, script)
    for _ in range(a.runs):
        res["plain_cold_s"].append(cold(plain))
        res["stills_s"].append(cold(stills))
        res["moving_s"].append(cold(shipped))
        # replace one segment's picture (the third concept's) with another, as an edit would
        third = ep_visual_line(shipped, 2)
        edited = shipped.replace(third, third.replace("vision-language.png", "superposition.png"), 1)
        script.write_text(edited)
        res["visual_edit_s"].append(run_cli(args, env)[0])
    script.write_text(shipped)
    ep = load_episode(script, {"cache_dir": cache})
    plan = speak_and_plan(ep, EspeakEngine(), Cache(cache)).plan
    res["moving_pictures"] = sum(len(seg.states) for seg in plan.segments)
    mp_s, mp_frames = moviepy_visuals(plan, ep.settings, track, work, a.moviepy_segments)
    res.update(
        moviepy_measured_s=mp_s, moviepy_measured_frames=mp_frames, moviepy_extrapolated_s=mp_s / mp_frames * plan.total_frames
    )
    return res


def ep_visual_line(text: str, k: int) -> str:
    lines = [ln for ln in text.splitlines(keepends=True) if ln.lstrip().startswith("visual:")]
    return lines[k]


def moviepy_visuals(plan, s: Settings, track, tmp: Path, n_segments: int) -> tuple[float, int]:
    """The naive composition of a segment with a moving picture: card, picture, scrim and text, captions."""
    from moviepy import AudioFileClip, CompositeVideoClip, ImageClip

    from shortgen.picture import compose, frames

    x0, y0, _, _ = draw.caption_origin(s)
    master = tmp / "master-vis.wav"
    helpers.write_wav(master, track)
    total_s, frames_n = 0.0, 0
    for seg in [g for g in plan.concepts() if g.visual is not None][:n_segments]:
        layers = frames.Layers(plan, seg, s)
        v = layers.seg.visual
        back = tmp / f"back{seg.index}.png"
        compose.backdrop(plan, s).save(back)
        over = tmp / f"over{seg.index}.png"
        layers.over().save(over)
        pic = tmp / f"pic{seg.index}.png"
        compose.still_canvas(v, layers.vis.fill).save(pic) if v.kind == "still" else None
        caps = []
        for i, st in enumerate(seg.states):
            if st.cue is None or (i and seg.states[i - 1].cue == st.cue and seg.states[i - 1].word == st.word):
                continue
            cue = seg.cues[st.cue]
            p = tmp / f"vcap{seg.index}-{i}.png"
            captions.draw_overlay(seg, st.cue, None if st.word is None else st.word - cue.first, s).image.save(p)
            end = next((t.start for t in seg.states[i + 1 :] if (t.cue, t.word) != (st.cue, st.word)), seg.end)
            caps.append((p, (st.start - seg.start) / s.fps, (end - st.start) / s.fps))
        layers.close()
        # --- timed from here ---
        t0 = time.perf_counter()
        dur = seg.frames / s.fps
        moving = _moving_clip(v, pic, dur)
        clips = [ImageClip(str(back)).with_duration(dur), moving, ImageClip(str(over)).with_duration(dur)]
        clips += [ImageClip(str(p)).with_start(a0).with_duration(d).with_position((x0, y0)) for p, a0, d in caps]
        audio = AudioFileClip(str(master)).subclipped(seg.start / s.fps, seg.end / s.fps)
        video = CompositeVideoClip(clips, size=(s.width, s.height)).with_audio(audio).with_duration(dur)
        video.write_videofile(
            str(tmp / f"moviepy-vis{seg.index}.mp4"), fps=s.fps, codec="libx264", audio_codec="aac", logger=None
        )
        total_s += time.perf_counter() - t0
        frames_n += seg.frames
        video.close()
        audio.close()
    return total_s, frames_n


def _moving_clip(v, pic: Path, dur: float):
    """The picture as moviepy moves it: an ImageClip resized every frame for the zoom, placed so that
    it stays centred on the panel (a pan is drawn as a zoom: the same per-frame work); or the clip."""
    from moviepy import ImageClip, VideoFileClip

    w, h = v.rect[2] - v.rect[0], v.rect[3] - v.rect[1]
    if v.kind != "still":
        return VideoFileClip(v.file, audio=False).resized(height=h).with_position((v.rect[0], v.rect[1])).with_duration(dur)
    z0, z1 = (1.0, v.zoom) if v.motion != "zoom-out" else (v.zoom, 1.0)

    def zoom(t: float) -> float:
        return z0 + (z1 - z0) * t / dur

    base = ImageClip(str(pic)).with_duration(dur)
    return base.resized(lambda t: zoom(t) / v.zoom).with_position(
        lambda t: (v.rect[0] - (w * zoom(t) - w) / 2, v.rect[1] - (h * zoom(t) - h) / 2)
    )


def _replace_word(text: str, seg, i: int) -> str:
    """The script with one word of this segment's narration changed (a different change each run)."""
    target = seg.narration.split()[3]  # "trained" in segment 3 of Part 4
    new = ("taught", "built", "made", "tuned")[i % 4]
    at = text.index(seg.name)  # only inside this segment
    head, tail = text[:at], text[at:]
    assert f" {target} " in tail
    return head + tail.replace(f" {target} ", f" {new} ", 1)


if __name__ == "__main__":
    sys.exit(main())
