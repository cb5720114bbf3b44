"""
Memory provider areas
---------------------

Page pools can be filled by a memory provider instead of the page allocator:
devmem TCP (dma-buf bindings, Linux 6.12+, :mod:`~netmem_probe.kernel.devmem`)
and io_uring zero-copy receive (zcrx, Linux 6.15+,
:mod:`~netmem_probe.kernel.zcrx`).  Both hand out ``struct net_iov``s that live
in arrays owned by an *area*: a ``struct dmabuf_genpool_chunk_owner``
(6.12-6.14), or a ``struct net_iov_area`` embedded in the chunk owner or in a
``struct io_zcrx_area`` (6.15+).  This module holds what both providers'
readers return (:class:`ProviderArea`, :class:`NiovSpan`) and share.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import drgn
from drgn import Object, Program

from netmem_probe.kernel.actors import Owner
from netmem_probe.kernel.netdev import NetdevInfo, NetdevReader
from netmem_probe.kernel.page_pool import PagePoolInfo
from netmem_probe.kernel.platform import platform_facts
from netmem_probe.kernel.walk import Problems

__all__ = (
    "MAX_AREAS",
    "MAX_NIOVS",
    "MAX_RX_QUEUES",
    "Area",
    "AreaReader",
    "NiovSpan",
    "ProviderArea",
    "net_iov_size",
    "read_area",
)

# Sanity limits: larger values are corrupt memory, not kernels.
MAX_NIOVS = 1 << 24
MAX_AREAS = 1 << 16
MAX_RX_QUEUES = 1 << 14


def net_iov_size(prog: Program) -> int:
    """``sizeof(struct net_iov)``, or 0 before Linux 6.12 (devmem TCP): no providers."""
    try:
        return drgn.sizeof(prog.type("struct net_iov"))
    except LookupError:
        return 0


@dataclass(frozen=True)
class Area:
    """The niov array an area owns."""

    address: int
    niovs: int
    num_niovs: int
    base_virtual: int


def read_area(prog: Program, owner: int) -> Area:
    """
    Read the area a ``net_iov->owner`` points to.

    Since Linux kernel commit 7d60fa9e1ab1 ("net: generalise net_iov chunk
    owners") (in v6.15) the owner is a ``struct net_iov_area *``; before, a
    ``struct dmabuf_genpool_chunk_owner *`` with the same three members.
    """
    try:
        type_name = "struct net_iov_area"
        prog.type(type_name)
    except LookupError:
        type_name = "struct dmabuf_genpool_chunk_owner"
    area = Object(prog, type_name, address=owner).read_()
    return Area(owner, area.niovs.value_(), area.num_niovs.value_(), area.base_virtual.value_())


@dataclass(frozen=True)
class NiovSpan:
    """One niov array of a provider: a devmem genpool chunk or a zcrx area."""

    #: What the niovs' ``owner`` points to: the ``struct net_iov_area``
    #: (6.15+), or the ``struct dmabuf_genpool_chunk_owner`` (6.12-6.14).
    owner: int
    niovs: int
    count: int
    base_virtual: int
    #: Index of the chunk in dma-buf order (devmem), None for a zcrx area.
    chunk: Optional[int]
    #: ``gen_pool_chunk->bits`` (devmem): bit i set = niov i allocated.
    bitmap: Optional[int] = None
    #: ``io_zcrx_area->user_refs`` (``atomic_t[count]``), zcrx only.
    user_refs: Optional[int] = None
    #: ``io_zcrx_area->freelist`` (``u32[]`` of free niov indices), zcrx only.
    freelist: Optional[int] = None
    free_count: int = 0

    def contains(self, niov: int, niov_size: int) -> bool:
        offset = niov - self.niovs
        return 0 <= offset < self.count * niov_size and offset % niov_size == 0


@dataclass(frozen=True)
class ProviderArea:
    """
    One row of ``netmem-probe providers``: a devmem dma-buf binding (all of
    its chunks) or one io_uring zcrx area.
    """

    kind: str  # "dmabuf" or "io_uring"
    #: The binding's id (netlink's ``dmabuf``), or the zcrx area's ``area_id``.
    id: int
    #: ``struct net_devmem_dmabuf_binding *`` or ``struct io_zcrx_area *``.
    address: int
    #: ``struct io_zcrx_ifq *`` (zcrx), else None.
    ifq: Optional[int]
    netdev: Optional[NetdevInfo]
    queues: Tuple[int, ...]
    pools: Tuple[int, ...]  # ids of the page pools it fills
    pool_addresses: Tuple[int, ...]
    #: The binding's ``refcount_t ref`` or the ifq's ``refs`` (7.x); None when
    #: there is none or it is a per-CPU ``percpu_ref`` (devmem, 7.2+).
    refcount: Optional[int]
    direction: str  # "rx" or "tx" (devmem TX bindings, 6.16+)
    niov_shift: int
    #: dma-buf size (devmem) or area memory size (zcrx ``mem.size``).
    size: Optional[int]
    spans: Tuple[NiovSpan, ...]
    #: zcrx: the processes holding a ring that registered the ifq (or its
    #: exported file), with that descriptor; devmem: the processes holding
    #: the netlink socket that bound it (none once unbound); None when not
    #: looked for (no file scan) or not readable.
    owners: Optional[Tuple[Owner, ...]] = None

    @property
    def key(self) -> str:
        """What ``niovs --area`` accepts: ``dmabuf:ID`` or ``io_uring:ADDRESS``."""
        if self.kind == "dmabuf":
            return f"dmabuf:{self.id}"
        return f"io_uring:{self.address:#x}"

    @property
    def num_niovs(self) -> int:
        return sum(span.count for span in self.spans)


class AreaReader:
    """
    What the devmem and zcrx area readers share: the Program, where their
    problems go, the netdevs and the page pools a provider fills.
    """

    def __init__(
        self,
        prog: Program,
        problems: Problems,
        netdevs: NetdevReader,
        pools: Sequence[PagePoolInfo],
    ) -> None:
        self.prog = prog
        self.problems = problems
        self.netdevs = netdevs
        self.pools = pools
        self.page_shift = platform_facts(prog).page_shift

    def _netdev(self, address: int) -> Optional[NetdevInfo]:
        return self.netdevs.info(address) if address else None

    def _pool_fields(self, mp_priv: int, kind: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """Ids and addresses of the pools the provider ``mp_priv`` fills."""
        pools: List[PagePoolInfo] = [
            p for p in self.pools if p.provider == kind and p.mp_priv == mp_priv
        ]
        return (
            tuple(sorted(p.id for p in pools if p.id is not None)),
            tuple(p.address for p in pools),
        )
