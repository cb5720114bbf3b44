"""
``netmem-probe pools --watch``: a refreshing view of the pools of a live kernel.

Each refresh reads every pool again (one read per pool, as ``pools`` does)
and its stats counters, and shows what moved since the previous refresh:
the in-flight count's change, and per-second rates of the hold and release
counters and of the ``page-pool-stats-get`` counters.  A pool whose in-flight
count has not fallen in any interval and has risen overall, over at least
:data:`GROWING_INTERVALS` intervals, is flagged as growing: pages go out and
do not come back.
"""

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import click
import drgn

from netmem_probe.context import Target
from netmem_probe.kernel.page_pool import STAT_NAMES, PagePoolInfo, PagePoolScanner
from netmem_probe.report import quantity
from netmem_probe.report.table import Column, Table

__all__ = ("GROWING_INTERVALS", "watch_pools")

#: Intervals a pool's in-flight count must be watched rising (never falling)
#: before it is flagged: one rise is ordinary traffic.
GROWING_INTERVALS = 2
U32 = 1 << 32
# Table columns: (header, counter) for the rates shown; --json has them all.
RATE_COLUMNS = (
    ("HOLD/s", "hold"),
    ("RELEASE/s", "release"),
    ("FAST/s", "alloc-fast"),
    ("SLOW/s", "alloc-slow"),
    ("CACHED/s", "recycle-cached"),
    ("RING/s", "recycle-ring"),
    ("RELEASED/s", "recycle-released-refcnt"),
)

Select = Callable[[PagePoolInfo], bool]
Order = Callable[[List[PagePoolInfo]], List[PagePoolInfo]]


@dataclass
class _History:
    """What one pool did since it was first seen."""

    first_inflight: int
    intervals: int = 0
    fell: bool = False

    def growing(self, inflight: int) -> bool:
        return (
            self.intervals >= GROWING_INTERVALS and not self.fell and inflight > self.first_inflight
        )


@dataclass
class _Sample:
    info: PagePoolInfo
    counters: Dict[str, Optional[int]] = field(default_factory=dict)


def _sample(target: Target, select: Select, order: Order) -> List[_Sample]:
    """Every selected pool with its counters: hold, release and the stats."""
    scanner = PagePoolScanner(target.prog, target.problems)
    samples = []
    for info in order([i for i in scanner.pools() if select(i)]):
        stats = scanner.stats(info) or dict.fromkeys(STAT_NAMES)
        samples.append(_Sample(info, {"hold": info.hold, "release": info.release, **stats}))
    return samples


def _delta(name: str, now: Optional[int], before: Optional[int]) -> Optional[int]:
    if now is None or before is None:
        return None
    # hold and release are u32 counters that wrap; the stats are u64 sums.
    return (now - before) % U32 if name in ("hold", "release") else now - before


def _record(
    sample: _Sample,
    previous: Optional[_Sample],
    elapsed: Optional[float],
    history: _History,
    refresh: int,
) -> Dict[str, Any]:
    """A pool in one refresh: its counters, their deltas and rates since the last."""
    info = sample.info
    rec: Dict[str, Any] = {
        "refresh": refresh,
        "id": info.id,
        "state": info.state,
        "detached": info.detached,
        "netdev": info.netdev.name if info.netdev else None,
        "inflight": info.inflight,
        "counters": sample.counters,
    }
    if previous is None or not elapsed:
        rec.update({"interval": None, "inflight-delta": None, "deltas": None, "rates": None})
    else:
        deltas = {
            name: _delta(name, value, previous.counters.get(name))
            for name, value in sample.counters.items()
        }
        rec.update(
            {
                "interval": round(elapsed, 6),
                "inflight-delta": info.inflight - previous.info.inflight,
                "deltas": deltas,
                "rates": {
                    name: None if d is None else round(d / elapsed, 3) for name, d in deltas.items()
                },
            }
        )
    rec["growing"] = history.growing(info.inflight)
    return rec


