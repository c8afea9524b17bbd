"""How far ahead of x264 the pictures are sent. ffmpeg queues what x264 has not taken yet in its
threads' queues, up to some 16 pictures (3 MB each) when x264 is the slower: paced at its own delay and
PACE_SPARE pictures more, a moving segment's encoder peaked at 135-160 MB PSS instead of 180-200 (Part 4
as shipped, cold), in the same time."""

from __future__ import annotations

import threading

# Pictures sent ahead of what x264 has encoded, beyond its own delay (its lookahead and a picture per
# thread: 8 measured at 2 threads, fed slower than it encodes)
PACE_SPARE = 4
PROGRESS_S = 0.02  # how often ffmpeg reports its count (a picture of a moving segment takes ~30 ms)
PACE_WAIT_S = 0.25  # a count that does not come in this long: the delay was underestimated, allow more


def x264_delay(args: list[str]) -> int:
    """About how many pictures x264 holds before it writes one: its lookahead, a picture per thread."""
    params = dict(kv.split("=", 1) for kv in args[args.index("-x264-params") + 1].split(":") if "=" in kv)
    threads = int(args[args.index("-threads") + 1]) if "-threads" in args else 1
    return int(params.get("rc-lookahead", 10)) + max(threads, 1) + 1


class Pace:
    """The count of pictures x264 has encoded, read from ffmpeg's progress lines by a thread of its own,
    and a wait before each picture sent until fewer than `ahead` are on their way."""

    def __init__(self, progress, ahead: int):
        self.ahead, self.sent, self.done = ahead, 0, 0
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(progress,), daemon=True, name="ffmpeg-progress").start()

    def _read(self, progress) -> None:
        for line in progress:
            if line.startswith(b"frame=") and line[6:].strip().isdigit():
                with self._changed:
                    self.done = int(line[6:])
                    self._changed.notify_all()
        with self._changed:  # ffmpeg has ended: nothing to wait for
            self.done = 1 << 60
            self._changed.notify_all()

    def wait(self) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.sent - self.done < self.ahead, timeout=PACE_WAIT_S):
                self.ahead += 2
        self.sent += 1
