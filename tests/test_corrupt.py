"""
Corrupt memory, one case at a time: each walker and reader bounds itself, and
a bad object is skipped and counted (exit code 4, listed on stderr) while the
rest of the output still comes.  Most cases are bugs the fuzzer
(test_fuzz.py) found once; they stay here so they stay fixed.
"""

from functools import lru_cache
from typing import List, Tuple

import pytest
from conftest import run_cli

from netmem_probe.fake import scenarios
from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.world import World

MIXED = "linux-7.3-mixed"


@lru_cache(maxsize=None)
def world(name: str = MIXED) -> World:
    w = scenarios.build(name)[0]
    w.commit()
    return w


def objects(w: World, type_name: str) -> List:
    return [o for o in w.objects if o.type.type_name() == type_name]


def nic_pools(w: World):
    """Pools with pages out on a NIC (not the system pools, not providers')."""
    return [p for p in w.pools if p.pages and p.provider is None and p.listed_on is not None]


def run(fm: FaultyMemory, *args: str):
    result = run_cli(*args, program=fm.program())
    assert "Traceback" not in result.err and "--debug for the traceback" not in result.err, (
        result.err
    )
    return result


def partial(result, *says: str) -> None:
    """Exit 4 with the skipped objects listed, each of ``says`` among them."""
    assert result.code == 4, result
    assert "object(s) skipped" in result.err, result.err
    for text in says:
        assert text in result.err, result.err


def pools_json(result) -> List[int]:
    return [p["id"] for p in result.json()]


# -- the memmap and other kernel-wide descriptions ------------------------------


@pytest.mark.parametrize(
    "where, value",
    [
        ("roots", 0xFFFFFFFFFFFFFFC1),  # mem_section[0] points nowhere
        ("section", 0),  # mem_section[0][0].section_mem_map = 0: drgn finds no vmemmap
        ("section", 0x7FFFFFFF),  # drgn derives a vmemmap that is no page's address
    ],
)
@pytest.mark.parametrize("command", ["decode", "pages"])
def test_an_unreadable_memmap_description_is_one_skipped_object(where, value, command):
    w = world()
    fm = FaultyMemory(w)
    roots = w.global_("mem_section").value
    fm.write_word(roots if where == "roots" else fm.peek_word(roots), value)
    args = [command, "--json"] + (
        [hex(nic_pools(w)[0].pages[0].netmem)] if command == "decode" else ["--all-pools"]
    )
    result = run(fm, *args)
    partial(result, "memmap description")
    if command == "decode":
        assert result.json()[0]["error"].startswith("undecided")


def test_a_corrupt_poison_timer_leaves_page_pool_pages_undecided():
    # POISON_POINTER_DELTA comes from a static timer; a delta that is not a
    # multiple of 64 KiB is no kernel's, and its signature would be nonsense.
    w = world()
    fm = FaultyMemory(w)
    timer = w.prog["poll_spurious_irq_timer"].address_
    fm.write_word(timer, 0x1234567)
    result = run(fm, "decode", "--json", hex(nic_pools(w)[0].pages[0].netmem))
    partial(result, "not TIMER_ENTRY_STATIC")


def test_unreadable_per_cpu_offsets_make_recycle_stats_unknown_not_a_partial_sum():
    w = world()
    fm = FaultyMemory(w)
    fm.unmap(w.prog["__per_cpu_offset"].address_, 8)
    pool = nic_pools(w)[0]
    result = run(fm, "pool", str(pool.id), "--json")
    partial(result, "recycle stats")
    stats = result.json()["stats"]
    assert stats["recycle-cached"] is None and stats["alloc-fast"] is not None


# -- page pools -----------------------------------------------------------------


def test_an_unreadable_pool_is_not_reported_as_missing():
    w = world()
    pool = nic_pools(w)[0]
    fm = FaultyMemory(w)
    fm.unmap(pool.obj.addr, 8)
    result = run(fm, "pool", str(pool.id))
    assert result.code == 4, result
    assert result.err.strip().splitlines()[-1] == (
        f"netmem-probe: error: no page pool with id {pool.id} among the objects that could be read"
    )
    pages = run(fm, "pages", "--pool", str(pool.id))
    assert pages.code == 4 and "among the objects that could be read" in pages.err