def _rate(name: str) -> Callable[[Dict[str, Any]], Optional[float]]:
    def get(rec: Dict[str, Any]) -> Optional[float]:
        return None if rec["rates"] is None else rec["rates"][name]

    return get


def _growing_color(rec: Dict[str, Any]) -> Optional[str]:
    return "red" if rec["growing"] else None


COLUMNS = [
    Column("id", number=True),
    Column(
        "state",
        cell=lambda r: r["state"] + (",detached" if r["detached"] else ""),
        color=lambda r: "yellow" if r["detached"] else None,
    ),
    Column("netdev"),
    Column("inflight", number=True),
    Column("inflight-delta", header="CHANGE", number=True, show=lambda d: f"{d:+d}" if d else "0"),
    *(
        Column(name + "/s", header=header, get=_rate(name), number=True, show=lambda r: f"{r:.1f}")
        for header, name in RATE_COLUMNS
    ),
    Column(
        "growing",
        header="TREND",
        cell=lambda r: "GROWING" if r["growing"] else None,
        color=_growing_color,
    ),
]


def _print_frame(records: List[Dict[str, Any]], header: str, table: Table, tty: bool) -> None:
    if tty:
        click.clear()
    click.echo(header)
    Table(COLUMNS, header=table.header, width=table.width, color=table.color).print(records)
    growing_ids = [str(r["id"]) for r in records if r["growing"]]
    total = sum(r["inflight"] for r in records)
    summary = f"{quantity(len(records), 'pool')}, {quantity(total, 'page')} in flight"
    if growing_ids:
        summary += f"; in flight only grows in pool {', '.join(growing_ids)}"
    click.echo(summary)


def watch_pools(
    target: Target,
    interval: float,
    iterations: Optional[int],
    select: Select,
    order: Order,
    as_json: bool,
    table: Table,
) -> int:
    """
    Refresh every ``interval`` seconds, ``iterations`` times (None: until
    Ctrl-C); a table per refresh, or with ``as_json`` one JSON object per
    pool and refresh (JSON Lines).
    """
    prog = target.prog
    if not prog.flags & drgn.ProgramFlags.IS_LIVE:
        raise click.UsageError(
            "--watch needs a live kernel: a core dump or fixture does not change"
        )
    if interval <= 0:
        raise click.BadParameter(
            "the interval must be a positive number of seconds", param_hint="--watch"
        )
    tty = sys.stdout.isatty() and not as_json
    previous: Dict[Tuple[int, Optional[int]], Tuple[_Sample, float]] = {}
    histories: Dict[Tuple[int, Optional[int]], _History] = {}
    start = time.monotonic()
    refresh = 0
    try:
        while iterations is None or refresh < iterations:
            refresh += 1
            samples = _sample(target, select, order)
            now = time.monotonic()
            records = []
            current = {}
            for sample in samples:
                # A pool freed and another made at its address is a new pool.
                key = (sample.info.address, sample.info.id)
                before = previous.get(key)
                history = histories.get(key) or _History(sample.info.inflight)
                if before is not None:
                    history.intervals += 1
                    history.fell |= sample.info.inflight < before[0].info.inflight
                histories[key] = history
                current[key] = (sample, now)
                records.append(
                    _record(
                        sample,
                        before[0] if before else None,
                        now - before[1] if before else None,
                        history,
                        refresh,
                    )
                )
            previous = current
            if as_json:
                for rec in records:
                    click.echo(json.dumps(rec, separators=(",", ":")))
            else:
                _print_frame(
                    records,
                    f"refresh {refresh}, every {interval:g}s [{target.describe()}] (Ctrl-C quits)",
                    table,
                    tty,
                )
                if not tty:
                    click.echo()
            if iterations is not None and refresh >= iterations:
                break
            time.sleep(max(0.0, start + refresh * interval - time.monotonic()))
    except KeyboardInterrupt:
        pass
    return target.finish(findings=False)
