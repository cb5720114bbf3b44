"""Progress of long scans on stderr, only when stderr is a terminal."""

import sys
import time
from typing import Optional, TextIO

__all__ = ("Progress",)


class Progress:
    """
    Call with (done, total) as work advances; a line appears on stderr once
    the work has run for ``delay`` seconds, if stderr is a terminal, and is
    erased by :meth:`close`.
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
        if now - self.start < self.delay or now - self.last < 0.2:
            return
        self.last = now
        percent = 100 * done // total if total else 100
        self.stream.write(
            f"\r{self.what}: {percent}% ({_count(done)} of {_count(total)} {self.unit})\033[K"
        )
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
