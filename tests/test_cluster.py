"""A series on a Dask cluster: a LocalCluster of worker processes against the local process pool, a
worker killed mid-task, a scheduler that does not answer, and Dask left alone where it is not asked for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shortgen.cli import main
from shortgen.publish import outputs

pytestmark = pytest.mark.e2e
FIX = Path(__file__).parent / "fixtures"
WORDS = ["Step downhill, a little at a time.", "Walk down the slope, one small step at a time.", "Go down, bit by bit."]


def make_series(root: Path, parts: int = 3) -> Path:
    scripts = root / "scripts"
    scripts.mkdir(parents=True)
    short = (FIX / "short.yaml").read_text().replace("series: Test Series\n", "")
    names = []
    for k in range(parts):
        text = short.replace("part: 9", f"part: {k + 1}").replace('"Test Series #9"', f'"Test Series #{k + 1}"')
        text = text.replace("Step downhill, a little at a time.", WORDS[k % len(WORDS)])
        (scripts / f"part{k + 1}.yaml").write_text(text)
        names.append(f"part{k + 1}.yaml")
    (scripts / "series.yaml").write_text("series: Test Series\nparts:\n" + "".join(f"  - {n}\n" for n in names))
    return scripts / "series.yaml"


def render(series: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(["render", "-q", "--cache-dir", str(cache), "--output-dir", str(out), *extra, str(series)])


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same three-part series rendered by the local pool and by a local Dask cluster of two worker
    processes, each with a cache of its own."""
    root = tmp_path_factory.mktemp("cluster")
    series = make_series(root)
    assert render(series, root / "pool", root / "cache-pool") == 0
    assert render(series, root / "dask", root / "cache-dask", "--scheduler", "local:2") == 0
    return root


