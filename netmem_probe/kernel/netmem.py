"""
Network memory
--------------

The ``netmem_ref`` (``include/net/netmem.h``, Linux 6.9+) names either a
``struct page`` or, with bit 0 (``NET_IOV``) set, a ``struct net_iov`` (a
device-memory or io_uring chunk, Linux 6.12+).  These helpers decode a
``netmem_ref``, tell page-pool pages apart from other pages by whichever scheme
the target kernel uses, and read the page-pool fields of either kind.
"""

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import drgn
from drgn import Object, Program

from netmem_probe.kernel.cache import per_program
from netmem_probe.kernel.platform import page_shift, page_size
from netmem_probe.kernel.structs import StructReader, member_exists
from netmem_probe.kernel.walk import CorruptionError, Problems, wrap

__all__ = (
    "NET_IOV",
    "PageInfo",
    "PpScheme",
    "MemmapDescription",
    "is_pp_page",
    "memmap_description",
    "netmem_is_net_iov",
    "netmem_to_net_iov",
    "netmem_to_page",
    "niov_reader",
    "poison_pointer_delta",
    "pool_id",
    "pp_ref_count_path",
    "pp_scheme",
    "valid_pfn_ranges",
)

NET_IOV = 0x1


def netmem_is_net_iov(netmem: int) -> bool:
    """Whether a ``netmem_ref`` value names a ``struct net_iov``."""
    return bool(netmem & NET_IOV)


def netmem_to_page(prog: Program, netmem: int) -> Object:
    """:return: ``struct page *`` for a page ``netmem_ref``."""
    return Object(prog, "struct page *", netmem)


def netmem_to_net_iov(prog: Program, netmem: int) -> Object:
    """:return: ``struct net_iov *`` for a ``netmem_ref`` with ``NET_IOV`` set."""
    return Object(prog, "struct net_iov *", netmem & ~NET_IOV)


@per_program
def poison_pointer_delta(prog: Program) -> int:
    """
    ``POISON_POINTER_DELTA`` of the target (``CONFIG_ILLEGAL_POINTER_VALUE``),
    derived from the statically initialised timer ``poll_spurious_irq_timer``,
    whose ``entry.next`` is ``TIMER_ENTRY_STATIC = 0x300 + POISON_POINTER_DELTA``
    (as drgn does since Linux kernel commit b8a0255db958
    ("include/linux/poison.h: use POISON_POINTER_DELTA for poison pointers")
    (in v4.5)).
    """
    delta = prog["poll_spurious_irq_timer"].entry.next.value_() - 0x300
    # CONFIG_ILLEGAL_POINTER_VALUE is 0 or far above page granularity
    # (0xdead000000000000 on x86-64, arm64 and riscv); anything else is a
    # corrupt timer, and would make a nonsense page-pool signature.
    if delta % 0x10000:
        raise CorruptionError(
            f"poll_spurious_irq_timer.entry.next is {delta + 0x300:#x}, "
            "not TIMER_ENTRY_STATIC (0x300 + POISON_POINTER_DELTA)"
        )
    return delta


@dataclass(frozen=True)
class PpScheme:
    """How the target kernel marks page-pool pages."""

    #: ``"pp_magic"`` (``PP_SIGNATURE`` in ``page->pp_magic``) or
    #: ``"page_type"`` (``PGTY_netpp`` in ``page->page_type``).
    kind: str
    signature: int
    magic_mask: int
    dma_index_shift: int
    dma_index_mask: int
    page_type: Optional[int]

    def is_pp(self, pp_magic: int, page_type: Optional[int]) -> bool:
        if self.kind == "page_type":
            return page_type is not None and page_type >> 24 == self.page_type
        return pp_magic & self.magic_mask == self.signature

    def dma_index(self, pp_magic: int) -> int:
        return (pp_magic & self.dma_index_mask) >> self.dma_index_shift

    @property
    def name(self) -> str:
        """``page_type``, ``pp_magic+dma-index`` or ``pp_magic``."""
        if self.kind == "page_type":
            return "page_type"
        return "pp_magic+dma-index" if self.dma_index_mask else "pp_magic"

    def describe(self) -> str:
        if self.kind == "page_type":
            return f"page_type >> 24 == PGTY_netpp ({self.page_type:#x})"
        return f"pp_magic & {self.magic_mask:#x} == {self.signature:#x}"


