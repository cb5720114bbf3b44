"""
Named scenarios: the worlds the bundled fixtures are made of.

Each scenario builds a :class:`World` on a given layout and records in
``world.expected`` what a correct tool must report beyond the pools (which
every :class:`FakePagePool` describes itself).  ``scripts/make-fixtures``
writes every scenario on every layout it supports to
``fixtures/vmcore-stubs/``.
"""

from typing import Callable, Dict, List, Tuple

from netmem_probe.fake.drivers import FakeVeth
from netmem_probe.fake.net import NetNamespace
from netmem_probe.fake.pools import (
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    FakePagePool,
)
from netmem_probe.fake.printk import KERN_CRIT, KERN_ERR, KERN_WARNING, FakeKernelLog
from netmem_probe.fake.providers import add_providers
from netmem_probe.fake.sockets import add_sockets
from netmem_probe.fake.types_elf import available_layouts
from netmem_probe.fake.world import World

__all__ = ("LAYOUT_ASSERTS", "SCENARIOS", "build", "fixture_names")

# How many netmem layout asserts include/net/netmem.h has at each layout
# family's version (NETMEM_DESC_ASSERT_OFFSET + NET_IOV_ASSERT_OFFSET +
# the sizeof(struct netmem_desc) static_assert).
LAYOUT_ASSERTS = {
    # no netmem.h asserts yet: page_pool's own pp_magic-over-compound_head
    "linux-5.15": 1,
    "linux-6.1": 1,
    "linux-6.6": 1,  # the same
    "linux-6.8": 1,  # the same: no net_iov (v6.12) nor netmem_desc (v6.17)
    "linux-6.12": 4,  # 4 NET_IOV_ASSERT_OFFSET (net_iov vs page)
    "linux-6.16": 4,  # the same 4
    "linux-6.18": 13,  # 6 NETMEM_DESC + sizeof + 6 NET_IOV (union mirror)
    "linux-7.1-rc": 8,  # 6 NETMEM_DESC + sizeof + NET_IOV page_type
    "linux-7.3": 7,  # 6 NETMEM_DESC + sizeof
    "linux-7.3-arm64": 7,  # the same netmem.h on arm64, 4 KiB pages
    "linux-7.3-arm64-16k": 7,  # and 16 KiB pages
    "broken-netmem-desc": 7,
}

BOOTTIME = 90061.0  # 1 day, 1 hour, 1 minute, 1 second
NIC_FLAGS = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV


def _nic_stats(seed: int, nr_cpus: int) -> Dict[str, object]:
    return {
        "alloc-fast": 1000 * seed + 11,
        "alloc-slow": 40 + seed,
        "alloc-slow-high-order": 0,
        "alloc-empty": 3 + seed,
        "alloc-refill": 17 * seed,
        "alloc-waive": seed,
        "recycle": [
            {
                "recycle-cached": 500 * (cpu + 1) + seed,
                "recycle-cache-full": cpu,
                "recycle-ring": 90 + cpu,
                "recycle-ring-full": seed,
                "recycle-released-refcnt": 7 * cpu,
            }
            for cpu in range(nr_cpus)
        ],
    }


