"""
Live targets: memory that changes while it is read.

A fake Program flagged live (``IS_LIVE``, as on ``/proc/kcore``) over a
:class:`FaultyMemory` whose ``on_read`` hooks move the kernel between two
reads: counters that tick, a pool caught mid-update, an hlist node unlinked
during the walk, pages entering the ring after the pool was read, an xa_node
mid-split, a pool freed under the reader.  Each object is read once and
validated; a record that fails is read again a few times, then flagged
inconsistent (counted, exit code 4); the output says the snapshot is racy.
"""

from typing import Callable, List

import drgn
import pytest
from conftest import run_cli

from netmem_probe.commands import COMMANDS
from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.walk import LIVE_RETRIES


def _world(pools: int = 3) -> World:
    w = World("linux-7.3")
    eth0 = w.init_net.netdev("eth0", driver="virtio_net")
    for queue in range(pools):
        pool = FakePagePool(w, netdev=eth0, napi_id=8200 + queue, queue=queue, flags=1)
        pool.alloc_pages(5, "out")
    w.commit()
    return w


def _nic_pools(w: World) -> List[FakePagePool]:
    """The pools _world() made (the world also has its per-CPU system pools)."""
    return [p for p in w.pools if p.listed_on is not None]


def _member(pool: FakePagePool, path: str) -> int:
    return pool.obj.addr_of(path)


def _covers(address: int, count: int, target: int) -> bool:
    return address <= target < address + count


def _counting(fm: FaultyMemory, target: int) -> List[int]:
    """A list whose length is the number of reads that covered ``target``."""
    hits: List[int] = []
    fm.on_read.append(lambda _, a, n: hits.append(a) if _covers(a, n, target) else None)
    return hits


def _on_read_of(fm: FaultyMemory, target: int, times: int, then: Callable[[], None]) -> None:
    """Run ``then`` after the ``times``-th read that covers ``target``."""
    hits = _counting(fm, target)
    fm.on_read.append(
        lambda _, a, n: then() if _covers(a, n, target) and len(hits) == times else None
    )


def _args(command, w: World) -> List[str]:
    """Plain arguments for any command: a pool id or a page netmem where one is wanted."""
    pool = _nic_pools(w)[-1] if _nic_pools(w) else w.pools[-1]
    args = [command.name]
    for param in command.params:
        if param.name == "as_json":
            args.append("--json")
    for param in command.params:
        if param.param_type_name == "argument":
            name = f"{param.metavar} {param.name}".upper()
            args.append(str(pool.id) if "POOL" in name else hex(pool.pages[0].netmem))
    return args


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if c.name != "layout"], ids=lambda c: c.name
)
def test_every_command_says_a_live_snapshot_is_racy(command):
    w = _world()
    live = run_cli(*_args(command, w), program=FaultyMemory(w).program(live=True))
    assert "racy snapshot" in live.out + live.err, live
    dump = run_cli(*_args(command, w), program=FaultyMemory(w).program(live=False))
    assert "racy" not in dump.out + dump.err, dump


def test_json_output_stays_json_and_the_note_goes_to_stderr():
    w = _world()
    result = run_cli("pools", "--json", program=FaultyMemory(w).program(live=True))
    assert [p["id"] for p in result.json()] == sorted(p.id for p in w.pools if p.id is not None)
    assert result.err.startswith("netmem-probe: note: read from the live kernel (racy snapshot)")


def test_table_output_says_it_once_in_its_summary():
    w = _world()
    result = run_cli("pools", program=FaultyMemory(w).program(live=True))
    assert result.out.splitlines()[-1].endswith("[live kernel (racy snapshot)]")
    assert "racy" not in result.err


