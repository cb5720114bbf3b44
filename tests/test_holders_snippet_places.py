"""
The holders and leaks --drgn scripts name the per-CPU queues, the qdiscs,
the TCP out-of-order queue, NAPI's GRO lists and the drivers' rx rings as
``holders --json`` and ``leaks --json`` do, and report a corrupt list on
stderr as they do.
"""

import contextlib
import io
import json
from typing import Callable, List, Optional, Tuple

import pytest
from conftest import run_cli
from test_drgn_snippets import project, run_snippet, snippet
from test_holders_clones import _freed_clone_below_the_queued_one

from netmem_probe.fake.drivers import (
    FakeBnxt,
    FakeFbnic,
    FakeGve,
    FakeIce,
    FakeIdpf,
    FakeMlx5e,
    FakeVeth,
    FakeVirtioNet,
)
from netmem_probe.fake.pools import FakePage, FakePagePool
from netmem_probe.fake.queues import FQ_INTERNAL, FakeQdisc
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers.veth import VETH_XDP_FLAG
from netmem_probe.snippets import KEYS


def _same_holders(world: World, pages: List[FakePage]) -> List[dict]:
    """Run holders --json and its script on the pages; assert the same records; the references."""
    references, problems = _same_holders_and_problems(world, pages)
    assert problems == []
    return references


def _problems(stderr: str) -> List[str]:
    """The objects a warning on stderr says were skipped, one line each."""
    return sorted(line.strip() for line in stderr.splitlines() if line.startswith("  "))


def _same_holders_and_problems(
    world: World, pages: List[FakePage], prog=None
) -> Tuple[List[dict], List[str]]:
    """
    Run holders --json and its script on the pages; assert the same records
    and the same skipped objects on stderr; the references and those objects.
    """
    prog = prog if prog is not None else world.program()
    values = [hex(p.netmem) for p in pages]
    result = run_cli("holders", *values, "--json", program=prog)
    mine = result.json()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        theirs = run_snippet(snippet(prog, "holders", *values), prog)
    assert project(theirs, KEYS["holders"]) == project(mine, KEYS["holders"])
    assert _problems(err.getvalue()) == _problems(result.err)
    assert (result.code == 4) == bool(_problems(result.err)), result.err
    return [h for record in mine for h in record["holders"]], _problems(result.err)


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


def _idpf_single() -> tuple:
    w = World("linux-7.3")
    nic = FakeIdpf(w.init_net, "ens2f0", groups=2, count=16, single=True)
    pool = FakePagePool(w, netdev=nic.dev)
    nic.use_pool(1, 0, pool.obj.addr)
    pages = pool.alloc_pages(3)
    nic.post(1, 0, 9, pages[0].netmem)
    nic.post(1, 0, 10, pages[1].netmem)
    nic.post(1, 0, 11, pages[2].netmem)
    nic.take(1, 0, 11)
    return w, pages


def _idpf_stash() -> tuple:
    w = World("linux-7.3")
    nic = FakeIdpf(w.init_net, "ens2f0", groups=2, count=16)
    pool = FakePagePool(w, netdev=nic.dev)
    pages = pool.alloc_pages(3)
    nic.stash(1, pages[0], [pages[1].netmem, pages[2].netmem])
    return w, pages


def _fbnic(layout: str) -> tuple:
    w = World(layout)
    nic = FakeFbnic(w.init_net, "enp1s0", queues=2, size=8)
    pool = FakePagePool(w, netdev=nic.dev)
    pages = pool.alloc_pages(3)
    nic.post(0, "sub0", 3, pages[0].netmem)
    nic.post(1, "sub1", 7, pages[1].netmem)
    nic.post(0, "sub1", 4, pages[2].netmem)
    nic.take(0, "sub1", 4)  # drained: its entry cleared
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
    _idpf_single,
    _idpf_stash,
    lambda: _fbnic("linux-6.12"),
    lambda: _fbnic("linux-7.3"),
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
    "idpf-single",
    "idpf-stash",
    "fbnic-page",
    "fbnic-netmem",
]


@pytest.mark.parametrize("world", RINGS, ids=RING_IDS)
def test_the_holders_script_names_each_drivers_rx_ring_slots(world):
    w, pages = world()
    references = _same_holders(w, pages)
    slots = [h for h in references if h["slot"] is not None]
    assert len(slots) >= 2
    assert all(h["kind"] == "rx-ring" or h["queue"] == "rx-ring" for h in slots)


@pytest.mark.parametrize(
    "world", [_bnxt, _ice, lambda: _fbnic("linux-7.3")], ids=["bnxt", "ice", "fbnic"]
)
def test_the_leaks_script_calls_a_page_in_an_rx_ring_parked(world):
    w, pages = world()
    pool = next(p for p in w.pools if p.pages)
    pool.detach(at=86000.0)
    prog = w.program()
    mine = [json.loads(line) for line in run_cli("leaks", "--json", program=prog).out.splitlines()]
    theirs = run_snippet(snippet(prog, "leaks"), prog)
    assert project(theirs, KEYS["leaks"]) == project(mine, KEYS["leaks"])
    assert {r["verdict"] for r in mine} >= {"parked", "leaked"}


