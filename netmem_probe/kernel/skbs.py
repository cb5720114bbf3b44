"""
skb slabs
---------

The kernel's ``struct sk_buff``\\ s, found where they are allocated: the slab
caches of sk_buffs (``skbuff_head_cache``, and ``skbuff_fclone_cache`` whose
objects hold two), not by searching RAM.  Their slabs are found in one
vectorised pass over the memmap (the struct pages whose ``slab_cache`` is one
of those caches, each confirmed with drgn's ``PageSlab()``); drgn's
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
from typing import List, Optional, Tuple

import drgn
import numpy as np
from drgn import Object, Program

from netmem_probe.kernel.netmem import memmap_description
from netmem_probe.kernel.search import direct_map_base, word_dtype
from netmem_probe.kernel.walk import Problems

__all__ = ("SkbSlabs", "find_skb_slabs", "skb_caches")

#: Struct pages read at once in the memmap pass.
CHUNK_PAGES = 1 << 15


@dataclass(frozen=True)
class SkbSlabs:
    """Where the sk_buffs may be."""

    #: Candidate ``struct sk_buff`` addresses, in address order.
    skbs: Tuple[int, ...]
    #: Whether every slab of every sk_buff cache was read.
    complete: bool
    #: Slabs read.
    slabs: int


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
        # Since Linux v6.10 the cache pointers live in struct net_hotdata.
        hot = prog["net_hotdata"]
        pointers = [hot.skbuff_cache, hot.skbuff_fclone_cache]
    except (KeyError, AttributeError):
        pointers = []
        # skbuff_head_cache was renamed skbuff_cache in Linux v6.4.
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


def find_skb_slabs(prog: Program, problems: Problems) -> Optional[SkbSlabs]:
    """
    The candidate sk_buffs of every sk_buff slab; None if the kernel's slab
    caches cannot be told (no slab types, no cache pointers, no memmap), so
    that only a search of RAM can find sk_buffs.
    """
    try:
        caches = skb_caches(prog)
        slab_type = prog.type("struct slab")
    except (LookupError, drgn.FaultError):
        return None
    if not caches:
        return None
    memmap = memmap_description(prog, problems)
    base = direct_map_base(prog, problems)
    if memmap is None or base is None:
        return None
    from drgn.helpers.linux.mm import PageSlab
    from drgn.helpers.linux.slab import slab_cache_objects_per_slab

    page_type = prog.type("struct page")
    page_size = drgn.sizeof(page_type)
    page_shift = prog["PAGE_SHIFT"].value_()
    cache_offset = drgn.offsetof(slab_type, "slab_cache")
    by_address = {}
    try:
        for cache, offsets in caches:
            size = cache.size.value_()
            limit = slab_cache_objects_per_slab(cache)
            red_left_pad = cache.red_left_pad.value_() if _has(cache, "red_left_pad") else 0
            by_address[cache.value_()] = (size, limit, red_left_pad, offsets)
    except drgn.FaultError as e:
        problems.fault("skb slab cache", e.address, e)
        return None
    dtype = word_dtype(prog)
    wanted = np.array(sorted(by_address), dtype=dtype.newbyteorder("="))
    skbs: List[int] = []
    complete = True
    slabs = 0
    for start, end in memmap.ranges:
        pfn = start
        while pfn < end:
            count = min(CHUNK_PAGES, end - pfn)
            address = memmap.vmemmap + pfn * page_size
            try:
                buf = prog.read(address, count * page_size)
            except drgn.FaultError as e:
                problems.fault("skb slabs: memmap", address, e)
                complete = False
                pfn += count
                continue
            words = np.frombuffer(buf, dtype=dtype).reshape(count, page_size // dtype.itemsize)
            column = words[:, cache_offset // dtype.itemsize]
            match = column == wanted[0]
            for other in wanted[1:]:
                match |= column == other
            hits = np.flatnonzero(match)
            for i in hits.tolist():
                page = Object(prog, "struct page *", address + i * page_size)
                try:
                    if not PageSlab(page):
                        continue
                    slab = drgn.cast(prog.pointer_type(slab_type), page)
                    cache = slab.slab_cache.value_()
                    objects = slab.objects.value_()
                except drgn.FaultError as e:
                    problems.fault("skb slab", page.value_(), e)
                    complete = False
                    continue
                size, limit, red_left_pad, offsets = by_address[cache]
                if not 0 < objects <= limit:
                    problems.add(
                        "skb slab",
                        page.value_(),
                        f"{objects} objects, its cache holds at most {limit} per slab",
                    )
                    complete = False
                    continue
                slabs += 1
                first = base + ((pfn + i) << page_shift) + red_left_pad
                skbs.extend(first + n * size + offset for n in range(objects) for offset in offsets)
            pfn += count
    return SkbSlabs(tuple(sorted(skbs)), complete, slabs)


def _has(obj: Object, member: str) -> bool:
    try:
        obj.member_(member)
    except LookupError:
        return False
    return True
