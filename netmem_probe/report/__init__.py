"""
Output formatting: tables for people (tabulate), JSON and JSON Lines for
programs.  Nothing here touches drgn; commands hand over plain records.
"""

import json
import sys
from typing import Any, Dict, List, Optional, Sequence, TextIO

from tabulate import tabulate

__all__ = (
    "emit_json",
    "emit_json_line",
    "emit_table",
    "human_bytes",
    "human_seconds",
    "hexaddr",
    "or_dash",
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


def or_dash(value: Any) -> Any:
    return "-" if value is None or value == "" else value


def emit_table(
    rows: Sequence[Dict[str, Any]],
    columns: Sequence[str],
    headers: Optional[Sequence[str]] = None,
    out: Optional[TextIO] = None,
) -> None:
    """Print ``rows`` as a table of ``columns`` (keys of each row)."""
    data: List[List[Any]] = [[or_dash(row.get(col)) for col in columns] for row in rows]
    text = tabulate(
        data,
        headers=list(headers or [c.upper() for c in columns]),
        tablefmt="simple",
        disable_numparse=True,
    )
    (out or sys.stdout).write(text + "\n")


def emit_json(value: Any, out: Optional[TextIO] = None) -> None:
    (out or sys.stdout).write(json.dumps(value, indent=2) + "\n")


def emit_json_line(value: Any, out: Optional[TextIO] = None) -> None:
    """One JSON object per line (JSON Lines), flushed so streams stay live."""
    stream = out or sys.stdout
    stream.write(json.dumps(value, separators=(",", ":")) + "\n")
    stream.flush()