@pytest.mark.parametrize(
    "member, value, reason",
    [
        ("ring.size", 0x7FFFFFFF, "impossible ring.size 2147483647"),
        ("ring.producer", 1 << 20, "outside a ring of"),
        ("ring.consumer_head", 999, "outside a ring of"),
        ("alloc.count", 129, "exceeds the 128-slot cache"),
        ("p.order", 200, "impossible order 200"),
        ("user.id", 12345, "does not match its xarray index"),
    ],
)
def test_a_pool_with_impossible_counts_is_skipped_and_the_others_still_come(member, value, reason):
    w = world()
    pool = nic_pools(w)[0]
    fm = FaultyMemory(w)
    fm.write_word(pool.obj.addr_of(member), value, 4)
    for command in (["pools", "--json"], ["pages", "--all-pools", "--json"]):
        result = run(fm, *command)
        partial(result, f"page pool at {pool.obj.addr:#x}: ", reason)
    ids = pools_json(run(fm, "pools", "--json"))
    assert pool.id not in ids and len(ids) == len(w.pools) - 1


def test_an_emptied_page_pools_xarray_is_noticed_through_the_system_pools():
    w = world()
    fm = FaultyMemory(w)
    fm.write_word(w.global_("page_pools").addr_of("xa_head"), 0)
    result = run(fm, "pools", "--json")
    partial(
        result,
        "a CPU's system page pool, but not in the page_pools xarray",
        "on a netdev's page_pools list but not in the page_pools xarray",
    )
    assert result.json() == []


def test_a_detach_time_after_the_kernels_clock_has_no_age():
    w = world()
    pool = next(p for p in w.pools if p.detach_time is not None)
    fm = FaultyMemory(w)
    fm.write_word(pool.obj.addr_of("user.detach_time"), (10**9) * 10**9)
    result = run(fm, "pools", "--json")
    record = next(r for r in result.json() if r["id"] == pool.id)
    assert record["detach-age"] is None and record["detached"]
    assert f"pool {pool.id}: user.detach_time is" in result.err


def test_an_absurd_io_uring_buffer_shift_is_not_computed():
    w = world()
    ifq = objects(w, "struct io_zcrx_ifq")
    if not ifq:
        pytest.skip("this layout has no io_uring zcrx")
    pool = next(
        p
        for p in w.pools
        if p.provider is not None and getattr(p.provider, "ops_symbol", "") == "io_uring_pp_zc_ops"
    )
    fm = FaultyMemory(w)
    fm.write_word(ifq[0].addr_of("niov_shift"), 0xFFFFFFFF, 4)
    result = run(fm, "pools", "--json")
    record = next(r for r in result.json() if r["id"] == pool.id)
    assert "rx-buf-len" not in record.get("io-uring", {})


# -- linked structures ----------------------------------------------------------


def _hlist_nodes(w: World) -> List[Tuple[int, int]]:
    """(pool's user.list address, netdev page_pools head) of every listed pool."""
    return [
        (p.obj.addr_of("user.list"), p.listed_on.obj.addr_of("page_pools"))
        for p in w.pools
        if p.listed_on is not None
    ]


@pytest.mark.parametrize("damage", ["self-cycle", "back-cycle", "pprev", "unmapped"])
def test_a_damaged_netdev_hlist_ends_the_walk_and_is_reported(damage):
    w = world()
    fm = FaultyMemory(w)
    head = w.init_net.netdevs[0].obj.addr_of("page_pools")  # lo: orphaned pools
    first = fm.peek_word(head)
    second = fm.peek_word(first)
    assert first and second, "lo has two pools in the mixed scenario"
    if damage == "self-cycle":
        fm.write_word(second, second)
    elif damage == "back-cycle":
        fm.write_word(second, first)
    elif damage == "pprev":
        fm.write_word(second + 8, 0xDEAD000000000122)  # LIST_POISON2
    else:
        fm.unmap(second, 16)
    result = run(fm, "pools", "--json")
    assert result.code == 4, result
    assert "netdev page_pools hlist" in result.err
    # Every pool is still in the xarray; the one whose hlist node (inside
    # the struct) is unmapped cannot be read itself.
    assert len(result.json()) == len(w.pools) - (damage == "unmapped")


