"""
Page pools
----------

Every page pool the kernel creates is registered in the static ``page_pools``
XArray of ``net/core/page_pool_user.c`` (v6.8+), whatever its state; netlink
only shows those linked on a netdev's ``page_pools`` hlist in the caller's
namespace.  These helpers enumerate the XArray, classify each pool by the
kernel's own visibility rules (listed, orphaned onto loopback, invisible),
and compute what ``page_pool_nl_fill()`` reports, plus the pool-internal state
netlink does not show.  Kernels before v6.8 keep no registry: there the pools
come from :mod:`~netmem_probe.kernel.pool_discovery` (the pages that name
them, the slab), each ``unregistered``, with no id.
"""

from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Iterator, List, NamedTuple, Optional, Tuple

import drgn
from drgn import Object, Program

from netmem_probe.kernel.cache import per_program
from netmem_probe.kernel.netdev import NetdevInfo, NetdevReader, namespace_page_pool_lists
from netmem_probe.kernel.netmem import poison_pointer_delta
from netmem_probe.kernel.platform import page_size
from netmem_probe.kernel.pool_discovery import discover_pools
from netmem_probe.kernel.structs import StructReader, member_exists
from netmem_probe.kernel.walk import (
    CorruptionError,
    Problems,
    attempts,
    inconsistent,
    ptr_ring_entries,
    ptr_ring_slots,
    read_words,
    wrap,
    xa_entries,
)

__all__ = (
    "PP_FLAG_DMA_MAP",
    "PP_FLAG_SYSTEM_POOL",
    "STAT_NAMES",
    "PagePoolInfo",
    "PagePoolScanner",
    "for_each_page_pool",
    "has_page_pool_registry",
    "page_pool_inflight",
    "page_pools_xarray",
    "pool_provider",
    "provider_ops_address",
    "AllocCache",
    "PtrRing",
    "pool_held_netmems",
    "ptr_ring_entries",
    "ptr_ring_slots",
)

PP_FLAG_DMA_MAP = 1 << 0
PP_FLAG_SYSTEM_POOL = 1 << 2
MAX_PAGE_ORDER = 10
# page_pool_init() refuses rings larger than this (-E2BIG), and since Linux
# 6.13 caps them at 16384.
MAX_RING_SIZE = 32768
# The slots of the alloc cache and the ptr_ring are pointers (netmem_ref,
# void *), read as the 64-bit words of the targets netmem-probe supports.
POINTER_SIZE = 8

# netlink attribute -> member of struct page_pool_alloc_stats or
# struct page_pool_recycle_stats (CONFIG_PAGE_POOL_STATS).
STAT_NAMES = {
    "alloc-fast": "alloc_stats.fast",
    "alloc-slow": "alloc_stats.slow",
    "alloc-slow-high-order": "alloc_stats.slow_high_order",
    "alloc-empty": "alloc_stats.empty",
    "alloc-refill": "alloc_stats.refill",
    "alloc-waive": "alloc_stats.waive",
    "recycle-cached": "cached",
    "recycle-cache-full": "cache_full",
    "recycle-ring": "ring",
    "recycle-ring-full": "ring_full",
    "recycle-released-refcnt": "released_refcnt",
}


def page_pools_xarray(prog: Program) -> Object:
    """:return: ``struct xarray *`` of the pool registry (``page_pools``)."""
    try:
        return prog.object("page_pools", filename="page_pool_user.c").address_of_()
    except LookupError:
        return prog["page_pools"].address_of_()


def has_page_pool_registry(prog: Program) -> bool:
    """
    Whether the kernel registers its pools: the ``page_pools`` XArray came
    with Linux kernel commit f17c69649c69 ("net: page_pool: id the page
    pools") (in v6.8).
    """
    try:
        page_pools_xarray(prog)
        return True
    except LookupError:
        return False