def test_counters_that_move_between_reads_are_read_together():
    # Every read of a pool's hold counter is followed by the kernel taking a
    # page and giving one back: hold and release both move, in flight stays
    # 5.  A tool reading the two counters separately would see 4 or 6.
    w = _world()
    fm = FaultyMemory(w)
    hits = {}
    for pool in _nic_pools(w):
        hold, release = (
            _member(pool, "pages_state_hold_cnt"),
            _member(pool, "pages_state_release_cnt"),
        )
        hits[pool.id] = _counting(fm, hold)

        def tick(_, address, count, hold=hold, release=release):
            if _covers(address, count, hold) or _covers(address, count, release):
                fm.write_word(hold, fm.peek_word(hold, 4) + 1, 4)
                fm.write_word(release, fm.peek_word(release, 4) + 1, 4)

        fm.on_read.append(tick)
    result = run_cli("pools", "--json", program=fm.program(live=True))
    assert result.code == 0, result
    for record in result.json():
        assert record["inflight"] == (5 if record["id"] in hits else 0)
    assert all(len(h) == 1 for h in hits.values()), "each pool is read in one go, once"


@pytest.mark.parametrize("live, reads, code", [(True, 3, 0), (False, 1, 4)])
def test_a_pool_caught_mid_update_is_read_again_on_a_live_kernel(live, reads, code):
    # The first two reads see a half-written pool (its id not yet its
    # xarray index); the third a whole one.  A core dump does not change:
    # read once, the pool is reported as it is.
    w = _world()
    pool = _nic_pools(w)[1]
    fm = FaultyMemory(w)
    id_at = _member(pool, "user.id")
    pool_id = pool.id
    assert pool_id is not None
    fm.write_word(id_at, 0xFFFF, 4)
    _on_read_of(fm, id_at, 2, lambda: fm.write_word(id_at, pool_id, 4))
    hits = _counting(fm, id_at)
    result = run_cli("pools", "--json", program=fm.program(live=live))
    assert result.code == code, result
    assert len(hits) == reads
    ids = [p["id"] for p in result.json()]
    assert (pool.id in ids) == live
    assert len(ids) == len(w.pools) - (not live), "the other pools are all there"


def test_a_pool_torn_on_every_read_is_flagged_inconsistent():
    w = _world()
    pool = _nic_pools(w)[1]
    fm = FaultyMemory(w)
    id_at = _member(pool, "user.id")
    fm.write_word(id_at, 0xFFFF, 4)
    hits = _counting(fm, id_at)
    result = run_cli("pools", "--json", program=fm.program(live=True))
    assert result.code == 4
    assert len(hits) == LIVE_RETRIES
    assert (
        f"page pool at {pool.obj.addr:#x}: inconsistent after {LIVE_RETRIES} reads: "
        f"user.id 65535 does not match its xarray index {pool.id}" in result.err
    )
    assert len(result.json()) == len(w.pools) - 1


def test_a_pool_freed_under_the_reader_is_read_again():
    w = _world()
    pool = _nic_pools(w)[0]
    fm = FaultyMemory(w)
    fm.unmap(pool.obj.addr, 64)
    hole = fm.holes[-1]

    # The failed read does not reach the hooks: lift the hole on the next
    # read of anything (the kernel mapped the page again).
    def lift(*_: object) -> None:
        if hole in fm.holes:
            fm.holes.remove(hole)

    fm.on_read.append(lift)
    assert run_cli("pools", "--json", program=fm.program(live=True)).code == 0
    dump = FaultyMemory(w)
    dump.unmap(pool.obj.addr, 64)
    result = run_cli("pools", "--json", program=dump.program(live=False))
    assert result.code == 4 and "unreadable" in result.err


def _unlink_first_pool(fm: FaultyMemory, w: World) -> FakePagePool:
    """hlist_del_init() of the first pool on eth0's page_pools list."""
    dev = _nic_pools(w)[0].listed_on
    assert dev is not None
    head = dev.obj.addr_of("page_pools")
    first = fm.peek_word(head)
    pool = next(p for p in w.pools if _member(p, "user.list") == first)
    nxt = fm.peek_word(first)

    def unlink():
        fm.write_word(head, nxt)
        if nxt:
            fm.write_word(nxt + 8, head)
        fm.write_word(first, 0)
        fm.write_word(first + 8, 0)

    _on_read_of(fm, head, 1, unlink)
    return pool


