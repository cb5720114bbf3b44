"""
Layout agreements
-----------------

``include/net/netmem.h`` makes the compiler check that ``struct page``,
``struct netmem_desc`` and ``struct net_iov`` put the page-pool fields at the
same offsets (``NETMEM_DESC_ASSERT_OFFSET``, ``NET_IOV_ASSERT_OFFSET``, and a
``static_assert`` on ``sizeof(struct netmem_desc)``).  :data:`AGREEMENTS`
restates those asserts as data, each with the types and members that tell
whether a kernel has it; :func:`check_layout` evaluates the ones that apply to
a target's types, comparing member sizes as well as offsets.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import drgn
from drgn import Program

__all__ = (
    "AGREEMENTS",
    "Agreement",
    "LayoutResult",
    "MemberLayout",
    "absent_netmem_asserts",
    "check_layout",
)

Presence = Tuple[str, Optional[str]]  # (type, member or None for the type itself)


@dataclass(frozen=True)
class Agreement:
    """One kernel assert: ``left`` and ``right`` must sit at the same offset."""

    macro: str
    left: Tuple[str, str]
    right: Tuple[str, str]
    requires: Tuple[Presence, ...]
    excludes: Tuple[Presence, ...] = ()
    #: "same-offset", or "size-fits" (sizeof(left type) <= offsetof(right)).
    kind: str = "same-offset"


def _netmem_desc(page: str, desc: str) -> Agreement:
    # Since Linux kernel commit f3d85c9ee510 ("netmem: introduce struct
    # netmem_desc mirroring struct page") (in v6.17), struct netmem_desc
    # (include/net/netmem.h) mirrors the page-pool part of struct page.
    return Agreement(
        "NETMEM_DESC_ASSERT_OFFSET",
        ("struct page", page),
        ("struct netmem_desc", desc),
        (("struct netmem_desc", None),),
    )


def _net_iov_page(pg: str, iov: str) -> Agreement:
    # Linux v6.12-v6.16 (devmem TCP, before netmem_desc): net_iov mirrors page.
    return Agreement(
        "NET_IOV_ASSERT_OFFSET",
        ("struct page", pg),
        ("struct net_iov", iov),
        (("struct net_iov", None),),
        (("struct netmem_desc", None),),
    )


def _net_iov_desc(desc: str, iov: str) -> Agreement:
    # Linux v6.17-v6.18: net_iov = union { netmem_desc desc; mirrored fields }.
    return Agreement(
        "NET_IOV_ASSERT_OFFSET",
        ("struct netmem_desc", desc),
        ("struct net_iov", iov),
        (("struct net_iov", "desc"), ("struct net_iov", "pp_magic")),
    )


AGREEMENTS: Tuple[Agreement, ...] = (
    _netmem_desc("flags", "_flags"),
    _netmem_desc("pp_magic", "pp_magic"),
    _netmem_desc("pp", "pp"),
    _netmem_desc("_pp_mapping_pad", "_pp_mapping_pad"),
    _netmem_desc("dma_addr", "dma_addr"),
    _netmem_desc("pp_ref_count", "pp_ref_count"),
    Agreement(
        "static_assert",
        ("struct netmem_desc", "*"),
        ("struct page", "_refcount"),
        (("struct netmem_desc", None),),
        kind="size-fits",
    ),
    _net_iov_page("pp_magic", "pp_magic"),
    _net_iov_page("pp", "pp"),
    _net_iov_page("dma_addr", "dma_addr"),
    _net_iov_page("pp_ref_count", "pp_ref_count"),
    _net_iov_desc("_flags", "_flags"),
    _net_iov_desc("pp_magic", "pp_magic"),
    _net_iov_desc("pp", "pp"),
    _net_iov_desc("_pp_mapping_pad", "_pp_mapping_pad"),
    _net_iov_desc("dma_addr", "dma_addr"),
    _net_iov_desc("pp_ref_count", "pp_ref_count"),
    # Linux kernel commit db359fccf212 ("mm: introduce a new page type for
    # page pool in page type") (in 7.1-rc1; reverted by 54cf41c969da).
    Agreement(
        "NET_IOV_ASSERT_OFFSET",
        ("struct page", "page_type"),
        ("struct net_iov", "page_type"),
        (("struct net_iov", "page_type"),),
    ),
    # Before netmem.h's asserts (no struct net_iov before v6.12, no
    # struct netmem_desc before v6.17), page_pool's own use of struct page is
    # the contract: pp_magic shares its word with compound_head, whose bit 0
    # marks a tail page, and PP_SIGNATURE keeps that bit clear ("mm: add a
    # signature in struct page", v5.14).
    Agreement(
        "page_pool: pp_magic over compound_head",
        ("struct page", "pp_magic"),
        ("struct page", "compound_head"),
        (("struct page", "pp_magic"), ("struct page", "compound_head")),
        (("struct net_iov", None), ("struct netmem_desc", None)),
    ),
)

#: The asserts of include/net/netmem.h, with the type whose arrival brought them.
NETMEM_H_ASSERTS = (
    ("NET_IOV_ASSERT_OFFSET", "struct net_iov", "v6.12"),
    ("NETMEM_DESC_ASSERT_OFFSET", "struct netmem_desc", "v6.17"),
)


def absent_netmem_asserts(prog: Program) -> List[str]:
    """The netmem.h assert families the target's kernel does not have yet."""
    return [
        f"{macro} ({type_name}, Linux {version}+)"
        for macro, type_name, version in NETMEM_H_ASSERTS
        if not _present(prog, (type_name, None))
    ]


