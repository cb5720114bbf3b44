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

import math
import struct
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.netmem import PpScheme, memmap_description
from netmem_probe.kernel.page_pool import PagePoolInfo, PagePoolScanner, pool_held_netmems
from netmem_probe.kernel.structs import StructReader
from netmem_probe.kernel.walk import Problems, wrap

__all__ = (
    "CHUNK_BYTES",
    "MemmapHole",
    "PpPage",
    "PpPageScanner",
    "SignatureMatcher",
    "read_memmap",
)

#: Bytes of memmap read at once.  Large reads amortise drgn's per-read cost;
#: 2 MiB (32768 struct pages of 64 bytes) measured best (benchmarks/scan.py).
CHUNK_BYTES = 2 << 20

ProgressFn = Callable[[int, int], None]


class MemmapHole(NamedTuple):
    """pfns ``start`` to ``end`` (exclusive) whose struct pages were unreadable."""

    start: int
    end: int
    reason: str


class SignatureMatcher:
    """
    Finds the records of a buffer of ``struct page``\\ s whose signature word
    matches a :class:`PpScheme`: ``pp_magic & PP_MAGIC_MASK == PP_SIGNATURE``,
    or ``page_type >> 24 == PGTY_netpp`` (a mask and a value on a word either
    way).

    The test runs in C, byte by byte: for each byte of the word the mask
    constrains, that byte of every record is gathered with a strided slice
    and mapped by ``bytes.translate()`` to 1 where it may belong to a match
    and 0 elsewhere; the bitwise AND of those maps (as Python integers) is 1
    exactly at the matching records.  Python only sees the matches.
    """

    def __init__(self, prog: Program, page_type: drgn.Type, scheme: PpScheme) -> None:
        member = "page_type" if scheme.kind == "page_type" else "pp_magic"
        self.record_size = drgn.sizeof(page_type)
        offset = drgn.offsetof(page_type, member)
        size = drgn.sizeof(page_type.member(member).type)
        if scheme.kind == "page_type":
            mask = 0xFF << (8 * size - 8)
            value = scheme.page_type << (8 * size - 8)
        else:
            mask, value = scheme.magic_mask, scheme.signature
        order = "little" if prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN else "big"
        tables = []
        for i, (m, v) in enumerate(zip(mask.to_bytes(size, order), value.to_bytes(size, order))):
            if m:
                table = bytes(1 if b & m == v else 0 for b in range(256))
                tables.append((sum(table), v in (0, 0xFF), offset + i, table))
        # Most selective bytes first: a chunk that fails them is done.
        self.tables = [(at, table) for _, _, at, table in sorted(tables)]

    def matches(self, data: bytes) -> List[int]:
        """Indexes of the records of ``data`` that carry the signature."""
        size = self.record_size
        hits = -1
        for at, table in self.tables:
            hits &= int.from_bytes(data[at::size].translate(table), "little")
            if not hits:
                return []
        flags = hits.to_bytes(len(data) // size + 1, "little")
        found = []
        index = flags.find(1)
        while index >= 0:
            found.append(index)
            index = flags.find(1, index + 1)
        return found


def read_memmap(
    prog: Program,
    start_pfn: int,
    end_pfn: int,
    *,
    record_size: int,
    chunk_pages: int,
    grain: int,
    holes: List[MemmapHole],
) -> Iterator[Tuple[int, bytes]]:
    """
    ``(first pfn, struct page bytes)`` for pfns ``start_pfn`` to ``end_pfn`` in
    chunks of ``chunk_pages``, in pfn order.  ``prog.read()`` is all or
    nothing, so a chunk that faults is read in parts around the faulting
    address (or in halves when the fault is elsewhere, e.g. in a page
    table); ``grain`` pfns (one page of memmap) that still fault become a
    :class:`MemmapHole`.
    """
    memmap = prog["vmemmap"].value_()
    for chunk_start in range(start_pfn, end_pfn, chunk_pages):
        # (start, end) pfn ranges still to read, the next one last.
        todo = [(chunk_start, min(chunk_start + chunk_pages, end_pfn))]
        while todo:
            lo, hi = todo.pop()
            try:
                data = prog.read(wrap(memmap + lo * record_size), (hi - lo) * record_size)
            except drgn.FaultError as e:
                if hi - lo <= grain:
                    if holes and holes[-1].end == lo and holes[-1].reason == e.message:
                        holes[-1] = holes[-1]._replace(end=hi)
                    else:
                        holes.append(MemmapHole(lo, hi, e.message))
                    continue
                # Cut at the memmap page that faulted, after it if it is the
                # first, or in half if the fault lies elsewhere (a page table).
                fault = (e.address - memmap) // record_size
                cut = fault // grain * grain
                if not lo < cut < hi:
                    if not lo <= fault < hi:
                        cut = (lo + (hi - lo) // 2) // grain * grain
                    if cut <= lo:
                        cut = lo // grain * grain + grain
                todo.append((cut, hi))
                todo.append((lo, cut))
                continue
            yield lo, data


class PpPage(NamedTuple):
    """A page-pool page found in the memmap."""

    pfn: int
    page: int  # struct page address, which is also its netmem_ref
    pool: int  # page->pp
    pool_id: int
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
        page_type = prog.type("struct page")
        # Unreadable (recorded in problems): nothing to scan.
        memmap = memmap_description(prog, self.problems)
        self.memmap = memmap.vmemmap if memmap else 0
        self.ranges = memmap.ranges if memmap else []
        self.scheme = memmap.scheme if memmap else None
        self.matcher = SignatureMatcher(prog, page_type, memmap.scheme) if memmap else None
        self.record_size = drgn.sizeof(page_type)
        page_size = prog["PAGE_SIZE"].value_()
        # One page of memmap: the smallest unit a vmemmap can miss.
        self.grain = (
            page_size
            * self.record_size
            // math.gcd(page_size, self.record_size)
            // (self.record_size)
        )
        self.chunk_pages = max(
            self.grain, chunk_bytes // self.record_size // self.grain * self.grain
        )
        reader = StructReader(
            prog,
            "struct page",
            {
                "pp_magic": "pp_magic",
                "pp": "pp",
                "pp_ref_count": "pp_ref_count.counter",
                "refcount": "_refcount.counter",
            },
        )
        self.unpacker = _record_struct(prog, reader, ("pp_magic", "pp", "pp_ref_count", "refcount"))
        self.holes: List[MemmapHole] = []
        self._held: Dict[int, Dict[int, str]] = {}

    @property
    def total_pfns(self) -> int:
        return sum(end - start for start, end in self.ranges)

    def held_by_pool(self, info: PagePoolInfo) -> Dict[int, str]:
        """:func:`~netmem_probe.kernel.page_pool.pool_held_netmems` of a pool, read once."""
        try:
            return self._held[info.address]
        except KeyError:
            held = self._held[info.address] = pool_held_netmems(self.prog, info, self.problems)
            return held

    def pages(
        self, pools: Optional[Sequence[PagePoolInfo]] = None, progress: Optional[ProgressFn] = None
    ) -> Iterator[PpPage]:
        """
        Every page-pool page of the memmap, in pfn order.

        :param pools: only pages of these pools (default: every pool).
        :param progress: called after each chunk with (pfns done, pfns total).
        """
        matcher = self.matcher
        if matcher is None:  # no memmap to scan, recorded in problems
            return
        wanted = None if pools is None else {info.address for info in pools}
        total = self.total_pfns
        done = 0
        record_size = self.record_size
        memmap = self.memmap
        for start, end in self.ranges:
            for first, data in read_memmap(
                self.prog,
                start,
                end,
                record_size=record_size,
                chunk_pages=self.chunk_pages,
                grain=self.grain,
                holes=self.holes,
            ):
                base = memmap + first * record_size
                for index in matcher.matches(data):
                    page = self._page(
                        first + index, base + index * record_size, data, index * record_size, wanted
                    )
                    if page is not None:
                        yield page
                done += len(data) // record_size
                if progress is not None:
                    progress(done, total)
        for hole in self.holes:
            self.problems.add(
                "memmap",
                memmap + hole.start * record_size,
                f"struct pages of pfns {hole.start:#x}-{hole.end:#x} unreadable ({hole.reason})",
            )

    def _page(
        self, pfn: int, address: int, data: bytes, offset: int, wanted: Optional[Set[int]]
    ) -> Optional[PpPage]:
        magic, pool, pp_ref_count, refcount = self.unpacker.unpack_from(data, offset)
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


def _record_struct(prog: Program, reader: StructReader, keys: Sequence[str]) -> struct.Struct:
    """A ``struct.Struct`` that unpacks members ``keys``, in increasing offset order."""
    codes = {1: "b", 2: "h", 4: "i", 8: "q"}
    fmt = "<" if prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN else ">"
    end = 0
    for key in keys:
        field = reader.fields[key]
        if field is None or field.offset < end or field.bit_size or field.size not in codes:
            raise ValueError(
                f"{reader.type.type_name()} member for {key!r} is not "
                "a plain integer after the previous one"
            )
        code = codes[field.size]
        fmt += f"{field.offset - end}x" + (code if field.signed else code.upper())
        end = field.offset + field.size
    return struct.Struct(fmt)