def add_page_pools(w: World) -> None:
    """The page pool part of the mixed scenario: one pool in every state."""
    init = w.init_net
    eth0 = init.netdev("eth0", driver="virtio_net", num_rx_queues=2)
    q0 = FakePagePool(
        w,
        netdev=eth0,
        napi_id=8200,
        queue=0,
        flags=NIC_FLAGS,
        nid=0,
        stats=_nic_stats(1, w.nr_cpus),
    )
    q0.alloc_pages(6, "out")
    q0.alloc_pages(3, "cache")
    # A ring that wraps around its end, with consumed slots not yet zeroed.
    q0.ring_start = q0.ring_size - 2
    stale = q0.alloc_pages(2, "out")
    q0.ring_stale = [p.netmem for p in stale]
    q0.alloc_pages(4, "ring")
    # Counters that wrapped around 2**32: in flight is their s32 distance.
    q1 = FakePagePool(
        w,
        netdev=eth0,
        napi_id=8201,
        queue=1,
        flags=NIC_FLAGS,
        nid=0,
        counter_base=(1 << 32) - 3,
        stats=_nic_stats(2, w.nr_cpus),
    )
    q1.alloc_pages(5, "out")

    # eth1 unbound while sockets held its pages: the pool moved to lo.
    eth1 = init.netdev("eth1", driver="virtio_net")
    orphan = FakePagePool(w, netdev=eth1, napi_id=8210, flags=NIC_FLAGS, order=1)
    orphan.alloc_pages(4, "out")
    orphan.alloc_pages(2, "cache")
    eth1.unregister()
    orphan.detach(BOOTTIME - 600, release_retries=600)

    # eth2's driver never destroyed its pool: orphaned, not detached.
    eth2 = init.netdev("eth2", driver="mlx5_core")
    leaky = FakePagePool(w, netdev=eth2, napi_id=8220, flags=NIC_FLAGS)
    leaky.alloc_pages(2, "out")
    eth2.unregister()

    # veth with XDP: pools with no netdev, invisible to netlink.  Before the
    # registry, where the layout has veth's types, each is held by its rx
    # queue (veth_rq.page_pool): the one way besides the pages to find it.
    ns_a = NetNamespace(w, "nsA")
    owned = w.has_member("struct veth_rq", "page_pool") and not w.has_registry
    for name in ("veth0", "veth1"):
        veth = FakeVeth(ns_a, name) if owned else ns_a.netdev(name, kind="veth")
        pool = FakePagePool(w)
        if isinstance(veth, FakeVeth):
            veth.own(0, pool)
        pool.alloc_pages(8, "out")
        pool.alloc_pages(2, "cache")
    # A veth pair deleted while a socket in nsA held its skbs.
    deleted = FakePagePool(w)
    deleted.alloc_pages(3, "out")
    deleted.detach(BOOTTIME - 3600, release_retries=3600)

    # nsB was dismantled while pages were held: its pool is wiped
    # (NET_PTR_POISON), invisible and detached.
    ns_b = NetNamespace(w, "nsB")
    dev_b = ns_b.netdev("eth0", driver="virtio_net")
    doomed = FakePagePool(w, netdev=dev_b, napi_id=8230, flags=NIC_FLAGS)
    doomed.alloc_pages(5, "out")
    doomed.detach(BOOTTIME - 7200, release_retries=7200)
    ns_b.dismantle()

    # A pool whose pages all came back: nothing in flight.
    idle = FakePagePool(w, netdev=eth0, napi_id=8202, queue=1, flags=NIC_FLAGS)
    idle.release_pages(idle.alloc_pages(4, "out"))


# The pool ids of page_pool_release_retry() warnings about pools that have
# since gone (their pages came back, the pool was freed).
GONE_POOL_ID = 42


