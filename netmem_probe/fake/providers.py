"""
Fake memory providers: devmem TCP dma-buf bindings and io_uring zero-copy
receive (zcrx) interface queues, with their ``struct net_iov`` areas and the
page pools they fill, set up the way the kernel sets them up on whichever
layout the world has.

- :class:`FakeBinding`: a ``struct net_devmem_dmabuf_binding`` in the static
  ``net_devmem_dmabuf_bindings`` XArray (``net_devmem_bind_dmabuf()``), its
  dma-buf, its ``chunk_pool`` gen_pool with one ``gen_pool_chunk`` per
  scatterlist entry, each owned by a ``dmabuf_genpool_chunk_owner`` with a
  niov array; the rx queues it is bound to and one page pool per queue.
- :class:`FakeZcrxIfq`: a ``struct io_zcrx_ifq`` with its areas (``ifq->area``
  or ``ifq->areas[]``), each with ``user_refs[]`` and ``freelist[]``; bound to
  an rx queue and its page pool, or device-less (``ZCRX_REG_NODEV``, 7.1+).
- :class:`FakeRing`: a ``struct io_ring_ctx`` holding ifqs in ``zcrx_ctxs``.

Each niov has a modelled state (free, in the pool's alloc cache or ring, held
by the stack, held by user space), and the truth a correct tool reports
(:meth:`FakeBinding.expected`, :meth:`FakeNiov.expected`, ...) is computed
from that model, never by reading memory back.
"""

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from netmem_probe.fake.objects import FakeXArray, KObject
from netmem_probe.fake.pools import (
    PGTY_NETPP,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    PP_SIGNATURE,
    FakePagePool,
)

if TYPE_CHECKING:
    from netmem_probe.fake.net import NetDevice
    from netmem_probe.fake.tasks import FakeTask
    from netmem_probe.fake.world import World

__all__ = (
    "FakeBinding",
    "FakeNiov",
    "FakeRing",
    "FakeZcrxArea",
    "FakeZcrxIfq",
    "NIOV_STATES",
    "PROVIDER_POOL_FLAGS",
    "add_providers",
)

NET_IOV_DMABUF = 0
NET_IOV_IOURING = 1
DMA_FROM_DEVICE = 2
UINT_MAX = 0xFFFFFFFF
# page_pool_init() refuses a memory provider unless the pool DMA-maps and
# syncs; the driver opts in to unreadable netmem.
PROVIDER_POOL_FLAGS = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM
DMABUF_IOVA = 0x2000000000
ZCRX_IOVA = 0x3000000000

#: What a niov can be doing, as ``netmem-probe niovs`` names it.
NIOV_STATES = ("free", "cache", "ring", "stack", "user")


class FakeNiov:
    """One ``struct net_iov`` of an area, and what it is doing."""

    def __init__(self, area: "_NiovArray", index: int) -> None:
        self.area = area
        self.index = index
        self.state = "free"
        self.pool: Optional[FakePagePool] = None
        self.pp_ref_count = 0
        self.user_refs = 0
        self.dma_addr = 0
        #: A deliberately wrong ``owner`` (tests of inconsistent memory).
        self.owner_override: Optional[int] = None

    @property
    def addr(self) -> int:
        return self.area.niov_addr(self.index)

    @property
    def netmem(self) -> int:
        return self.addr | 1

    def value(self) -> Dict[str, Any]:
        world = self.area.world
        owned = self.pool is not None
        pp: Dict[str, Any] = {
            "pp": self.pool.obj.addr if self.pool is not None else 0,
            "dma_addr": self.dma_addr,
            "pp_ref_count": {"counter": self.pp_ref_count},
            # page_pool_set_pp_info() marks a niov like a page; the clear
            # undoes it (7.1-rc marked by page type instead).
            "pp_magic": PP_SIGNATURE if owned and not world.netpp_page_type else 0,
        }
        value: Dict[str, Any] = {"desc": pp} if world.has_member("struct net_iov", "desc") else pp
        value["owner"] = (
            self.owner_override if self.owner_override is not None else (self.area.owner_addr)
        )
        if world.has_member("struct net_iov", "type"):
            value["type"] = self.area.niov_type
        if world.has_member("struct net_iov", "page_type"):
            # net_iov_init() (7.1-rc) starts a niov with no page type.
            value["page_type"] = PGTY_NETPP << 24 if owned else UINT_MAX
        return value

    def expected(self) -> Dict[str, Any]:
        """The niov as ``netmem-probe niovs --json`` must report it."""
        area = self.area
        return {
            "area": area.provider_key,
            "kind": area.kind,
            "chunk": area.chunk_index,
            "index": self.index,
            "net-iov": hex(self.addr),
            "netmem": hex(self.netmem),
            "state": self.state,
            "pool-id": self.pool.id if self.pool else None,
            "pp-ref-count": self.pp_ref_count,
            "user-refs": self.user_refs if area.kind == "io_uring" else None,
            "dma-addr": hex(self.dma_addr),
            "offset": area.base_virtual + (self.index << area.niov_shift),
        }

    def expected_decode(self) -> Dict[str, Any]:
        """The niov as ``netmem-probe decode --json`` must report it."""
        area = self.area
        zcrx = area.kind == "io_uring"
        return {
            "netmem": hex(self.netmem),
            "kind": "net_iov",
            "net-iov": hex(self.addr),
            "owner": hex(area.owner_addr),
            "index": self.index,
            "num-niovs": len(area.niovs),
            "type": area.kind,
            "pool": hex(self.pool.obj.addr) if self.pool else None,
            "pool-id": self.pool.id if self.pool else None,
            "dma-addr": hex(self.dma_addr),
            "pp-ref-count": self.pp_ref_count,
            "user-refs": self.user_refs if zcrx else None,
            "area-id": area.area_id if zcrx else None,
            "dmabuf": None if zcrx else area.provider_id,
            "error": None,
        }


