"""
Facts derived once per Program: offsets, struct decoders, kernel constants.

drgn's helpers keep such facts in ``prog.cache`` under their own keys; these
do the same, each under its function's dotted name, so no two helpers (nor a
helper and drgn itself, which keeps e.g. ``"POISON_POINTER_DELTA"`` there)
share a key.
"""

import functools
from typing import Callable, TypeVar

from drgn import Program

__all__ = ("per_program",)

T = TypeVar("T")


def per_program(compute: Callable[[Program], T]) -> Callable[[Program], T]:
    """
    Decorate ``compute(prog)`` to run once per Program: its result is kept
    in ``prog.cache`` under ``"<module>.<function>"``.  An exception is not
    kept: the next call computes again.
    """
    key = f"{compute.__module__}.{compute.__qualname__}"

    @functools.wraps(compute)
    def cached(prog: Program) -> T:
        try:
            return prog.cache[key]
        except KeyError:
            pass
        value = prog.cache[key] = compute(prog)
        return value

    return cached
