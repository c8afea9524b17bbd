"""A series on a Dask cluster (`--scheduler tcp://HOST:8786`, `local` or `local:N`; the optional extra
`shortgen[cluster]`). Without the flag nothing here is imported: batch.py's process pool stays the default.

The unit of work is the part: each task renders one episode with `render_episode`, as a batch worker
does, and returns its Outcome. The cache is shared by the workers through a path every worker mounts
(NFS or similar): entries appear by atomic rename, temporaries carry their machine's name (a worker
sweeps only its own machine's), a narration is spoken under a lock of its own and each machine's speech
engine under a lock of that machine (flock, which Linux's NFS client maps to the server's byte-range
locks). A part's files land in the output folder the user named: a worker that sees that folder (the
client leaves a token in it) publishes the set there itself; one that does not renders into a private
folder and returns the files, which the client publishes as one set.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExitStatus, ShortgenError
from ..settings import usable_cpus
from .batch import Outcome

ENV = "SHORTGEN_SCHEDULER"
CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer fails within this
TOKEN = ".shortgen-cluster-token"
PROGRESS = "shortgen-progress"  # the topic workers log progress events on (Worker.log_event)


class ClusterError(ShortgenError):
    """No Dask, a scheduler that does not answer, or a worker unlike the client."""


class SchedulerFlagError(ClusterError):
    """A --scheduler value that names no cluster: bad input, like any other flag."""

    exit_code = ExitStatus.BAD_INPUT


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("--scheduler needs Dask: pip install 'shortgen[cluster]'") from None
    return distributed


@dataclass(frozen=True)
class Scheduler:
    address: str | None  # None: a local cluster
    workers: int

    @classmethod
    def parse(cls, text: str) -> Scheduler:
        text = text.strip()
        if text == "local" or text.startswith("local:"):
            n = text.partition(":")[2]
            if n and not (n.isdigit() and int(n) >= 1):
                raise SchedulerFlagError(f"--scheduler {text}: local:N takes a whole number of workers, at least 1")
            return cls(None, int(n) if n else usable_cpus())
        if "://" not in text and ":" in text:
            text = "tcp://" + text
        if not text.startswith(("tcp://", "tls://", "ws://", "wss://", "inproc://")):
            raise SchedulerFlagError(f"--scheduler {text}: expected tcp://HOST:PORT, local or local:N")
        return cls(text, 0)


def environment() -> dict:
    """What a worker must share with the client: shortgen, the bundled fonts and the speech engine."""
    from .. import __version__
    from ..settings import Settings
    from ..speech.narrate import EspeakEngine

    fonts = Settings().fonts_dir
    digest = sorted((p.name, p.stat().st_size) for p in fonts.glob("*.ttf")) if fonts.is_dir() else []
    return {"shortgen": __version__, "fonts": digest, "engine": EspeakEngine().id}


_checked: dict | None = None


def _check_worker(expected: dict) -> None:
    """On a worker's first task: the same shortgen, fonts and speech engine as the client, or a clear error."""
    global _checked
    if _checked is None:
        _checked = environment()
        _usual_malloc()
    for what in ("shortgen", "engine", "fonts"):
        if _checked[what] != expected[what]:
            import socket

            mine, theirs = _checked[what], expected[what]
            if what == "fonts":
                mine, theirs = f"{len(mine)} font files", f"{len(theirs)}"
            raise ClusterError(
                f"worker on {socket.gethostname()}: {what} {mine}, the client has {theirs}:"
                " install the same shortgen on every worker"
            )


def _usual_malloc() -> None:
    """Undo Dask's MALLOC_TRIM_THRESHOLD_=65536 in this worker and the encoders it starts. glibc then
    stops raising its mmap threshold as big blocks come and go, so every frame buffer and audio array is
    mapped and unmapped afresh: measured on a 4-part series, 31 s of system time against 10 s, and the
    cluster 47% slower than the process pool. The thresholds are set where glibc's own dynamic ones end up."""
    from ..settings import keep_freed_memory

    if os.environ.pop("MALLOC_TRIM_THRESHOLD_", None) is not None:
        keep_freed_memory()


def render_part(path: str, layer: dict, expected: dict, token: str) -> tuple[Outcome, dict[str, bytes]]:
    """A cluster task: render one part. Returns its Outcome and, where this worker cannot see the output
    folder, the set's files for the client to publish."""
    from distributed import get_worker

    from .batch import _real_encoder, _real_engine, _render_one

    try:
        worker = get_worker()
    except ValueError:  # called outside a worker (a test): no progress to send
        worker = None

    def sink(ev: dict) -> None:
        if worker is not None:
            worker.log_event(PROGRESS, ev)

    try:
        _check_worker(expected)
    except ClusterError as e:
        return Outcome(path, Path(path).stem, False, error=str(e), exit_code=int(e.exit_code)), {}
    out = Path(layer["output_dir"])
    try:
        shared = (out / TOKEN).read_text() == token
    except OSError:
        shared = False
    if shared:
        return _render_one(path, layer, _real_engine, _real_encoder, sink), {}
    with tempfile.TemporaryDirectory(prefix="shortgen-part-") as private:
        outcome = _render_one(path, {**layer, "output_dir": private}, _real_engine, _real_encoder, sink)
        files: dict[str, bytes] = {}
        if outcome.ok:
            folder = Path(outcome.out_dir)
            files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
            outcome.out_dir = str(out / folder.name)
        return outcome, files


