"""Progress of long scans on stderr, only when stderr is a terminal."""

import sys
import time
from typing import Optional, TextIO

__all__ = ("Progress",)


class Progress:
    """
    Call with (done, total) as work advances; a line appears on stderr once
    the work has run for ``delay`` seconds, if stderr is a terminal, with the
    rate and the time left (counted from the last call with ``done`` 0), and
    is erased by :meth:`close`.  With ``unit``
    "bytes" the counts are sizes (MiB, GiB).
    """

    def __init__(
        self, what: str, unit: str, delay: float = 1.0, stream: Optional[TextIO] = None
    ) -> None:
        self.what = what
        self.unit = unit
        self.delay = delay
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done == 0:  # the work (re)starts: rate and time left count from now
            self.start = now
        if now - self.start < self.delay or now - self.last < 0.2:
            return
        self.last = now
        percent = 100 * done // total if total else 100
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.unit == "bytes":
            counts = f"{_size(done)} of {_size(total)}"
            speed = f"{_size(rate)}/s"
        else:
            counts = f"{_count(done)} of {_count(total)} {self.unit}"
            speed = f"{_count(int(rate))} {self.unit}/s"
        left = f", {_duration((total - done) / rate)} left" if rate > 0 and total > done else ""
        self.stream.write(f"\r{self.what}: {percent}% ({counts}, {speed}{left})\033[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _count(n: int) -> str:
    if n >= 10**6:
        return f"{n / 10**6:.1f}M"
    if n >= 10**4:
        return f"{n / 10**3:.0f}k"
    return str(n)


def _size(n: float) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