def for_each_page_pool(prog: Program, problems: Optional[Problems] = None) -> Iterator[Object]:
    """
    Iterate over every page pool in the kernel.

    :param problems: collects unreadable XArray nodes; without it they raise
        :class:`~netmem_probe.kernel.walk.CorruptionError`.
    :return: Iterator of ``struct page_pool *`` objects, in id order.
    """
    xa = page_pools_xarray(prog).value_()
    for _, entry in xa_entries(prog, xa, what="page_pools xarray", problems=problems):
        yield Object(prog, "struct page_pool *", entry)


def page_pool_inflight(pool: Object) -> int:
    """
    Pages (or niovs) the pool handed out and has not had back, as
    ``page_pool_inflight(pool, false)`` computes it: the signed 32-bit
    distance between the hold and release counters, floored at 0.

    :param pool: ``struct page_pool *``
    """
    hold = pool.pages_state_hold_cnt.value_()
    release = pool.pages_state_release_cnt.counter.value_()
    return max(0, _s32(hold - release))


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True)
class PtrRing:
    """A ``struct ptr_ring`` as read with its pool: its indexes and slot array."""

    producer: int
    consumer_head: int
    size: int
    queue: int

    def slots(self, prog: Program) -> List[int]:
        """The slots holding entries, oldest first (see :func:`ptr_ring_slots`)."""
        return ptr_ring_slots(self.producer, self.consumer_head, self.size, self.queue, prog)

    def entries(self, prog: Program) -> List[int]:
        """The entries the ring holds, oldest first (see :func:`ptr_ring_entries`)."""
        return ptr_ring_entries(self.producer, self.consumer_head, self.size, self.queue, prog)

    def slot_address(self, slot: int) -> int:
        return self.queue + POINTER_SIZE * slot

    @property
    def end(self) -> int:
        """The address after the slot array."""
        return self.slot_address(self.size)


@dataclass(frozen=True)
class AllocCache:
    """
    A pool's lockless ``alloc.cache`` array as read with its pool: the netmems
    in ``cache[0:count]`` are the pool's, the slots after them stale.
    """

    address: int  # of cache[0]
    capacity: int  # PP_ALLOC_CACHE_SIZE
    count: int  # alloc.count, at most the capacity (checked when the pool is read)

    def slot_address(self, slot: int) -> int:
        return self.address + POINTER_SIZE * slot

    @property
    def end(self) -> int:
        """The address after the array."""
        return self.slot_address(self.capacity)

    def entries(self, prog: Program) -> Tuple[int, ...]:
        """The netmems in ``cache[0:count]``."""
        return read_words(prog, self.address, self.count) if self.count else ()


def pool_held_netmems(prog: Program, info: "PagePoolInfo", problems: Problems) -> Dict[int, str]:
    """
    What a pool holds itself: ``netmem -> "cache"`` for its alloc cache and
    ``netmem -> "ring"`` for its ptr_ring entries.  An unreadable part is
    recorded in ``problems`` and left out; the other part is still returned.
    """
    held: Dict[int, str] = {}
    try:
        held.update(dict.fromkeys(info.ring.entries(prog), "ring"))
    except drgn.FaultError as e:
        problems.fault("page pool ring", info.address, e)
    try:
        held.update(dict.fromkeys(info.alloc_cache.entries(prog), "cache"))
    except drgn.FaultError as e:
        problems.fault("page pool alloc cache", info.address, e)
    return held


def provider_ops_address(prog: Program, name: str) -> Optional[int]:
    """Address of a ``memory_provider_ops`` instance, or None if not built."""
    try:
        return prog.object(name).address_
    except (LookupError, ValueError):
        return None


def pool_provider(prog: Program, mp_ops: Optional[int], mp_priv: int) -> Optional[str]:
    """
    The memory provider of a page pool (or of an rx queue's
    ``mp_params``): ``"dmabuf"``, ``"io_uring"``, ``"unknown"`` or None.

    :param mp_ops: ``pool->mp_ops`` (None on kernels without it).
    :param mp_priv: ``pool->mp_priv``.
    """
    if mp_ops is None:
        # Before Linux kernel commit 57afb4830157 ("net: page_pool: create
        # hooks for custom memory providers") (in v6.15), devmem was the only
        # provider and mp_priv its binding.
        return "dmabuf" if mp_priv else None
    if not mp_ops:
        return None
    if mp_ops == provider_ops_address(prog, "dmabuf_devmem_ops"):
        return "dmabuf"
    if mp_ops == provider_ops_address(prog, "io_uring_pp_zc_ops"):
        return "io_uring"
    return "unknown"