@per_program
def pp_scheme(prog: Program) -> PpScheme:
    """
    The page-pool page signature scheme of the target kernel.

    - ``PP_SIGNATURE = 0x40 + POISON_POINTER_DELTA`` in ``pp_magic`` with
      the low two bits masked (v4.18+);
    - since Linux kernel commit ee62ce7a1d90 ("page_pool: Track DMA-mapped
      pages and unmap them when destroying the pool") (in v6.15, backported
      to 6.12.y), a DMA index in ``pp_magic`` bits ``PP_DMA_INDEX_SHIFT`` and
      up, masked out of the comparison (``PP_MAGIC_MASK``);
    - from Linux kernel commit db359fccf212 ("mm: introduce a new page type for
      page pool in page type") (in 7.1-rc1, reverted by 54cf41c969da before
      v7.1), the ``PGTY_netpp`` page type.
    """
    try:
        netpp: Optional[int] = prog.constant("PGTY_netpp").value_()
    except LookupError:
        netpp = None
    delta = poison_pointer_delta(prog)
    signature = 0x40 + delta
    shift = (signature - delta).bit_length()  # 1 + __fls(PP_SIGNATURE - POISON_POINTER_DELTA)
    index_mask = 0
    if member_exists(prog.type("struct page_pool"), "dma_mapped") and delta:
        lowest = (delta & -delta).bit_length() - 1  # __ffs(POISON_POINTER_DELTA)
        bits = min(32, lowest - shift)
        index_mask = ((1 << bits) - 1) << shift
    word = (1 << (8 * drgn.sizeof(prog.type("unsigned long")))) - 1
    scheme = PpScheme(
        kind="page_type" if netpp is not None else "pp_magic",
        signature=signature,
        magic_mask=word & ~(index_mask | 0x3),
        dma_index_shift=shift,
        dma_index_mask=index_mask,
        page_type=netpp,
    )
    return scheme


def is_pp_page(page: Object) -> bool:
    """
    Whether a page belongs to a page pool, by the target kernel's scheme
    (see :func:`pp_scheme`).  Unlike drgn 0.3.0's ``is_pp_page()``, pages whose
    ``pp_magic`` carries a DMA index are recognised.

    :param page: ``struct page *``
    """
    scheme = pp_scheme(page.prog_)
    page_type = page.page_type.value_() if scheme.kind == "page_type" else None
    return scheme.is_pp(page.pp_magic.value_(), page_type)


@per_program
def valid_pfn_ranges(prog: Program) -> List[Tuple[int, int]]:
    """``(start_pfn, end_pfn)`` ranges that have a ``struct page``."""
    from drgn.helpers.linux.mm import for_each_valid_page_range

    ranges: List[Tuple[int, int]] = []
    for start, end, _ in for_each_valid_page_range(prog):
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges


class MemmapDescription(NamedTuple):
    """Where the memmap is, which of it exists, and how page-pool pages are marked."""

    vmemmap: int
    ranges: List[Tuple[int, int]]
    scheme: PpScheme


def memmap_description(prog: Program, problems: Problems) -> Optional[MemmapDescription]:
    """
    The ``vmemmap`` base, :func:`valid_pfn_ranges` and :func:`pp_scheme`.
    All three come from kernel memory (``mem_section``, the poison timer), so
    a corrupt target can make them unreadable or undecidable: then None, with
    the problem recorded, since nothing about a page can be told without them.
    """
    try:
        vmemmap = prog["vmemmap"].value_()
        # drgn derives it from mem_section: a corrupt section_mem_map gives
        # any number, but the memmap starts on a page like every array of
        # struct pages the kernel maps.
        if vmemmap % page_size(prog):
            raise CorruptionError(f"vmemmap {vmemmap:#x} (from mem_section) is not page-aligned")
        return MemmapDescription(vmemmap, valid_pfn_ranges(prog), pp_scheme(prog))
    except (drgn.FaultError, LookupError, CorruptionError) as e:
        # drgn derives vmemmap from mem_section: a zeroed section makes it
        # "could not find 'vmemmap'" rather than a fault.
        address = getattr(e, "address", None)
        if address is None:
            address = prog.symbol("mem_section").address
        problems.add(
            "memmap description",
            address,
            f"unreadable ({e.message if isinstance(e, drgn.FaultError) else e})",
        )
        return None


def pp_ref_count_path(prog: Program) -> str:
    """
    The ``struct page`` member counting a page-pool page's references:
    ``pp_ref_count`` since "page_pool: Rename pp_frag_count to
    pp_ref_count" (in v6.8); before, the same counter was ``pp_frag_count``
    (in a union with ``dma_addr_upper`` in v6.1).
    """
    page = prog.type("struct page")
    for name in ("pp_ref_count", "pp_frag_count"):
        try:
            page.member(name)
            return name + ".counter"
        except LookupError:
            pass
    return "pp_ref_count.counter"  # decodes to None: a kernel before page-pool frags


@per_program
def _page_reader(prog: Program) -> StructReader:
    flags = "flags.f" if member_exists(prog.type("struct page"), "flags.f") else "flags"
    reader = StructReader(
        prog,
        "struct page",
        {
            # Since Linux kernel commit 53fbef56e07d ("mm: introduce
            # memdesc_flags_t") (in v6.18), page->flags is a struct.
            "flags": flags,
            "pp_magic": "pp_magic",
            "pp": "pp",
            "dma_addr": "dma_addr",
            "pp_ref_count": pp_ref_count_path(prog),
            "refcount": "_refcount.counter",
            "page_type": "page_type",
        },
    )
    return reader