def _out_of_order(version: str) -> Tuple[World, List[FakePage], FakeSocket]:
    """A TCP connection with two skbs in its out-of-order queue and one received."""
    w = World(version)
    pages = FakePagePool(w).alloc_pages(3)
    conn = FakeSocket(w, w.init_net, local=("10.0.2.15", 5201), remote=("10.0.2.2", 40000))
    conn.queue(FakeSkb(w, [pages[0]]), "tcp-ofo")
    conn.queue(FakeSkb(w, [pages[1]]), "tcp-ofo")
    conn.queue(FakeSkb(w, [pages[2]]))
    return w, pages, conn


@pytest.mark.parametrize("version", ["linux-7.3", "linux-6.12"])
def test_the_holders_script_names_the_tcp_out_of_order_queue(version):
    w, pages, conn = _out_of_order(version)
    references = _same_holders(w, pages)
    assert [(h["queue"], h["sock"]) for h in references] == [
        ("tcp-ofo", hex(conn.obj.addr)),
        ("tcp-ofo", hex(conn.obj.addr)),
        ("receive", hex(conn.obj.addr)),
    ]


# linux-7.3: napi->gro (struct gro_node, v6.15+); linux-6.12: napi->gro_hash.
@pytest.mark.parametrize("version", ["linux-7.3", "linux-6.12"])
def test_the_holders_script_names_an_skb_held_for_gro(version):
    w = World(version)
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    napi = dev.napi(8500)
    dev.napi(8501)  # another instance, its lists empty
    pages = FakePagePool(w, netdev=dev).alloc_pages(2)
    dev.gro_hold(napi, 3, FakeSkb(w, [pages[0]], dev=dev).obj)
    dev.gro_hold(napi, 7, FakeSkb(w, [pages[1]], dev=dev).obj)
    references = _same_holders(w, pages)
    assert [h["queue"] for h in references] == ["gro", "gro"]


def _loop_out_of_order(w: World, conn: FakeSocket) -> None:
    def loop() -> None:  # the second node's parent is itself
        node = conn.ofo[1].obj.addr + w.type("struct sk_buff").member("rbnode").offset
        conn.ofo[1].obj.value["rbnode"]["__rb_parent_color"] = node | 1

    w.before_commit(loop)


def _corrupt_out_of_order() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages, conn = _out_of_order("linux-7.3")
    _loop_out_of_order(w, conn)
    return w, pages, None


def _looping_defer_list() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _queued("linux-7.3")
    looped = w.cpu_queues.deferred[0][-1]
    w.before_commit(lambda: looped.set("next", looped.addr))
    return w, pages, None


def _looping_completion_queue() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _queued("linux-6.12")  # defer lists chained through skb->next
    first = w.cpu_queues.completion[1][0]
    w.before_commit(lambda: first.set("next", first.addr))
    return w, pages, None


def _backlog_not_linking_back() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w = World("linux-7.3")
    pages = FakePagePool(w).alloc_pages(3)
    skbs = [FakeSkb(w, [page]).obj for page in pages]
    queues = w.cpu_queues
    assert queues is not None  # the layout has softnet_data
    for skb in skbs:
        queues.queue_backlog(0, skb)

    def break_prev(prog) -> None:  # after the lists are wired: the middle skb's prev
        w.mem.write(skbs[1].addr_of("prev"), (0xDEAD000).to_bytes(8, "little"))

    return w, pages, break_prev


def _fq_codel_flows_beyond_bound() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w = World("linux-7.3")
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    qdisc = FakeQdisc(w, dev, "fq_codel", handle=0x8001 << 16)
    pages = FakePagePool(w, netdev=dev).alloc_pages(1)
    qdisc.enqueue(FakeSkb(w, pages, dev=dev).obj, 0)

    def corrupt_flow_count() -> None:
        assert qdisc.data is not None  # fq_codel's private data, made by then
        qdisc.data.set("flows_cnt", 1 << 20)

    w.before_commit(corrupt_flow_count)
    return w, pages, None


def _fq_rbtree_parent() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w = World("linux-7.3")
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    qdisc = FakeQdisc(w, dev, "fq", handle=0x8001 << 16)
    pages = FakePagePool(w, netdev=dev).alloc_pages(3)
    skbs = [FakeSkb(w, [page], dev=dev).obj for page in pages]
    for skb in skbs:
        qdisc.enqueue_fq(skb, 1, rbtree=True)
    w.before_commit(lambda: skbs[0].set("rbnode.__rb_parent_color", 1))  # names no parent
    return w, pages, None


