"""
Write fake kernel memory as an ELF vmcore (``ET_CORE`` with a VMCOREINFO note).

drgn opens the result like a kdump vmcore: the VMCOREINFO note makes it a Linux
kernel program.  Runs of zero pages are not stored: a ``PT_LOAD`` whose file
size is smaller than its memory size reads back as zeros, which keeps fixtures
small.
"""

import struct
from typing import BinaryIO, Iterator, List, Tuple

from netmem_probe.fake.memory import FakeMemory, Region

__all__ = ("write_core",)

ET_CORE, EM_X86_64, PT_LOAD, PT_NOTE = 4, 62, 1, 4
PF_RWX = 7
CHUNK = 4096


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def _loads(region: Region) -> Iterator[Tuple[int, bytes, int]]:
    """Split a region into (offset, stored bytes, memory size) loads."""
    data = region.read(0, region.size)
    zero = bytes(CHUNK)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    nonzero = [c != zero[: len(c)] for c in chunks]
    i = 0
    while i < len(chunks):
        start = i
        while i < len(chunks) and nonzero[i]:
            i += 1
        stored_end = i
        while i < len(chunks) and not nonzero[i]:
            i += 1
        memsz = min(i * CHUNK, region.size) - start * CHUNK
        yield start * CHUNK, data[start * CHUNK : stored_end * CHUNK], memsz


def write_core(
    out: BinaryIO, memory: FakeMemory, vmcoreinfo: str, e_machine: int = EM_X86_64
) -> None:
    """Write ``memory`` to ``out`` as an ELF core of ``e_machine`` with ``vmcoreinfo``."""
    notes = _note(b"VMCOREINFO", 0, vmcoreinfo.encode())
    loads: List[Tuple[int, int, bytes, int]] = []
    for region in memory.regions:
        for offset, data, memsz in _loads(region):
            pa = region.pa + offset if region.pa is not None else 0
            loads.append((region.va + offset, pa, data, memsz))
    nphdr = 1 + len(loads)
    offset = 64 + 56 * nphdr
    phdrs = [struct.pack("<IIQQQQQQ", PT_NOTE, 0, offset, 0, 0, len(notes), 0, 4)]
    blobs = [notes]
    offset += len(notes)
    for va, pa, data, memsz in loads:
        pad = -offset % CHUNK if data else 0
        blobs.append(b"\0" * pad)
        offset += pad
        phdrs.append(
            struct.pack("<IIQQQQQQ", PT_LOAD, PF_RWX, offset, va, pa, len(data), memsz, CHUNK)
        )
        blobs.append(data)
        offset += len(data)
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH", ident, ET_CORE, e_machine, 1, 0, 64, 0, 0, 64, 56, nphdr, 64, 0, 0
    )
    out.write(ehdr)
    out.write(b"".join(phdrs))
    out.write(b"".join(blobs))