@per_program
def niov_reader(prog: Program) -> StructReader:
    """
    Decoder of the ``struct net_iov`` members that ``decode`` and the provider
    helpers read: ``pp_magic``, ``pp``, ``dma_addr``, ``pp_ref_count``,
    ``owner`` and ``type``.

    Since Linux 6.17 (``struct netmem_desc``, see include/net/netmem.h) the
    page-pool members live in ``niov->desc``; since the devmem TX series
    (v6.16) a niov has a ``type``.
    """
    desc = "desc." if member_exists(prog.type("struct net_iov"), "desc") else ""
    reader = StructReader(
        prog,
        "struct net_iov",
        {
            "pp_magic": desc + "pp_magic",
            "pp": desc + "pp",
            "dma_addr": desc + "dma_addr",
            "pp_ref_count": desc + "pp_ref_count.counter",
            "owner": "owner",
            "type": "type",
        },
    )
    return reader


@dataclass(frozen=True)
class PageInfo:
    """What a page ``netmem_ref`` points at; None is a member not read."""

    netmem: int
    page: int
    pfn: Optional[int]
    phys: Optional[int]
    is_pp: bool
    scheme: str
    pool: Optional[int] = None
    pool_id: Optional[int] = None
    dma_index: Optional[int] = None
    dma_addr: Optional[int] = None
    pp_ref_count: Optional[int] = None
    refcount: Optional[int] = None
    problem: Optional[str] = None


def pool_id(prog: Program, pool: int) -> Optional[int]:
    """``pool->user.id``, or None if the pool cannot be read or the kernel
    gives pools no id (before v6.8)."""
    if not pool:
        return None
    try:
        offset = drgn.offsetof(prog.type("struct page_pool"), "user.id")
    except LookupError:
        return None  # before v6.8 pools have no id
    try:
        return prog.read_u32(wrap(pool + offset))
    except drgn.FaultError:
        return None


def decode_page(prog: Program, netmem: int, problems: Optional[Problems] = None) -> PageInfo:
    """
    Decode a page ``netmem_ref`` (a ``struct page *``).

    :param problems: collects an unreadable :func:`memmap_description` or
        struct page, which leave the value undecided rather than invalid.
    """
    struct_size = drgn.sizeof(prog.type("struct page"))
    shift = page_shift(prog)
    memmap = memmap_description(prog, problems if problems is not None else Problems())
    if memmap is None:
        return PageInfo(
            netmem=netmem,
            page=netmem,
            pfn=None,
            phys=None,
            is_pp=False,
            scheme="unknown",
            problem="undecided: the kernel's memmap description is unreadable",
        )
    vmemmap, ranges, scheme = memmap
    offset = netmem - vmemmap
    pfn = offset // struct_size

    def bad(reason: str, located: bool = True) -> PageInfo:
        return PageInfo(
            netmem=netmem,
            page=netmem,
            pfn=pfn if located else None,
            phys=pfn << shift if located else None,
            is_pp=False,
            scheme=scheme.name,
            problem=reason,
        )

    if not netmem:
        return bad("NULL netmem_ref", located=False)
    if offset < 0 or offset % struct_size:
        return bad("not a struct page address (outside the memmap or misaligned)", located=False)
    if not any(start <= pfn < end for start, end in ranges):
        return bad(f"pfn {pfn:#x} has no struct page (not in a valid memory range)")
    try:
        f = _page_reader(prog).read(netmem)
    except drgn.FaultError as e:
        # The pfn has a struct page, so this is a hole in the dump (or a
        # corrupt memmap): the page is unreadable, not the value invalid.
        if problems is not None:
            problems.fault("struct page", netmem, e)
        return bad(f"struct page is unreadable ({e.message} at {e.address:#x})")
    is_pp = scheme.is_pp(f["pp_magic"], f["page_type"])
    problem = None if is_pp else f"not a page-pool page ({scheme.describe()} fails)"
    return PageInfo(
        netmem=netmem,
        page=netmem,
        pfn=pfn,
        phys=pfn << shift,
        is_pp=is_pp,
        scheme=scheme.name,
        pool=f["pp"] if is_pp else None,
        pool_id=pool_id(prog, f["pp"]) if is_pp else None,
        dma_index=scheme.dma_index(f["pp_magic"]) if is_pp and scheme.dma_index_mask else None,
        dma_addr=f["dma_addr"] if is_pp else None,
        pp_ref_count=f["pp_ref_count"] if is_pp else None,
        refcount=f["refcount"],
        problem=problem,
    )
