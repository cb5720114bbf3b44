"""
Fake skb slab caches: sk_buffs allocated in slab pages, as SLUB lays them out.

When a layout has ``struct slab``, ``struct kmem_cache`` and the
``net_hotdata`` global (Linux v6.10+), the world's sk_buffs are objects of a
``skbuff_head_cache`` whose slabs are pages marked as slab pages
(``PGTY_slab`` in ``page_type``, its value in VMCOREINFO as the kernel puts
it there for makedumpfile and drgn's ``PageSlab()``), with ``slab_cache`` and
the object count set; ``net_hotdata`` points at it and at an (empty)
``skbuff_fclone_cache``.  Free slots stay zero (a zero ``users``, as a freed
sk_buff has).  Before Linux kernel commit d122019bf061 ("mm: Split slab into
its own type") (in v5.17) the slab's fields are struct page's own, a slab
page has ``PG_slab`` set in its flags, and the caches are the globals
``skbuff_head_cache`` and ``skbuff_fclone_cache``: a layout with those is
modelled the same way.  Without them sk_buffs come from the heap as before.
"""

from typing import TYPE_CHECKING, Any, Dict, List

import drgn

from netmem_probe.fake.objects import KObject

if TYPE_CHECKING:
    from netmem_probe.fake.world import World

__all__ = ("SkbCaches", "alloc_skb", "models_slabs")

#: Slab order of the fake caches: one page per slab.
ORDER = 0
#: SLUB's OO_SHIFT: kmem_cache.oo.x is order << 16 | objects.
OO_SHIFT = 16


def models_slabs(world: "World") -> bool:
    """Whether the world's layout has what the skb slab caches need."""
    if not (world.has_type("struct kmem_cache") and world.has_type("struct sk_buff_fclones")):
        return False
    if world.has_type("struct slab"):
        return _has_global(world, "net_hotdata") and world.slab_mapcount_value is not None
    return (
        world.has_member("struct page", "slab_cache")
        and _has_global(world, "skbuff_head_cache")
        and world.has_constant("PG_slab")
    )


def _has_global(world: "World", name: str) -> bool:
    try:
        world.prog[name]
    except KeyError:
        return False
    return True


class SkbCache:
    """One slab cache of objects of ``type_name`` (``struct kmem_cache``)."""

    def __init__(self, world: "World", name: str, type_name: str) -> None:
        self.world = world
        self.type_name = type_name
        object_size = drgn.sizeof(world.type(type_name))
        self.size = -(-object_size // 64) * 64  # SLAB_HWCACHE_ALIGN
        self.per_slab = (world.page_size << ORDER) // self.size
        self.obj = world.alloc(
            "struct kmem_cache",
            {
                "size": self.size,
                "object_size": object_size,
                "offset": object_size // 2 // 8 * 8,
                "oo": {"x": ORDER << OO_SHIFT | self.per_slab},
                "refcount": 1,
                "name": world.string(name),
            },
        )
        self.slabs: List[KObject] = []
        self.slab_pfns: List[int] = []
        self.used = self.per_slab  # the current slab is full: start one on first use
        self.freed: Dict[int, List[int]] = {}  # slab index -> objects freed after use
        world.before_commit(self._write_freelist)

    def alloc(self, value: Any) -> KObject:
        world = self.world
        if self.used == self.per_slab:
            pfn = world.alloc_pfn(ORDER)
            self.slab_pfns.append(pfn)
            fields: Dict[str, Any] = {
                "slab_cache": self.obj.addr,
                "counters": self.per_slab << 16,  # inuse 0, objects, not frozen
            }
            if world.has_type("struct slab"):
                slab_type = "struct slab"
                fields["__page_type"] = (world.slab_mapcount_value or 0) & 0xFFFFFFFF
                fields["__page_refcount"] = {"counter": 1}
            else:  # the page itself, before v5.17
                slab_type = "struct page"
                fields["flags"] = 1 << world.prog.constant("PG_slab").value_()
                fields["_refcount"] = {"counter": 1}
            self.slabs.append(world.at(world.page_struct_addr(pfn), slab_type, fields))
            self.first = world.page_virt(pfn)
            self.used = 0
        addr = self.first + self.used * self.size
        self.used += 1
        slab = self.slabs[-1]
        slab.set("counters", self.per_slab << 16 | self.used)
        return world.at(addr, self.type_name, value)

    def free(self, obj: KObject) -> None:
        """
        Free an object, as kmem_cache_free() does: it goes on its slab's
        freelist and keeps its contents but the free pointer.
        """
        for index, pfn in enumerate(self.slab_pfns):
            first = self.world.page_virt(pfn)
            if first <= obj.addr < first + (self.world.page_size << ORDER):
                self.freed.setdefault(index, []).append(obj.addr)
                return
        raise ValueError(f"{obj.addr:#x} is no object of {self.type_name}'s slabs")

    def _write_freelist(self) -> None:
        """Chain each slab's free slots through ``offset``, as SLUB does."""
        offset = self.obj.value["offset"]
        for index, slab in enumerate(self.slabs):
            free = list(self.freed.get(index, ()))
            if index == len(self.slabs) - 1:
                free += [self.first + i * self.size for i in range(self.used, self.per_slab)]
            if not free:
                continue
            for addr, nxt in zip(free, free[1:] + [0]):
                self.world.at(addr + offset, "unsigned long", nxt)
            slab.set("freelist", free[0])
            slab.set("counters", self.per_slab << 16 | (self.per_slab - len(free)))


class SkbCaches:
    """``net_hotdata``'s skbuff_cache and skbuff_fclone_cache (before v6.10, globals)."""

    def __init__(self, world: "World") -> None:
        self.head = SkbCache(world, "skbuff_head_cache", "struct sk_buff")
        self.fclone = SkbCache(world, "skbuff_fclone_cache", "struct sk_buff_fclones")
        if _has_global(world, "net_hotdata"):
            hot = world.global_("net_hotdata")
            hot.set("skbuff_cache", self.head.obj.addr)
            hot.set("skbuff_fclone_cache", self.fclone.obj.addr)
        else:
            world.global_("skbuff_head_cache").value = self.head.obj.addr
            world.global_("skbuff_fclone_cache").value = self.fclone.obj.addr
        caches = world.list(world.global_("slab_caches"), "")
        caches.add(self.head.obj, "list")
        caches.add(self.fclone.obj, "list")


def alloc_skb(world: "World", value: Any) -> KObject:
    """A ``struct sk_buff``: a skbuff_head_cache object when slabs are modelled, else heap."""
    if not models_slabs(world):
        return world.alloc("struct sk_buff", value)
    if world.skb_caches is None:
        world.skb_caches = SkbCaches(world)
    return world.skb_caches.head.alloc(value)
