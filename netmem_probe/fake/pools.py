"""
Fake page pools and their pages, set up the way the kernel sets them up.

A :class:`FakePagePool` keeps a model of the pool (counters, pages in the
alloc cache, the ptr_ring, the pages out with users) and writes
``struct page_pool`` and every ``struct page`` from it at commit.  What the
kernel would report about the pool (its netlink view and more) is computed
from the model by :meth:`FakePagePool.expected`.
"""

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from drgn import TypeKind

from netmem_probe.fake.objects import POISON_POINTER_DELTA, KObject

if TYPE_CHECKING:
    from netmem_probe.fake.net import NetDevice
    from netmem_probe.fake.world import World

__all__ = (
    "PP_FLAG_ALLOW_UNREADABLE_NETMEM",
    "PP_FLAG_DMA_MAP",
    "PP_FLAG_DMA_SYNC_DEV",
    "PP_FLAG_SYSTEM_POOL",
    "PP_SIGNATURE",
    "FakePage",
    "FakePagePool",
    "STAT_NAMES",
)

PP_FLAG_DMA_MAP = 1 << 0
PP_FLAG_DMA_SYNC_DEV = 1 << 1
PP_FLAG_SYSTEM_POOL = 1 << 2
PP_FLAG_ALLOW_UNREADABLE_NETMEM = 1 << 3
PP_SIGNATURE = 0x40 + POISON_POINTER_DELTA
PP_DMA_INDEX_SHIFT = 7
PGTY_NETPP = 0xF9
DMA_FROM_DEVICE = 2
FAKE_IOVA = 0x100000000

# netlink attribute name -> (stats struct member, per-CPU recycle counter?)
STAT_NAMES = {
    "alloc-fast": ("fast", False),
    "alloc-slow": ("slow", False),
    "alloc-slow-high-order": ("slow_high_order", False),
    "alloc-empty": ("empty", False),
    "alloc-refill": ("refill", False),
    "alloc-waive": ("waive", False),
    "recycle-cached": ("cached", True),
    "recycle-cache-full": ("cache_full", True),
    "recycle-ring": ("ring", True),
    "recycle-ring-full": ("ring_full", True),
    "recycle-released-refcnt": ("released_refcnt", True),
}


def _prune(type_: Any, value: Dict[str, Any]) -> Dict[str, Any]:
    """``value`` without the members the layout's ``type_`` lacks (an older kernel's)."""
    out: Dict[str, Any] = {}
    for name, item in value.items():
        try:
            member = type_.unaliased().member(name)
        except LookupError:
            continue
        if isinstance(item, dict) and member.type.unaliased_kind() in (
            TypeKind.STRUCT,
            TypeKind.UNION,
        ):
            item = _prune(member.type, item)
        out[name] = item
    return out


