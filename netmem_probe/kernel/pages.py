"""
Page-pool pages
---------------

Which ``struct page``\\ s belong to a page pool, found by scanning the memmap
once: every valid pfn range (``for_each_valid_page_range()``), read in large
chunks and tested for the target kernel's page-pool signature
(:func:`~netmem_probe.kernel.netmem.pp_scheme`) without one drgn Object per
page.  Each chunk's signature words are gathered into one contiguous buffer
with a strided ``memoryview`` copy and searched with ``bytes.find`` for the
bytes the signature fixes, so Python only looks at candidate pages.

A chunk that cannot be read is split and read around the fault; what stays
unreadable is recorded as a hole, and the scan goes on.

Each page found is placed where its pool sees it: in the pool's alloc cache,
in its ptr_ring, or out (with the stack, a driver, or nobody).
"""

from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set

from drgn import Program

from netmem_probe.kernel.memmap import (
    CHUNK_BYTES,
    MemmapHole,
    MemmapScan,
    ProgressFn,
    SignatureMatcher,
    read_memmap,
)
from netmem_probe.kernel.page_pool import PagePoolInfo, PagePoolScanner, pool_held_netmems
from netmem_probe.kernel.walk import Problems

__all__ = (
    "CHUNK_BYTES",
    "MemmapHole",
    "PpPage",
    "PpPageScanner",
    "ProgressFn",
    "SignatureMatcher",
    "read_memmap",
)


class PpPage(NamedTuple):
    """A page-pool page found in the memmap."""

    pfn: int
    page: int  # struct page address, which is also its netmem_ref
    pool: int  # page->pp
    pool_id: Optional[int]  # None before v6.8: pools had no id
    pp_ref_count: int
    refcount: int
    dma_index: Optional[int]
    #: Where the pool sees it: ``"cache"`` (pool->alloc.cache), ``"ring"``
    #: (pool->ring), or ``"out"`` (handed out, not back yet).
    where: str


class PpPageScanner:
    """
    Scans the memmap for page-pool pages.

    :param prog: the target.
    :param problems: where unreadable or inconsistent objects are recorded.
    :param chunk_bytes: bytes of memmap per read.
    """

    def __init__(
        self, prog: Program, problems: Optional[Problems] = None, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self.prog = prog
        self.problems = problems if problems is not None else Problems()
        self.pool_scanner = PagePoolScanner(prog, self.problems)
        self.pools: Dict[int, PagePoolInfo] = {
            info.address: info for info in self.pool_scanner.pools()
        }
        self.scan = MemmapScan(prog, self.problems, chunk_bytes)
        self.scheme = self.scan.scheme
        self._held: Dict[int, Dict[int, str]] = {}

    @property
    def total_pfns(self) -> int:
        return self.scan.total_pfns

    @property
    def holes(self) -> List[MemmapHole]:
        """The unreadable stretches of the last scan."""
        return self.scan.holes

    def held_by_pool(self, info: PagePoolInfo) -> Dict[int, str]:
        """:func:`~netmem_probe.kernel.page_pool.pool_held_netmems` of a pool, read once."""
        try:
            return self._held[info.address]
        except KeyError:
            held = self._held[info.address] = pool_held_netmems(self.prog, info, self.problems)
            return held

    def pages(
        self,
        pools: Optional[Sequence[PagePoolInfo]] = None,
        progress: Optional[ProgressFn] = None,
        observe: Optional[Callable[[int, bytes], None]] = None,
    ) -> Iterator[PpPage]:
        """
        Every page-pool page of the memmap, in pfn order.

        :param pools: only pages of these pools (default: every pool).
        :param progress: called after each chunk with (pfns done, pfns total).
        :param observe: also given every chunk of the pass (see
            :meth:`~netmem_probe.kernel.memmap.MemmapScan.matches`).
        """
        wanted = None if pools is None else {info.address for info in pools}
        for pfn, address, data, offset in self.scan.matches(progress, observe):
            page = self._page(pfn, address, data, offset, wanted)
            if page is not None:
                yield page

    def _page(
        self, pfn: int, address: int, data: bytes, offset: int, wanted: Optional[Set[int]]
    ) -> Optional[PpPage]:
        magic, pool, pp_ref_count, refcount = self.scan.unpacker.unpack_from(data, offset)
        if wanted is not None and pool not in wanted:
            return None
        info = self.pools.get(pool)
        if info is None:
            # A signature with no registered pool behind it: a page of a
            # pool that was freed (a use-after-free in waiting), or torn.
            self.problems.add(
                "struct page",
                address,
                f"page-pool signature but page->pp {pool:#x} is not a registered page pool",
            )
            return None
        scheme = self.scheme
        return PpPage(
            pfn,
            address,
            pool,
            info.id,
            pp_ref_count,
            refcount,
            scheme.dma_index(magic) if scheme is not None and scheme.dma_index_mask else None,
            self.held_by_pool(info).get(address, "out"),
        )
