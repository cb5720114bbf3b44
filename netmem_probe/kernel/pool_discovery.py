"""
Page pools without a registry
-----------------------------

Before Linux kernel commit f17c69649c69 ("net: page_pool: id the page pools")
(in v6.8) the kernel keeps no list of its page pools: no ``page_pools``
XArray, no ``pool->user``, no netdev hlist, nothing netlink could dump.  A
pool is then only reachable from what points at it.  These helpers find
pools the ways the kernel's own memory allows, and say for each how it was
found:

- ``pages``: every page-pool page names its pool (``page->pp``), so one scan
  of the memmap yields every pool with pages in flight, idle or detached;
- ``veth-rq``, ``virtio-net-rq``: a driver keeps its rx queues' pools in
  its netdev's private structure, so every such netdev in every namespace
  names its pools, idle ones included (:func:`pools_from_owners`);
- ``slab``: every pool is a ``kzalloc()``\\ ed object of the kmalloc cache of
  its size, so the allocated objects of that cache that hold a page pool's
  invariants are the pools, including idle ones no page names.

A candidate is only kept when it reads as a page pool (see
:func:`pool_invariant_violation`); an address that fails is recorded as a
problem, never shown as a pool.
"""

from typing import Callable, Dict, Iterator, List, Optional, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.memmap import MemmapScan
from netmem_probe.kernel.skbs import SkbSlabFinder
from netmem_probe.kernel.structs import StructReader
from netmem_probe.kernel.walk import Problems

__all__ = (
    "FOUND_BY",
    "discover_pools",
    "pool_invariant_violation",
    "pools_from_owners",
    "pools_from_pages",
    "pool_slab_finder",
)

#: The ways a pool can be found, in the order :func:`discover_pools` tries them.
FOUND_BY = ("registry", "veth-rq", "virtio-net-rq", "pages", "slab")

MAX_PAGE_ORDER = 10
# page_pool_init() refuses rings larger than this (-E2BIG).
MAX_RING_SIZE = 32768
# PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_PAGE_FRAG (v5.15-v6.7) or
# PP_FLAG_SYSTEM_POOL | PP_FLAG_ALLOW_UNREADABLE_NETMEM (later): no kernel
# accepts a flag above bit 3 (page_pool_init() checks PP_FLAG_ALL).
PP_FLAG_ALL = 0xF
MAX_NUMNODES = 1 << 10  # CONFIG_NODES_SHIFT is at most 10


def pool_invariant_violation(raw: Dict[str, Optional[int]], cache_capacity: int) -> str:
    """
    Why a ``struct page_pool`` read from memory cannot be a live page pool,
    or ``""`` if it can: what ``page_pool_init()`` establishes and the pool
    keeps while it lives.

    :param raw: the members :func:`pool_reader` decodes.
    :param cache_capacity: slots of ``pool->alloc.cache``.
    """
    order, size = raw["order"], raw["ring_size"]
    assert order is not None and size is not None
    if order > MAX_PAGE_ORDER:
        return f"order {order} above MAX_PAGE_ORDER"
    flags = raw["flags"]
    if flags is not None and flags & ~PP_FLAG_ALL:
        return f"flags {flags:#x} outside PP_FLAG_ALL"
    pool_size = raw["pool_size"] or 0
    # page_pool_init(): ptr_ring_init(&pool->ring, pool_size ?: 1024).
    if not 0 < size <= MAX_RING_SIZE or size != (pool_size or 1024):
        return f"ring.size {size} does not fit pool_size {pool_size}"
    if not raw["ring_queue"]:
        return "ring.queue is NULL"
    for index in ("ring_producer", "ring_consumer_head", "ring_consumer_tail"):
        value = raw[index]
        if value is not None and not 0 <= value < size:
            return f"{index.replace('_', '.', 1)} {value} outside a ring of {size}"
    count = raw["alloc_count"]
    assert count is not None
    if count > cache_capacity:
        return f"alloc.count {count} exceeds the {cache_capacity}-slot cache"
    hold, release = raw["hold"], raw["release"]
    assert hold is not None and release is not None
    inflight = (hold - release) & 0xFFFFFFFF
    if inflight >= 1 << 31:
        return f"release {release & 0xFFFFFFFF} ahead of hold {hold}"
    nid = raw["nid"]
    if nid is not None and not -1 <= nid < MAX_NUMNODES:
        return f"nid {nid} is no NUMA node"
    dev = raw["dev"]
    # Kernel pointers lie in the upper half of the address space (x86-64,
    # arm64, with 4- or 5-level page tables).
    if dev is not None and dev and not dev >> 63:
        return f"p.dev {dev:#x} is not a kernel pointer"
    if flags is not None and flags & 1 and not dev:
        return "PP_FLAG_DMA_MAP without a device"
    return ""


