"""
skb slabs
---------

The kernel's ``struct sk_buff``\\ s, found where they are allocated: the slab
caches of sk_buffs (``skbuff_head_cache``, and ``skbuff_fclone_cache`` whose
objects hold two), not by searching RAM.  Their slabs are found in a
vectorised pass over the memmap (the struct pages whose ``slab_cache`` is one
of those caches, each confirmed with drgn's ``PageSlab()``), the same pass
that finds the page-pool pages when ``leaks`` needs both; drgn's
``slab_cache_for_each_allocated_object()`` finds them by walking the memmap
one drgn Object per page, about 0.1 M pages/s, longer than reading all of RAM.
A slab's objects then lie at the cache's stride.

Every object of those slabs is a candidate sk_buff: the caller validates
each as the RAM search validates what it finds (a freed sk_buff keeps stale
fields but a zero ``users``), so the freelists, which the slab may have
corrupted, are not trusted.  A slab whose object count is impossible, or a
memmap chunk that cannot be read, makes the walk incomplete (recorded): what
it could not read must then be searched for in RAM.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import drgn
import numpy as np
from drgn import Object, Program

from netmem_probe.kernel.memmap import MemmapHole, MemmapScan
from netmem_probe.kernel.netmem import memmap_description
from netmem_probe.kernel.platform import platform_facts
from netmem_probe.kernel.search import direct_map_base, word_dtype
from netmem_probe.kernel.walk import Problems

__all__ = ("SkbSlabFinder", "SkbSlabs", "find_skb_slabs", "skb_caches")


@dataclass(frozen=True)
class SkbSlabs:
    """Where the sk_buffs may be."""

    #: Candidate ``struct sk_buff`` addresses, in address order.
    skbs: Tuple[int, ...]
    #: Whether every slab of every sk_buff cache was read.
    complete: bool
    #: Slabs read.
    slabs: int
    #: Physical byte ranges [lo, hi) of the slab pages of every slab cache
    #: the memmap pass saw, where the referrers of a slab object are looked
    #: for; None if the slab caches could not be listed.
    slab_ranges: Optional[Tuple[Tuple[int, int], ...]] = None


def skb_caches(prog: Program) -> List[Tuple[Object, Tuple[int, ...]]]:
    """
    The sk_buff slab caches (``struct kmem_cache *``), each with the offsets
    of the sk_buffs in one of its objects; empty if the kernel's are unknown.
    A merged cache (``skbuff_fclone_cache`` often shares another's) is the
    cache it was merged into: the pointer the kernel allocates from.
    """
    fclones = prog.type("struct sk_buff_fclones")
    pairs = (drgn.offsetof(fclones, "skb1"), drgn.offsetof(fclones, "skb2"))
    try:
        # Since Linux kernel commit aa70d2d16f28 ("net: move skbuff_cache(s)
        # to net_hotdata") (in v6.10) the cache pointers live in struct
        # net_hotdata.
        hot = prog["net_hotdata"]
        pointers = [hot.skbuff_cache, hot.skbuff_fclone_cache]
    except (KeyError, AttributeError):
        pointers = []
        # The variable skbuff_head_cache became skbuff_cache (the slab cache
        # keeps its name) in "net: skbuff: drop the word head from skb cache"
        # (net-next, February 2023: v6.3; its commit id not found with the
        # search tools).
        for name in ("skbuff_cache", "skbuff_head_cache", "skbuff_fclone_cache"):
            try:
                pointers.append(prog[name])
            except KeyError:
                continue
        if len(pointers) != 2:
            return []
    caches = []
    for pointer, offsets in zip(pointers, [(0,), pairs]):
        if pointer.value_():
            caches.append((pointer.read_(), offsets))
    return caches


def _slab_type(prog: Program) -> drgn.Type:
    """
    The type SLUB keeps a slab's ``slab_cache`` and ``objects`` in:
    ``struct slab``, or before Linux kernel commit d122019bf061 ("mm: Split
    slab into its own type") (in v5.17) ``struct page`` itself.
    """
    try:
        return prog.type("struct slab")
    except LookupError:
        return prog.type("struct page")


class SkbSlabFinder:
    """
    Finds the slabs of the sk_buff caches in memmap chunks given to
    :meth:`chunk` (by a pass over the memmap that may serve another search
    too, see :meth:`~netmem_probe.kernel.memmap.MemmapScan.matches`), then
    gives them as :class:`SkbSlabs` with :meth:`result`.

    Made by :meth:`for_program`, None when the kernel's sk_buff slab caches
    cannot be told.
    """

    def __init__(
        self,
        prog: Program,
        problems: Problems,
        caches: Dict[int, Tuple[int, int, int, Tuple[int, ...]]],
        base: int,
        what: str = "skb slab",
    ) -> None:
        self.prog = prog
        self.problems = problems
        #: How problems name a slab of these caches.
        self.what = what
        #: (object size, objects per slab, red_left_pad, sk_buff offsets) by cache.
        self.caches = caches
        self.base = base
        self.slab_type = _slab_type(prog)
        self.page_pointer = prog.pointer_type(prog.type("struct page"))
        self.record_size = drgn.sizeof(prog.type("struct page"))
        self.page_shift = platform_facts(prog).page_shift
        self.memmap = prog["vmemmap"].value_()
        self.dtype = word_dtype(prog)
        self.column = drgn.offsetof(self.slab_type, "slab_cache") // self.dtype.itemsize
        self.wanted = np.array(sorted(caches), dtype=self.dtype.newbyteorder("="))
        self.skbs: List[int] = []
        self.complete = True
        self.slabs = 0
        self.all_caches = _all_caches(prog)
        if self.all_caches is not None and not np.isin(self.wanted, self.all_caches[0]).all():
            self.all_caches = None  # a list without the sk_buff caches is not every cache
        self.slab_pfns: List[np.ndarray] = []
        self.slab_orders: List[np.ndarray] = []

    @classmethod
    def for_program(cls, prog: Program, problems: Problems) -> Optional["SkbSlabFinder"]:
        """A finder, or None if the kernel's sk_buff slab caches cannot be told."""
        try:
            caches = skb_caches(prog)
        except (LookupError, drgn.FaultError):
            return None
        return cls.for_caches(prog, problems, caches)

    @classmethod
    def for_caches(
        cls,
        prog: Program,
        problems: Problems,
        caches: List[Tuple[Object, Tuple[int, ...]]],
        what: str = "skb slab",
    ) -> Optional["SkbSlabFinder"]:
        """
        A finder of the objects of ``caches`` (each ``struct kmem_cache *``
        with the offsets it gives of each object), whose problems name a slab
        ``what``; None if there are none or the slabs cannot be told.
        """
        try:
            _slab_type(prog).member("slab_cache")
        except LookupError:
            return None
        if not caches:
            return None
        memmap = memmap_description(prog, problems)
        base = direct_map_base(prog, problems)
        if memmap is None or base is None:
            return None
        from drgn.helpers.linux.slab import slab_cache_objects_per_slab

        by_address = {}
        try:
            for cache, offsets in caches:
                size = cache.size.value_()
                limit = slab_cache_objects_per_slab(cache)
                red_left_pad = cache.red_left_pad.value_() if _has(cache, "red_left_pad") else 0
                by_address[cache.value_()] = (size, limit, red_left_pad, offsets)
        except drgn.FaultError as e:
            problems.fault(f"{what} cache", e.address, e)
            return None
        return cls(prog, problems, by_address, base, what)

    def chunk(self, first_pfn: int, data: bytes) -> None:
        """Takes the slabs among the struct pages ``data`` of pfns from ``first_pfn``."""
        dtype = self.dtype
        record_words = self.record_size // dtype.itemsize
        column = np.frombuffer(data, dtype=dtype).reshape(-1, record_words)[:, self.column]
        # Every cache, or the sk_buff caches alone if the list is unreadable.
        caches = self.all_caches[0] if self.all_caches is not None else self.wanted
        # Most words there are not in the caches' span at all: a cheap test
        # first, one unsigned comparison (a word below the span wraps above
        # it), so the strided column is read once.
        candidates = np.flatnonzero(column - caches[0] <= caches[-1] - caches[0])
        if not candidates.size:
            return
        values = column[candidates]
        index = np.minimum(np.searchsorted(caches, values), len(caches) - 1)
        hit = caches[index] == values
        candidates, values = candidates[hit], values[hit]
        if self.all_caches is not None:
            self.slab_pfns.append(candidates + first_pfn)
            self.slab_orders.append(self.all_caches[1][index[hit]])
        for i in candidates[np.isin(values, self.wanted)].tolist():
            self._slab(first_pfn + i)

    def _slab(self, pfn: int) -> None:
        from drgn.helpers.linux.mm import PageSlab

        page = Object(self.prog, self.page_pointer, self.memmap + pfn * self.record_size)
        try:
            if not PageSlab(page):
                return
            slab = drgn.cast(self.prog.pointer_type(self.slab_type), page)
            cache = slab.slab_cache.value_()
            objects = slab.objects.value_()
        except drgn.FaultError as e:
            self.problems.fault(self.what, page.value_(), e)
            self.complete = False
            return
        size, limit, red_left_pad, offsets = self.caches[cache]
        if not 0 < objects <= limit:
            self.problems.add(
                self.what,
                page.value_(),
                f"{objects} objects, its cache holds at most {limit} per slab",
            )
            self.complete = False
            return
        self.slabs += 1
        first = self.base + (pfn << self.page_shift) + red_left_pad
        self.skbs.extend(first + n * size + offset for n in range(objects) for offset in offsets)

    def result(self, holes: Sequence[MemmapHole]) -> SkbSlabs:
        """
        The sk_buffs of the slabs found, after a pass that could not read
        the memmap's ``holes`` (a slab may hide there: incomplete).
        """
        return SkbSlabs(
            tuple(sorted(self.skbs)),
            self.complete and not holes,
            self.slabs,
            self._slab_ranges(),
        )

    def _slab_ranges(self) -> Optional[Tuple[Tuple[int, int], ...]]:
        if self.all_caches is None:
            return None
        if not self.slab_pfns:
            return ()
        starts = np.concatenate(self.slab_pfns).astype(np.int64)
        ends = starts + (np.int64(1) << np.concatenate(self.slab_orders).astype(np.int64))
        # Pages come in pfn order: merge the slabs that touch or overlap.
        reach = np.maximum.accumulate(ends)
        breaks = np.flatnonzero(starts[1:] > reach[:-1]) + 1
        lo = starts[np.concatenate(([0], breaks))]
        hi = reach[np.concatenate((breaks - 1, [len(starts) - 1]))]
        shift = self.page_shift
        return tuple((int(a) << shift, int(b) << shift) for a, b in zip(lo, hi))


def find_skb_slabs(
    prog: Program, problems: Problems, finder: Optional[SkbSlabFinder] = None
) -> Optional[SkbSlabs]:
    """
    The candidate sk_buffs of every sk_buff slab, by a pass of their own over
    the memmap (with ``finder`` if one was made); None if the kernel's slab
    caches cannot be told (no slab types, no cache pointers, no memmap), so
    that only a search of RAM can find sk_buffs.
    """
    finder = finder or SkbSlabFinder.for_program(prog, problems)
    if finder is None:
        return None
    scan = MemmapScan(prog, problems)
    for first, data in scan.chunks():
        finder.chunk(first, data)
    return finder.result(scan.holes)


#: More slab caches than a kernel has: a list that long is corrupt.
MAX_SLAB_CACHES = 1 << 16
#: SLUB's OO_SHIFT: ``kmem_cache.oo.x`` is the slab order << 16 | objects.
OO_SHIFT = 16


def _all_caches(prog: Program) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """
    Every slab cache's address (sorted) and slab order (SLUB's ``oo``), from
    the ``slab_caches`` list; None if it cannot be read.
    """
    from drgn.helpers.linux.slab import for_each_slab_cache

    found = {}
    try:
        for i, cache in enumerate(for_each_slab_cache(prog)):
            if i >= MAX_SLAB_CACHES:
                return None
            found[cache.value_()] = cache.oo.x.value_() >> OO_SHIFT
    except (drgn.FaultError, LookupError, AttributeError):
        return None
    if not found:
        return None
    addresses = sorted(found)
    return (
        np.array(addresses, dtype=np.uint64),
        np.array([found[a] for a in addresses], dtype=np.int64),
    )


def _has(obj: Object, member: str) -> bool:
    try:
        obj.member_(member)
    except LookupError:
        return False
    return True