@pytest.mark.parametrize("damage", ["cycle", "prev"])
def test_a_damaged_namespace_list_ends_the_walk_and_is_reported(damage):
    w = world()
    fm = FaultyMemory(w)
    head = w.global_("net_namespace_list").addr
    first = fm.peek_word(head)
    if damage == "cycle":
        fm.write_word(first, first)
    else:
        fm.write_word(first + 8, first)
    partial(run(fm, "pools", "--json"), "net_namespace_list")


def test_an_xarray_whose_child_points_back_at_its_root_is_walked_once():
    w = world("linux-7.3-many-pools")
    fm = FaultyMemory(w)
    xa_head = fm.peek_word(w.global_("page_pools").addr_of("xa_head"))
    root = xa_head - 2
    child = next(o for o in objects(w, "struct xa_node") if o.value["parent"] == root)
    fm.write_word(child.addr_of("slots") + 8 * 5, xa_head)  # a slot pointing at the root
    result = run(fm, "pools", "--json")
    partial(result, "page_pools xarray")
    assert len(pools_json(result)) >= len(w.pools) - 64


def test_an_xarray_node_with_a_wild_shift_is_skipped():
    w = world("linux-7.3-many-pools")
    fm = FaultyMemory(w)
    child = next(o for o in objects(w, "struct xa_node") if o.value["parent"])
    fm.write(child.addr_of("shift"), bytes([60]))
    result = run(fm, "pools", "--json")
    partial(result, "bad node shift 60")
    assert 0 < len(pools_json(result)) < len(w.pools)


@pytest.mark.parametrize("command", ["decode", "holders"])
def test_an_unreadable_struct_page_is_skipped_not_called_invalid(command):
    # The pfn has a struct page, but the dump lacks it: unreadable (exit 4),
    # not a value that points at nothing (decode: 1; holders: a usage error).
    w = world()
    page = nic_pools(w)[0].pages[0].netmem
    fm = FaultyMemory(w)
    fm.unmap(page, 64)
    result = run(fm, command, hex(page))
    partial(result, f"struct page at {page:#x}: unreadable")


def test_a_search_span_that_covers_everything_is_cut_off():
    # page_offset_base = 0: a page's direct-map span becomes [pfn << 12, ...)
    # and every small integer in RAM "points into" it.
    w = world("broken-netmem-desc")
    fm = FaultyMemory(w, max_reads=100_000)
    fm.write_word(w.global_("page_offset_base").addr, 0)
    partial(run(fm, "holders", "0x1"), "more than 4096 references")


@pytest.mark.parametrize("command", ["holders", "leaks"])
def test_an_unreadable_direct_map_base_is_one_skipped_object(command):
    w = world()
    fm = FaultyMemory(w)
    fm.unmap(w.global_("page_offset_base").addr, 8)
    args = [command] + ([hex(nic_pools(w)[0].pages[0].netmem)] if command == "holders" else [])
    partial(run(fm, *args), "direct map base")


def test_a_list_broken_in_the_middle_is_walked_back_from_its_head():
    # net_namespace_list: init_net, ns0, ns1, ns2.  ns1's prev is corrupt:
    # the forward walk stops there, the walk back from the head recovers
    # ns1 and ns2, so their netdevs' pools are still "listed".
    w = world("linux-7.3-many-pools")
    clean = run(FaultyMemory(w), "pools", "--json").json()
    fm = FaultyMemory(w)
    ns1 = next(ns for ns in w.namespaces if ns.name == "ns1")
    fm.write_word(ns1.obj.addr_of("list.prev"), 0xDEAD000000000122)
    result = run(fm, "pools", "--json")
    partial(result, "net_namespace_list", "node's prev is 0xdead000000000122")
    assert result.json() == clean


@pytest.mark.parametrize("command", ["pools", "leaks", "holders"])
def test_a_pointer_near_the_top_of_memory_plus_an_offset_faults_like_the_cpu(command):
    # nd_net.net = -63: net + offsetof(struct net, ns.inum) is past 2**64.
    # The CPU wraps it (and faults); Python must too, not overflow drgn's u64.
    w = world()
    fm = FaultyMemory(w)
    for dev in objects(w, "struct net_device"):
        fm.write_word(dev.addr_of("nd_net.net"), -63)
    args = [command] + ([hex(nic_pools(w)[0].pages[0].netmem)] if command == "holders" else [])
    partial(run(fm, *args), "net_device at")