def pool_reader(prog: Program) -> StructReader:
    """The members of ``struct page_pool`` the invariants need."""
    pool = prog.type("struct page_pool")
    try:
        pool.member("slow")
        flags = "slow.flags"
    except LookupError:
        flags = "p.flags"
    return StructReader(
        prog,
        "struct page_pool",
        {
            "order": "p.order",
            "pool_size": "p.pool_size",
            "nid": "p.nid",
            "dev": "p.dev",
            "flags": flags,
            "hold": "pages_state_hold_cnt",
            "release": "pages_state_release_cnt.counter",
            "alloc_count": "alloc.count",
            "ring_producer": "ring.producer",
            "ring_consumer_head": "ring.consumer_head",
            "ring_consumer_tail": "ring.consumer_tail",
            "ring_size": "ring.size",
            "ring_queue": "ring.queue",
        },
    )


def pools_from_pages(
    scan: MemmapScan, observe: Optional[Callable[[int, bytes], None]] = None
) -> Dict[int, int]:
    """
    ``page->pp -> number of pages`` over every page-pool page of the memmap
    (one :meth:`MemmapScan.matches` pass, whose chunks ``observe`` is given
    too).
    """
    counts: Dict[int, int] = {}
    unpack = scan.unpacker.unpack_from
    for _, _, data, offset in scan.matches(observe=observe):
        pool = unpack(data, offset)[1]
        counts[pool] = counts.get(pool, 0) + 1
    return counts


def _veth_rq_pools(dev: drgn.Object) -> Iterator[int]:
    """
    The pools of the veth ``struct net_device *`` ``dev``'s rx queues:
    ``netdev_priv(dev)`` is a ``struct veth_priv`` whose
    ``rq[0..real_num_rx_queues)`` each hold one (made while XDP or GRO is on)
    since Linux kernel commit 0ebab78cbcbf ("net: veth: add page_pool for
    page recycling") (in v6.4).
    """
    from drgn.helpers.linux.net import netdev_priv

    priv = drgn.cast("struct veth_priv *", netdev_priv(dev))
    if priv.rq:
        for queue in range(min(dev.real_num_rx_queues.value_(), MAX_RING_SIZE)):
            yield priv.rq[queue].page_pool.value_()


def _virtio_net_rq_pools(dev: drgn.Object) -> Iterator[int]:
    """
    The pools of the virtio_net ``struct net_device *`` ``dev``'s receive
    queues: ``netdev_priv(dev)`` is a ``struct virtnet_info`` whose
    ``rq[0..max_queue_pairs)`` each hold one since Linux kernel commit
    24fbd3967f3f ("virtio_net: add page_pool support for buffer
    allocation") (in v7.1).
    """
    from drgn.helpers.linux.net import netdev_priv

    vi = drgn.cast("struct virtnet_info *", netdev_priv(dev))
    if vi.rq:
        for queue in range(min(vi.max_queue_pairs.value_(), MAX_RING_SIZE)):
            yield vi.rq[queue].page_pool.value_()


#: found-by and the reader of the pools a driver's rx queues hold, by driver name.
OWNERS = {
    "veth": ("veth-rq", _veth_rq_pools),
    "virtio_net": ("virtio-net-rq", _virtio_net_rq_pools),
}


def pools_from_owners(prog: Program, problems: Problems) -> Dict[int, str]:
    """
    ``pool address -> found-by`` (``"veth-rq"``, ``"virtio-net-rq"``) of every
    pool an rx queue of a veth or virtio_net netdev holds, in every namespace
    on ``net_namespace_list``.  A driver whose types the target lacks (or
    whose queues have no pool member yet) names none.
    """
    from netmem_probe.kernel.netdev import NetdevReader, for_each_net_address
    from netmem_probe.kernel.walk import list_nodes

    found: Dict[int, str] = {}
    try:
        dev_list = drgn.offsetof(prog.type("struct net"), "dev_base_head")
        dev_node = drgn.offsetof(prog.type("struct net_device"), "dev_list")
    except LookupError:
        return found
    netdevs = NetdevReader(prog, Problems())
    for net in for_each_net_address(prog, problems):
        for node in list_nodes(prog, net + dev_list, what="dev_base_head", problems=problems):
            info = netdevs.info(node - dev_node)
            if info is None or info.driver not in OWNERS:
                continue
            how, pools = OWNERS[info.driver]
            dev = drgn.Object(prog, "struct net_device *", node - dev_node)
            try:
                for pool in pools(dev):
                    if pool:
                        found[pool] = how
            except (LookupError, AttributeError):
                continue  # no types for the driver, or no pool member in its rx queue
            except drgn.FaultError as e:
                problems.fault(f"{info.driver} {info.name} rx queues", e.address, e)
    return found


