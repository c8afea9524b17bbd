"""Benchmark: a generated series on the local process pool against a local Dask cluster on the same cores.

    python tests/bench/bench_cluster.py [--parts 10] [--runs 1]

Not part of the pytest run. The series is the shipped one's five parts, repeated under new part numbers
with their pictures and music as shipped, up to --parts. Each way renders it cold (an empty cache of its
own) as a `shortgen render` subprocess, one after the other, --runs times (interleaved); the ratio of the
two medians is the cluster's overhead. CPU seconds are the subprocess tree's (user + system, from wait4),
so the cost of a part is measured, not guessed. JSON goes to tests/bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_series(work: Path, parts: int) -> Path:
    scripts = work / "scripts"
    scripts.mkdir()
    names = []
    for k in range(parts):
        src = ROOT / "scripts" / f"part{k % 5 + 1}.yaml"
        text = re.sub(r"(?m)^part: \d+", f"part: {k + 1}", src.read_text())
        text = re.sub(r'(?m)^title: "(.*?) #\d+"', rf'title: "\1 #{k + 1}"', text)
        text = text.replace("../assets/", f"{ROOT}/assets/")
        (scripts / f"part{k + 1}.yaml").write_text(text)
        names.append(f"part{k + 1}.yaml")
    series = (ROOT / "scripts" / "series.yaml").read_text().replace("../assets/", f"{ROOT}/assets/")
    series = re.sub(r"(?ms)^parts:\n(  - .*?\n)+", "parts:\n" + "".join(f"  - {n}\n" for n in names), series)
    (scripts / "series.yaml").write_text(series)
    return scripts / "series.yaml"


def run(args: list[str], env: dict) -> float:
    """Wall seconds of a `shortgen` subprocess (its CPU seconds are read from RUSAGE_CHILDREN around it)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from shortgen.cli import run; run()", *args], env=env,
                          capture_output=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"shortgen {' '.join(args)} failed:\n{proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    import resource

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "shortgen")], check=True)
    work = Path(tempfile.mkdtemp(prefix="shortgen-bench-cluster-"))
    cpus = os.cpu_count() or 1
    try:
        series = make_series(work, a.parts)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("SHORTGEN_SCHEDULER", None)
        ways = {"pool": [], f"dask local:{cpus}": ["--scheduler", f"local:{cpus}"]}
        times: dict[str, list[float]] = {w: [] for w in ways}
        cpu: dict[str, list[float]] = {w: [] for w in ways}
        for r in range(a.runs):
            for way, extra in ways.items():
                tag = f"{way.split()[0]}{r}"
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                wall = run(["render", "-q", "--cache-dir", str(work / f"cache-{tag}"), "--output-dir",
                               str(work / f"out-{tag}"), *extra, str(series)], env)  # fmt: skip
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                times[way].append(wall)
                cpu[way].append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
                print(f"{way:16s} run {r + 1}: {wall:6.1f} s wall, {cpu[way][-1]:6.1f} CPU s", flush=True)
        video_s = 0.0
        for k in range(a.parts):
            man = json.loads((work / "out-pool0" / f"part{k + 1}" / "manifest.json").read_text())
            video_s += man["duration_s"]
        pool, dask = (statistics.median(times[w]) for w in ways)
        per_part = statistics.median(cpu["pool"]) / a.parts
        print(f"\n{a.parts} parts, {video_s:.0f} s of video, {cpus} CPUs")
        print(f"  pool (median)        {pool:6.1f} s")
        print(f"  dask local (median)  {dask:6.1f} s")
        print(f"  dask / pool          {dask / pool:6.3f}x   (overhead <= 1.10x)")
        print(f"  CPU per part         {per_part:6.1f} CPU s  ({per_part / (video_s / a.parts):.3f} CPU s per s of video)")
        print(f"  parts per hour per core: {3600 / per_part:.0f}")
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = ROOT / "tests" / "bench" / "results" / f"bench-cluster-{stamp}.json"
        out.write_text(json.dumps({"parts": a.parts, "cpus": cpus, "video_s": video_s, "wall": times, "cpu": cpu,
                                   "ratio": dask / pool, "cpu_per_part": per_part}, indent=2))  # fmt: skip
        print(f"wrote {out.relative_to(ROOT)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