def _looping_gro_list() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w = World("linux-7.3")
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    napi = dev.napi(8500)
    pages = FakePagePool(w, netdev=dev).alloc_pages(2)
    held = FakeSkb(w, [pages[0]], dev=dev).obj
    dev.gro_hold(napi, 1, held)
    dev.gro_hold(napi, 2, FakeSkb(w, [pages[1]], dev=dev).obj)
    w.before_commit(lambda: held.set("next", held.addr))  # a list of itself, forever
    return w, pages, None


def _objects(w: World, type_name: str) -> list:
    """The world's objects of a type, in the order they were made."""
    return [o for o in w.objects if o.type.type_name() == type_name]


def _virtio_ring_too_large() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _virtio(False)
    vvq = _objects(w, "struct vring_virtqueue")[1]
    vvq.value["split"]["vring"]["num"] = 1 << 20  # queue 1's; queue 0's slots still named
    return w, pages, None


def _veth_ring_too_large() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _veth()
    (rqs,) = _objects(w, "struct veth_rq [2]")
    rqs.value[1]["xdp_ring"]["size"] = 1 << 20
    return w, pages, None


def _ice_indices_outside_the_ring() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _ice()
    _objects(w, "struct ice_rx_ring")[1].value["next_to_use"] = 99
    return w, pages, None


def _fbnic_page_queue_size_not_a_power_of_two() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _fbnic("linux-7.3")
    _objects(w, "struct fbnic_q_triad")[1].value["sub1"]["size_mask"] = 5  # 6 entries
    return w, pages, None


def _fbnic_completion_ring_of_another_queue() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _fbnic("linux-6.12")
    _objects(w, "struct fbnic_q_triad")[1].value["cmpl"]["q_idx"] = 0
    return w, pages, None


def _netdev_list_not_linking_back() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _virtio(False)
    (dev,) = [d for d in w.init_net.netdevs if d.name == "eth0"]

    def break_prev(prog) -> None:  # after the lists are wired: eth0's dev_list.prev
        w.mem.write(dev.obj.addr_of("dev_list.prev"), (0xDEAD000).to_bytes(8, "little"))

    return w, pages, break_prev


def _idpf_stash_frame_too_small() -> Tuple[World, List[FakePage], Optional[Callable]]:
    w, pages = _idpf_stash()
    _objects(w, "struct idpf_rxq_set")[1].value["rxq"]["xdp"]["frame_sz"] = 64
    return w, pages, None


CORRUPT: List[Callable[[], Tuple[World, List[FakePage], Optional[Callable]]]] = [
    _corrupt_out_of_order,
    _looping_defer_list,
    _looping_completion_queue,
    _backlog_not_linking_back,
    _fq_codel_flows_beyond_bound,
    _fq_rbtree_parent,
    _looping_gro_list,
    _virtio_ring_too_large,
    _veth_ring_too_large,
    _ice_indices_outside_the_ring,
    _netdev_list_not_linking_back,
    _fbnic_page_queue_size_not_a_power_of_two,
    _fbnic_completion_ring_of_another_queue,
    _idpf_stash_frame_too_small,
]
CORRUPT_IDS = [
    "tcp-ofo-loop",
    "defer-list-loop",
    "completion-queue-loop",
    "backlog-prev",
    "fq-codel-flows",
    "fq-rbtree-parent",
    "gro-list-loop",
    "virtio_net-ring-size",
    "veth-ring-size",
    "ice-ring-indices",
    "dev_base_head-prev",
    "fbnic-ring-size",
    "fbnic-completion-ring",
    "idpf-stash-frame",
]


@pytest.mark.parametrize("world", CORRUPT, ids=CORRUPT_IDS)
def test_the_holders_script_reports_a_corrupt_queue_as_holders_does(world):
    w, pages, after_commit = world()
    prog = w.program()
    if after_commit is not None:
        after_commit(prog)
    references, problems = _same_holders_and_problems(w, pages, prog)
    assert problems, "the corruption was not noticed"
    assert references  # the rest is still named


def test_the_holders_script_names_the_live_clone_not_a_freed_one():
    w, page, _, queued, sock = _freed_clone_below_the_queued_one()
    (frag,) = [h for h in _same_holders(w, [page]) if h["kind"] == "skb-frag"]
    assert (frag["skb"], frag["sock"], frag["queue"]) == (
        hex(queued.obj.addr),
        hex(sock.obj.addr),
        "receive",
    )


def test_the_holders_script_names_an_fq_qdiscs_skbs():
    w = World("linux-7.3")
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    pages = FakePagePool(w, netdev=dev).alloc_pages(4)
    qdisc = FakeQdisc(w, dev, "fq", handle=0x10 << 16)
    places = [(FQ_INTERNAL, False), (2, False), (2, True), (5, True)]
    for page, (flow, rbtree) in zip(pages, places):
        qdisc.enqueue_fq(FakeSkb(w, [page], dev=dev).obj, flow, rbtree=rbtree)
    references = _same_holders(w, pages)
    assert [h["queue"] for h in references] == ["qdisc"] * 4