@dataclass(frozen=True)
class MemberLayout:
    type: str
    member: str
    offset: Optional[int]
    size: Optional[int]

    def __str__(self) -> str:
        name = f"sizeof({self.type})" if self.member == "*" else f"{self.type}.{self.member}"
        return name


@dataclass(frozen=True)
class LayoutResult:
    agreement: Agreement
    left: MemberLayout
    right: MemberLayout
    ok: bool
    reason: Optional[str]


def _present(prog: Program, presence: Presence) -> bool:
    type_name, member = presence
    try:
        type_ = prog.type(type_name)
    except LookupError:
        return False
    if member is None:
        return True
    return _member(type_, member) is not None


def _member(type_: drgn.Type, member: str) -> Optional[Tuple[int, int]]:
    """(offset, size) of a member, looking through anonymous members."""
    try:
        info = type_.unaliased().member(member)
    except LookupError:
        return None
    return info.bit_offset // 8, drgn.sizeof(info.type)


def _layout(prog: Program, type_name: str, member: str) -> MemberLayout:
    try:
        type_ = prog.type(type_name)
    except LookupError:
        return MemberLayout(type_name, member, None, None)
    if member == "*":
        return MemberLayout(type_name, member, 0, drgn.sizeof(type_))
    found = _member(type_, member)
    return MemberLayout(type_name, member, *(found or (None, None)))


def applies(prog: Program, agreement: Agreement) -> bool:
    return all(_present(prog, p) for p in agreement.requires) and not any(
        _present(prog, p) for p in agreement.excludes
    )


def check_layout(prog: Program, agreements: Sequence[Agreement] = AGREEMENTS) -> List[LayoutResult]:
    """
    Evaluate every agreement that applies to the target's types.

    :return: one :class:`LayoutResult` per applicable agreement, in table order.
    """
    results = []
    for agreement in agreements:
        if not applies(prog, agreement):
            continue
        left = _layout(prog, *agreement.left)
        right = _layout(prog, *agreement.right)
        reason = None
        if left.offset is None or right.offset is None:
            missing = left if left.offset is None else right
            reason = f"{missing} does not exist"
        elif agreement.kind == "size-fits":
            # A member that has an offset has a size: both come from one lookup.
            assert left.size is not None
            if left.size > right.offset:
                reason = f"{left} = {left.size} > offsetof({right}) = {right.offset}"
        elif left.offset != right.offset:
            reason = f"{left} at {left.offset} but {right} at {right.offset}"
        elif left.size != right.size:
            reason = f"{left} is {left.size} bytes but {right} is {right.size}"
        results.append(LayoutResult(agreement, left, right, reason is None, reason))
    return results