def s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class FakePage:
    """A page-pool page: its pfn, owner, and where it sits."""

    def __init__(
        self,
        pool: "FakePagePool",
        pfn: int,
        dma_index: int,
        where: str,
        pp_ref_count: int,
        refcount: int,
    ) -> None:
        self.pool = pool
        self.pfn = pfn
        self.dma_index = dma_index
        self.where = where
        self.pp_ref_count = pp_ref_count
        self.refcount = refcount
        self.obj = pool.world.struct_page(pfn)
        self.unmapped = False

    @property
    def netmem(self) -> int:
        return self.obj.addr

    @property
    def dma_addr(self) -> int:
        return (
            FAKE_IOVA + (self.pfn << self.pool.world.page_shift)
            if self.pool.dma_map and not self.unmapped
            else 0
        )

    def write(self) -> None:
        world = self.pool.world
        magic = self.dma_index << PP_DMA_INDEX_SHIFT
        value: Dict[str, Any] = {
            "pp": self.pool.obj.addr,
            "dma_addr": self.dma_addr,
            world.pp_ref_count_member: {"counter": self.pp_ref_count},
            "_refcount": {"counter": self.refcount},
        }
        if world.netpp_page_type:
            # Linux 7.1-rc1..rc5 (db359fccf212, reverted by 54cf41c969da) marked
            # pp pages with a page type instead of PP_SIGNATURE.
            value["page_type"] = PGTY_NETPP << 24
        else:
            magic |= PP_SIGNATURE
        value["pp_magic"] = magic
        self.obj.value = value

    def expected_decode(self) -> Dict[str, Any]:
        """The page as ``netmem-probe decode --json`` must report it."""
        world = self.pool.world
        if world.netpp_page_type:
            scheme = "page_type"
        else:
            scheme = "pp_magic+dma-index" if world.has_dma_index else "pp_magic"
        return {
            "netmem": hex(self.netmem),
            "kind": "page",
            "page": hex(self.netmem),
            "pfn": self.pfn,
            "phys": hex(self.pfn << self.pool.world.page_shift),
            "pp": True,
            "scheme": scheme,
            "pool": hex(self.pool.obj.addr),
            "pool-id": self.pool.id,
            "dma-addr": hex(self.dma_addr),
            "dma-index": self.dma_index if world.has_dma_index else None,
            "pp-ref-count": self.pp_ref_count,
            "refcount": self.refcount,
            "error": None,
        }