@dataclass
class PagePoolInfo:
    """A page pool, read once and decoded: what ``pools`` and ``pool`` show."""

    id: Optional[int]  # None: the kernel has no registry (before v6.8), no ids
    address: int
    state: str  # "listed", "orphaned", "invisible", "unreachable", "unregistered"
    detached: bool
    netdev: Optional[NetdevInfo]
    orig_netdev: Optional[str]
    queue: Optional[int]
    napi_id: Optional[int]
    order: int
    pool_size: int
    nid: int
    cpuid: Optional[int]
    flags: int
    dma_map: bool
    hold: int
    release: int
    destroy_cnt: int
    detach_time: Optional[int]
    detach_age: Optional[int]
    provider: Optional[str]
    #: ``pool->mp_priv``: the provider's binding or zcrx ifq.
    mp_priv: int
    dmabuf: Optional[int]
    io_uring: Optional[Dict[str, int]]
    alloc_cache: AllocCache = field(repr=False)
    ring: PtrRing = field(repr=False)
    #: ``pool->recycle_stats`` (per-CPU), None without CONFIG_PAGE_POOL_STATS.
    recycle_stats: Optional[int] = field(repr=False)
    #: The ``alloc_stats`` counters by netlink name (None each without
    #: CONFIG_PAGE_POOL_STATS).
    alloc_stats: Dict[str, Optional[int]] = field(repr=False)
    #: The kernel's PAGE_SIZE: a pool's pages are PAGE_SIZE << order bytes.
    page_size: int
    warnings: List[str] = field(default_factory=list)
    #: How the pool was found: ``registry``, ``veth-rq``, ``virtio-net-rq``,
    #: ``pages``, ``slab`` (or ``address``: named on the command line).
    found_by: Tuple[str, ...] = ("registry",)
    #: Whether the deferred release work (``release_dw``) is pending: a
    #: destroyed pool retrying until its pages come back.  None if unknown.
    release_pending: Optional[bool] = None

    @property
    def inflight(self) -> int:
        return max(0, _s32(self.hold - self.release))

    @property
    def inflight_mem(self) -> int:
        return self.inflight * (self.page_size << self.order)

    @property
    def system(self) -> bool:
        # Bit 2 was PP_FLAG_PAGE_FRAG before the system pools (and cpuid) came
        # with Linux kernel commit 2b0cfa6e4956 ("net: add generic percpu
        # page_pool allocator") (in v6.9).
        return self.cpuid is not None and bool(self.flags & PP_FLAG_SYSTEM_POOL)

    def named_by(self, keys: Collection[int]) -> bool:
        """Whether one of ``keys`` is the pool's id or address (``--pool`` takes both)."""
        return self.id in keys or self.address in keys

    @property
    def label(self) -> str:
        """How messages name the pool: its id, or its address on a kernel without ids."""
        return str(self.id) if self.id is not None else f"{self.address:#x}"

    @property
    def sort_key(self) -> Tuple[int, int]:
        """Id order, or address order for pools without ids."""
        return (self.id if self.id is not None else -1, self.address)


class _PoolLayout(NamedTuple):
    """What :class:`PagePoolScanner` derives from the types, once per Program."""

    reader: StructReader
    detach_divisor: int
    list_offset: Optional[int]  # None: no pool->user (before v6.8)
    cache_offset: int
    cache_capacity: int
    napi_id_offset: int
    net_ptr_poison: int
    min_napi_id: int


