"""
The holders and leaks --drgn scripts name the per-CPU queues, the qdiscs and
the drivers' rx rings as ``holders --json`` and ``leaks --json`` do.
"""

import json
from typing import Callable, List

import pytest
from conftest import run_cli
from test_drgn_snippets import project, run_snippet, snippet

from netmem_probe.fake.drivers import (
    FakeBnxt,
    FakeGve,
    FakeIce,
    FakeIdpf,
    FakeMlx5e,
    FakeVeth,
    FakeVirtioNet,
)
from netmem_probe.fake.pools import FakePage, FakePagePool
from netmem_probe.fake.queues import FakeQdisc
from netmem_probe.fake.sockets import FakeSkb
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers.veth import VETH_XDP_FLAG
from netmem_probe.snippets import KEYS


def _same_holders(world: World, pages: List[FakePage]) -> List[dict]:
    """Run holders --json and its script on the pages; assert the same records; the references."""
    prog = world.program()
    values = [hex(p.netmem) for p in pages]
    mine = run_cli("holders", *values, "--json", program=prog).json()
    theirs = run_snippet(snippet(prog, "holders", *values), prog)
    assert project(theirs, KEYS["holders"]) == project(mine, KEYS["holders"])
    return [h for record in mine for h in record["holders"]]


def _queued(version: str) -> tuple:
    """Pages on every per-CPU queue and in three qdiscs; a released skb in the NAPI cache."""
    w = World(version)
    devs = [w.init_net.netdev(f"eth{i}", driver="virtio_net") for i in range(3)]
    pool = FakePagePool(w, netdev=devs[0])
    pages = pool.alloc_pages(9)
    queues = w.cpu_queues
    assert queues is not None  # the layout has softnet_data
    queues.queue_backlog(1, FakeSkb(w, [pages[0]], dev=devs[0]).obj)
    queues.queue_backlog(0, FakeSkb(w, [pages[1]]).obj, "process_queue")
    queues.complete(1, FakeSkb(w, [pages[2]]).obj)
    queues.defer(0, FakeSkb(w, [pages[3]]).obj)
    queues.defer(0, FakeSkb(w, [pages[4]]).obj)
    queues.cache(0, FakeSkb(w, head_page=pages[5]).obj)
    for dev, kind, page in zip(devs, ("pfifo_fast", "fq_codel", "pfifo"), pages[6:]):
        qdisc = FakeQdisc(w, dev, kind, handle=0x10 << 16)
        skb = FakeSkb(w, [page], dev=dev).obj
        qdisc.enqueue(skb, 1) if kind != "pfifo" else qdisc.enqueue(skb)
    return w, pages


def test_the_holders_script_names_every_cpu_queue_and_qdisc():
    w, pages = _queued("linux-7.3")
    references = _same_holders(w, pages)
    assert [h["queue"] for h in references] == [
        "backlog",
        "backlog",
        "completion-queue",
        "defer-list",
        "defer-list",
        "napi-cache",
        "qdisc",
        "qdisc",
        "qdisc",
    ]


def _virtio(packed: bool) -> tuple:
    w = World("linux-7.3")
    nic = FakeVirtioNet(w.init_net, "eth0", queues=2, ring_size=64, packed=packed)
    pages = FakePagePool(w, netdev=nic.dev).alloc_pages(3)
    nic.post(0, 5, w.page_virt(pages[0].pfn))
    nic.post(1, 63, w.page_virt(pages[1].pfn) + 64)
    return w, pages


def _veth() -> tuple:
    w = World("linux-7.3")
    veth = FakeVeth(w.init_net, "veth0", queues=2, ring_size=8)
    held, framed, free = FakePagePool(w).alloc_pages(3)
    skb = FakeSkb(w, [held])
    veth.queue(1, skb.obj.addr)
    veth.queue(0, (w.page_virt(framed.pfn) + 0x40) | VETH_XDP_FLAG)
    return w, [held, framed, free]


