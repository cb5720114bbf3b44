"""Driver rx rings: each walker names the slots a fixture's driver posted, and nothing else."""

import pytest
from conftest import run_cli, target_at
from drgn import offsetof

from netmem_probe.fake.drivers import FakeVeth, FakeVirtioNet
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.drivers.veth import VETH_XDP_FLAG
from netmem_probe.kernel.holders import HolderSearch
from netmem_probe.kernel.slab import member_at
from netmem_probe.kernel.walk import Problems


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_virtio_net_posted_buffers_are_named_by_queue_and_descriptor(packed):
    w = World("linux-7.3")
    nic = FakeVirtioNet(w.init_net, "eth0", queues=2, ring_size=64, packed=packed)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8300)
    pages = pool.alloc_pages(3)
    # Two mergeable buffers share the first page, as page_pool fragments do.
    posted = {
        nic.post(0, 5, w.page_virt(pages[0].pfn)): RxSlot("virtio_net", "eth0", 0, 5),
        nic.post(0, 6, w.page_virt(pages[0].pfn) + 2048): RxSlot("virtio_net", "eth0", 0, 6),
        nic.post(1, 63, w.page_virt(pages[1].pfn) + 64): RxSlot("virtio_net", "eth0", 1, 63),
    }
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.by_address == posted and rings.walked == ["virtio_net eth0"]
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=prog)
    got = {r["netmem"]: r["holders"] for r in result.json()}
    first = got[hex(pages[0].netmem)]
    assert [(h["kind"], h["driver"], h["netdev"], h["rx-queue"], h["slot"]) for h in first] == [
        ("rx-ring", "virtio_net", "eth0", 0, 5),
        ("rx-ring", "virtio_net", "eth0", 0, 6),
    ]
    assert first[0]["detail"] == "virtio_net eth0 rx queue 0, slot 5"
    assert [h["slot"] for h in got[hex(pages[1].netmem)]] == [63]
    # The third page is in no ring: held by nothing, so exit code 1.
    assert got[hex(pages[2].netmem)] == [] and result.code == 1


def test_veth_xdp_ring_entries_place_their_skbs_and_frames():
    w = World("linux-7.3")
    veth = FakeVeth(w.init_net, "veth0", queues=2, ring_size=8)
    pool = FakePagePool(w)
    held, framed = pool.alloc_pages(2)
    skb = FakeSkb(w, [held])
    veth.queue(1, skb.obj.addr)
    veth.queue(1, skb.obj.addr)  # a second entry: slot 1
    frame = w.page_virt(framed.pfn) + 0x40
    veth.queue(0, frame | VETH_XDP_FLAG)
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.of_skb(skb.obj.addr) == RxSlot("veth", "veth0", 1, 1)
    targets = [target_at(prog, p.netmem) for p in (held, framed)]
    found = HolderSearch(prog, Problems()).find(targets)
    frag = [h for h in found[held.netmem] if h.kind == "skb-frag"]
    assert [(h.skb, h.queue, h.rx_slot) for h in frag] == [
        (skb.obj.addr, "rx-ring", RxSlot("veth", "veth0", 1, 1))
    ]
    assert [(h.kind, h.rx_slot) for h in found[framed.netmem]] == [
        ("rx-ring", RxSlot("veth", "veth0", 0, 0))
    ]


def test_a_corrupt_ring_size_is_reported_not_walked():
    w = World("linux-7.3")
    nic = FakeVirtioNet(w.init_net, "eth0", ring_size=4)
    nic.post(0, 0, 0x1234)
    vvq = next(o for o in w.objects if o.type.type_name() == "struct vring_virtqueue")
    vvq.value["split"]["vring"]["num"] = 1 << 20
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert rings.by_address == {} and "impossible" in rings.unwalked["virtio_net eth0"]
    assert [p.what for p in problems.items] == ["virtio_net eth0 rx ring"]


@pytest.mark.parametrize(
    "driver", ["virtio_net", "mlx5_core", "bnxt_en", "gve", "ice", "idpf", "fbnic"]
)
def test_a_driver_without_type_information_is_left_unwalked(driver):
    w = World("linux-6.16")  # its layout has no driver types
    w.init_net.netdev("eth0", driver=driver)
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert "no type information" in rings.unwalked[f"{driver} eth0"] and not problems


def test_member_at_names_nested_members_and_array_elements():
    prog = World("linux-7.3").program()
    pool = prog.type("struct page_pool")
    cache = offsetof(pool, "alloc.cache") + 3 * 8
    assert member_at(pool, cache) == "alloc.cache[3]"
    assert member_at(pool, offsetof(pool, "user.id")) == "user.id"
    vvq = prog.type("struct vring_virtqueue")
    assert member_at(vvq, offsetof(vvq, "split.desc_state")) == "split.desc_state"
    assert member_at(prog.type("struct vring_desc_state_split"), 8) == "__pad_8[0]"