class FakePagePool:
    """A ``struct page_pool`` in the ``page_pools`` XArray."""

    def __init__(
        self,
        world: "World",
        *,
        netdev: Optional["NetDevice"] = None,
        napi_id: Optional[int] = None,
        queue: int = 0,
        order: int = 0,
        pool_size: int = 256,
        nid: int = -1,
        cpuid: int = -1,
        flags: int = 0,
        pool_id: Optional[int] = None,
        counter_base: int = 0,
        stats: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.world = world
        self.id: Optional[int] = None
        if world.has_registry:
            self.id = pool_id if pool_id is not None else world._next_pool_id
            world._next_pool_id = self.id + 1
        self.obj = world.alloc("struct page_pool")
        self.order = order
        self.pool_size = pool_size
        self.nid = nid
        self.cpuid = cpuid
        self.flags = flags
        self.queue = queue
        self.dma_map = bool(flags & PP_FLAG_DMA_MAP)
        self.dma_sync = bool(flags & PP_FLAG_DMA_SYNC_DEV)
        self.hold = counter_base
        self.release = counter_base
        self.destroy_cnt = 0
        self.detach_time: Optional[float] = None
        self.user_refs = 1
        self.pages: List[FakePage] = []
        self.cache: List[int] = []
        self.ring: List[int] = []
        self.ring_start = 0
        self.ring_stale: List[int] = []
        self.dma_mapped: Dict[int, int] = {}
        self.provider: Optional[Any] = None
        #: The driver rx queue that holds the pool (``veth-rq``, ...): FakeVeth.own().
        self.owned_by: Optional[str] = None
        self.stats = stats or {}
        self.napi: Optional[KObject] = None
        self.napi_id = 0
        self.slow_netdev: Union["NetDevice", int, None] = netdev
        # The device a DMA-mapping pool maps for (p.dev): the NIC's own.
        self.dev = netdev.obj.addr_of("dev") if netdev is not None and self.dma_map else 0
        self.listed_on: Optional["NetDevice"] = None
        self.napi_netdev = netdev
        # Pools know their NAPI (p.napi) since "page_pool: allow caching from
        # safely localized NAPI" (in v6.5); Debian's 6.1 has no p.napi.
        if (
            netdev is not None
            and napi_id is not None
            and world.has_member("struct page_pool", "p.napi")
        ):
            self.napi = netdev.napi(napi_id, queue)
            self.napi_id = napi_id
        # Until Linux kernel commit 67e4bb2ced0f ("net: page_pool: don't try
        # to stash the napi id") (in v6.14), page_pool_list() saved the NAPI
        # id of pools linked to a netdev, and netlink kept reporting it.
        self.user_napi_id = self.napi_id if netdev is not None else 0
        # page_pool_list(): the XArray always, the netdev's hlist if any
        # (v6.8+; before, the kernel keeps no list of pools).
        if world.page_pools_xa is not None and self.id is not None:
            world.page_pools_xa.entries[self.id] = self.obj.addr
            if netdev is not None:
                self._link(netdev, head=True)
        self.ring_size = min(pool_size, 16384) if pool_size else 1024
        self.ring_queue = world.alloc("void *", count=self.ring_size, align=8)
        if world.has_member("struct page_pool", "dma_mapped"):
            self.dma_mapped_xa = world.xarray(self.obj, "dma_mapped")
        self.has_stats = world.has_member("struct page_pool", "recycle_stats")
        if self.has_stats:
            if flags & PP_FLAG_SYSTEM_POOL:
                self.recycle_stats = world.prog["pp_system_recycle_stats"].address_
            else:
                self.recycle_stats = world.percpu_alloc("struct page_pool_recycle_stats")
        world.pools.append(self)
        world.before_commit(self._write)

    # -- life cycle --------------------------------------------------------

    def _link(self, netdev: "NetDevice", head: bool) -> None:
        netdev.page_pools.add(self.obj, "user.list", head=head)
        netdev.pools.append(self)
        self.listed_on = netdev

    def move_to(self, lo: "NetDevice") -> None:
        """``page_pool_unreg_netdev()``: the netdev went away, lo adopts the pool."""
        old = self.listed_on
        if old is not None:
            old.page_pools.remove(self.obj)
            old.pools.remove(self)
        # hlist_splice_init() puts the moved pools in front of lo's own.
        lo.page_pools.add(self.obj, "user.list", head=True)
        lo.pools.append(self)
        self.listed_on = lo
        self.slow_netdev = lo

    def unlist(self, netdev_value: int = 0) -> None:
        """Take the pool off its netdev's hlist (``hlist_del_init``)."""
        if self.listed_on is not None:
            self.listed_on.page_pools.remove(self.obj)
            self.listed_on.pools.remove(self)
        self.listed_on = None
        self.slow_netdev = netdev_value or None

    def detach(self, at: float, *, release_retries: int = 0) -> None:
        """
        ``page_pool_destroy()`` with pages still in flight: the alloc cache and
        ring are scrubbed back to the page allocator, direct recycling is
        disabled (``cpuid = -1``, ``p.napi = NULL``) and ``user.detach_time``
        is set; every retry of the release work bumps ``destroy_cnt``.
        """
        scrubbed = [p for p in self.pages if p.where in ("cache", "ring")]
        self.release_pages(scrubbed)
        self.ring_stale = []
        if self.world.has_dma_index:
            # page_pool_scrub() unmaps every page still DMA-mapped at the
            # first destroy (since Linux kernel commit ee62ce7a1d90
            # ("page_pool: Track DMA-mapped pages and unmap them when
            # destroying the pool") (in v6.15)): dma_addr and the DMA index
            # go to 0 and dma_mapped empties.
            for page in self.pages:
                page.dma_index = 0
                page.unmapped = True
            self.dma_mapped.clear()
        self.cpuid = -1
        self.napi = None
        self.user_refs = 0
        self.destroy_cnt = 1 + release_retries
        self.detach_time = at

    # -- pages -------------------------------------------------------------

    def alloc_pages(
        self, count: int, where: str = "out", *, pp_ref_count: int = 1, refcount: int = 1
    ) -> List[FakePage]:
        """Take ``count`` pages from the page allocator (``hold`` grows)."""
        pages = []
        for _ in range(count):
            pfn = self.world.alloc_pfn(self.order)
            index = 0
            if self.dma_map and self.world.has_dma_index:
                index = len(self.dma_mapped) + 1
                while index in self.dma_mapped:
                    index += 1
            page = FakePage(self, pfn, index, where, pp_ref_count, refcount)
            if index:
                self.dma_mapped[index] = page.netmem
            self.hold += 1
            self.pages.append(page)
            if where == "cache":
                self.cache.append(page.netmem)
            elif where == "ring":
                self.ring.append(page.netmem)
            pages.append(page)
        return pages

    def recycle_to_ring(self, page: FakePage) -> None:
        """A page comes back into the ring (``page_pool_recycle_in_ring()``),
        e.g. into a detached pool between two runs of its release work."""
        page.where = "ring"
        self.ring.append(page.netmem)

    def destroy(self) -> None:
        """The last page came back: ``page_pool_unlist()`` frees the pool's id."""
        self.unlist()
        if self.world.page_pools_xa is not None and self.id is not None:
            del self.world.page_pools_xa.entries[self.id]
        self.world.pools.remove(self)

    @property
    def key(self) -> str:
        """How the truth names the pool: its id, or its address before ids (v6.8)."""
        return str(self.id) if self.id is not None else hex(self.obj.addr)

    def release_pages(self, pages: Sequence[FakePage]) -> None:
        """Return pages to the page allocator (``release`` grows)."""
        for page in pages:
            self.release += 1
            self.pages.remove(page)
            if page.netmem in self.cache:
                self.cache.remove(page.netmem)
            if page.netmem in self.ring:
                self.ring.remove(page.netmem)
            self.dma_mapped.pop(page.dma_index, None)
            page.obj.value = {}

    # -- serialisation -----------------------------------------------------

    def _write(self) -> None:
        world = self.world
        for page in self.pages:
            page.write()
        netdev_addr = self._slow_netdev_addr()
        value: Dict[str, Any] = {
            "p": {
                "order": self.order,
                "pool_size": self.pool_size,
                "nid": self.nid,
                "napi": self.napi.addr if self.napi else 0,
                "dev": self.dev,
                "dma_dir": DMA_FROM_DEVICE,
                "max_len": self.world.page_size << self.order,
            },
            "cpuid": self.cpuid,
            "pages_state_hold_cnt": self.hold & 0xFFFFFFFF,
            "dma_map": self.dma_map,
            "dma_sync": self.dma_sync,
            "alloc": {"count": len(self.cache), "cache": list(self.cache)},
            "ring": self._ring_value(),
            "pages_state_release_cnt": {"counter": s32(self.release)},
            "user_cnt": {"refs": {"counter": self.user_refs}},
            "destroy_cnt": self.destroy_cnt,
            "slow": {"netdev": netdev_addr, "flags": self.flags},
            "user": {"id": self.id, "detach_time": self._detach_time_value()},
        }
        if not world.has_member("struct page_pool", "slow"):
            # Before Linux kernel commit 5027ec19f104 ("net: page_pool: split
            # the page_pool_params into fast and slow") (in v6.8): p.flags.
            value["p"]["flags"] = self.flags
        if self.destroy_cnt and self.inflight and self._release_pending():
            # page_pool_destroy() with pages out: page_pool_release_retry()
            # is queued as delayed work, its timer armed (on a wheel bucket).
            value["release_dw"] = {"timer": {"entry": {"pprev": world.timer_bucket}}}
        if world.has_member("struct page_pool", "slow.queue_idx"):
            value["slow"]["queue_idx"] = self.queue
        if world.has_member("struct page_pool", "user.napi_id"):
            value["user"]["napi_id"] = self.user_napi_id
        if world.has_member("struct page_pool", "system"):
            value["system"] = bool(self.flags & PP_FLAG_SYSTEM_POOL)
        if self.provider is not None:
            value["mp_priv"] = self.provider.mp_priv
            if world.has_member("struct page_pool", "mp_ops"):
                value["mp_ops"] = world.prog[self.provider.ops_symbol].address_
        self._write_stats(value)
        self.obj.value = _prune(self.obj.type, value)
        if hasattr(self, "dma_mapped_xa"):
            self.dma_mapped_xa.entries = dict(self.dma_mapped)

    def _slow_netdev_addr(self) -> int:
        if self.slow_netdev is None:
            return 0
        if isinstance(self.slow_netdev, int):
            return self.slow_netdev
        return self.slow_netdev.obj.addr

    def _detach_time_value(self) -> int:
        if self.detach_time is None or not self.world.has_member(
            "struct page_pool", "user.detach_time"
        ):
            return 0
        # Since Linux kernel commit 28b225282d44 the field is a ktime_t (ns).
        if (
            self.world.type("struct page_pool")
            .member("user")
            .type.member("detach_time")
            .type.type_name()
            == "ktime_t"
        ):
            return int(self.detach_time * 10**9)
        return int(self.detach_time)

    def _ring_value(self) -> Dict[str, Any]:
        size = self.ring_size
        head = self.ring_start % size
        tail = (head - len(self.ring_stale)) % size
        queue = [0] * size
        for i, netmem in enumerate(self.ring_stale):
            queue[(tail + i) % size] = netmem
        for i, netmem in enumerate(self.ring):
            queue[(head + i) % size] = netmem
        self.ring_queue.value = queue
        return {
            "producer": (head + len(self.ring)) % size,
            "consumer_head": head,
            "consumer_tail": tail,
            "size": size,
            "batch": 16,
            "queue": self.ring_queue.addr,
        }

    def _write_stats(self, value: Dict[str, Any]) -> None:
        if not self.has_stats:
            return
        value["alloc_stats"] = {
            member: self.stats.get(name, 0)
            for name, (member, percpu) in STAT_NAMES.items()
            if not percpu
        }
        value["recycle_stats"] = self.recycle_stats
        for cpu, per_cpu in enumerate(self.stats.get("recycle", [])):
            self.world.per_cpu(
                self.recycle_stats,
                cpu,
                "struct page_pool_recycle_stats",
                {
                    member: per_cpu.get(name, 0)
                    for name, (member, percpu) in STAT_NAMES.items()
                    if percpu
                },
            )

    # -- truth -------------------------------------------------------------

    @property
    def state(self) -> str:
        if not self.world.has_registry:
            return "unregistered"
        if self.listed_on is None:
            return "invisible"
        return "orphaned" if self.listed_on is self.listed_on.ns.lo else "listed"

    @property
    def inflight(self) -> int:
        return max(0, s32(self.hold - self.release))

    def stats_expected(self) -> Optional[Dict[str, int]]:
        if not self.has_stats:
            return None
        recycle: Dict[str, int] = {}
        for per_cpu in self.stats.get("recycle", []):
            for name in per_cpu:
                recycle[name] = recycle.get(name, 0) + per_cpu[name]
        out = {}
        for name, (_, percpu) in STAT_NAMES.items():
            out[name] = recycle.get(name, 0) if percpu else self.stats.get(name, 0)
        return out

    def expected(self) -> Dict[str, Any]:
        """The pool as ``netmem-probe pools --json`` must report it."""
        world = self.world
        netdev = self.slow_netdev if not isinstance(self.slow_netdev, int) else None
        if not world.has_registry:
            unregistered = self._expected_unregistered()
            # The pool's NAPI (p.napi, v6.5+) is read from the pool itself.
            if self._reported_napi_id():
                unregistered["napi-id"] = self._reported_napi_id()
            return unregistered
        rec: Dict[str, Any] = {
            "id": self.id,
            "address": hex(self.obj.addr),
            "state": self.state,
            "detached": self.detach_time is not None,
            "netdev": netdev.name if netdev is not None else None,
            "netns": netdev.ns.inum if netdev is not None else None,
            # no slow.queue_idx before Linux 6.12
            "queue": self.queue
            if self.slow_netdev is not None
            and world.has_member("struct page_pool", "slow.queue_idx")
            else None,
            "driver": netdev.driver_name if netdev is not None and self.state == "listed" else None,
            "order": self.order,
            "pool-size": self.pool_size,
            "nid": self.nid,
            # no pool->cpuid before Linux 6.9
            "cpuid": self.cpuid if world.has_member("struct page_pool", "cpuid") else None,
            "flags": self.flags,
            "dma-map": self.dma_map,
            "inflight": self.inflight,
            "inflight-mem": self.inflight * (self.world.page_size << self.order),
            "hold": self.hold & 0xFFFFFFFF,
            "release": self.release & 0xFFFFFFFF,
            "destroy-cnt": self.destroy_cnt,
            "detach-age": (
                int(world.boottime_ns // 10**9) - int(self.detach_time)
                if self.detach_time is not None
                else None
            ),
            "orig-netdev": (
                self.napi_netdev.name
                if self.state == "orphaned" and self.napi and self.napi_netdev is not None
                else None
            ),
            "found-by": ["registry"] + ([self.owned_by] if self.owned_by else []),
            "release-pending": self._release_pending(),
        }
        if self.state == "listed" and netdev is not None and netdev.ifindex != 1:
            rec["ifindex"] = netdev.ifindex
        napi_id = self._reported_napi_id()
        if napi_id:
            rec["napi-id"] = napi_id
        if self.detach_time is not None:
            rec["detach-time"] = int(self.detach_time)
        if self.provider is not None:
            rec.update(self.provider.netlink_attrs())
        return rec

    def _expected_unregistered(self) -> Dict[str, Any]:
        """
        Before v6.8: no id, netdev, queue or detach time is recorded; the
        pool is found from its pages, and a destroyed one has its release
        work pending while pages are out.
        """
        world = self.world
        return {
            "id": None,
            "inflight": self.inflight,
            "inflight-mem": self.inflight * (self.world.page_size << self.order),
            "address": hex(self.obj.addr),
            "state": "unregistered",
            "detached": self.destroy_cnt > 0,
            "detach-age": None,
            "netdev": None,
            "orig-netdev": None,
            "netns": None,
            "queue": None,
            "driver": None,
            "order": self.order,
            "pool-size": self.pool_size,
            "nid": self.nid,
            "cpuid": self.cpuid if world.has_member("struct page_pool", "cpuid") else None,
            "flags": self.flags,
            "dma-map": self.dma_map,
            "hold": self.hold & 0xFFFFFFFF,
            "release": self.release & 0xFFFFFFFF,
            "destroy-cnt": self.destroy_cnt,
            "found-by": ([self.owned_by] if self.owned_by else []) + ["pages"],
            "release-pending": self._release_pending(),
        }

    def _release_pending(self) -> Optional[bool]:
        """Whether page_pool_release_retry() is queued; None if the layout hides the timer."""
        if not self.world.has_member("struct page_pool", "release_dw.timer.entry.pprev"):
            return None
        return bool(self.destroy_cnt and self.inflight)

    def expected_details(self) -> Dict[str, Any]:
        """What ``netmem-probe pool ID --json`` adds to the pool's record."""
        cache, ring = len(self.cache), len(self.ring)
        return {
            "breakdown": {
                "alloc-cache": cache,
                "ring": ring,
                "dma-mapped": len(self.dma_mapped) if self.world.has_dma_index else None,
                "out": max(self.inflight - cache - ring, 0),
            },
            "stats": self.stats_expected(),
        }

    def _reported_napi_id(self) -> int:
        world = self.world
        if world.has_member("struct page_pool", "user.napi_id"):
            return self.user_napi_id
        min_napi_id = len(world.prog["__per_cpu_offset"]) + 1
        if self.napi is None or self.napi_id < min_napi_id:
            return 0
        return self.napi_id
