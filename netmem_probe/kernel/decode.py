"""
Decoding a netmem_ref
---------------------

What a ``netmem_ref`` value points at: a ``struct page`` (decoded by
:func:`netmem_probe.kernel.netmem.decode_page`) or a ``struct net_iov``,
whose owner area and provider details come from
:mod:`netmem_probe.kernel.areas` and :mod:`netmem_probe.kernel.niovs`; hence this
module sits above them.
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import drgn
from drgn import Program

from netmem_probe.kernel.areas import read_area
from netmem_probe.kernel.netmem import (
    NET_IOV,
    PageInfo,
    decode_page,
    netmem_is_net_iov,
    niov_reader,
    pool_id,
)
from netmem_probe.kernel.niovs import infer_niov_kind, niov_provider_details
from netmem_probe.kernel.walk import Problems

__all__ = ("NetIovInfo", "decode_net_iov", "decode_netmem")


@dataclass(frozen=True)
class NetIovInfo:
    """What a ``net_iov`` ``netmem_ref`` points at; None is a member not read."""

    netmem: int
    niov: int
    owner: Optional[int] = None
    index: Optional[int] = None
    num_niovs: Optional[int] = None
    type: Optional[str] = None
    pool: Optional[int] = None
    pool_id: Optional[int] = None
    dma_addr: Optional[int] = None
    pp_ref_count: Optional[int] = None
    user_refs: Optional[int] = None
    area_id: Optional[int] = None
    binding_id: Optional[int] = None
    problem: Optional[str] = None


def _niov_type_name(prog: Program, value: Optional[int]) -> Optional[str]:
    if value is None:
        return None
    for name, label in (("NET_IOV_DMABUF", "dmabuf"), ("NET_IOV_IOURING", "io_uring")):
        try:
            if prog.constant(name).value_() == value:
                return label
        except LookupError:
            pass
    return f"unknown ({value})"


def decode_net_iov(prog: Program, netmem: int) -> NetIovInfo:
    """Decode a ``netmem_ref`` with ``NET_IOV`` set (a ``struct net_iov *`` | 1)."""
    addr = netmem & ~NET_IOV

    def bad(reason: str, f: Optional[Dict[str, Any]] = None) -> NetIovInfo:
        # What was read is reported, what was not is None: an unmapped
        # net_iov has no owner, DMA address or refcount to show.
        return NetIovInfo(
            netmem=netmem,
            niov=addr,
            owner=f["owner"] if f else None,
            dma_addr=f["dma_addr"] if f else None,
            pp_ref_count=f["pp_ref_count"] if f else None,
            problem=reason,
        )

    try:
        niov_size = drgn.sizeof(prog.type("struct net_iov"))
    except LookupError:
        # struct net_iov came with devmem TCP (v6.12); before, no netmem_ref
        # has NET_IOV set.
        return bad("this kernel has no struct net_iov (Linux 6.12+): nothing has bit 0 set")

    try:
        f = niov_reader(prog).read(addr)
    except drgn.FaultError as e:
        return bad(f"struct net_iov is unmapped ({e.message} at {e.address:#x})")
    owner = f["owner"]
    if not owner:
        return bad("net_iov has no owner area", f)
    try:
        area = read_area(prog, owner)
    except drgn.FaultError as e:
        return bad(f"owner area {owner:#x} is unreadable ({e.message})", f)
    offset = addr - area.niovs
    index = offset // niov_size
    if area.niovs == 0 or offset % niov_size or not 0 <= index < area.num_niovs:
        return NetIovInfo(
            netmem=netmem,
            niov=addr,
            owner=owner,
            num_niovs=area.num_niovs,
            dma_addr=f["dma_addr"],
            pp_ref_count=f["pp_ref_count"],
            problem=f"net_iov is outside its owner's niovs[0..{area.num_niovs})",
        )
    kind = _niov_type_name(prog, f["type"]) or infer_niov_kind(prog, f["pp"])
    extra = niov_provider_details(prog, owner, index, kind)
    return NetIovInfo(
        netmem=netmem,
        niov=addr,
        owner=owner,
        index=index,
        num_niovs=area.num_niovs,
        type=kind,
        pool=f["pp"] or None,
        pool_id=pool_id(prog, f["pp"]),
        dma_addr=f["dma_addr"],
        pp_ref_count=f["pp_ref_count"],
        user_refs=extra.user_refs,
        area_id=extra.area_id,
        binding_id=extra.binding_id,
    )


def decode_netmem(
    prog: Program, netmem: int, problems: Optional[Problems] = None
) -> Union[PageInfo, NetIovInfo]:
    """
    Decode a ``netmem_ref`` value into :class:`PageInfo` or :class:`NetIovInfo`.

    :param problems: see :func:`decode_page`.
    """
    if netmem_is_net_iov(netmem):
        return decode_net_iov(prog, netmem)
    return decode_page(prog, netmem, problems)