def _mlx5e(striding: bool) -> tuple:
    w = World("linux-7.3")
    nic = FakeMlx5e(w.init_net, "eth2", queues=2, wqes=32, striding=striding)
    pages = FakePagePool(w, netdev=nic.dev).alloc_pages(3)
    nic.post(0, 5, pages[0].netmem)
    nic.post(1, 31, pages[1].netmem)
    nic.post(0, 6, pages[2].netmem)
    nic.release(0, 6)  # a stale word: not a slot
    return w, pages


def _bnxt() -> tuple:
    w = World("linux-7.3")
    nic = FakeBnxt(w.init_net, "enp1s0f0np0", queues=2, ring_size=16, agg_size=32)
    pages = FakePagePool(w, netdev=nic.dev).alloc_pages(3)
    nic.post(0, 3, w.page_virt(pages[0].pfn) + 0x840)
    nic.post_agg(1, 31, pages[1].netmem)
    return w, pages


def _gve() -> tuple:
    w = World("linux-7.3")
    nic = FakeGve(w.init_net, "ens4", queues=2, states=16)
    pool = FakePagePool(w, netdev=nic.dev)
    for queue in range(2):
        nic.use_pool(queue, pool.obj.addr)
    pages = pool.alloc_pages(3)
    nic.post(0, 2, pages[0].netmem)
    nic.post(1, 15, pages[1].netmem)
    return w, pages


def _ice() -> tuple:
    w = World("linux-7.3")
    nic = FakeIce(w.init_net, "ens1f0", queues=2, count=8)
    pool = FakePagePool(w, netdev=nic.dev)
    nic.use_pool(1, pool.obj.addr)
    pages = pool.alloc_pages(9)
    for page in pages[:7]:
        nic.post(1, page.netmem)
    for _ in range(3):
        nic.clean(1)
    nic.post(1, pages[7].netmem)  # wraps around the ring of 8
    return w, pages


def _idpf() -> tuple:
    w = World("linux-7.3")
    nic = FakeIdpf(w.init_net, "ens2f0", groups=2, bufqs=2, count=16)
    pool = FakePagePool(w, netdev=nic.dev)
    nic.use_pool(0, 0, pool.obj.addr)
    nic.use_pool(1, 1, pool.obj.addr)
    pages = pool.alloc_pages(3)
    nic.post(0, 0, 5, pages[0].netmem)
    nic.post(1, 1, 15, pages[1].netmem)
    nic.post(0, 0, 6, pages[2].netmem)
    nic.take(0, 0, 6)  # back from the device: its netmem zeroed
    return w, pages


RINGS: List[Callable[[], tuple]] = [
    lambda: _virtio(False),
    lambda: _virtio(True),
    _veth,
    lambda: _mlx5e(False),
    lambda: _mlx5e(True),
    _bnxt,
    _gve,
    _ice,
    _idpf,
]
RING_IDS = [
    "virtio_net-split",
    "virtio_net-packed",
    "veth",
    "mlx5e-legacy",
    "mlx5e-striding",
    "bnxt",
    "gve",
    "ice",
    "idpf",
]


@pytest.mark.parametrize("world", RINGS, ids=RING_IDS)
def test_the_holders_script_names_each_drivers_rx_ring_slots(world):
    w, pages = world()
    references = _same_holders(w, pages)
    slots = [h for h in references if h["slot"] is not None]
    assert len(slots) >= 2
    assert all(h["kind"] == "rx-ring" or h["queue"] == "rx-ring" for h in slots)


@pytest.mark.parametrize("world", [_bnxt, _ice], ids=["bnxt", "ice"])
def test_the_leaks_script_calls_a_page_in_an_rx_ring_parked(world):
    w, pages = world()
    pool = next(p for p in w.pools if p.pages)
    pool.detach(at=86000.0)
    prog = w.program()
    mine = [json.loads(line) for line in run_cli("leaks", "--json", program=prog).out.splitlines()]
    theirs = run_snippet(snippet(prog, "leaks"), prog)
    assert project(theirs, KEYS["leaks"]) == project(mine, KEYS["leaks"])
    assert {r["verdict"] for r in mine} >= {"parked", "leaked"}
