"""
The memmap, scanned for page-pool pages
---------------------------------------

One pass over every valid pfn range's ``struct page``\\ s, read in large chunks
and tested for the target's page-pool signature
(:func:`~netmem_probe.kernel.netmem.pp_scheme`) without one drgn Object per
page.  :mod:`~netmem_probe.kernel.pages` places each page found with its pool;
:mod:`~netmem_probe.kernel.pool_discovery` learns the pools themselves from
the pages on kernels that keep no registry of pools.
"""

import math
import struct
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import drgn
import numpy as np
from drgn import Program

from netmem_probe.kernel.netmem import PpScheme, memmap_description, pp_ref_count_path
from netmem_probe.kernel.platform import byte_order, platform_facts
from netmem_probe.kernel.structs import StructReader
from netmem_probe.kernel.walk import Problems, wrap

__all__ = (
    "CHUNK_BYTES",
    "MemmapHole",
    "MemmapScan",
    "ProgressFn",
    "SignatureMatcher",
    "read_memmap",
    "record_struct",
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

    The test runs vectorised: the buffer is seen as a numpy array of the
    signature word's integer type, one row per record, and the masked column
    of that word is compared at once.  Python only sees the matches.
    """

    def __init__(self, prog: Program, page_type: drgn.Type, scheme: PpScheme) -> None:
        member = "page_type" if scheme.kind == "page_type" else "pp_magic"
        self.record_size = drgn.sizeof(page_type)
        offset = drgn.offsetof(page_type, member)
        size = drgn.sizeof(page_type.member(member).type)
        if scheme.kind == "page_type":
            self.mask = 0xFF << (8 * size - 8)
            self.value = scheme.page_type << (8 * size - 8)
        else:
            self.mask, self.value = scheme.magic_mask, scheme.signature
        if offset % size or self.record_size % size:
            raise ValueError(f"struct page member {member} is not aligned to its size")
        order = "<" if byte_order(prog) == "little" else ">"
        self.dtype = np.dtype(f"{order}u{size}")
        self.column = offset // size
        self.row = self.record_size // size

    def matches(self, data: bytes) -> List[int]:
        """Indexes of the records of ``data`` that carry the signature."""
        words = np.frombuffer(data, dtype=self.dtype, count=len(data) // self.dtype.itemsize)
        column = words.reshape(-1, self.row)[:, self.column]
        hits: List[int] = np.flatnonzero(column & self.mask == self.value).tolist()
        return hits


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


def record_struct(prog: Program, reader: StructReader, keys: Sequence[str]) -> struct.Struct:
    """A ``struct.Struct`` that unpacks members ``keys``, in increasing offset order."""
    codes = {1: "b", 2: "h", 4: "i", 8: "q"}
    fmt = platform_facts(prog).endian
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


class MemmapScan:
    """
    One pass over the memmap for page-pool pages.

    :param prog: the target.
    :param problems: where an unreadable memmap description and unreadable
        stretches of the memmap (:class:`MemmapHole`) are recorded.
    :param chunk_bytes: bytes of memmap per read.
    """

    def __init__(self, prog: Program, problems: Problems, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.prog = prog
        self.problems = problems
        page_type = prog.type("struct page")
        # Unreadable (recorded in problems): nothing to scan.
        memmap = memmap_description(prog, problems)
        self.memmap = memmap.vmemmap if memmap else 0
        self.ranges = memmap.ranges if memmap else []
        self.scheme: Optional[PpScheme] = memmap.scheme if memmap else None
        self.matcher = SignatureMatcher(prog, page_type, memmap.scheme) if memmap else None
        self.record_size = drgn.sizeof(page_type)
        page_size = platform_facts(prog).page_size
        # One page of memmap: the smallest unit a vmemmap can miss.
        self.grain = page_size // math.gcd(page_size, self.record_size)
        self.chunk_pages = max(
            self.grain, chunk_bytes // self.record_size // self.grain * self.grain
        )
        reader = StructReader(
            prog,
            "struct page",
            {
                "pp_magic": "pp_magic",
                "pp": "pp",
                "pp_ref_count": pp_ref_count_path(prog),
                "refcount": "_refcount.counter",
            },
        )
        #: Unpacks (pp_magic, pp, pp_ref_count, refcount) of a record.
        self.unpacker = record_struct(prog, reader, ("pp_magic", "pp", "pp_ref_count", "refcount"))
        self.holes: List[MemmapHole] = []

    @property
    def total_pfns(self) -> int:
        return sum(end - start for start, end in self.ranges)

    def chunks(self, progress: Optional[ProgressFn] = None) -> Iterator[Tuple[int, bytes]]:
        """
        ``(first pfn, struct page bytes)`` of the whole memmap, in pfn order
        (:func:`read_memmap`); unreadable stretches are recorded as problems
        at the end and kept in :attr:`holes`.

        :param progress: called after each chunk with (pfns done, pfns total).
        """
        if self.matcher is None:  # no memmap to scan, recorded in problems
            return
        total = self.total_pfns
        done = 0
        record_size = self.record_size
        self.holes = []
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
                yield first, data
                done += len(data) // record_size
                if progress is not None:
                    progress(done, total)
        for hole in self.holes:
            self.problems.add(
                "memmap",
                self.memmap + hole.start * record_size,
                f"struct pages of pfns {hole.start:#x}-{hole.end:#x} unreadable ({hole.reason})",
            )

    def matches(
        self,
        progress: Optional[ProgressFn] = None,
        observe: Optional[Callable[[int, bytes], None]] = None,
    ) -> Iterator[Tuple[int, int, bytes, int]]:
        """
        ``(pfn, struct page address, chunk bytes, offset of the record)`` of
        every page with the page-pool signature, in pfn order; unreadable
        stretches are recorded as problems at the end.

        :param progress: called after each chunk with (pfns done, pfns total).
        :param observe: also given every chunk as ``(first pfn, bytes)``, so
            that another search of the memmap (the skb slabs) shares the pass.
        """
        matcher = self.matcher
        if matcher is None:  # no memmap to scan, recorded in problems
            return
        record_size = self.record_size
        memmap = self.memmap
        for first, data in self.chunks(progress):
            if observe is not None:
                observe(first, data)
            base = memmap + first * record_size
            for index in matcher.matches(data):
                yield first + index, base + index * record_size, data, index * record_size
