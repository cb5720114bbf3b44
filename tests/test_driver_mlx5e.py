"""mlx5e rx rings: the WQEs of each channel's rq name the pool pages they hold, and no stale one."""

import pytest
from conftest import run_cli

from netmem_probe.fake.drivers import FakeMlx5e
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.walk import Problems


@pytest.mark.parametrize("striding", [False, True], ids=["legacy", "striding"])
def test_mlx5e_held_pages_are_named_by_channel_and_wqe(striding):
    w = World("linux-7.3")
    nic = FakeMlx5e(w.init_net, "eth2", queues=2, wqes=32, striding=striding)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8500)
    pages = pool.alloc_pages(4)
    posted = {
        nic.post(0, 5, pages[0].netmem): RxSlot("mlx5_core", "eth2", 0, 5),
        nic.post(1, 31, pages[1].netmem): RxSlot("mlx5_core", "eth2", 1, 31),
    }
    # A released WQE keeps its stale word: the page went back to the pool.
    nic.post(0, 6, pages[2].netmem)
    nic.release(0, 6)
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.by_address == posted and rings.walked == ["mlx5_core eth2"]
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=prog)
    got = {r["netmem"]: r["holders"] for r in result.json()}
    assert [
        (h["kind"], h["driver"], h["netdev"], h["rx-queue"], h["slot"], h["detail"])
        for h in got[hex(pages[0].netmem)]
    ] == [("rx-ring", "mlx5_core", "eth2", 0, 5, "mlx5_core eth2 rx queue 0, slot 5")]
    assert [h["slot"] for h in got[hex(pages[1].netmem)]] == [31]
    # The released page's stale word is only an unknown reference, not a slot.
    assert [h["kind"] for h in got[hex(pages[2].netmem)]] == ["unknown"]
    assert got[hex(pages[3].netmem)] == []
    assert result.code == 1


def test_a_striding_wqe_holds_each_page_whose_skip_bit_is_clear():
    w = World("linux-7.3")
    nic = FakeMlx5e(w.init_net, "eth2", wqes=8, striding=True, pages_per_wqe=4)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8501)
    pages = pool.alloc_pages(2)
    nic.post(0, 3, pages[0].netmem, page=0)
    nic.post(0, 3, pages[1].netmem, page=3)
    rings = RxRings(w.program(), Problems())
    assert sorted(rings.by_address.values(), key=str) == [RxSlot("mlx5_core", "eth2", 0, 3)] * 2


def test_mlx5e_ring_pages_are_summarised_by_pool_and_leaks():
    w = World("linux-7.3")
    nic = FakeMlx5e(w.init_net, "eth2", wqes=16)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8502)
    for wqe, page in enumerate(pool.alloc_pages(3)):
        nic.post(0, wqe, page.netmem)
    pool.alloc_pages(1, "cache")
    prog = w.program()
    holders = run_cli("pool", str(pool.id), "--holders", "--json", program=prog).json()["holders"]
    assert holders["holder-kinds"] == {"rx-ring": 3, "pool-cache": 1}
    assert {r["action"]: r["pages"] for r in holders["release"]}[
        "ip link set eth2 down (the driver frees its rings)"
    ] == 3
    pool.detach(at=86000.0)
    text = run_cli("leaks", program=w.program()).out
    assert "holders: rx-ring 3" in text, text


def test_a_frag_page_outside_its_alloc_units_is_reported_not_followed():
    w = World("linux-7.3")
    nic = FakeMlx5e(w.init_net, "eth2", wqes=4)
    pool = FakePagePool(w, netdev=nic.dev)
    nic.post(0, 1, pool.alloc_pages(1)[0].netmem)
    nic.frags[0].value[1]["frag_page"] = 0xFFFF888000001000
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert (
        rings.by_address == {} and "not one of its alloc_units" in rings.unwalked["mlx5_core eth2"]
    )
    assert [p.what for p in problems.items] == ["mlx5_core eth2 rx ring"]