@per_program
def _pool_layout(prog: Program) -> _PoolLayout:
    pool_type = prog.type("struct page_pool")
    # Since Linux kernel commit 5027ec19f104 ("net: page_pool: split the
    # page_pool_params into fast and slow") (in v6.8) the flags are in
    # pool->slow; before, in pool->p.
    flags = "slow.flags" if member_exists(pool_type, "slow.flags") else "p.flags"
    reader = StructReader(
        prog,
        "struct page_pool",
        {
            "id": "user.id",
            "hold": "pages_state_hold_cnt",
            "release": "pages_state_release_cnt.counter",
            "order": "p.order",
            "pool_size": "p.pool_size",
            "nid": "p.nid",
            "napi": "p.napi",
            "cpuid": "cpuid",
            "dma_map": "dma_map",
            "alloc_count": "alloc.count",
            "ring_producer": "ring.producer",
            "ring_consumer_head": "ring.consumer_head",
            "ring_size": "ring.size",
            "ring_queue": "ring.queue",
            "mp_priv": "mp_priv",
            # Since Linux v6.15 (io_uring zcrx) pools name their provider's
            # ops; Debian's 6.12 has it backported.
            "mp_ops": "mp_ops",
            "user_cnt": "user_cnt.refs.counter",
            "destroy_cnt": "destroy_cnt",
            "netdev": "slow.netdev",
            # Since Linux v6.12 (devmem TCP).
            "queue": "slow.queue_idx",
            "flags": flags,
            "list_pprev": "user.list.pprev",
            "detach_time": "user.detach_time",
            # Until Linux kernel commit 67e4bb2ced0f ("net: page_pool: don't
            # try to stash the napi id") (in v6.14).
            "user_napi_id": "user.napi_id",
            "recycle_stats": "recycle_stats",
            # page_pool_release_retry() pending (timer armed)
            "release_timer": "release_dw.timer.entry.pprev",
            **{name: path for name, path in STAT_NAMES.items() if path.startswith("alloc_stats")},
        },
    )
    # Since Linux kernel commit 28b225282d44 the detach time is a ktime_t
    # (nanoseconds); before, u64 seconds.  Both are CLOCK_BOOTTIME.
    divisor = 1
    if member_exists(pool_type, "user.detach_time"):
        detach_type = pool_type.member("user").type.member("detach_time").type
        divisor = 10**9 if detach_type.type_name() == "ktime_t" else 1
    return _PoolLayout(
        reader=reader,
        detach_divisor=divisor,
        list_offset=drgn.offsetof(pool_type, "user.list")
        if member_exists(pool_type, "user.list")
        else None,
        cache_offset=drgn.offsetof(pool_type, "alloc.cache"),
        cache_capacity=pool_type.member("alloc").type.member("cache").type.length or 0,
        napi_id_offset=drgn.offsetof(prog.type("struct napi_struct"), "napi_id"),
        net_ptr_poison=0x801 + _poison_delta(prog),
        min_napi_id=_min_napi_id(prog),
    )