class _NiovArray:
    """A niov array and the address its niovs name as ``owner``."""

    kind = ""
    niov_type = 0
    chunk_index: Optional[int] = None
    area_id: Optional[int] = None

    def __init__(self, world: "World", count: int, niov_shift: int, base_virtual: int) -> None:
        self.world = world
        self.niov_shift = niov_shift
        self.base_virtual = base_virtual
        self.array = world.alloc("struct net_iov", count=count)
        self.niov_size = world.type("struct net_iov").size
        self.niovs = [FakeNiov(self, i) for i in range(count)]
        self.owner_addr = 0

    def niov_addr(self, index: int) -> int:
        return self.array.addr + index * self.niov_size

    @property
    def provider_key(self) -> str:
        raise NotImplementedError

    @property
    def provider_id(self) -> int:
        raise NotImplementedError

    def write_niovs(self) -> None:
        self.array.value = [niov.value() for niov in self.niovs]


def _count(niovs: Sequence[FakeNiov]) -> Dict[str, int]:
    counts = dict.fromkeys(("free", "in-pool", "stack", "user"), 0)
    for niov in niovs:
        counts["in-pool" if niov.state in ("cache", "ring") else niov.state] += 1
    return counts


def _hold(pool: FakePagePool, niov: FakeNiov, where: str) -> None:
    """The pool allocated ``niov`` (``pages_state_hold_cnt++``) and put it ``where``."""
    pool.hold += 1
    if where == "cache":
        pool.cache.append(niov.netmem)
    elif where == "ring":
        pool.ring.append(niov.netmem)


# -- devmem TCP ---------------------------------------------------------------


