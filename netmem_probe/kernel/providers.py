"""
Memory providers
----------------

Page pools can be filled by a memory provider instead of the page allocator:
devmem TCP (dma-buf bindings, Linux 6.12+) and io_uring zero-copy receive
(Linux 6.15+).  Both hand out ``struct net_iov``s that live in arrays owned by
an *area*: a ``struct dmabuf_genpool_chunk_owner`` (6.12–6.14), or a
``struct net_iov_area`` embedded in the chunk owner or in a
``struct io_zcrx_area`` (6.15+).
"""

from dataclasses import dataclass
from typing import Optional

import drgn
from drgn import Object, Program

from netmem_probe.kernel.structs import member_exists

__all__ = (
    "Area",
    "NiovProviderDetails",
    "infer_niov_kind",
    "niov_provider_details",
    "pool_provider",
    "provider_ops_address",
    "read_area",
)


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

    Since Linux kernel 6.15 ("net: generalise net_iov chunk owners") the owner
    is a ``struct net_iov_area *``; before, a
    ``struct dmabuf_genpool_chunk_owner *`` with the same three members.
    """
    try:
        type_name = "struct net_iov_area"
        prog.type(type_name)
    except LookupError:
        type_name = "struct dmabuf_genpool_chunk_owner"
    area = Object(prog, type_name, address=owner).read_()
    return Area(owner, area.niovs.value_(), area.num_niovs.value_(), area.base_virtual.value_())


def provider_ops_address(prog: Program, name: str) -> Optional[int]:
    """Address of a ``memory_provider_ops`` instance, or None if not built."""
    try:
        return prog.object(name).address_
    except (LookupError, ValueError):
        return None


def pool_provider(prog: Program, mp_ops: Optional[int], mp_priv: int) -> Optional[str]:
    """
    The memory provider of a page pool: ``"dmabuf"``, ``"io_uring"``,
    ``"unknown"`` or None.

    :param mp_ops: ``pool->mp_ops`` (None on kernels without it).
    :param mp_priv: ``pool->mp_priv``.
    """
    if mp_ops is None:
        # Before memory_provider_ops (6.12-6.14 mainline), devmem was the only
        # provider and mp_priv its binding.
        return "dmabuf" if mp_priv else None
    if not mp_ops:
        return None
    if mp_ops == provider_ops_address(prog, "dmabuf_devmem_ops"):
        return "dmabuf"
    if mp_ops == provider_ops_address(prog, "io_uring_pp_zc_ops"):
        return "io_uring"
    return "unknown"


def infer_niov_kind(prog: Program, pool: int) -> Optional[str]:
    """The provider of a niov on kernels whose net_iov has no ``type``."""
    if provider_ops_address(prog, "io_uring_pp_zc_ops") is None:
        return "dmabuf"  # devmem is the only provider this kernel has
    if not pool:
        return None
    pool_obj = Object(prog, "struct page_pool *", pool)
    try:
        return pool_provider(prog, pool_obj.mp_ops.value_(), pool_obj.mp_priv.value_())
    except drgn.FaultError:
        return None


@dataclass(frozen=True)
class NiovProviderDetails:
    user_refs: Optional[int] = None
    area_id: Optional[int] = None
    binding_id: Optional[int] = None


def niov_provider_details(prog: Program, owner: int, index: int,
                          kind: Optional[str]) -> NiovProviderDetails:
    """Provider-specific facts about niov ``index`` of the area at ``owner``."""
    try:
        if kind == "io_uring":
            area = Object(prog, "struct io_zcrx_area *",
                          owner - drgn.offsetof(prog.type("struct io_zcrx_area"), "nia"))
            return NiovProviderDetails(user_refs=area.user_refs[index].counter.value_(),
                                       area_id=area.area_id.value_())
        if kind == "dmabuf":
            chunk_type = prog.type("struct dmabuf_genpool_chunk_owner")
            base = owner - drgn.offsetof(chunk_type, "area") if member_exists(
                chunk_type, "area") else owner
            chunk = Object(prog, "struct dmabuf_genpool_chunk_owner *", base)
            return NiovProviderDetails(binding_id=chunk.binding.id.value_())
    except (drgn.FaultError, LookupError):
        pass
    return NiovProviderDetails()
