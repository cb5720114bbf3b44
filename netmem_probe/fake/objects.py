"""
The building blocks of a fake kernel world: the platform and memory-map
constants its layouts assume, a kernel object (:class:`KObject`: an address, a
C type and a value dict), and the linked structures (lists, hlists, XArrays)
wired into the values when the world is committed.  The objects of
:mod:`netmem_probe.fake.net`, :mod:`~netmem_probe.fake.pools` and the rest
build on these; :mod:`netmem_probe.fake.world` builds on all of them.
"""

from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import drgn

from netmem_probe.fake.machine import MACHINES

if TYPE_CHECKING:
    # The world allocates and commits these objects; annotations only.
    from netmem_probe.fake.world import World

__all__ = (
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "PAGE_OFFSET",
    "VMEMMAP",
    "POISON_POINTER_DELTA",
    "TIMER_ENTRY_STATIC",
    "NET_PTR_POISON",
    "SECTION_SIZE_BITS",
    "RAM_SIZE",
    "HEAP_PA",
    "HEAP_SIZE",
    "PERCPU_UNIT",
    "PERCPU_DYNAMIC",
    "INIT_NET_INUM",
    "SECTION_FLAGS",
    "FakeList",
    "FakeXArray",
    "KObject",
)

# The x86-64 machine's addresses, for benchmarks and tests that build x86-64
# worlds; a World's own (arm64 too) are in ``world.machine`` (fake.machine).
PAGE_SHIFT = MACHINES["x86_64"].page_shift
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_OFFSET = MACHINES["x86_64"].page_offset
VMEMMAP = MACHINES["x86_64"].vmemmap
POISON_POINTER_DELTA = 0xDEAD000000000000
TIMER_ENTRY_STATIC = 0x300 + POISON_POINTER_DELTA
NET_PTR_POISON = 0x801 + POISON_POINTER_DELTA

SECTION_SIZE_BITS = 27
RAM_SIZE = 1 << SECTION_SIZE_BITS  # one memory section
HEAP_PA = 0x4000000  # from the start of RAM
HEAP_SIZE = 0x2000000
PERCPU_UNIT = 0x100000
PERCPU_DYNAMIC = 0x8000  # first dynamically allocated per-CPU offset
INIT_NET_INUM = 0xF0000000

SECTION_FLAGS = 0x1 | 0x2 | 0x4 | 0x8  # present, has mem_map, online, early


def join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def set_path(value: Dict[str, Any], path: str, item: Any) -> None:
    """Set ``value["a"]["b"]`` for path ``"a.b"``, creating dicts on the way."""
    *parents, last = path.split(".")
    for name in parents:
        value = value.setdefault(name, {})
    value[last] = item


class KObject:
    """A kernel object of the fake world: its address, C type and value."""

    __slots__ = ("world", "addr", "type", "value")

    def __init__(self, world: "World", addr: int, type_: drgn.Type, value: Any = None) -> None:
        self.world = world
        self.addr = addr
        self.type = type_
        # A dict for a struct, a list for an array, an int or bytes otherwise.
        self.value: Any = value if value is not None else {}

    def addr_of(self, path: str) -> int:
        """Address of a member, e.g. ``pool.addr_of("user.list")``."""
        return self.addr + drgn.offsetof(self.type, path) if path else self.addr

    def set(self, path: str, item: Any) -> None:
        set_path(self.value, path, item)

    def __repr__(self) -> str:
        return f"<{self.type.type_name()} at {self.addr:#x}>"


class FakeList:
    """A ``list_head`` or ``hlist_head`` list, wired at commit."""

    def __init__(self, head: KObject, head_path: str, hlist: bool = False) -> None:
        self.head = head
        self.head_path = head_path
        self.hlist = hlist
        self.nodes: List[Tuple[KObject, str]] = []

    def add(self, node: KObject, node_path: str, *, head: bool = False) -> None:
        if head:
            self.nodes.insert(0, (node, node_path))
        else:
            self.nodes.append((node, node_path))

    def remove(self, node: KObject) -> None:
        self.nodes = [(n, p) for n, p in self.nodes if n is not node]

    def wire(self) -> None:
        head_addr = self.head.addr_of(self.head_path)
        addrs = [n.addr_of(p) for n, p in self.nodes]
        if self.hlist:
            self.head.set(join(self.head_path, "first"), addrs[0] if addrs else 0)
            for i, (node, path) in enumerate(self.nodes):
                node.set(join(path, "next"), addrs[i + 1] if i + 1 < len(addrs) else 0)
                node.set(join(path, "pprev"), head_addr if i == 0 else addrs[i - 1])
            return
        ring = [head_addr] + addrs
        owners = [(self.head, self.head_path)] + self.nodes
        for i, (owner, path) in enumerate(owners):
            owner.set(join(path, "next"), ring[(i + 1) % len(ring)])
            owner.set(join(path, "prev"), ring[i - 1])


class FakeXArray:
    """An XArray's entries; the node tree is built at commit."""

    CHUNK_SHIFT = 6

    def __init__(self, owner: KObject, path: str) -> None:
        self.owner = owner
        self.path = path
        self.entries: Dict[int, int] = {}

    def wire(self, world: "World") -> None:
        xa_addr = self.owner.addr_of(self.path)
        entries = {i: e for i, e in self.entries.items() if e}
        if not entries:
            self.owner.set(join(self.path, "xa_head"), 0)
            return
        if set(entries) == {0}:
            self.owner.set(join(self.path, "xa_head"), entries[0])
            return
        shift = 0
        while max(entries) >> shift >= 1 << self.CHUNK_SHIFT:
            shift += self.CHUNK_SHIFT
        head = self._node(world, entries, shift, 0, 0, 0, xa_addr)
        self.owner.set(join(self.path, "xa_head"), head | 2)

    def _node(
        self,
        world: "World",
        entries: Dict[int, int],
        shift: int,
        base: int,
        parent: int,
        offset: int,
        xa_addr: int,
    ) -> int:
        node = world.alloc("struct xa_node")
        slots = [0] * (1 << self.CHUNK_SHIFT)
        groups: Dict[int, Dict[int, int]] = {}
        for index, entry in entries.items():
            groups.setdefault((index - base) >> shift, {})[index] = entry
        for slot, group in groups.items():
            if shift == 0:
                slots[slot] = group[base + slot]
            else:
                child = self._node(
                    world,
                    group,
                    shift - self.CHUNK_SHIFT,
                    base + (slot << shift),
                    node.addr,
                    slot,
                    xa_addr,
                )
                slots[slot] = child | 2
        node.value = {
            "shift": shift,
            "offset": offset,
            "count": len(groups),
            "parent": parent,
            "array": xa_addr,
            "slots": slots,
        }
        return node.addr
