"""ice rx rings: libeth buffers between next_to_clean and next_to_use are the posted ones."""

from conftest import run_cli

from netmem_probe.fake.drivers import FakeIce
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.walk import Problems


def _ice_world():
    """
    Queue 1 of 8 descriptors posts 7 pages (one stays unused, as ice keeps
    it), takes 3 back and posts an 8th: next_to_clean 3, next_to_use
    wrapped to 0, slots 3..7 posted.  One more page is in the pool's cache.
    """
    w = World("linux-7.3")
    nic = FakeIce(w.init_net, "ens1f0", queues=2, count=8)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8800)
    nic.use_pool(1, pool.obj.addr)
    pages = pool.alloc_pages(8)
    pool.alloc_pages(1, "cache")
    posted = {}
    for page in pages[:7]:
        slot, word = nic.post(1, page.netmem)
        posted[word] = (slot, page)
    for _ in range(3):
        nic.clean(1)
    slot, word = nic.post(1, pages[7].netmem)
    posted[word] = (slot, pages[7])
    return w, nic, pool, posted


def test_ice_posted_libeth_buffers_wrap_around_the_ring():
    w, nic, _, posted = _ice_world()
    prog = w.program()
    rings = RxRings(prog, Problems())
    held = {
        word: RxSlot("ice", "ens1f0", 1, slot) for word, (slot, _) in posted.items() if slot >= 3
    }
    assert rings.by_address == held and rings.walked == ["ice ens1f0"]
    taken = [page for slot, page in posted.values() if slot < 3]
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in taken], program=prog)
    # Taken back: the stale word is only an unknown reference, not a slot.
    assert [[h["kind"] for h in r["holders"]] for r in result.json()] == [["unknown"]] * 3


def test_ice_ring_pages_are_summarised_by_pool_and_leaks():
    w, _, pool, _ = _ice_world()
    kinds = run_cli("pool", str(pool.id), "--holders", "--json", program=w.program()).json()[
        "holders"
    ]["holder-kinds"]
    assert kinds["rx-ring"] == 5 and kinds["pool-cache"] == 1
    pool.detach(at=86000.0)
    assert "rx-ring 5" in run_cli("leaks", program=w.program()).out


def test_ice_ring_indices_outside_the_ring_are_reported():
    w, nic, _, _ = _ice_world()
    nic.rings[1].value["next_to_clean"] = 40
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert rings.by_address == {} and "outside a ring of 8" in rings.unwalked["ice ens1f0"]
    assert [p.what for p in problems.items] == ["ice ens1f0 rx ring"]