def test_a_local_cluster_renders_what_the_pool_renders(both):
    for k in (1, 2, 3):
        a, b = both / "pool" / f"part{k}", both / "dask" / f"part{k}"
        names = set(outputs.file_names(f"part{k}").values())
        assert names <= {p.name for p in b.iterdir()} and not any(p.name.startswith(".") for p in b.iterdir())
        ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
        assert ma["segments"] == mb["segments"] and ma["total_frames"] == mb["total_frames"]  # the same plan
        assert ma["loudness"] == mb["loudness"]
        for name in (f"part{k}.srt", f"part{k}.vtt", "description.txt", "upload.json", "storyboard.png", "thumbnail.jpg"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        # x264 and the AAC encoder are deterministic at the same settings: the videos are the same bytes
        assert (a / f"part{k}.mp4").read_bytes() == (b / f"part{k}.mp4").read_bytes()
    assert (both / "dask" / "index.html").is_file()  # the gallery, as after a local series render


def test_no_token_or_temporary_is_left_behind(both):
    assert not list((both / "dask").glob(".*")), "the output folder holds no token or staging folder"
    assert not list((both / "cache-dask" / "tmp").iterdir())


def test_a_worker_killed_mid_task_is_replaced_and_the_series_completes(tmp_path):
    from distributed import Client, LocalCluster

    from shortgen.series import cluster

    series = make_series(tmp_path)
    events: list[dict] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, Client(lc) as client:
        pids = client.run(os.getpid)  # worker address -> pid
        killed: list[int] = []

        def killer() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy and any(e.get("stage") == "encode" for e in events):
                    os.kill(pids[busy[0]], signal.SIGKILL)  # mid-task: while its part encodes
                    killed.append(pids[busy[0]])
                time.sleep(0.02)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        paths = [series.parent / f"part{k}.yaml" for k in (1, 2, 3)]
        layer = {"cache_dir": tmp_path / "cache", "output_dir": tmp_path / "out"}
        outs = cluster.render_many(paths, layer, cluster.Scheduler(None, 2), sink=events.append, client=client)
        t.join(timeout=5)
    assert killed, "no worker was killed: the test did not test anything"
    assert [o.ok for o in outs] == [True, True, True], [o.error for o in outs]
    for k in (1, 2, 3):
        d = tmp_path / "out" / f"part{k}"
        assert {p.name for p in d.iterdir()} == set(outputs.file_names(f"part{k}").values())
        man = json.loads((d / "manifest.json").read_text())
        assert man["total_frames"] == max(s["end_frame"] for s in man["segments"])
    assert not list((tmp_path / "out").glob(".*"))


def test_a_scheduler_that_refuses_the_connection_fails_at_once_with_one_line(tmp_path, capsys):
    series = make_series(tmp_path, parts=1)
    t0 = time.monotonic()
    code = render(series, tmp_path / "out", tmp_path / "cache", "--scheduler", "tcp://127.0.0.1:9")
    took = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert code == 1 and took < 5, (code, took)
    assert err == "shortgen: scheduler tcp://127.0.0.1:9 refused the connection: no scheduler listens there", err
    assert not (tmp_path / "out" / "part1").exists()


def test_without_dask_the_flag_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    series = make_series(tmp_path, parts=1)
    assert render(series, tmp_path / "out", tmp_path / "cache", "--scheduler", "local") == 1
    assert "pip install 'shortgen[cluster]'" in capsys.readouterr().err
    for bad in ("local:x", "local:0"):  # bad input, as any flag's: exit 2
        assert render(series, tmp_path / "out", tmp_path / "cache", "--scheduler", bad) == 2
        assert "local:N takes a whole number" in capsys.readouterr().err


def test_without_the_flag_nothing_of_dask_is_imported(tmp_path):
    series = make_series(tmp_path, parts=1)
    code = (
        "import sys; from shortgen.cli import main; "
        f"rc = main(['render', '-q', '--cache-dir', {str(tmp_path / 'c')!r}, '--output-dir', {str(tmp_path / 'o')!r}, "
        f"{str(series)!r}]); print(rc, 'distributed' in sys.modules, 'dask' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "SHORTGEN_SCHEDULER"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.stdout.split()[-3:] == ["0", "False", "False"], run.stdout + run.stderr[-500:]


def test_a_worker_unlike_the_client_fails_its_parts_clearly(tmp_path, monkeypatch):
    from shortgen.series import cluster

    real = cluster.environment()
    monkeypatch.setattr(cluster, "environment", lambda: {**real, "shortgen": "9.9.9"})  # the client's, not the workers'
    series = make_series(tmp_path, parts=2)
    paths = [series.parent / "part1.yaml", series.parent / "part2.yaml"]
    outs = cluster.render_many(paths, {"cache_dir": tmp_path / "c", "output_dir": tmp_path / "o"}, cluster.Scheduler(None, 2))
    assert [o.ok for o in outs] == [False, False]
    for o in outs:
        assert f"shortgen {real['shortgen']}, the client has 9.9.9: install the same shortgen on every worker" in o.error
        assert o.exit_code == 1 and o.error.startswith("worker on ")
    assert not (tmp_path / "o" / "part1").exists()


def test_a_worker_that_cannot_see_the_output_folder_returns_the_set_for_the_client(tmp_path):
    """Where the token is not seen (another filesystem), the part renders privately and comes back as
    bytes; the client publishes them as one set, the same files a worker writing in place makes."""
    from shortgen.series import cluster

    series = make_series(tmp_path, parts=1)
    out = tmp_path / "out"
    out.mkdir()
    layer = {"cache_dir": str(tmp_path / "cache"), "output_dir": str(out), "jobs": 1}
    outcome, files = cluster.render_part(str(series.parent / "part1.yaml"), layer, cluster.environment(), "unseen")
    assert outcome.ok and set(files) == set(outputs.file_names("part1").values())
    assert outcome.out_dir == str(out / "part1") and not (out / "part1").exists()  # nothing written there yet
    (out / "part1").mkdir()
    (out / "part1" / "mine.txt").write_text("the creator's notes")  # kept, as a local render keeps it
    cluster._publish(Path(outcome.out_dir), files, tmp_path / "cache")
    got = {p.name: p.read_bytes() for p in (out / "part1").iterdir()}
    assert got.pop("mine.txt") == b"the creator's notes" and got == files
    assert not list(out.glob(".*"))
