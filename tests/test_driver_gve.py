"""gve rx rings: in-use DQO buffer states name their pool pages; free states do not."""

from conftest import run_cli

from netmem_probe.fake.drivers import FakeGve
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.walk import Problems


def test_gve_in_use_buffer_states_are_named_by_queue_and_buffer_id():
    w = World("linux-7.3")
    nic = FakeGve(w.init_net, "ens4", queues=2, states=16)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8700)
    for queue in range(2):
        nic.use_pool(queue, pool.obj.addr)
    pages = pool.alloc_pages(3)
    posted = {
        nic.post(0, 2, pages[0].netmem): RxSlot("gve", "ens4", 0, 2),
        nic.post(1, 15, pages[1].netmem): RxSlot("gve", "ens4", 1, 15),
    }
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.by_address == posted and rings.walked == ["gve ens4"]
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=prog)
    got = {r["netmem"]: r["holders"] for r in result.json()}
    assert [(h["kind"], h["detail"]) for h in got[hex(pages[0].netmem)]] == [
        ("rx-ring", "gve ens4 rx queue 0, slot 2")
    ]
    assert got[hex(pages[2].netmem)] == [] and result.code == 1


def test_gve_ring_pages_are_summarised_by_pool_and_leaks():
    w = World("linux-7.3")
    nic = FakeGve(w.init_net, "ens4", states=8)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8701)
    nic.use_pool(0, pool.obj.addr)
    for buffer_id, page in enumerate(pool.alloc_pages(2)):
        nic.post(0, buffer_id, page.netmem)
    holders = run_cli("pool", str(pool.id), "--holders", "--json", program=w.program()).json()[
        "holders"
    ]
    assert holders["holder-kinds"] == {"rx-ring": 2}
    pool.detach(at=86000.0)
    assert "holders: rx-ring 2" in run_cli("leaks", program=w.program()).out


def test_a_gve_ring_without_a_page_pool_is_not_walked_for_pool_pages():
    w = World("linux-7.3")
    nic = FakeGve(w.init_net, "ens4", states=4)  # GQI/QPL-like: no dqo.page_pool
    pool = FakePagePool(w, netdev=nic.dev)
    nic.post(0, 1, pool.alloc_pages(1)[0].netmem)
    rings = RxRings(w.program(), Problems())
    assert rings.by_address == {} and rings.walked == ["gve ens4"]


def test_unreadable_gve_buffer_states_are_reported_not_guessed():
    w = World("linux-7.3")
    nic = FakeGve(w.init_net, "ens4", states=4)
    nic.use_pool(0, 0x1000)
    nic.rx.value[0]["dqo"]["buf_states"] = 0xFFFFC90000000000  # nothing mapped there
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert rings.by_address == {} and "walk stopped" in rings.unwalked["gve ens4"]
    assert [p.what for p in problems.items] == ["gve ens4 rx ring"]
