"""The skb slab fast path: sk_buffs from their slab caches, leaks without a RAM search."""

import json

import drgn
import pytest
from drgn.helpers.linux.slab import slab_cache_for_each_allocated_object
from test_corrupt import partial, run, world

from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.pools import PP_FLAG_DMA_MAP, FakePagePool
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.world import World
from netmem_probe.kernel.skbs import find_skb_slabs, skb_caches
from netmem_probe.kernel.walk import Problems

# The scenarios whose layout (from Debian 7.3 DWARF) has the slab types, with skbs.
SLAB_WORLDS = ["linux-7.3-mixed", "linux-7.1-rc-mixed", "linux-7.3-arm64-mixed"]
# 5.15's slabs are struct pages with PG_slab (before struct slab of v5.17);
# its kmem_cache has what netmem-probe reads, not drgn's per-CPU/node walk.
OLD_SLAB_WORLDS = ["linux-5.15-mixed"]


def _skbs(w):
    return sorted(o.addr for o in w.objects if o.type.type_name() == "struct sk_buff")


def test_a_world_without_sk_buff_caches_has_no_fast_path():
    w = world("linux-7.3-many-pools")  # no skb, so no cache was ever made
    assert find_skb_slabs(FaultyMemory(w).program(), Problems()) is None


@pytest.mark.parametrize("name", SLAB_WORLDS)
def test_the_skb_slabs_hold_every_sk_buff_drgn_finds_allocated(name):
    w = world(name)
    prog = FaultyMemory(w).program()
    problems = Problems()
    slabs = find_skb_slabs(prog, problems)
    assert slabs is not None and slabs.complete and not problems
    allocated = sorted(
        skb.value_()
        for skb in slab_cache_for_each_allocated_object(skb_caches(prog)[0][0], "struct sk_buff")
    )
    assert allocated == _skbs(w)
    assert set(allocated) <= set(slabs.skbs)


@pytest.mark.parametrize("name", OLD_SLAB_WORLDS)
def test_the_skb_slabs_of_a_kernel_before_struct_slab_hold_every_sk_buff(name):
    w = world(name)
    prog = FaultyMemory(w).program()
    problems = Problems()
    slabs = find_skb_slabs(prog, problems)
    assert prog.type("struct page").has_member("slab_cache")
    assert slabs is not None and slabs.complete and not problems
    assert slabs.slabs > 0 and set(_skbs(w)) <= set(slabs.skbs)


def _verdicts(result):
    return {
        r["netmem"]: (
            r["verdict"],
            [(e["kind"], e["skb"], e["frag"], e["queue"]) for e in r["evidence"]],
        )
        for r in map(json.loads, result.out.splitlines())
    }


@pytest.mark.parametrize("name", SLAB_WORLDS + OLD_SLAB_WORLDS)
def test_leaks_from_the_slabs_gives_the_verdicts_of_the_full_search(name):
    w = world(name)
    full = run(FaultyMemory(w), "leaks", "--json", "--search-all")
    fm = FaultyMemory(w)
    fast = run(fm, "leaks", "--json")
    assert fast.code == full.code
    assert _verdicts(fast) == _verdicts(full)
    verdicts = {v for v, _ in _verdicts(fast).values()}
    if verdicts <= {"parked", "cached"}:
        # Everything explained: RAM (128 MiB) was never read, only the memmap,
        # the slabs and the pools.
        assert fm.bytes < 64 << 20


def _parked_world(pages: int = 8) -> World:
    """A detached pool whose pages are all frag 0 of skbs on a UDP socket."""
    w = World("linux-7.3")
    pool = FakePagePool(w, flags=PP_FLAG_DMA_MAP)
    held = pool.alloc_pages(pages, "out")
    pool.detach(86400.0 - 600, release_retries=600)
    sock = FakeSocket(w, w.init_net, local=("10.0.2.15", 9000), owns_skbs=False)
    for page in held:
        sock.queue(FakeSkb(w, [page]), "receive")
    w.commit()
    return w


def test_leaks_reads_the_memmap_once_for_pages_and_skb_slabs():
    w = _parked_world()
    fm = FaultyMemory(w)
    fm.log = []
    result = run(fm, "leaks", "--json")
    assert {v for v, _ in _verdicts(result).values()} == {"parked"}
    prog = fm.program()
    memmap = prog["vmemmap"].value_()
    end = memmap + (w.ram_size >> 12) * drgn.sizeof(prog.type("struct page"))
    # Bulk reads: a struct page or a slab's fields read alone do not count.
    bulk = [count for address, count in fm.log if memmap <= address < end and count > 4096]
    assert sum(bulk) == end - memmap


def test_a_slab_with_an_impossible_object_count_is_reported_and_searched_around():
    w = world()
    assert w.skb_caches is not None
    slab = w.skb_caches.head.slabs[0]
    fm = FaultyMemory(w)
    counters = slab.addr + drgn.offsetof(w.type("struct slab"), "counters")
    fm.write_word(counters, 0x7FFF << 16)
    full = run(FaultyMemory(w), "leaks", "--json", "--search-all")
    result = run(fm, "leaks", "--json")
    partial(result, f"skb slab at {slab.addr:#x}: 32767 objects")
    assert _verdicts(result) == _verdicts(full)


def test_the_memmap_pass_lists_the_slab_pages_of_every_cache():
    w = _parked_world(pages=40)  # 40 sk_buffs: more than one slab
    prog = FaultyMemory(w).program()
    slabs = find_skb_slabs(prog, Problems())
    assert slabs is not None and slabs.slab_ranges is not None and w.skb_caches is not None
    memmap, record = prog["vmemmap"].value_(), drgn.sizeof(prog.type("struct page"))
    pfns = {(s.addr - memmap) // record for s in w.skb_caches.head.slabs}
    covered = {pfn for lo, hi in slabs.slab_ranges for pfn in range(lo >> 12, hi >> 12)}
    assert len(pfns) > 1 and covered == pfns
