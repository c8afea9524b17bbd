"""A content-addressed cache: one file per entry, named by a hash of the entry's real inputs.

Entries appear only by atomic rename, so a killed render leaves at worst a temporary, never a poisoned
entry. Temporaries live in one folder, `tmp/`, each named after the process that writes it; the next
run removes those whose process is gone (`sweep`), so an interrupted render cleans up after itself.
Concurrent renders of the same entry both write complete files; the last rename wins. Locks live here
too (`locks/`), never in the user's output folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DiskFullError, disk_full

KINDS = ("narration", "frames", "segments")
STALE_TMP_S = 6 * 3600  # a temporary this old is removed even if a process with its pid runs


def key_of(*parts) -> str:
    """A stable hash of JSON-able inputs (paths and bytes are hashed by content)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, bytes):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Stats:
    """Counts real work done, so tests can prove what a run skipped without timing it."""

    tts: int = 0
    draws: int = 0
    encodes: int = 0
    pictures: int = 0  # distinct pictures through the video encoder
    hits: dict = field(default_factory=lambda: {k: 0 for k in KINDS})

    def as_dict(self) -> dict:
        return {"tts": self.tts, "draws": self.draws, "encodes": self.encodes, "pictures": self.pictures, "hits": dict(self.hits)}


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def tmp_path(self, name: str) -> Path:
        """A fresh temporary path, owned by this process (its pid and machine lead the name, for `sweep`)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{owner()}-{time.monotonic_ns()}-{name}"

    def lock_path(self, what: Path | str) -> Path:
        """Where the lock for `what` (an output folder, say) lives: in the cache, keyed by its real path."""
        d = self.root / "locks"
        d.mkdir(parents=True, exist_ok=True)
        # a name ('narration:<key>') is the same on every machine; a folder is named by its real path
        name = what if isinstance(what, str) and ":" in what else str(Path(what).resolve())
        return d / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.lock"

    @contextmanager
    def locked(self, what: Path | str) -> Iterator[None]:
        """Hold the lock for `what` (a second render of the same part waits, then finds it done)."""
        import fcntl

        with open(self.lock_path(what), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def sweep(self) -> int:
        """Remove temporaries left by processes that are gone (or that are very old). Returns how many."""
        n = 0
        try:
            entries = list(os.scandir(self.tmp_dir))
        except OSError:
            return 0
        now = time.time()
        for e in entries:
            owner = e.name.split("-", 1)[0]
            try:
                old = now - e.stat(follow_symlinks=False).st_mtime > STALE_TMP_S
            except OSError:
                continue
            if not old and owner_alive(owner):
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                try:
                    os.unlink(e.path)
                except OSError:
                    continue
            n += 1
        return n

    def has(self, *paths: Path) -> bool:
        """True if every entry exists; a hit refreshes their mtime, which `clean --older-than` goes by."""
        if not all(p.is_file() and p.stat().st_size > 0 for p in paths):
            return False
        for p in paths:
            try:
                os.utime(p)
            except OSError:
                pass
        return True

    @contextmanager
    def writing(self, final: Path) -> Iterator[Path]:
        """Yield a temporary path (in `tmp/` for an entry of this cache, else beside `final`); rename it
        into place only if the block succeeds."""
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_relative_to(self.root):
            tmp = self.tmp_path(f"{final.stem}{final.suffix}")
        else:
            tmp = final.with_name(f".{final.name}.tmp{owner()}-{time.monotonic_ns()}{final.suffix}")
        try:
            yield tmp
            os.replace(tmp, final)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFullError(disk_full(final)) from None
            raise
        finally:
            if tmp.exists():
                tmp.unlink()

    def clean(self, max_age_days: float | None = None) -> tuple[int, int]:
        """Delete stale temporaries and, with max_age_days, entries not used for that long. Returns (files, bytes)."""
        n = size = 0
        if not self.root.exists():
            return 0, 0
        n += self.sweep()
        now = time.time()
        for p in self.root.rglob("*"):
            if not p.is_file():
                continue
            st = p.stat()
            stale_tmp = ".tmp" in p.name and now - st.st_mtime > 3600
            old = max_age_days is None or now - st.st_mtime > max_age_days * 86400
            if stale_tmp or old:
                n, size = n + 1, size + st.st_size
                p.unlink(missing_ok=True)
        if max_age_days is None:
            shutil.rmtree(self.root, ignore_errors=True)
        return n, size


def _host_tag() -> str:
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


HOST = _host_tag()  # a cache shared by several machines (a cluster's workers) names each one's temporaries


def owner() -> str:
    """Who owns a temporary: this process on this machine ('1234.ab12cd34')."""
    return f"{os.getpid()}.{HOST}"


def owner_alive(tag: str) -> bool:
    """Whether the owner of a temporary may still be at work: a process of this machine that runs, or any
    process of another machine (its pid means nothing here: only age lets its leftovers go)."""
    pid, _, host = tag.partition(".")
    if not pid.isdigit():
        return False
    if host and host != HOST:
        return True
    return process_alive(int(pid))


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs (the owner of a temporary or a staging folder)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{owner()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise DiskFullError(disk_full(path)) from None
        raise


def memory_path(folder: Path, kind: str, key) -> Path:
    """Where something learnt about a file is kept between runs, by a key of its path and stat (its ctime
    and inode change with any write or replacement, so a changed file is looked at again)."""
    return Path(folder) / f"{kind}-{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.json"


def keep(path: Path, data) -> None:
    """Write what was learnt (JSON) to `path`, atomically; a memory that cannot be written only costs the
    work next time, so a failure is dropped."""
    try:
        atomic_write_bytes(path, json.dumps(data).encode())
    except (OSError, DiskFullError):
        pass
