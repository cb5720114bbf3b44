"""
Fake kernel memory: Python buffers that a real :class:`drgn.Program` reads.

Each :class:`Region` is a range of kernel virtual addresses with the physical
address behind it, backed either by a ``bytearray`` or by a function that
generates its bytes on demand (for memmaps too large to store).  Regions are
attached to a Program as memory segments, virtual and physical, so every read
a netmem-probe helper makes goes through drgn exactly as it would on a vmcore.
"""

import bisect
from typing import Callable, List, Optional

import drgn

__all__ = ("FakeMemory", "Region")

ReadFn = Callable[[int, int], bytes]


class Region:
    """A contiguous range of fake kernel memory."""

    def __init__(
        self, name: str, va: int, pa: Optional[int], size: int, read_fn: Optional[ReadFn] = None
    ) -> None:
        self.name = name
        self.va = va
        self.pa = pa
        self.size = size
        self.read_fn = read_fn
        self.data = bytearray(size) if read_fn is None else None
        self._next = 0

    @property
    def end(self) -> int:
        return self.va + self.size

    def alloc(self, size: int, align: int = 64) -> int:
        """Carve ``size`` bytes out of the region, bump-allocator style."""
        start = -(-self._next // align) * align
        if start + size > self.size:
            raise MemoryError(f"fake region {self.name} is full ({self.size} bytes)")
        self._next = start + size
        return self.va + start

    @property
    def used(self) -> int:
        return self._next

    def read(self, offset: int, count: int) -> bytes:
        if self.data is not None:
            return bytes(self.data[offset : offset + count])
        assert self.read_fn is not None  # a region has either data or a read function
        return self.read_fn(offset, count)


class FakeMemory:
    """The set of regions that make up a fake kernel's memory."""

    def __init__(self) -> None:
        self.regions: List[Region] = []
        self._starts: List[int] = []
        self.frozen = False

    def add(self, region: Region) -> Region:
        i = bisect.bisect(self._starts, region.va)
        if (i and self.regions[i - 1].end > region.va) or (
            i < len(self.regions) and region.end > self.regions[i].va
        ):
            raise ValueError(f"fake region {region.name} overlaps another")
        self.regions.insert(i, region)
        self._starts.insert(i, region.va)
        return region

    def region_at(self, va: int) -> Region:
        i = bisect.bisect(self._starts, va) - 1
        if i < 0 or va >= self.regions[i].end:
            raise drgn.FaultError("fake address is not mapped", va)
        return self.regions[i]

    def write(self, va: int, data: bytes) -> None:
        if self.frozen:
            raise PermissionError(f"write to frozen fake memory at {va:#x}")
        region = self.region_at(va)
        off = va - region.va
        if region.data is None or off + len(data) > region.size:
            raise ValueError(f"cannot write {len(data)} bytes at {va:#x} in {region.name}")
        region.data[off : off + len(data)] = data

    def read(self, va: int, count: int) -> bytes:
        region = self.region_at(va)
        return region.read(va - region.va, count)

    def attach(self, prog: drgn.Program) -> None:
        """Add every region to ``prog`` as a virtual and a physical segment."""
        for region in self.regions:

            def read(
                address: int, count: int, offset: int, physical: bool, region: Region = region
            ) -> bytes:
                return region.read(offset, count)

            prog.add_memory_segment(region.va, region.size, read)
            if region.pa is not None:
                prog.add_memory_segment(region.pa, region.size, read, True)