def add_kernel_log(w: World) -> None:
    """
    The kernel log, on layouts that have the lockless printk ring buffer:
    boot lines, and what Linux 7.3 prints about page pools.  Since the Linux
    kernel commit "net: page_pool: mute the periodic warning for visible
    page pools" (in v6.8), page_pool_release_retry() warns every 60 s only
    about detached pools with no netdev or a NET_PTR_POISON one; the ring
    keeps the last three of each.  Also: a pool that has since gone, a WARN
    in net/core/page_pool.c and a devmem TCP error, which name no pool.
    """
    if not FakeKernelLog.supported(w):
        return
    log = FakeKernelLog(w)
    log.log(0.0, f"Linux version {w.osrelease} (netmem-probe fixture)")
    log.log(1.2, "NET: Registered PF_INET protocol family")
    # Before v6.8 the warning names no pool id (there are none).
    warnings = [(BOOTTIME - 5000, GONE_POOL_ID, 1, 60)] if w.has_registry else []
    for pool in w.pools:
        if (
            pool.id is None
            or pool.detach_time is None
            or not pool.inflight
            or pool.state != "invisible"
        ):
            continue
        age = int(BOOTTIME - pool.detach_time)
        for sec in range(age // 60 * 60 - 120, age // 60 * 60 + 1, 60):
            warnings.append((pool.detach_time + sec, pool.id, pool.inflight, sec))
    # (seconds after boot, level, text, truth)
    messages = [
        (
            at,
            KERN_WARNING,
            "page_pool_release_retry() stalled pool shutdown: "
            f"id {pool_id}, {inflight} inflight {sec} sec",
            {"kind": "stalled-shutdown", "pool-id": pool_id, "inflight": inflight, "seconds": sec},
        )
        for at, pool_id, inflight, sec in warnings
    ]
    if w.has_type("struct net_iov"):
        messages += [
            (
                BOOTTIME - 900,
                KERN_WARNING,
                "WARNING: net/core/page_pool.c:1190 at page_pool_put_unrefed_netmem+0x2a5/0x2f0, "
                "CPU#1: swapper/1/0",
                {"kind": "warning", "pool-id": None},
            ),
            (
                BOOTTIME - 800,
                KERN_ERR,
                "TCP: Found non-dmabuf skb with net_iov",
                {"kind": "devmem", "pool-id": None},
            ),
        ]
        log.log(BOOTTIME - 900, "------------[ cut here ]------------", KERN_WARNING)
    else:
        # A kernel without netmem has neither that function nor devmem TCP;
        # page_pool_empty_ring()'s pr_crit() is as old as page pools.
        messages.append(
            (
                BOOTTIME - 900,
                KERN_CRIT,
                "page_pool_empty_ring() page_pool refcnt 2 violation",
                {"kind": "refcnt-violation", "pool-id": None},
            )
        )
    for at, level, text, _ in messages:
        log.log(at, text, level, caller_id=0x80000001)
    w.expected["kernel-log"] = [
        {"text": text, **truth} for _, _, text, truth in sorted(messages, key=lambda m: m[0])
    ]


def _decode_expectations(w: World) -> List[Dict[str, object]]:
    """Netmem values and what ``decode`` must say about them."""
    out: List[Dict[str, object]] = []
    for pool in w.pools:
        for page in pool.pages[:2]:
            out.append(page.expected_decode())
    machine = w.machine
    # the 6th page of RAM: a struct page that no pool owns
    not_pp = w.page_struct_addr((machine.ram_base >> machine.page_shift) + 5)
    bad = [0, machine.vmemmap + 8, machine.page_offset + 0x1000, not_pp]
    out += [{"netmem": hex(value), "kind": "page", "error": True} for value in bad]
    return out


def build_mixed(layout: str) -> Tuple[World, str]:
    w = World(layout, boottime=BOOTTIME)
    add_page_pools(w)
    add_providers(w)
    add_sockets(w)
    add_kernel_log(w)
    w.expected["decode"] = _decode_expectations(w)
    w.expected["layout"] = {"asserts": LAYOUT_ASSERTS[layout], "mismatches": 0}
    return w, (
        "Page pools in every state: listed on a NIC (DMA-mapped, wrapped ring, "
        "wrapped counters), orphaned onto lo (detached and not), invisible veth "
        "pools, a pool of a dismantled namespace, system pools. Memory providers "
        "the layout has: devmem bindings (one unbound and lingering), zcrx areas "
        "(several per ifq, device-less), niovs in every state. Sockets whose "
        "receive/error queues and backlog hold pages and niovs in skb frags and "
        "heads; detached pools' pages parked, back in the ring, and leaked."
    )


def build_many_pools(layout: str) -> Tuple[World, str]:
    """150 pools over 3 namespaces, ids with gaps: a 2-level page_pools XArray."""
    w = World(layout, boottime=BOOTTIME)
    next_id = 3
    for n in range(3):
        ns = NetNamespace(w, f"ns{n}")
        for d in range(5):
            dev = ns.netdev(f"eth{d}", driver="virtio_net", num_rx_queues=10)
            for q in range(10):
                pool = FakePagePool(
                    w,
                    netdev=dev,
                    napi_id=8300 + len(w.pools),
                    queue=q,
                    flags=NIC_FLAGS,
                    pool_id=next_id,
                )
                pool.alloc_pages((n + d + q) % 4, "out")
                next_id += 1 + (q % 3 == 2)  # destroyed pools leave id gaps
    if FakeKernelLog.supported(w):
        FakeKernelLog(w).log(0.0, f"Linux version {w.osrelease} (netmem-probe fixture)")
        w.expected["kernel-log"] = []
    w.expected["layout"] = {"asserts": LAYOUT_ASSERTS[layout], "mismatches": 0}
    return w, "150 page pools in 3 namespaces with id gaps: a two-level page_pools XArray."


def build_broken_layout(layout: str) -> Tuple[World, str]:
    w = World(layout, boottime=BOOTTIME)
    w.expected["layout"] = {"asserts": LAYOUT_ASSERTS[layout], "mismatches": 1}
    return w, (
        "A kernel layout whose struct netmem_desc._pp_mapping_pad is 4 bytes, not "
        "struct page's 8: the layout check must fail on exactly that agreement."
    )


SCENARIOS: Dict[str, Callable[[str], Tuple[World, str]]] = {
    "mixed": build_mixed,
    "many-pools": build_many_pools,
    "broken-layout": build_broken_layout,
}

# fixture name -> (scenario, layout)
FIXTURES: Dict[str, Tuple[str, str]] = {
    **{
        f"{layout}-mixed": ("mixed", layout)
        for layout in available_layouts()
        if layout.startswith("linux-")
    },
    "linux-7.3-many-pools": ("many-pools", "linux-7.3"),
    "broken-netmem-desc": ("broken-layout", "broken-netmem-desc"),
}


def fixture_names() -> List[str]:
    return sorted(FIXTURES)


def build(fixture: str) -> Tuple[World, str]:
    scenario, layout = FIXTURES[fixture]
    return SCENARIOS[scenario](layout)