def test_an_hlist_node_unlinked_during_the_walk_is_walked_again():
    w = _world()
    fm = FaultyMemory(w)
    pool = _unlink_first_pool(fm, w)
    result = run_cli("pools", "--json", program=fm.program(live=True))
    assert result.code == 0, result
    states = {p["id"]: p["state"] for p in result.json()}
    assert states[pool.id] == "invisible", "the second walk sees the kernel after the unlink"
    assert all(s == "listed" for i, s in states.items() if i != pool.id and i > w.nr_cpus)


def test_an_hlist_torn_in_a_core_dump_is_reported():
    w = _world()
    fm = FaultyMemory(w)
    _unlink_first_pool(fm, w)
    result = run_cli("pools", "--json", program=fm.program(live=False))
    assert result.code == 4 and "netdev page_pools hlist" in result.err
    assert "node's pprev is 0x0" in result.err


def _ring_grows_after_pool_read(fm: FaultyMemory, pool: FakePagePool, times: int) -> None:
    """
    After the pool is read, the driver takes 3 new pages and they come back
    into the ring: the ring read next holds more than the pool's in flight.
    """
    hold = _member(pool, "pages_state_hold_cnt")
    producer = _member(pool, "ring.producer")
    queue = fm.peek_word(_member(pool, "ring.queue"))
    fm.write_word(hold, 0, 4)  # nothing in flight at first
    fm.write_word(_member(pool, "pages_state_release_cnt"), 0, 4)
    hits = _counting(fm, hold)

    def grow(_, address, count):
        if _covers(address, count, hold) and len(hits) <= times:
            for slot in range(3):
                fm.write_word(queue + 8 * slot, 0xFFFFEA0000200000 + 64 * slot)
            fm.write_word(producer, 3, 4)
            if len(hits) == times:  # the kernel's counter catches up
                fm.write_word(hold, 3, 4)

    fm.on_read.append(grow)


def test_pages_entering_the_ring_after_the_pool_was_read_are_read_again():
    w = _world()
    pool = _nic_pools(w)[-1]
    fm = FaultyMemory(w)
    _ring_grows_after_pool_read(fm, pool, times=2)
    result = run_cli("pool", str(pool.id), "--json", program=fm.program(live=True))
    assert result.code == 0, result
    got = result.json()
    assert got["inflight"] == 3 and got["breakdown"]["ring"] == 3
    assert got["breakdown"]["out"] == 0


def test_a_ring_that_never_agrees_with_its_pool_is_flagged_inconsistent():
    w = _world()
    pool = _nic_pools(w)[-1]
    fm = FaultyMemory(w)
    _ring_grows_after_pool_read(fm, pool, times=1000)
    result = run_cli("pool", str(pool.id), "--json", program=fm.program(live=True))
    assert result.code == 4
    assert (
        "inconsistent after 3 reads: 0 pages in the alloc cache and 3 in the ring, "
        "but 0 in flight" in result.err
    )
    assert result.json()["breakdown"]["out"] is None, "unknown, not a guess"


def test_an_xa_node_caught_mid_update_is_read_again():
    w = World("linux-7.3")
    for _ in range(70):  # ids past 63: a two-level page_pools XArray
        FakePagePool(w)
    w.commit()
    child = next(
        o
        for o in w.objects
        if o.type.type_name() == "struct xa_node" and o.value["shift"] == 0 and o.value["parent"]
    )
    fm = FaultyMemory(w)
    offset_at = child.addr_of("offset")
    fm.write(offset_at, bytes([child.value["offset"] + 1]))
    _on_read_of(fm, offset_at, 1, lambda: fm.write(offset_at, bytes([child.value["offset"]])))
    live = run_cli("pools", "--json", program=fm.program(live=True))
    assert live.code == 0 and len(live.json()) == len(w.pools), live
    fm.write(offset_at, bytes([child.value["offset"] + 1]))
    dump = run_cli("pools", "--json", program=fm.program(live=False))
    assert dump.code == 4 and "node's parent/offset do not match its slot" in dump.err
    assert len(dump.json()) < len(w.pools)


def test_live_programs_are_flagged_live():
    w = _world()
    assert FaultyMemory(w).program(live=True).flags & drgn.ProgramFlags.IS_LIVE
    assert not FaultyMemory(w).program().flags & drgn.ProgramFlags.IS_LIVE