def pool_slab_finder(
    prog: Program, problems: Problems, notes: List[str]
) -> Optional[SkbSlabFinder]:
    """
    A finder of the objects of the kmalloc cache that ``page_pool_create()``'s
    ``kzalloc_node(sizeof(struct page_pool))`` takes pools from, to be given
    the chunks of a memmap pass (one vectorised test of every struct page's
    ``slab_cache``, where drgn's ``slab_cache_for_each_allocated_object()``
    calls ``PageSlab()`` on each struct page in Python: 25 s of the 30 s
    ``pools`` took on a 1.5 GiB 6.1 dump, most of an hour on a large host);
    None when the target's slab allocator cannot be walked (no
    ``slab_caches``, no such cache, a corrupt cache: said in ``notes``).
    Its objects include free ones: :func:`discover_pools` keeps those that
    read as a pool and the slab records as allocated.
    """
    from drgn.helpers.linux.slab import find_slab_cache

    size = drgn.sizeof(prog.type("struct page_pool"))
    try:
        for names in _kmalloc_cache_names(size):
            caches = [c for c in (find_slab_cache(prog, name) for name in names) if c is not None]
            if caches:
                finder = SkbSlabFinder.for_caches(
                    prog, problems, [(cache, (0,)) for cache in caches], "page pool slab"
                )
                if finder is None:
                    notes.append("the slab was not searched for pools: its slabs cannot be told")
                return finder
    except (LookupError, ValueError, NotImplementedError, drgn.FaultError) as e:
        notes.append(f"the slab was not searched for pools: kmalloc caches not walkable ({e})")
        return None
    notes.append(f"the slab was not searched for pools: no kmalloc cache for {size} bytes")
    return None


def _slab_allocated(prog: Program, address: int) -> Optional[bool]:
    """Whether the slab records the object at ``address`` as allocated; None if it cannot say."""
    from drgn.helpers.linux.slab import slab_object_info

    try:
        info = slab_object_info(prog, address)
    except (LookupError, ValueError, NotImplementedError, AttributeError, drgn.FaultError):
        return None
    return info is not None and bool(info.allocated)


def _kmalloc_cache_names(size: int) -> Iterator[List[str]]:
    """
    The names of the kmalloc caches an object of ``size`` bytes may be in,
    smallest fitting size first: ``kmalloc-N``, and since Linux kernel commit
    3c6152940584 ("Randomized slab caches for kmalloc()") (in v6.6) with
    CONFIG_RANDOM_KMALLOC_CACHES its 15 random copies ``kmalloc-rnd-NN-N``.
    """
    fits = [n for n in (96, 192) if n >= size]
    fits += [1 << shift for shift in range(3, 14) if 1 << shift >= size]
    for n in sorted(set(fits)):
        suffix = f"{n // 1024}k" if n >= 1024 else str(n)
        yield [f"kmalloc-{suffix}"] + [f"kmalloc-rnd-{i:02d}-{suffix}" for i in range(1, 16)]


def check_pool_at(prog: Program, address: int) -> str:
    """Why the object at ``address`` is no page pool, or ``""`` if it reads as one."""
    reader = pool_reader(prog)
    capacity = reader.type.member("alloc").type.member("cache").type.length or 0
    try:
        return pool_invariant_violation(reader.read(address), capacity)
    except drgn.FaultError as e:
        return f"unreadable ({e.message} at {e.address:#x})"


def discover_pools(
    prog: Program,
    problems: Problems,
    scan: Optional[MemmapScan] = None,
    notes: Optional[List[str]] = None,
) -> List[Tuple[int, Tuple[str, ...]]]:
    """
    Every page pool found without a registry, by address, each with how it
    was found (``"veth-rq"``, ``"virtio-net-rq"``, ``"pages"``, ``"slab"``).
    A ``page->pp`` or an owner's pointer that does not read as a page pool is
    recorded in ``problems`` and left out; a slab object that does not is
    simply another object of that size.

    :param notes: collects the ways that could not be used, and why.
    """
    scan = scan or MemmapScan(prog, problems)
    notes = notes if notes is not None else []
    found: Dict[int, List[str]] = {}
    for pool, owner in pools_from_owners(prog, problems).items():
        found.setdefault(pool, []).append(owner)
    finder = pool_slab_finder(prog, problems, notes)
    # The slab search shares the pages' pass over the memmap.
    for pool in pools_from_pages(scan, observe=finder.chunk if finder is not None else None):
        found.setdefault(pool, []).append("pages")
    if finder is not None:
        for pool in finder.result(scan.holes).skbs:
            found.setdefault(pool, []).append("slab")
    reader = pool_reader(prog)
    capacity = reader.type.member("alloc").type.member("cache").type.length or 0
    kept: List[Tuple[int, Tuple[str, ...]]] = []
    unconfirmed = 0
    for address in sorted(found):
        how = tuple(found[address])
        try:
            raw = reader.read(address)
        except drgn.FaultError as e:
            problems.fault("page pool", address, e)
            continue
        reason = pool_invariant_violation(raw, capacity)
        if not reason and how == ("slab",):
            allocated = _slab_allocated(prog, address)
            if not allocated:
                if allocated is None:
                    unconfirmed += 1
                continue  # a freed pool's object still reads as one
        if reason:
            # An object of the cache that is no page pool is expected (the
            # cache holds other objects of that size); a page naming one is
            # a finding.
            if how != ("slab",):
                named = "page->pp" if "pages" in how else f"its owner ({how[0]})"
                problems.add("page pool", address, f"named by {named} but not a pool: {reason}")
            continue
        kept.append((address, how))
    if unconfirmed:
        notes.append(
            f"{unconfirmed} slab object(s) that read as a pool left out: "
            "the slab could not say whether they are allocated"
        )
    return kept
