"""
Faulty fake memory: a committed :class:`~netmem_probe.fake.world.World` seen
through corruption, unmapped holes, memory that changes while it is read, and
a read budget.

:class:`FaultyMemory` never touches the world's own memory: writes go to a
copy-on-write overlay of pages, so one committed world serves any number of
corrupted variants, and each variant gets a fresh drgn Program (no cached
reads or derived values from another variant).  Every read a netmem-probe
helper makes passes through :meth:`FaultyMemory.read`, which counts it,
enforces the budget, applies the overlay and holes, and then runs the
``on_read`` hooks that let a test move the kernel underneath the reader, as a
live kernel does.
"""

from typing import Callable, Dict, List, Optional, Tuple

import drgn

from netmem_probe.fake.world import World

__all__ = ("BudgetExceeded", "FaultyMemory", "OnRead")

OVERLAY_PAGE = 4096

OnRead = Callable[["FaultyMemory", int, int], None]


class BudgetExceeded(BaseException):
    """
    A run read more than its budget: a walk that does not end.  A
    BaseException, so that the CLI's catch-all cannot turn a hang into a
    tidy exit code and hide it from the test.
    """


class FaultyMemory:
    """
    The memory of a committed world, with faults on top.

    :param world: a committed world (its memory is only read).
    :param max_reads: reads allowed before :class:`BudgetExceeded`.
    :param max_bytes: bytes allowed to be read in total, likewise.
    """

    def __init__(
        self, world: World, *, max_reads: Optional[int] = None, max_bytes: Optional[int] = None
    ) -> None:
        self.world = world
        self.max_reads = max_reads
        self.max_bytes = max_bytes
        self.reads = 0
        self.bytes = 0
        self.on_read: List[OnRead] = []
        self.log: Optional[List[Tuple[int, int]]] = None
        self._pages: Dict[int, bytearray] = {}
        self.holes: List[Tuple[int, int]] = []

    # -- faults ------------------------------------------------------------

    def write(self, address: int, data: bytes) -> None:
        """Overwrite memory as the target will see it (the world is untouched)."""
        pos = 0
        while pos < len(data):
            va = address + pos
            base = va - va % OVERLAY_PAGE
            page = self._pages.get(base)
            if page is None:
                page = self._pages[base] = bytearray(self._base(base, OVERLAY_PAGE))
            off = va - base
            n = min(len(data) - pos, OVERLAY_PAGE - off)
            page[off : off + n] = data[pos : pos + n]
            pos += n

    def write_word(self, address: int, value: int, size: int = 8) -> None:
        self.write(address, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def unmap(self, address: int, size: int) -> None:
        """Make ``[address, address + size)`` fault, as a hole in a vmcore does."""
        self.holes.append((address, address + size))

    def peek(self, address: int, count: int) -> bytes:
        """What the target sees at ``address``, without counting a read."""
        out = bytearray(self._base(address, count))
        first = address - address % OVERLAY_PAGE
        for base in range(first, address + count, OVERLAY_PAGE):
            page = self._pages.get(base)
            if page is None:
                continue
            lo, hi = max(base, address), min(base + OVERLAY_PAGE, address + count)
            out[lo - address : hi - address] = page[lo - base : hi - base]
        return bytes(out)

    def peek_word(self, address: int, size: int = 8) -> int:
        return int.from_bytes(self.peek(address, size), "little")

    def _base(self, address: int, count: int) -> bytes:
        """The world's committed bytes; unmapped parts read as zeros."""
        out = bytearray(count)
        pos = 0
        mem = self.world.mem
        while pos < count:
            try:
                region = mem.region_at(address + pos)
            except drgn.FaultError:
                later = [r.va for r in mem.regions if r.va > address + pos]
                pos = min(later[0] - address, count) if later else count
                continue
            off = address + pos - region.va
            n = min(count - pos, region.size - off)
            out[pos : pos + n] = region.read(off, n)
            pos += n
        return bytes(out)

    def _hole_in(self, address: int, count: int) -> Optional[int]:
        for start, end in self.holes:
            if start < address + count and end > address:
                return max(start, address)
        return None

    # -- the read path drgn calls -------------------------------------------

    def read(self, address: int, count: int) -> bytes:
        self.reads += 1
        self.bytes += count
        if self.max_reads is not None and self.reads > self.max_reads:
            raise BudgetExceeded(f"more than {self.max_reads} reads")
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            raise BudgetExceeded(f"more than {self.max_bytes} bytes read")
        if self.log is not None:
            self.log.append((address, count))
        hole = self._hole_in(address, count) if self.holes else None
        if hole is not None:
            raise drgn.FaultError("fake memory hole", hole)
        data = self.peek(address, count) if self._pages else None
        if data is None:
            region = self.world.mem.region_at(address)
            data = region.read(address - region.va, count)
        for hook in self.on_read:
            hook(self, address, count)
        return data

    def program(self, *, live: bool = False) -> drgn.Program:
        """
        A fresh Program over this memory; ``live`` sets ``IS_LIVE`` as
        ``/proc/kcore`` does, so helpers treat the target as racy.
        """
        world = self.world
        prog = drgn.Program(world.machine.platform)
        prog.set_linux_kernel_custom(world.vmcoreinfo().encode(), live)
        prog.main_module("kernel", create=True).try_file(str(world.types_elf), force=True)
        for region in world.mem.regions:

            def read(
                address: int, count: int, offset: int, physical: bool, va: int = region.va
            ) -> bytes:
                try:
                    return self.read(va + offset, count)
                except drgn.FaultError as e:
                    # A hole is kept by virtual address; a read of the physical
                    # alias must fault at the physical address, as a dump does.
                    raise drgn.FaultError(e.message, address + e.address - (va + offset)) from None

            prog.add_memory_segment(region.va, region.size, read)
            if region.pa is not None:
                prog.add_memory_segment(region.pa, region.size, read, True)
        return prog