class PagePoolScanner:
    """
    Reads every page pool of a Program once, with the netdev hlists of every
    namespace for the visibility state.  Problems (unreadable or
    inconsistent objects) are collected in :attr:`problems`; the pools that
    could be read are still returned.
    """

    def __init__(self, prog: Program, problems: Optional[Problems] = None) -> None:
        self.prog = prog
        self.problems = problems if problems is not None else Problems()
        layout = _pool_layout(prog)
        self.page_size = page_size(prog)
        self.reader = layout.reader
        self.detach_divisor = layout.detach_divisor
        self.list_offset = layout.list_offset
        self.cache_offset = layout.cache_offset
        self.cache_capacity = layout.cache_capacity
        self.napi_id_offset = layout.napi_id_offset
        self.net_ptr_poison = layout.net_ptr_poison
        self.min_napi_id = layout.min_napi_id
        self.netdevs = NetdevReader(prog, self.problems)
        self.net_ptr_poison = 0x801 + _poison_delta(prog)
        self.min_napi_id = _min_napi_id(prog)
        self.now = _boottime_seconds(prog)
        self._hlists: Optional[Dict[int, int]] = None
        self.registry = has_page_pool_registry(prog)
        self._discovered: Optional[List[Tuple[int, Tuple[str, ...]]]] = None
        self._owners: Optional[Dict[int, str]] = None
        #: What discovery could not use (e.g. a slab allocator drgn cannot walk).
        self.notes: List[str] = []

    # -- enumeration -------------------------------------------------------

    def listed_pools(self) -> Dict[int, int]:
        """pool address -> address of the netdev whose hlist holds it."""
        if self._hlists is None:
            self._hlists = {}
            if self.list_offset is None:  # before v6.8 no netdev lists its pools
                return self._hlists
            for netdev, node in namespace_page_pool_lists(self.prog, self.problems):
                self._hlists[node - self.list_offset] = netdev
        return self._hlists

    def pools(self) -> Iterator[PagePoolInfo]:
        """
        Every readable pool of the registry, in id order; on a kernel without
        one, every pool :func:`~netmem_probe.kernel.pool_discovery.discover_pools`
        finds, in address order.
        """
        if not self.registry:
            for address, found_by in self.discovered():
                info = self.read_pool(address, found_by=found_by)
                if info is not None:
                    yield info
            return
        listed = self.listed_pools()
        seen = set()
        xa = page_pools_xarray(self.prog).value_()
        for index, address in xa_entries(
            self.prog, xa, what="page_pools xarray", problems=self.problems
        ):
            seen.add(address)
            owner = self.owners().get(address)
            found_by = ("registry",) + ((owner,) if owner else ())
            info = self.read_pool(address, index, listed.get(address), found_by)
            if info is not None:
                yield info
        for address in listed:
            if address not in seen:
                self.problems.add(
                    "page pool",
                    address,
                    "on a netdev's page_pools list but not in the page_pools xarray",
                )
        # page_pool_create_percpu() registers the system pools like any
        # other: one missing means the xarray lost entries.
        for address in self._system_pools():
            if address not in seen:
                self.problems.add(
                    "page pool",
                    address,
                    "a CPU's system page pool, but not in the page_pools xarray",
                )

    def owners(self) -> Dict[int, str]:
        """Pool address -> the driver rx queue that holds it (``veth-rq``, ...), found once."""
        if self._owners is None:
            from netmem_probe.kernel.pool_discovery import pools_from_owners

            self._owners = pools_from_owners(self.prog, self.problems)
        return self._owners

    def discovered(self) -> List[Tuple[int, Tuple[str, ...]]]:
        """The pools of a kernel without a registry and how each was found, found once."""
        if self._discovered is None:
            self._discovered = discover_pools(self.prog, self.problems, notes=self.notes)
        return self._discovered

    def read_unregistered(self, address: int) -> Optional[PagePoolInfo]:
        """
        On a kernel without a registry, the pool at ``address`` if it reads as
        one (:func:`~netmem_probe.kernel.pool_discovery.pool_invariant_violation`),
        found by being named: for ``pool ADDRESS`` when nothing else finds it.
        """
        from netmem_probe.kernel.pool_discovery import check_pool_at

        reason = check_pool_at(self.prog, address)
        if reason:
            self.notes.append(f"{address:#x} is not a page pool: {reason}")
            return None
        return self.read_pool(address, found_by=("address",))

    def _system_pools(self) -> List[int]:
        """The per-CPU ``system_page_pool`` pools; none if they cannot be read."""
        try:
            var = self.prog["system_page_pool"]
            # Since Linux v6.16 a struct page_pool_bh holding the pointer.
            offset = drgn.offsetof(var.type_, "pool") if member_exists(var.type_, "pool") else 0
            # unsigned long arithmetic, as per_cpu_ptr(): with KASLR the
            # per-CPU symbol's address plus the offset wraps around 2**64.
            return [
                address
                for address in (
                    self.prog.read_word(wrap(var.address_ + cpu_offset + offset))
                    for cpu_offset in _possible_cpu_offsets(self.prog)
                )
                if address
            ]
        except (LookupError, drgn.FaultError):
            return []

    def read_pool(
        self,
        address: int,
        index: Optional[int] = None,
        listed_on: Optional[int] = None,
        found_by: Tuple[str, ...] = ("registry",),
    ) -> Optional[PagePoolInfo]:
        """Read one pool; None (and a recorded problem) if unreadable or inconsistent."""
        reason = ""
        for _ in range(attempts(self.prog)):
            try:
                raw = self.reader.read(address)
            except drgn.FaultError as e:
                # On a live kernel the pool may be freed and its memory
                # reused under us: read again, as for an inconsistent one.
                reason = f"unreadable ({e.message} at {e.address:#x})"
                continue
            reason = self._inconsistency(raw, index)
            if not reason:
                return self._info(address, raw, listed_on, found_by)
        self.problems.add("page pool", address, inconsistent(self.prog, reason))
        return None

    def _inconsistency(self, raw: Dict[str, Any], index: Optional[int]) -> str:
        if index is not None and raw["id"] != index:
            return f"user.id {raw['id']} does not match its xarray index {index}"
        if raw["order"] > MAX_PAGE_ORDER:
            return f"impossible order {raw['order']}"
        # The counts and indexes below size reads and loops of every user of
        # the record (breakdown, pages, holders): a pool with impossible ones
        # is not used at all.
        if raw["alloc_count"] > self.cache_capacity:
            return f"alloc.count {raw['alloc_count']} exceeds the {self.cache_capacity}-slot cache"
        size = raw["ring_size"]
        if size > MAX_RING_SIZE:
            return f"impossible ring.size {size}"
        if size and max(raw["ring_producer"], raw["ring_consumer_head"]) >= size:
            return (
                f"ring indexes producer {raw['ring_producer']}, consumer_head "
                f"{raw['ring_consumer_head']} outside a ring of {size}"
            )
        return ""

    # -- decoding ----------------------------------------------------------

    def _info(
        self,
        address: int,
        raw: Dict[str, Any],
        listed_on: Optional[int],
        found_by: Tuple[str, ...] = ("registry",),
    ) -> PagePoolInfo:
        warnings: List[str] = []
        netdev_ptr = raw["netdev"]
        netdev: Optional[NetdevInfo] = None
        if not self.registry:
            state = "unregistered"
        elif listed_on is not None:
            netdev = self.netdevs.info(listed_on)
            state = "orphaned" if netdev is not None and netdev.is_loopback else "listed"
            if netdev_ptr != listed_on:
                warnings.append(
                    f"on {netdev.name if netdev else hex(listed_on)}'s page_pools "
                    f"list but slow.netdev is {netdev_ptr:#x}"
                )
        elif raw["list_pprev"]:
            state = "unreachable"
            warnings.append("on a page_pools list that no namespace's netdev reaches")
        else:
            state = "invisible"
        if netdev_ptr == self.net_ptr_poison:
            warnings.append("slow.netdev is NET_PTR_POISON: its namespace was dismantled")
        detach_time = raw["detach_time"] // self.detach_divisor if raw["detach_time"] else None
        # Before v6.8 no detach time is kept, but page_pool_scrub() counts
        # every release attempt from page_pool_destroy() on in destroy_cnt.
        detached = bool(raw["detach_time"]) if self.registry else raw["destroy_cnt"] > 0
        detach_age = self.now - detach_time if detach_time is not None and self.now else None
        if detach_age is not None and detach_age < 0:
            # Detached after the clock was read (live), or a corrupt time:
            # an age would be made up.
            warnings.append(f"user.detach_time is {-detach_age}s after the kernel's clock")
            detach_age = None
        provider = pool_provider(self.prog, raw["mp_ops"], raw["mp_priv"])
        return PagePoolInfo(
            page_size=self.page_size,
            id=raw["id"],
            address=address,
            state=state,
            detached=detached,
            netdev=netdev,
            orig_netdev=self._orig_netdev(raw, state),
            queue=raw["queue"] if netdev_ptr else None,
            napi_id=self._napi_id(raw),
            order=raw["order"],
            pool_size=raw["pool_size"],
            nid=raw["nid"],
            cpuid=raw["cpuid"],
            flags=raw["flags"],
            # Before the dma_map bit (v6.9), PP_FLAG_DMA_MAP in the flags.
            dma_map=bool(raw["dma_map"])
            if raw["dma_map"] is not None
            else bool(raw["flags"] & PP_FLAG_DMA_MAP),
            hold=raw["hold"],
            release=raw["release"] & 0xFFFFFFFF,
            destroy_cnt=raw["destroy_cnt"],
            detach_time=detach_time,
            detach_age=detach_age,
            provider=provider,
            mp_priv=raw["mp_priv"],
            dmabuf=self._binding_id(raw["mp_priv"]) if provider == "dmabuf" else None,
            io_uring=self._io_uring_info(raw["mp_priv"]) if provider == "io_uring" else None,
            alloc_cache=AllocCache(
                address + self.cache_offset, self.cache_capacity, raw["alloc_count"]
            ),
            ring=PtrRing(
                raw["ring_producer"], raw["ring_consumer_head"], raw["ring_size"], raw["ring_queue"]
            ),
            recycle_stats=raw["recycle_stats"],
            alloc_stats={
                name: raw[name]
                for name, path in STAT_NAMES.items()
                if path.startswith("alloc_stats")
            },
            warnings=warnings,
            found_by=found_by,
            release_pending=bool(raw["release_timer"])
            if raw["release_timer"] is not None
            else None,
        )

    def _napi_id(self, raw: Dict[str, Any]) -> Optional[int]:
        if raw["user_napi_id"] is not None:
            return raw["user_napi_id"] or None
        # page_pool_nl_fill() reads p.napi->napi_id and reports only valid
        # ids (napi_id_valid(): >= MIN_NAPI_ID = NR_CPUS + 1).
        if not raw["napi"]:
            return None
        try:
            napi_id = self.prog.read_u32(wrap(raw["napi"] + self.napi_id_offset))
        except drgn.FaultError:
            return None
        return napi_id if napi_id >= self.min_napi_id else None

    def _orig_netdev(self, raw: Dict[str, Any], state: str) -> Optional[str]:
        """For an orphaned pool, the netdev of its NAPI while it still has one."""
        if state != "orphaned" or not raw["napi"]:
            return None
        try:
            dev = Object(self.prog, "struct napi_struct *", raw["napi"]).dev.value_()
        except drgn.FaultError:
            return None
        info = self.netdevs.info(dev) if dev else None
        return info.name if info else None

    def _binding_id(self, binding: int) -> Optional[int]:
        try:
            return Object(self.prog, "struct net_devmem_dmabuf_binding *", binding).id.value_()
        except (drgn.FaultError, LookupError):
            return None

    def _io_uring_info(self, ifq: int) -> Dict[str, int]:
        try:
            shift = Object(self.prog, "struct io_zcrx_ifq *", ifq).niov_shift.value_()
        except (drgn.FaultError, LookupError, AttributeError):
            return {}
        # A buffer is at least a byte and at most a huge page (the shift is
        # a u32: unchecked, 1 << 0xffffffff builds a 512 MiB integer).
        if shift > 30:
            return {}
        return {"rx-buf-len": 1 << shift}

    # -- the pool's own view of its in-flight pages --------------------------

    def breakdown(self, info: PagePoolInfo) -> Tuple[PagePoolInfo, Dict[str, Optional[int]]]:
        """
        Where the in-flight count sits, as far as the pool itself can see:
        pages in ``alloc.cache``, entries in the ptr_ring, pages tracked in
        ``dma_mapped`` (v6.15+), and the rest (out with the stack or driver).

        The ring is read after the pool, so on a live kernel the two can
        disagree (more pages in the cache and ring than in flight): then both
        are read again, and the pool returned is the one the breakdown
        belongs to.  A disagreement that stays is reported, and ``out`` is
        unknown (None), as it is when the ring cannot be read.
        """
        tries = attempts(self.prog)
        for attempt in range(tries):
            cache = info.alloc_cache.count
            try:
                ring: Optional[int] = len(info.ring.entries(self.prog))
            except drgn.FaultError as e:
                self.problems.fault("page pool ring", info.address, e)
                ring = None
            if ring is None or cache + ring <= info.inflight:
                break
            if attempt + 1 == tries:
                self.problems.add(
                    "page pool",
                    info.address,
                    inconsistent(
                        self.prog,
                        f"{cache} pages in the alloc cache and {ring} in the ring, "
                        f"but {info.inflight} in flight",
                    ),
                )
                ring = None
                break
            again = self.read_pool(
                info.address, info.id, self.listed_pools().get(info.address), info.found_by
            )
            if again is None:
                return info, {"alloc-cache": cache, "ring": None, "dma-mapped": None, "out": None}
            info = again
        dma_mapped: Optional[int] = None
        if member_exists(self.reader.type, "dma_mapped"):
            offset = drgn.offsetof(self.reader.type, "dma_mapped")
            dma_mapped = sum(
                1
                for _ in xa_entries(
                    self.prog,
                    info.address + offset,
                    what="dma_mapped xarray",
                    problems=self.problems,
                )
            )
        out = None if ring is None else info.inflight - cache - ring
        return info, {"alloc-cache": cache, "ring": ring, "dma-mapped": dma_mapped, "out": out}

    def stats(self, info: PagePoolInfo) -> Optional[Dict[str, Optional[int]]]:
        """
        The ``page-pool-stats-get`` counters: allocation stats of the pool and
        recycle stats summed over possible CPUs (None each if a CPU's cannot
        be read); None without ``CONFIG_PAGE_POOL_STATS``.
        """
        if info.recycle_stats is None:
            return None
        out: Dict[str, Optional[int]] = dict(info.alloc_stats)
        recycle = [name for name in STAT_NAMES if not STAT_NAMES[name].startswith("alloc_")]
        totals: Dict[str, Optional[int]] = dict.fromkeys(recycle, 0)
        if info.recycle_stats:
            reader = StructReader(
                self.prog,
                "struct page_pool_recycle_stats",
                {name: STAT_NAMES[name] for name in recycle},
            )
            try:
                for offset in _possible_cpu_offsets(self.prog):
                    values = reader.read(wrap(info.recycle_stats + offset))
                    for name in recycle:
                        totals[name] += values[name]
            except drgn.FaultError as e:
                # A sum over some CPUs would be a wrong number: unknown.
                self.problems.fault("page pool recycle stats", info.address, e)
                totals = dict.fromkeys(recycle)
        out.update(totals)
        return out


def _poison_delta(prog: Program) -> int:
    try:
        return poison_pointer_delta(prog)
    except (LookupError, drgn.FaultError, CorruptionError):
        return 0  # NET_PTR_POISON (0x801) then only flags what it would without a delta


def _min_napi_id(prog: Program) -> int:
    """MIN_NAPI_ID = NR_CPUS + 1; NR_CPUS is the length of __per_cpu_offset."""
    try:
        return prog["__per_cpu_offset"].type_.length + 1
    except (LookupError, TypeError):
        return 1


def _boottime_seconds(prog: Program) -> Optional[int]:
    from drgn.helpers.linux.timekeeping import ktime_get_coarse_boottime_ns

    try:
        return ktime_get_coarse_boottime_ns(prog).value_() // 10**9
    except (LookupError, drgn.FaultError, ValueError):
        return None


@per_program
def _possible_cpu_offsets(prog: Program) -> Tuple[int, ...]:
    from drgn.helpers.linux.cpumask import for_each_possible_cpu

    offsets = prog["__per_cpu_offset"]
    result = tuple(offsets[cpu].value_() for cpu in for_each_possible_cpu(prog))
    return result