class FakeChunk(_NiovArray):
    """A ``gen_pool_chunk`` of a binding's ``chunk_pool`` and its chunk owner."""

    kind = "dmabuf"
    niov_type = NET_IOV_DMABUF

    def __init__(self, binding: "FakeBinding", count: int, base_virtual: int) -> None:
        world = binding.world
        super().__init__(world, count, binding.niov_shift, base_virtual)
        self.binding = binding
        self.base_dma_addr = DMABUF_IOVA + (binding.id << 32) + base_virtual
        self.owner = world.alloc("struct dmabuf_genpool_chunk_owner")
        # Since Linux kernel commit 7d60fa9e1ab1 ("net: generalise net_iov
        # chunk owners") (in v6.15), niov->owner is the chunk owner's
        # embedded struct net_iov_area; before, the chunk owner itself.
        self.flat = not world.has_member("struct dmabuf_genpool_chunk_owner", "area")
        self.owner_addr = self.owner.addr if self.flat else self.owner.addr_of("area")
        self.chunk = world.alloc("struct gen_pool_chunk")
        words = -(-count // 64)
        self.bits = world.alloc("unsigned long", count=words, align=8)
        if self.bits.addr != self.chunk.addr_of("bits"):
            raise AssertionError("gen_pool_chunk bits[] must follow the chunk")
        for niov in self.niovs:
            # net_devmem_bind_dmabuf() sets every niov's DMA address up front.
            niov.dma_addr = self.base_dma_addr + (niov.index << self.niov_shift)

    @property
    def provider_key(self) -> str:
        return self.binding.key

    @property
    def provider_id(self) -> int:
        return self.binding.id

    def write(self) -> None:
        size = len(self.niovs) << self.niov_shift
        area = {
            "niovs": self.array.addr,
            "num_niovs": len(self.niovs),
            "base_virtual": self.base_virtual,
        }
        value: Dict[str, Any] = dict(area) if self.flat else {"area": area}
        value.update({"binding": self.binding.obj.addr, "base_dma_addr": self.base_dma_addr})
        self.owner.value = value
        free = sum(1 for n in self.niovs if n.state == "free")
        # gen_pool_add_owner(pool, virt = dma address, phys = dma address, ...)
        self.chunk.value = {
            "avail": {"counter": free << self.niov_shift},
            "phys_addr": self.base_dma_addr,
            "owner": self.owner.addr,
            "start_addr": self.base_dma_addr,
            "end_addr": self.base_dma_addr + size - 1,
        }
        words = [0] * (-(-len(self.niovs) // 64))
        for niov in self.niovs:
            if niov.state != "free":
                words[niov.index // 64] |= 1 << (niov.index % 64)
        self.bits.value = words
        self.write_niovs()


class FakeBinding:
    """
    A dma-buf bound for devmem TCP RX (``netlink bind-rx``).

    :param queues: rx queues of ``netdev`` the binding is installed on; each
        gets a page pool (``pools[i]`` for ``queues[i]``).
    :param chunks: niovs per scatterlist entry (one genpool chunk each).
    :param listed: in ``net_devmem_dmabuf_bindings``; an unbound binding
        (netlink socket closed) is erased from it but lives on while pools or
        niovs hold references.
    """

    def __init__(
        self,
        world: "World",
        netdev: "NetDevice",
        queues: Sequence[int],
        chunks: Sequence[int],
        *,
        binding_id: int,
        napi_base: int,
        niov_shift: Optional[int] = None,
        listed: bool = True,
    ) -> None:
        self.world = world
        self.netdev = netdev
        self.id = binding_id
        self.listed = listed
        # Since Linux 7.3 a binding has its own niov size (rx-page-size).
        # One niov per page before that, and by default.
        self.niov_shift = (
            niov_shift
            if niov_shift is not None
            and world.has_member("struct net_devmem_dmabuf_binding", "niov_shift")
            else world.page_shift
        )
        self.obj = world.alloc("struct net_devmem_dmabuf_binding")
        self.dmabuf = world.alloc("struct dma_buf")
        self.gen_pool = world.alloc("struct gen_pool")
        chunk_list = world.list(self.gen_pool, "chunks")
        self.chunks: List[FakeChunk] = []
        offset = 0
        for i, count in enumerate(chunks):
            chunk = FakeChunk(self, count, offset)
            chunk.chunk_index = i
            offset += count << self.niov_shift
            self.chunks.append(chunk)
            # gen_pool_add_owner() uses list_add_rcu(): the newest chunk first.
            chunk_list.add(chunk.chunk, "next_chunk", head=True)
        self.size = offset
        if listed:
            _bindings_xarray(world).entries[binding_id] = self.obj.addr
        self.bound_rxqs = world.xarray(self.obj, "bound_rxqs")
        self.queues: List[int] = []
        self.pools: List[FakePagePool] = []
        for i, queue in enumerate(queues):
            self.pools.append(self._install(queue, napi_base + i))
        self.user_ref = 1
        self.owners: List[Tuple["FakeTask", int]] = []  # (process, netlink socket fd)
        self.percpu_ref = (
            world.type("struct net_devmem_dmabuf_binding").member("ref").type.type_name()
            == "struct percpu_ref"
        )
        world.before_commit(self._write)

    @property
    def key(self) -> str:
        return f"dmabuf:{self.id}"

    @property
    def ops_symbol(self) -> str:
        return "dmabuf_devmem_ops"

    @property
    def mp_priv(self) -> int:
        return self.obj.addr

    def netlink_attrs(self) -> Dict[str, Any]:
        return {"dmabuf": self.id}

    @property
    def niovs(self) -> List[FakeNiov]:
        return [niov for chunk in self.chunks for niov in chunk.niovs]

    def _install(self, queue: int, napi_id: int) -> FakePagePool:
        """``net_devmem_bind_dmabuf_to_queue()``: mp_params, then a queue restart."""
        rxq = self.netdev.rx_queue(queue)
        _set_mp_params(self.world, rxq, self)
        self.bound_rxqs.entries[len(self.queues)] = rxq.addr
        self.queues.append(queue)
        pool = FakePagePool(
            self.world,
            netdev=self.netdev,
            napi_id=napi_id,
            queue=queue,
            flags=PROVIDER_POOL_FLAGS,
            order=self.niov_shift - self.world.page_shift,
        )
        pool.provider = self
        return pool

    def bound_by(self, task: "FakeTask", fd: int) -> None:
        """
        Bound from a generic netlink socket ``task`` has open as ``fd``: the
        binding is on the socket's ``netdev_nl_sock.bindings``, found in
        ``netdev_nl_family.sock_privs`` by the socket's address.
        """
        sk = self.world.alloc("struct sock")
        task.open_sk(sk.addr, fd)
        priv = self.world.alloc("struct netdev_nl_sock")
        self.world.list(priv, "bindings").add(self.obj, "list")
        _sock_privs(self.world).entries[sk.addr] = priv.addr
        self.owners.append((task, fd))

    def unbind(self) -> None:
        """``net_devmem_unbind_dmabuf()``: off the registry and the queues; user ref gone."""
        if self.listed:
            del _bindings_xarray(self.world).entries[self.id]
            self.listed = False
        for queue in self.queues:
            _clear_mp_params(self.netdev.rx_queue(queue))
        self.bound_rxqs.entries.clear()
        self.queues = []
        self.user_ref = 0

    def alloc(
        self, pool: FakePagePool, count: int, where: str, pp_ref_count: int = 1
    ) -> List[FakeNiov]:
        """``mp_dmabuf_devmem_alloc_netmems()``: ``count`` niovs from the genpool."""
        got = [n for n in self.niovs if n.state == "free"][:count]
        if len(got) < count:
            raise ValueError("binding has too few free niovs")
        for niov in got:
            niov.state = where
            niov.pool = pool
            # page_pool_unref_netmem() leaves a recycled niov's count at 1.
            niov.pp_ref_count = pp_ref_count if where == "stack" else 1
            _hold(pool, niov, where)
        return got

    @property
    def refcount(self) -> int:
        """The user's ref, one per pool using the binding, one per allocated niov."""
        return self.user_ref + len(self.pools) + sum(1 for n in self.niovs if n.state != "free")

    def _write(self) -> None:
        world = self.world
        value: Dict[str, Any] = {
            "dmabuf": self.dmabuf.addr,
            "dev": self.netdev.obj.addr,
            "chunk_pool": self.gen_pool.addr,
            "id": self.id,
        }
        if self.percpu_ref:
            # A live percpu_ref counts per CPU: no single counter to read.
            value["ref"] = {
                "percpu_count_ptr": world.percpu_alloc("unsigned long"),
                "data": world.heap.alloc(64),
            }
        else:
            value["ref"] = {"refs": {"counter": self.refcount}}
        if world.has_member("struct net_devmem_dmabuf_binding", "direction"):
            value["direction"] = DMA_FROM_DEVICE
        if world.has_member("struct net_devmem_dmabuf_binding", "niov_shift"):
            value["niov_shift"] = self.niov_shift
        self.obj.value = value
        self.dmabuf.value = {"size": self.size}
        self.gen_pool.value.update({"min_alloc_order": self.niov_shift})
        for chunk in self.chunks:
            chunk.write()

    def expected(self) -> Dict[str, Any]:
        """The binding as ``netmem-probe providers --json`` must report it."""
        niovs = self.niovs
        return {
            "kind": "dmabuf",
            "id": self.id,
            "area": self.key,
            "address": hex(self.obj.addr),
            "ifq": None,
            "netdev": self.netdev.name,
            "ifindex": self.netdev.ifindex,
            "queues": sorted(self.queues),
            "pools": sorted(p.id for p in self.pools),
            "refcount": None if self.percpu_ref else self.refcount,
            "direction": "rx",
            "niov-size": 1 << self.niov_shift,
            "size": self.size,
            "chunks": len(self.chunks),
            "niovs": len(niovs),
            **_count(niovs),
            "bytes": len(niovs) << self.niov_shift,
            "inconsistent": 0,
            "owners": self._owners(),
        }

    def _owners(self) -> Optional[List[Dict[str, Any]]]:
        """The processes holding the netlink socket that bound it (``providers --json``)."""
        world = self.world
        if world.tasks is None or not world.has_symbol("netdev_nl_family"):
            return None
        return [
            {"pid": task.pid, "comm": task.comm, "fd": fd, "cgroup": None, "netns": task.ns.inum}
            for task, fd in self.owners
        ]


def _bindings_xarray(world: "World") -> FakeXArray:
    try:
        return world._netmem_bindings_xa  # type: ignore[attr-defined]
    except AttributeError:
        xa = world.xarray(world.global_("net_devmem_dmabuf_bindings"), "")
        world._netmem_bindings_xa = xa  # type: ignore[attr-defined]
        return xa


def _sock_privs(world: "World") -> FakeXArray:
    """``netdev_nl_family.sock_privs``: each netlink socket's private data by its address."""
    try:
        return world._netmem_sock_privs  # type: ignore[attr-defined]
    except AttributeError:
        xa = world.alloc("struct xarray")
        world.global_("netdev_nl_family").set("sock_privs", xa.addr)
        privs = world._netmem_sock_privs = world.xarray(xa, "")  # type: ignore[attr-defined]
        return privs


def _set_mp_params(world: "World", rxq: KObject, provider: Any) -> None:
    rxq.set("mp_params.mp_priv", provider.mp_priv)
    # Since Linux kernel commit 57afb4830157 ("net: page_pool: create hooks
    # for custom memory providers") (in v6.15; Debian 6.12 has it too).
    if world.has_member("struct pp_memory_provider_params", "mp_ops"):
        rxq.set("mp_params.mp_ops", world.prog[provider.ops_symbol].address_)


def _clear_mp_params(rxq: KObject) -> None:
    rxq.set("mp_params.mp_priv", 0)
    if "mp_ops" in rxq.value.get("mp_params", {}):
        rxq.set("mp_params.mp_ops", 0)


# -- io_uring zero-copy receive --------------------------------------------------


class FakeZcrxArea(_NiovArray):
    """A ``struct io_zcrx_area``: niovs of user memory, user refs and a freelist."""

    kind = "io_uring"
    niov_type = NET_IOV_IOURING
    area_id: int

    def __init__(self, ifq: "FakeZcrxIfq", count: int, area_id: int) -> None:
        world = ifq.world
        super().__init__(world, count, ifq.niov_shift, 0)
        self.ifq = ifq
        self.area_id = area_id
        self.obj = world.alloc("struct io_zcrx_area")
        self.owner_addr = self.obj.addr_of("nia")
        self.user_refs_array = world.alloc("atomic_t", count=count, align=8)
        self.freelist_array = world.alloc("u32", count=count, align=8)
        # io_zcrx_create_area(): freelist[i] = i, every niov free.
        self.freelist = list(range(count))
        if ifq.netdev is not None:
            # Mapped for the device (io_populate_area_dma()); a device-less
            # area has no DMA addresses.
            base = ZCRX_IOVA + ((self.obj.addr & 0xFFFFFFF) << 12)
            for niov in self.niovs:
                niov.dma_addr = base + (niov.index << self.niov_shift)

    @property
    def provider_key(self) -> str:
        return f"io_uring:{self.obj.addr:#x}"

    @property
    def provider_id(self) -> int:
        return self.area_id

    def take(self, count: int) -> List[FakeNiov]:
        """``__io_zcrx_get_free_niov()``: pop ``count`` niovs off the freelist's end."""
        if count > len(self.freelist):
            raise ValueError("area has too few free niovs")
        return [self.niovs[self.freelist.pop()] for _ in range(count)]

    def write(self) -> None:
        count = len(self.niovs)
        # The live part first; past free_count, stale indices stay behind.
        self.freelist_array.value = self.freelist + list(range(len(self.freelist), count))
        self.user_refs_array.value = [{"counter": n.user_refs} for n in self.niovs]
        value: Dict[str, Any] = {
            "nia": {"niovs": self.array.addr, "num_niovs": count, "base_virtual": 0},
            "ifq": self.ifq.obj.addr,
            "user_refs": self.user_refs_array.addr,
            "is_mapped": self.ifq.netdev is not None,
            "area_id": self.area_id,
            "free_count": len(self.freelist),
            "freelist": self.freelist_array.addr,
            "mem": {"size": count << self.niov_shift},
        }
        self.obj.value = value
        self.write_niovs()

    def expected(self) -> Dict[str, Any]:
        """The area as ``netmem-probe providers --json`` must report it."""
        ifq = self.ifq
        netdev = ifq.netdev
        return {
            "kind": "io_uring",
            "id": self.area_id,
            "area": self.provider_key,
            "address": hex(self.obj.addr),
            "ifq": hex(ifq.obj.addr),
            "netdev": netdev.name if netdev else None,
            "ifindex": netdev.ifindex if netdev else None,
            "queues": [ifq.queue] if netdev else [],
            "pools": [ifq.pool.id] if ifq.pool else [],
            "refcount": ifq.refcount,
            "direction": "rx",
            "niov-size": 1 << self.niov_shift,
            "size": len(self.niovs) << self.niov_shift,
            "chunks": None,
            "niovs": len(self.niovs),
            **_count(self.niovs),
            "bytes": len(self.niovs) << self.niov_shift,
            "inconsistent": 0,
            "owners": self._owners(),
        }

    def _owners(self) -> Optional[List[Dict[str, Any]]]:
        """The processes holding a ring of the ifq; None where the file scan cannot be made."""
        world = self.world
        if world.tasks is None or not world.has_symbol("io_uring_fops"):
            return None
        return [
            {"pid": task.pid, "comm": task.comm, "fd": fd, "cgroup": None, "netns": task.ns.inum}
            for ring in self.ifq.rings
            for task, fd in ring.owners
        ]


class FakeZcrxIfq:
    """
    A zcrx interface queue (``IORING_REGISTER_ZCRX_IFQ``).

    :param netdev: the netdev whose rx ``queue`` it is installed on, with a
        page pool; None for a device-less ifq (``ZCRX_REG_NODEV``, 7.1+),
        filled only by the copy fallback.
    :param areas: niovs per area (more than one needs ``ifq->areas[]``, 7.3).
    """

    def __init__(
        self,
        world: "World",
        netdev: Optional["NetDevice"],
        queue: int,
        areas: Sequence[int],
        *,
        napi_id: int = 0,
        niov_shift: Optional[int] = None,
    ) -> None:
        self.world = world
        self.netdev = netdev
        self.queue = queue
        # Since Linux 6.17 an ifq has its own niov size (rx_buf_len).
        self.has_shift = world.has_member("struct io_zcrx_ifq", "niov_shift")
        self.niov_shift = (
            niov_shift if niov_shift is not None and self.has_shift else world.page_shift
        )
        # Since Linux 7.3 an ifq has several areas (ifq->areas[], nr_areas).
        self.multi = world.has_member("struct io_zcrx_ifq", "areas")
        if len(areas) > 1 and not self.multi:
            raise ValueError("this layout has one area per ifq")
        self.obj = world.alloc("struct io_zcrx_ifq")
        self.areas = [FakeZcrxArea(self, count, i) for i, count in enumerate(areas)]
        self.areas_array = (
            world.alloc("struct io_zcrx_area *", count=len(areas), align=8) if self.multi else None
        )
        self.rings: List["FakeRing"] = []
        self.pool: Optional[FakePagePool] = None
        if netdev is not None:
            _set_mp_params(world, netdev.rx_queue(queue), self)
            self.pool = FakePagePool(
                world,
                netdev=netdev,
                napi_id=napi_id,
                queue=queue,
                flags=PROVIDER_POOL_FLAGS,
                order=self.niov_shift - world.page_shift,
            )
            self.pool.provider = self
        world.before_commit(self._write)

    @property
    def ops_symbol(self) -> str:
        return "io_uring_pp_zc_ops"

    @property
    def mp_priv(self) -> int:
        return self.obj.addr

    def netlink_attrs(self) -> Dict[str, Any]:
        # io_pp_nl_fill(): the io-uring nest, with rx-buf-len once ifqs have
        # a niov size.
        return {"io-uring": {"rx-buf-len": 1 << self.niov_shift} if self.has_shift else {}}

    @property
    def refcount(self) -> Optional[int]:
        """``ifq->refs`` (7.x): one per ring holding the ifq."""
        if not self.world.has_member("struct io_zcrx_ifq", "refs"):
            return None
        return len(self.rings)

    def alloc(
        self, count: int, where: str, *, area: int = 0, pp_ref_count: int = 1, user_refs: int = 1
    ) -> List[FakeNiov]:
        """
        Take ``count`` niovs of ``area`` off its freelist into the pool
        (``net_mp_niov_set_page_pool()``), or to user space; a device-less
        ifq's niovs go to user space with no pool (copy fallback).
        """
        got = self.areas[area].take(count)
        for niov in got:
            niov.state = where
            if where == "user":
                niov.user_refs = user_refs
            if self.pool is None:
                if where != "user":
                    raise ValueError("a device-less ifq has no pool")
                # The copy fallback hands a niov out with one pp reference
                # and no pool (as a Debian 7.3 dump shows).
                niov.pp_ref_count = 1
                continue
            niov.pool = self.pool
            # io_zcrx_recv_frag() takes a pp reference for each user reference.
            niov.pp_ref_count = pp_ref_count if where in ("stack", "user") else 1
            _hold(self.pool, niov, where)
        return got

    def give_back(self, niovs: Sequence[FakeNiov]) -> None:
        """
        User space returned copy-fallback niovs through the refill queue:
        ``io_zcrx_return_niov_freelist()`` pushes them back on the freelist;
        their pp reference count is left as it was.
        """
        for niov in niovs:
            if niov.pool is not None:
                raise ValueError("pool niovs go back through the pool")
            if not isinstance(niov.area, FakeZcrxArea) or niov.area.ifq is not self:
                raise ValueError("only this ifq's niovs go back on its freelists")
            niov.state = "free"
            niov.user_refs = 0
            niov.area.freelist.append(niov.index)

    def _write(self) -> None:
        world = self.world
        value: Dict[str, Any] = {
            "if_rxq": self.queue if self.netdev is not None else 0,
            "netdev": self.netdev.obj.addr if self.netdev is not None else 0,
        }
        if self.has_shift:
            value["niov_shift"] = self.niov_shift
        if self.areas_array is not None:  # since 7.3, several areas
            self.areas_array.value = [a.obj.addr for a in self.areas]
            value.update({"areas": self.areas_array.addr, "nr_areas": len(self.areas)})
        else:
            value["area"] = self.areas[0].obj.addr
        if world.has_member("struct io_zcrx_ifq", "ctx") and self.rings:
            value["ctx"] = self.rings[0].obj.addr
        if self.refcount is not None:
            value["refs"] = {"refs": {"counter": self.refcount}}
        self.obj.value = value
        for area in self.areas:
            area.write()


class FakeRing:
    """A ``struct io_ring_ctx`` and the zcrx ifqs in its ``zcrx_ctxs``."""

    def __init__(self, world: "World") -> None:
        self.world = world
        self.obj = world.alloc("struct io_ring_ctx")
        self.zcrx_ctxs = world.xarray(self.obj, "zcrx_ctxs")
        self.owners: List[Tuple["FakeTask", int]] = []  # (process, ring fd)

    def add(self, ifq: FakeZcrxIfq) -> int:
        """Register ``ifq``; its zcrx id is the next free index (``xa_alloc``)."""
        zcrx_id = len(self.zcrx_ctxs.entries)
        self.zcrx_ctxs.entries[zcrx_id] = ifq.obj.addr
        ifq.rings.append(self)
        return zcrx_id


# -- the mixed scenario's providers ----------------------------------------------


def add_providers(world: "World") -> List[Any]:
    """
    The memory-provider part of the mixed scenario, on whatever the layout
    has: devmem bindings (6.12+), zcrx ifqs (6.15+), several areas per ifq
    (7.3) and device-less ifqs (7.1+).  Records in ``world.expected``:

    - ``providers``: ``providers --json`` (rings not given);
    - ``providers-ring``: ``{"ring": address, "providers": [...]}``, what
      ``providers --ring ADDRESS --json`` adds (device-less ifqs);
    - ``niovs``: ``[{"args": [...], "niovs": [...]}]``, ``niovs ARGS --json``;
    - ``decode-niovs``: ``decode --json`` of some niov netmems.

    :return: the bindings and ifqs, for scenarios that add holders (skbs
        whose frags are the niovs in state ``stack``).
    """
    made: List[Any] = []
    if not world.has_type("struct net_devmem_dmabuf_binding"):
        return made
    nic = world.init_net.netdev("eth3", driver="bnxt_en", num_rx_queues=4)
    bound = FakeBinding(world, nic, [0, 1], [24, 8], binding_id=1, napi_base=8300)
    q0, q1 = bound.pools
    bound.alloc(q0, 4, "cache")
    bound.alloc(q0, 3, "ring")
    for refs in (1, 2, 3, 1, 1):
        bound.alloc(q0, 1, "stack", pp_ref_count=refs)
    bound.alloc(q1, 2, "cache")
    bound.alloc(q1, 6, "stack")
    # A binding whose netlink socket closed while sockets still hold its
    # niovs: gone from the registry and the queues, its pool detached, alive
    # through the pool's and the niovs' references ("will not go away").
    lingering = FakeBinding(world, nic, [3], [8], binding_id=3, napi_base=8303)
    lingering.alloc(lingering.pools[0], 3, "stack", pp_ref_count=2)
    lingering.unbind()
    lingering.pools[0].detach(world.boottime_ns / 1e9 - 900, release_retries=900)
    made += [bound, lingering]

    ring = FakeRing(world) if world.has_member("struct io_ring_ctx", "zcrx_ctxs") else None
    ifqs: List[FakeZcrxIfq] = []
    if world.has_type("struct io_zcrx_ifq"):
        zc = FakeZcrxIfq(world, nic, 2, [32], napi_id=8302)
        zc.alloc(3, "cache")
        zc.alloc(2, "ring")
        zc.alloc(4, "stack", pp_ref_count=2)
        zc.alloc(3, "user", user_refs=1, pp_ref_count=1)
        zc.alloc(2, "user", user_refs=2, pp_ref_count=2)
        ifqs.append(zc)
        if world.has_member("struct io_zcrx_ifq", "areas"):
            nic2 = world.init_net.netdev("eth4", driver="mlx5_core")
            big = FakeZcrxIfq(
                world, nic2, 0, [16, 8], napi_id=8310, niov_shift=world.page_shift + 1
            )
            big.alloc(2, "cache", area=0)
            big.alloc(3, "user", area=0, user_refs=1, pp_ref_count=1)
            big.alloc(4, "stack", area=1)
            ifqs.append(big)
    if ring is not None:
        for ifq in ifqs:
            ring.add(ifq)
    nodev = None
    # ZCRX_REG_NODEV (Linux 7.1): of the layouts, the 7.x ones, whose ifqs no
    # longer point back at one ring (no ifq->ctx).
    if ring is not None and not world.has_member("struct io_zcrx_ifq", "ctx"):
        nodev = FakeZcrxIfq(world, None, 0, [16])
        nodev.give_back(nodev.alloc(3, "user"))
        nodev.alloc(4, "user", user_refs=1)
        nodev.alloc(2, "user", user_refs=3)
        ring.add(nodev)
    made += ifqs + ([nodev] if nodev else [])

    visible: List[Any] = [bound, lingering] + [a for ifq in ifqs for a in ifq.areas]
    world.expected["providers"] = [p.expected() for p in visible]
    if ring is not None:
        extra = [a.expected() for a in nodev.areas] if nodev else []
        world.expected["providers-ring"] = {
            "ring": hex(ring.obj.addr),
            "providers": world.expected["providers"] + extra,
        }
    selections: List[Dict[str, Any]] = [
        {"args": ["--area", "dmabuf:1"], "niovs": [n.expected() for n in bound.niovs]},
        {
            "args": ["--area", hex(lingering.obj.addr)],
            "niovs": [n.expected() for n in lingering.niovs],
        },
        {"args": ["--pool", str(q1.id)], "niovs": [n.expected() for n in bound.niovs]},
    ]
    for ifq in ifqs:
        for area in ifq.areas:
            selections.append(
                {
                    "args": ["--area", hex(area.obj.addr)],
                    "niovs": [n.expected() for n in area.niovs],
                }
            )
    if nodev is not None and ring is not None:
        area = nodev.areas[0]
        selections.append(
            {
                "args": ["--ring", hex(ring.obj.addr), "--area", hex(area.obj.addr)],
                "niovs": [n.expected() for n in area.niovs],
            }
        )
    world.expected["niovs"] = selections
    samples: List[FakeNiov] = []
    for provider in visible:
        niovs = provider.niovs
        for state in NIOV_STATES:
            samples += [n for n in niovs if n.state == state][:1]
    world.expected["decode-niovs"] = [n.expected_decode() for n in samples]
    return made
