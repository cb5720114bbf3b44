"""
Output formatting: tables for people (:mod:`netmem_probe.report.table`),
JSON and JSON Lines for programs.  Nothing here touches drgn; commands hand
over plain records.
"""

import json
import sys
from typing import Any, Dict, Optional, Sequence, TextIO

__all__ = (
    "quantity",
    "emit_json",
    "emit_json_line",
    "emit_table",
    "human_bytes",
    "human_duration",
    "human_seconds",
    "hexaddr",
)


def hexaddr(value: Optional[int]) -> Optional[str]:
    """Addresses are hex strings in JSON; None stays None."""
    return None if value is None else f"{value:#x}"


def human_bytes(value: Optional[int]) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_seconds(value: Optional[int]) -> str:
    if value is None:
        return "-"
    s = int(value)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def quantity(n: int, noun: str) -> str:
    """``n`` and the noun, singular for one: "1 pool", "0 pools", "3 pages"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def human_duration(seconds: float) -> str:
    """A run's duration: milliseconds below a second, so a fast one is not "0.0s"."""
    if seconds < 0.001:
        return "under 1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def emit_table(
    rows: Sequence[Dict[str, Any]],
    columns: Sequence[str],
    headers: Optional[Sequence[str]] = None,
    out: Optional[TextIO] = None,
) -> None:
    """
    Print ``rows`` as a table of ``columns`` (keys of each row), numbers
    right-aligned; a command's own tables use :mod:`netmem_probe.report.table`
    and its options instead.
    """
    from netmem_probe.report.table import Column, Table

    def number(key: str) -> bool:
        values = [row.get(key) for row in rows if row.get(key) is not None]
        return bool(values) and all(isinstance(v, int) for v in values)

    titles = headers or [c.upper() for c in columns]
    Table([Column(c, header=h, number=number(c)) for c, h in zip(columns, titles)], out=out).print(
        [dict(row) for row in rows]
    )


def emit_json(value: Any, out: Optional[TextIO] = None) -> None:
    (out or sys.stdout).write(json.dumps(value, indent=2) + "\n")


def emit_json_line(value: Any, out: Optional[TextIO] = None) -> None:
    """One JSON object per line (JSON Lines), flushed so streams stay live."""
    stream = out or sys.stdout
    stream.write(json.dumps(value, separators=(",", ":")) + "\n")
    stream.flush()
