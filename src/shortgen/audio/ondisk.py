"""An array kept in its .npy file and read a span at a time. The mix reads the bed and the narrations
window by window: held whole, they were 42 MB of a cold render's peak (Part 4 as shipped)."""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np


class OnDisk:
    """A C-ordered 1-D (n,) or 2-D (rows, n) array in a .npy file. Indexing takes a span of the last
    axis (`a[i:j]`, `a[:, i:j]`) and reads just those bytes; nothing else is supported. The file is
    held open while the object lives: a cache cleaned meanwhile takes its name, not its samples."""

    def __init__(self, path: Path):
        mapped = np.load(path, mmap_mode="r")  # the header only: no sample is read
        if mapped.ndim not in (1, 2) or not mapped.flags.c_contiguous:
            raise ValueError(f"{path}: a {mapped.ndim}-D array, expected 1-D or 2-D in C order")
        self.path, self.shape, self.dtype, self._offset = path, mapped.shape, mapped.dtype, mapped.offset
        del mapped
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __getitem__(self, key) -> np.ndarray:
        span = key[-1] if isinstance(key, tuple) else key
        whole = isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)
        if not isinstance(span, slice) or span.step not in (None, 1) or (len(self.shape) == 2) != whole:
            raise TypeError(f"OnDisk takes a span of the last axis, not {key!r}")
        n = self.shape[-1]
        i, j, _ = span.indices(n)
        j = max(i, j)
        size = self.dtype.itemsize
        if len(self.shape) == 1:
            return self._read(i * size, (j - i) * size)
        return np.stack([self._read((r * n + i) * size, (j - i) * size) for r in range(self.shape[0])])

    def _read(self, at: int, nbytes: int) -> np.ndarray:
        data = os.pread(self._fd, nbytes, self._offset + at)  # no shared file position: threads may read
        if len(data) != nbytes:
            raise OSError(f"{self.path}: {len(data)} of {nbytes} bytes at {self._offset + at}: the file is cut short")
        return np.frombuffer(data, self.dtype).copy()  # writable, as a slice read from memory would be
