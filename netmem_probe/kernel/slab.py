"""
Slab places
-----------

Where an otherwise unclassified reference lies: the slab cache and object
holding it (drgn's :func:`~drgn.helpers.linux.slab.slab_object_info`), and,
one step back, what points at that object: the structure and member of
each word found that holds the object's start address, named from the slab
cache's type (caches that hold one kind of struct) or the kernel symbol it
lies in.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import drgn
from drgn import Program, TypeKind
from drgn.helpers.linux.slab import SlabObjectInfo

__all__ = (
    "CACHE_TYPES",
    "SlabObjects",
    "SlabPlace",
    "describe",
    "member_at",
    "place_of",
    "referrers",
    "page_place",
    "slab_place",
)

#: The struct a dedicated slab cache holds, by cache name (kmalloc caches
#: hold anything: their objects are named by cache and offset only).
CACHE_TYPES: Dict[str, str] = {
    "skbuff_head_cache": "struct sk_buff",
    "skbuff_fclone_cache": "struct sk_buff_fclones",
    "TCP": "struct tcp_sock",
    "TCPv6": "struct tcp6_sock",
    "UDP": "struct udp_sock",
    "UDPv6": "struct udp6_sock",
    "RAW": "struct raw_sock",
    "sock_inode_cache": "struct socket_alloc",
    "task_struct": "struct task_struct",
    "mm_struct": "struct mm_struct",
    "files_cache": "struct files_struct",
    "filp": "struct file",
    "net_namespace": "struct net",
    "io_kiocb": "struct io_kiocb",
}

#: Referrers named per slab object (a widely shared object has many).
MAX_REFERRERS = 4


@dataclass(frozen=True)
class SlabPlace:
    """A word inside a slab object."""

    cache: Optional[str]  # the slab cache's name
    object: int  # the object's start
    offset: int  # of the word in the object
    allocated: Optional[bool]
    member: Optional[str] = None  # the member at offset, if the cache's type is known

    def __str__(self) -> str:
        where = f"+{self.offset:#x}" + (f" ({self.member})" if self.member else "")
        state = " (free: a stale word)" if self.allocated is False else ""
        return f"{self.cache or 'slab'} object {self.object:#x}{where}{state}"


def member_at(type_: drgn.Type, offset: int) -> Optional[str]:
    """
    The path of the member of ``type_`` at byte ``offset`` (``"a.b[3].c"``,
    ``"+0x10"`` past the start of a member that is not a struct), or None if
    no member covers it.
    """
    type_ = type_.unaliased()
    path = ""
    while True:
        if type_.kind == TypeKind.ARRAY and type_.length:
            size = drgn.sizeof(type_.type)
            index, offset = divmod(offset, size) if size else (0, offset)
            if index >= type_.length:
                return path or None
            path += f"[{index}]"
            type_ = type_.type.unaliased()
            continue
        if type_.kind not in (TypeKind.STRUCT, TypeKind.UNION):
            return path + (f"+{offset:#x}" if offset else "") if path else None
        found = None
        members = type_.members or ()
        for i, member in enumerate(members):
            start = member.bit_offset // 8
            try:
                size = drgn.sizeof(member.type)
            except TypeError:  # a flexible array
                size = 0
            # Zero-sized members (cacheline markers) cover nothing, except a
            # trailing flexible array, which covers what follows.
            if start <= offset < start + size or (
                size == 0 and i == len(members) - 1 and offset >= start
            ):
                found = member, start
                break
        if found is None:
            return path or None
        member, start = found
        if member.name:
            path += ("." if path else "") + member.name
        type_, offset = member.type.unaliased(), offset - start


class SlabObjects:
    """
    drgn's :func:`~drgn.helpers.linux.slab.slab_object_info`, with what it
    reads per slab cache read once per cache and each slab's freelist once
    per slab.  drgn's helper walks every CPU's sheaves (or freelists) and the
    nodes' full sheaves on each call (about 7 ms for one object of a 7.3
    kernel); naming thousands of references took most of a ``holders`` run.

    One instance holds one reading of the lists: make a new one per command
    run (on a live kernel the lists move on).  An error reading a list is
    kept and answered for every object of that cache or slab as drgn's
    helper answers it (``allocated`` None, or False for an object on the part
    of a corrupt freelist that was read).
    """

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        self._helpers: Dict[int, Any] = {}
        self._names: Dict[int, Optional[str]] = {}
        self._slab_type: Optional[drgn.Type] = None
        self._direct_map: Optional[Tuple[int, int]] = None
        self._page_shift = prog["PAGE_SHIFT"].value_()
        # by virtual page number: its slab, or None for a page not a slab's
        self._pages: Dict[int, Optional[Tuple[drgn.Object, drgn.Object, Any]]] = {}

    def _in_direct_map(self, address: int) -> bool:
        """drgn's ``in_direct_map()``, with the map's bounds read once."""
        if self._direct_map is None:
            from drgn.helpers.linux.mm import pfn_to_virt

            prog = self.prog
            start = pfn_to_virt(prog["min_low_pfn"]).value_()
            end = (pfn_to_virt(prog["max_low_pfn"]) + prog["PAGE_SIZE"]).value_()
            self._direct_map = (start, end)
        return self._direct_map[0] <= address < self._direct_map[1]

    def cache_name(self, cache: drgn.Object) -> Optional[str]:
        """The name of a ``struct kmem_cache *``, read once; None if unreadable."""
        key = cache.value_()
        if key not in self._names:
            try:
                self._names[key] = cache.name.string_().decode(errors="replace")
            except drgn.FaultError:
                self._names[key] = None
        return self._names[key]

    def info(self, address: int) -> Optional[SlabObjectInfo]:
        """
        The :class:`~drgn.helpers.linux.slab.SlabObjectInfo` of the slab
        object holding ``address``, or None if it is not in a slab object.
        """
        from drgn.helpers.linux import slab as drgn_slab

        if not hasattr(drgn_slab, "_get_slab_cache_helper"):
            # another drgn: its helper, reading the lists on every call
            return drgn_slab.slab_object_info(self.prog, address)
        if not self._in_direct_map(address):
            return None
        key = address >> self._page_shift
        if key not in self._pages:
            self._pages[key] = self._slab_of(address)
        found = self._pages[key]
        if found is None:
            return None
        page, slab, helper = found
        if helper is None:  # SLOB: nothing to read once
            return drgn_slab.slab_object_info(self.prog, address)
        return helper.object_info(page, slab, address)

    def _slab_of(self, address: int) -> Optional[Tuple[drgn.Object, drgn.Object, Any]]:
        """
        The head page, slab and cache helper of the slab holding ``address``
        (helper None under SLOB), or None if its page is not a slab's.
        """
        from drgn.helpers.linux import slab as drgn_slab
        from drgn.helpers.linux.mm import PageSlab, compound_head, virt_to_page

        try:
            page = compound_head(virt_to_page(self.prog, address))
            if not PageSlab(page):
                return None
        except drgn.FaultError:
            return None
        if self._slab_type is None:
            # Since Linux kernel commit bb192ed9aa71 ("mm/slub: Convert most
            # struct page to struct slab by spatch") (in v5.17), SLUB's
            # fields are read through struct slab.
            try:
                self._slab_type = self.prog.pointer_type(self.prog.type("struct slab"))
            except LookupError:
                self._slab_type = self.prog.pointer_type(self.prog.type("struct page"))
        slab = drgn.cast(self._slab_type, page)
        try:
            cache = slab.slab_cache.read_()
        except AttributeError:
            return page, slab, None
        helper = self._helpers.get(cache.value_())
        if helper is None:
            helper = drgn_slab._get_slab_cache_helper(cache)
            _read_once(helper)
            self._helpers[cache.value_()] = helper
        return page, slab, helper


def _read_once(helper: Any) -> None:
    """
    Make a drgn slab cache helper read its per-cache free lists and each
    slab's freelist once, answering later calls (errors too) from that
    reading.  A helper without these methods (SLAB, SLOB, another drgn) is
    left as it is.
    """
    sheaves = getattr(helper, "_sheaves_full_objects", None)
    per_cpu = getattr(helper, "_per_cpu_info", None)
    freelist = getattr(helper, "_slub_get_freelist", None)
    if sheaves is None or per_cpu is None or freelist is None:
        return
    read: Dict[object, Tuple[object, Optional[BaseException]]] = {}

    def once(key: object, read_it: Callable[[], object]) -> object:
        if key not in read:
            try:
                read[key] = (read_it(), None)
            except Exception as e:  # noqa: BLE001 - answered as drgn answers it
                read[key] = (None, e)
        value, error = read[key]
        if error is not None:
            raise error.with_traceback(None)
        return value

    def sheaves_once() -> object:
        return once("sheaves", sheaves)

    def per_cpu_once(**kwargs: bool) -> object:
        if kwargs != {"catch_errors": True}:
            return per_cpu(**kwargs)
        return once("per-cpu", lambda: per_cpu(catch_errors=True))

    def freelist_once(name: Callable[[], str], head: drgn.Object) -> object:
        # A freelist is named by where its head lies (the slab's member).
        return once(("freelist", head.address_, head.value_()), lambda: freelist(name, head))

    helper._sheaves_full_objects = sheaves_once
    helper._per_cpu_info = per_cpu_once
    helper._slub_get_freelist = freelist_once


def slab_place(
    prog: Program, address: int, objects: Optional[SlabObjects] = None
) -> Optional[SlabPlace]:
    """
    The slab object holding ``address``, if it is in one, with the member
    there when the cache holds a known struct; None for other memory or
    slab metadata that cannot be read.  ``objects`` answers from lists
    already read (see :class:`SlabObjects`).
    """
    objects = objects or SlabObjects(prog)
    try:
        info = objects.info(address)
    except (drgn.FaultError, ValueError, LookupError, NotImplementedError):
        return None
    if info is None:
        return None
    cache = objects.cache_name(info.slab_cache)
    start = info.address
    offset = address - start
    member = None
    type_name = CACHE_TYPES.get(cache or "")
    if type_name and info.allocated:
        try:
            member = member_at(prog.type(type_name), offset)
        except LookupError:
            pass
    return SlabPlace(cache, start, offset, info.allocated, member)


def page_place(prog: Program, address: int) -> Optional[str]:
    """
    The page a direct-map word lies in, when neither a slab nor a symbol
    claims it: a free page (the word is stale), a reserved page, or a page
    someone allocated directly (``_refcount``); None if it cannot be read.
    """
    from drgn.helpers.linux.mm import PageReserved, virt_to_page

    try:
        page = virt_to_page(prog, address)
        refcount = page._refcount.counter.value_()
        if PageReserved(page):
            return f"in a reserved page ({page.value_():#x})"
    except (drgn.FaultError, LookupError, ValueError):
        return None
    if refcount == 0:
        return f"in a free page ({page.value_():#x}): a stale word"
    return f"in an allocated page ({page.value_():#x}, _refcount {refcount}), not slab"


def place_of(prog: Program, address: int, objects: Optional[SlabObjects] = None) -> Optional[str]:
    """
    A word's place in a few words: its slab object (and member), or the
    kernel or module symbol it lies in (and member, from the symbol's type),
    or None if neither.
    """
    place = slab_place(prog, address, objects)
    if place is not None:
        return str(place)
    try:
        symbol = prog.symbol(address)
    except LookupError:
        return None
    offset = address - symbol.address
    try:
        member = member_at(prog.object(symbol.name).type_, offset)
    except (LookupError, ValueError):
        member = None
    if member is None:
        return f"{symbol.name}+{offset:#x}"
    return symbol.name + ("" if member.startswith("[") else ".") + member


def referrers(
    prog: Program,
    objects: Iterable[int],
    words: Iterable[Tuple[int, int]],
    slab_objects: Optional[SlabObjects] = None,
) -> Dict[int, List[str]]:
    """
    The places (see :func:`place_of`) of the words, given as ``(address,
    value)`` pairs of a memory search for the ``objects``' start addresses,
    by object: at most :data:`MAX_REFERRERS` each.
    """
    found: Dict[int, List[str]] = {o: [] for o in objects}
    for address, value in words:
        places = found.get(value)
        if places is None or len(places) >= MAX_REFERRERS:
            continue
        place = place_of(prog, address, slab_objects)
        places.append(place or f"{address:#x}")
    return found


def describe(places: Sequence[str], slabs_only: bool = False) -> str:
    """
    ``pointed at from A, B`` for the referrers of an object, found in the
    slab pages only if ``slabs_only``, else in all of RAM.
    """
    if places:
        return "pointed at from " + ", ".join(places)
    return "no slab object points at it" if slabs_only else "no pointer to it found"