def _publish(out_dir: Path, files: dict[str, bytes], cache_dir: Path) -> None:
    """A set returned by a worker, put in place as one (outputs.publish), under the part's lock."""
    from ..cache import Cache, atomic_write_bytes
    from ..publish import outputs

    cache = Cache(cache_dir)
    with cache.locked(out_dir):
        outputs.recover(out_dir)
        outputs.clear_staging(out_dir)
        staging = outputs.staging_dir(cache.tmp_dir, out_dir)
        try:
            for name, data in files.items():
                atomic_write_bytes(staging / name, data)
            outputs.carry_over(out_dir, staging, set(), set(files) | {".lock"})
            outputs.publish(staging, out_dir)
        finally:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)


def connect(spec: Scheduler, timeout_s: float = CONNECT_TIMEOUT_S):
    """A Dask client: to the scheduler at `spec.address`, or to a new local cluster of worker processes."""
    distributed = _distributed()
    if spec.address is None:
        cluster = distributed.LocalCluster(
            n_workers=spec.workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
        )
        return distributed.Client(cluster)
    _refused(spec.address)
    try:
        return distributed.Client(spec.address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError):
        raise ClusterError(f"scheduler {spec.address} did not answer within {timeout_s:g} s") from None


def _refused(address: str) -> None:
    """Fail at once where nothing listens at a tcp:// address (the client would wait out its timeout)."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    try:
        u = urlsplit(address)
        host, port = u.hostname, u.port
    except ValueError:
        raise SchedulerFlagError(f"--scheduler {address}: expected tcp://HOST:PORT") from None
    if not host or not port:
        raise SchedulerFlagError(f"--scheduler {address}: expected tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except ConnectionRefusedError:
        raise ClusterError(f"scheduler {address} refused the connection: no scheduler listens there") from None
    except socket.gaierror:
        raise ClusterError(f"scheduler {address}: no such host {host!r}") from None
    except OSError:
        pass  # no answer yet: the client's own timeout decides


def render_many(paths: list[Path], layer: dict, spec: Scheduler, sink=None, client=None) -> list[Outcome]:
    """Render parts on a Dask cluster; the same Outcomes, progress events and summary as batch.render_many.
    A part whose task fails (its worker lost more often than Dask retries) is a failed Outcome. Scripts,
    their media and the cache must be at the same paths on every worker; the outputs need not be."""
    from ..script.load import load_episode

    own = client is None
    client = client or connect(spec)
    tokens: list[Path] = []
    try:
        if sink:
            client.subscribe_topic(PROGRESS, lambda event: sink(event[1]))
        expected = environment()
        cache_dir = Path(layer.get("cache_dir") or _default_cache()).resolve()
        base = layer | {"cache_dir": str(cache_dir)}
        futures: list = []
        early: dict[int, Outcome] = {}
        made: dict[Path, str] = {}
        for i, p in enumerate(paths):
            try:  # where the part's files go, resolved here: a worker's working folder is not ours
                out = load_episode(p, layer).settings.output_dir.resolve()
            except ShortgenError:
                out = Path(layer.get("output_dir") or _default_output()).resolve()  # the task reports the error
            try:
                if out not in made:  # one token per output folder, which several parts share
                    made[out] = secrets.token_hex(16)
                    out.mkdir(parents=True, exist_ok=True)
                    (out / TOKEN).write_text(made[out])
                    tokens.append(out / TOKEN)
                token = made[out]
            except OSError as e:
                early[i] = Outcome(str(p), Path(p).stem, False, error=f"{out}: {e.strerror or e}", exit_code=1)
                futures.append(None)
                continue
            args = (str(Path(p).resolve()), base | {"output_dir": str(out)}, expected, token)
            futures.append(client.submit(render_part, *args, pure=False, key=f"part-{Path(p).stem}-{secrets.token_hex(4)}"))
        outcomes = []
        t0 = time.monotonic()
        for i, (p, f) in enumerate(zip(paths, futures)):
            if f is None:
                outcomes.append(early[i])
                continue
            try:
                outcome, files = f.result()
            except Exception as e:  # noqa: BLE001 - a task Dask gave up on (KilledWorker) or could not run
                why = f"{p}: the cluster could not render it ({str(e).strip() or 'its worker was lost'})"
                outcome, files = Outcome(str(p), Path(p).stem, False, error=why, exit_code=1), {}
            if outcome.ok and files:
                _publish(Path(outcome.out_dir), files, cache_dir)
            outcome.seconds = outcome.seconds or time.monotonic() - t0
            outcomes.append(outcome)
        return outcomes
    finally:
        for t in tokens:
            t.unlink(missing_ok=True)
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _default_output() -> Path:
    from ..settings import Settings

    return Settings().output_dir


def _default_cache() -> Path:
    from ..settings import Settings

    return Settings().cache_dir
