"""bnxt rx rings: head and aggregation descriptors name the pool pages posted in them."""

from conftest import run_cli

from netmem_probe.fake.drivers import FakeBnxt
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.walk import Problems


def _bnxt_world():
    """A bnxt pool: a head buffer, two agg pages, a taken head buffer and a cached page."""
    w = World("linux-7.3")
    nic = FakeBnxt(w.init_net, "enp1s0f0np0", queues=2, ring_size=16, agg_size=32)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8600)
    head, agg0, agg1, taken = pool.alloc_pages(4)
    pool.alloc_pages(1, "cache")
    posted = {
        # a head buffer is the address of its data in a (head pool) page
        nic.post(0, 3, w.page_virt(head.pfn) + 0x840): RxSlot("bnxt_en", "enp1s0f0np0", 0, 3),
        nic.post_agg(0, 7, agg0.netmem): RxSlot("bnxt_en", "enp1s0f0np0", 0, 7, "agg"),
        nic.post_agg(1, 31, agg1.netmem): RxSlot("bnxt_en", "enp1s0f0np0", 1, 31, "agg"),
    }
    nic.post(1, 0, w.page_virt(taken.pfn))
    nic.take(1, 0)
    return w, pool, posted, (head, agg0, agg1, taken)


def test_bnxt_posted_head_and_agg_buffers_are_named_by_ring_and_slot():
    w, _, posted, pages = _bnxt_world()
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.by_address == posted and rings.walked == ["bnxt_en enp1s0f0np0"]
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=prog)
    got = {r["netmem"]: r["holders"] for r in result.json()}
    head, agg0, agg1, taken = (got[hex(p.netmem)] for p in pages)
    assert [(h["kind"], h["rx-queue"], h["slot"], h["detail"]) for h in head] == [
        ("rx-ring", 0, 3, "bnxt_en enp1s0f0np0 rx queue 0, slot 3")
    ]
    assert [h["detail"] for h in agg0 + agg1] == [
        "bnxt_en enp1s0f0np0 rx queue 0, agg slot 7",
        "bnxt_en enp1s0f0np0 rx queue 1, agg slot 31",
    ]
    assert taken == [] and result.code == 1


def test_bnxt_ring_pages_are_summarised_by_pool_and_leaks():
    w, pool, _, _ = _bnxt_world()
    holders = run_cli("pool", str(pool.id), "--holders", "--json", program=w.program()).json()[
        "holders"
    ]
    assert holders["holder-kinds"] == {"rx-ring": 3, "pool-cache": 1, "unexplained": 1}
    pool.detach(at=86000.0)
    text = run_cli("leaks", program=w.program()).out
    assert "holders: rx-ring 3, unexplained 1" in text, text


def test_an_impossible_bnxt_ring_size_is_reported_not_walked():
    w = World("linux-7.3")
    nic = FakeBnxt(w.init_net, "eth0", ring_size=4)
    assert nic.dev.priv is not None
    nic.dev.priv.set("rx_agg_ring_mask", (1 << 20) - 1)
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert rings.by_address == {} and "impossible" in rings.unwalked["bnxt_en eth0"]
    assert [p.what for p in problems.items] == ["bnxt_en eth0 rx ring"]
