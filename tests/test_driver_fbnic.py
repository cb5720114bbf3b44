"""fbnic rx rings: the header and payload page queues' entries that name a page are posted."""

import pytest
from conftest import run_cli

from netmem_probe.fake.drivers import FakeFbnic
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.walk import Problems

#: Layouts from fbnic.ko's DWARF, with the member its rx_buf entries have:
#: Debian 6.12.117's source (a struct page *), Debian 7.3.4's (a netmem_ref).
ERAS = [("linux-6.12", "page"), ("linux-7.3", "netmem")]


def _fbnic_world(layout):
    """
    Two rx queues of 8-page queues: entry 3 of queue 0's header page queue
    and entry 7 of queue 1's payload page queue are posted; entry 4 of
    queue 0's payload page queue was taken back (cleared).
    """
    w = World(layout)
    nic = FakeFbnic(w.init_net, "enp1s0", queues=2, size=8)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=9100)
    pages = pool.alloc_pages(3)
    posted = {
        nic.post(0, "sub0", 3, pages[0].netmem): RxSlot("fbnic", "enp1s0", 0, 3, "hpq"),
        nic.post(1, "sub1", 7, pages[1].netmem): RxSlot("fbnic", "enp1s0", 1, 7, "ppq"),
    }
    nic.post(0, "sub1", 4, pages[2].netmem)
    nic.take(0, "sub1", 4)
    return w, nic, posted, pages


@pytest.mark.parametrize("layout,member", ERAS)
def test_fbnic_posted_pages_are_named_by_queue_page_queue_and_entry(layout, member):
    w, _, posted, pages = _fbnic_world(layout)
    prog = w.program()
    assert [m.name for m in prog.type("struct fbnic_rx_buf").members][0] == member
    rings = RxRings(prog, Problems())
    assert rings.by_address == posted and rings.walked == ["fbnic enp1s0"]
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=prog)
    got = {r["netmem"]: r["holders"] for r in result.json()}
    assert [
        (h["kind"], h["driver"], h["rx-queue"], h["slot"], h["detail"])
        for h in got[hex(pages[0].netmem)]
    ] == [("rx-ring", "fbnic", 0, 3, "fbnic enp1s0 rx queue 0, hpq slot 3")]
    assert [h["detail"] for h in got[hex(pages[1].netmem)]] == [
        "fbnic enp1s0 rx queue 1, ppq slot 7"
    ]
    # The taken entry was cleared: nothing names its page.
    assert got[hex(pages[2].netmem)] == [] and result.code == 1


def test_freed_fbnic_rings_are_skipped():
    w, nic, posted, _ = _fbnic_world("linux-7.3")
    nic.triads[1].value["sub1"]["rx_buf"] = 0  # fbnic_free_ring_resources()
    rings = RxRings(w.program(), Problems())
    assert list(rings.by_address.values()) == [RxSlot("fbnic", "enp1s0", 0, 3, "hpq")]


def test_an_impossible_fbnic_page_queue_size_is_reported_not_walked():
    w, nic, _, _ = _fbnic_world("linux-7.3")
    nic.triads[1].value["sub0"]["size_mask"] = 5  # 6 entries: not a power of two
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert "fbnic rx queue 1 hpq: ring size 6 is impossible" in rings.unwalked["fbnic enp1s0"]
    assert [p.what for p in problems.items] == ["fbnic enp1s0 rx ring"]


def test_an_fbnic_completion_ring_of_another_queue_is_reported_not_walked():
    w, nic, _, _ = _fbnic_world("linux-6.12")
    nic.triads[1].value["cmpl"]["q_idx"] = 0  # rx[1] pointing at a corrupt triad
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert "completion ring is queue 0 (corrupt?)" in rings.unwalked["fbnic enp1s0"]
    assert [p.what for p in problems.items] == ["fbnic enp1s0 rx ring"]
