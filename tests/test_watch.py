"""
``pools --watch``: a refreshing view of a live kernel's pools.  The live
kernel is a fake world seen through :class:`FaultyMemory` as a live Program,
whose ``on_read`` hooks move the pools' counters each time a refresh reads
them, as traffic would between two refreshes.
"""

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, Dict, List, Optional

import pytest
from conftest import FIXTURES, run_cli

from netmem_probe.cli import main
from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World

INTERVAL = "0.01"


def _world() -> World:
    w = World("linux-7.3")
    eth0 = w.init_net.netdev("eth0", driver="virtio_net")
    for queue in range(3):
        pool = FakePagePool(w, netdev=eth0, napi_id=8200 + queue, queue=queue, flags=1)
        pool.alloc_pages(5, "out")
    w.commit()
    return w


def _nic_pools(w: World) -> List[FakePagePool]:
    return [p for p in w.pools if p.listed_on is not None]


def _traffic(
    fm: FaultyMemory,
    pool: FakePagePool,
    *,
    hold: int,
    release: int,
    alloc_fast: int = 0,
    reads: Optional[List[int]] = None,
) -> None:
    """After each read of the pool (one per refresh), its counters move."""
    at_hold = pool.obj.addr_of("pages_state_hold_cnt")
    at_release = pool.obj.addr_of("pages_state_release_cnt")
    at_fast = pool.obj.addr_of("alloc_stats.fast")

    def move(fm: FaultyMemory, address: int, count: int) -> None:
        if address <= at_hold < address + count:
            if reads is not None:
                reads.append(address)
            fm.write_word(at_hold, fm.peek_word(at_hold, 4) + hold, 4)
            fm.write_word(at_release, fm.peek_word(at_release, 4) + release, 4)
            fm.write_word(at_fast, fm.peek_word(at_fast) + alloc_fast)

    fm.on_read.append(move)


def _records(out: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_watch_shows_deltas_rates_and_the_pool_that_only_grows():
    w = _world()
    fm = FaultyMemory(w)
    leaking, steady, idle = _nic_pools(w)
    reads: List[int] = []
    _traffic(fm, leaking, hold=3, release=1, alloc_fast=30, reads=reads)
    _traffic(fm, steady, hold=4, release=4)
    result = run_cli(
        "pools", "--watch", INTERVAL, "-n", "4", "--json", program=fm.program(live=True)
    )
    assert result.code == 0, result
    records = _records(result.out)
    by_pool = {p.id: [r for r in records if r["id"] == p.id] for p in (leaking, steady, idle)}
    assert len(reads) == 4  # one read of the pool per refresh
    assert [r["refresh"] for r in by_pool[leaking.id]] == [1, 2, 3, 4]
    first = by_pool[leaking.id][0]
    assert first["deltas"] is None and first["rates"] is None and not first["growing"]
    for rec in by_pool[leaking.id][1:]:
        assert rec["deltas"]["hold"] == 3 and rec["deltas"]["release"] == 1
        assert rec["deltas"]["alloc-fast"] == 30 and rec["deltas"]["recycle-cached"] == 0
        assert rec["inflight-delta"] == 2
        assert rec["rates"]["hold"] == pytest.approx(3 / rec["interval"], rel=1e-3)
        assert rec["rates"]["alloc-fast"] == pytest.approx(30 / rec["interval"], rel=1e-3)
        assert rec["interval"] > 0
    assert [r["growing"] for r in by_pool[leaking.id]] == [False, False, True, True]
    assert [r["inflight"] for r in by_pool[leaking.id]] == [5, 7, 9, 11]
    for rec in by_pool[steady.id][1:]:
        assert rec["deltas"]["hold"] == 4 and rec["inflight-delta"] == 0
        assert not rec["growing"]
    assert all(r["deltas"]["hold"] == 0 for r in by_pool[idle.id][1:])


def test_watch_table_marks_the_growing_pool():
    w = _world()
    fm = FaultyMemory(w)
    leaking = _nic_pools(w)[0]
    _traffic(fm, leaking, hold=2, release=0)
    result = run_cli("pools", "--watch", INTERVAL, "-n", "3", program=fm.program(live=True))
    assert result.code == 0, result
    frames = [f for f in result.out.split("\n\n") if f.strip()]
    assert len(frames) == 3
    assert frames[0].startswith("refresh 1, every 0.01s [live kernel (racy snapshot)]")
    last = frames[-1].splitlines()
    row = next(line for line in last if line.split()[0] == str(leaking.id))
    assert row.split()[4] == "+2" and row.endswith("GROWING")
    assert last[-1].endswith(f"in flight only grows in pool {leaking.id}")
    assert "GROWING" not in frames[1]
    assert "HOLD/s" in last[1] and "CACHED/s" in last[1]


def test_ctrl_c_ends_the_watch_cleanly():
    w = _world()
    fm = FaultyMemory(w)
    pool = _nic_pools(w)[0]
    reads: List[int] = []
    _traffic(fm, pool, hold=1, release=0, reads=reads)

    def interrupt(fm: FaultyMemory, address: int, count: int) -> None:
        if len(reads) == 3:
            raise KeyboardInterrupt

    fm.on_read.append(interrupt)
    result = run_cli("pools", "--watch", INTERVAL, program=fm.program(live=True))
    assert result.code == 0, result
    assert result.err == ""
    assert result.out.count("refresh ") == 2


@pytest.mark.parametrize(
    "args",
    [
        ["-f", str(FIXTURES / "linux-7.3-mixed"), "pools", "--watch"],
        ["-f", str(FIXTURES / "linux-6.12-mixed"), "pools", "--watch", "1", "--json"],
    ],
)
def test_watch_refuses_a_core_dump(args):
    result = run_cli(*args)
    assert result.code == 2 and result.out == ""
    assert result.err == (
        "netmem-probe: error: --watch needs a live kernel: a core dump or "
        "fixture does not change (see --help)\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--watch", "0"],
        ["--watch", "-1"],
        ["-n", "2"],
        ["--watch", "1", "-n", "0"],
        ["--watch", "soon"],
    ],
)
def test_watch_arguments_are_checked(args):
    result = run_cli("pools", *args, program=FaultyMemory(_world()).program(live=True))
    assert result.code == 2, result
    assert result.err.startswith("netmem-probe: error: ") and result.err.count("\n") == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_screen_refreshes_and_the_growing_pool_is_red():
    w = _world()
    fm = FaultyMemory(w)
    leaking = _nic_pools(w)[0]
    _traffic(fm, leaking, hold=2, release=0)
    screen = _Terminal()
    with redirect_stdout(screen), redirect_stderr(io.StringIO()):
        code = main(["pools", "--watch", INTERVAL, "-n", "3"], program=fm.program(live=True))
    assert code == 0
    frames = screen.getvalue().split("\x1b[2J\x1b[1;1H")  # click.clear()
    assert len(frames) == 4 and frames[0] == ""
    red = [line for line in frames[-1].splitlines() if "\x1b[31m" in line]
    assert len(red) == 1 and red[0].split()[0] == str(leaking.id)
    assert "\x1b[31mGROWING\x1b[0m" in red[0]
    assert "\x1b[31m" not in frames[2]
