"""Timing shared by the benchmarks that time functions of a Program."""

import time
from typing import Callable, Tuple, TypeVar

import drgn

T = TypeVar("T")


def timed(fn: Callable[[drgn.Program], T], prog: drgn.Program, repeat: int) -> Tuple[float, T]:
    """The best of ``repeat`` runs of ``fn`` on ``prog``, each with a cold cache, and its result."""
    best = float("inf")
    for _ in range(repeat):
        prog.cache.clear()
        start = time.perf_counter()
        result = fn(prog)
        best = min(best, time.perf_counter() - start)
    return best, result
