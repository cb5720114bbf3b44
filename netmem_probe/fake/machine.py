"""
The machine a fake kernel runs on: architecture, page size and memory map.

A layout header names its machine in a comment, as the real kernel it was
taken from had it (``scripts/layouts/gen_layout_header.py`` writes it from
the vmlinux's ELF header and the kernel's ``CONFIG_PAGE_SHIFT``)::

    /* netmem-machine: aarch64 page-shift=14 */

Without that line a layout is x86-64 with 4 KiB pages.  The addresses below
are those of the real kernels: x86-64 with 4-level paging, and arm64 built
with ``VA_BITS=52`` running with 48-bit (4 KiB pages) or 47-bit (16 KiB
pages) virtual addresses, RAM at 1 GiB as on QEMU's ``virt`` machine.
"""

import re
from dataclasses import dataclass
from typing import Dict, List

import drgn

__all__ = ("Machine", "machine_of_header", "MACHINES")

EM_X86_64, EM_AARCH64 = 62, 183
_LITTLE_64 = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
_MACHINE_RE = re.compile(r"^/\* netmem-machine: (\w+) page-shift=(\d+) \*/$", re.MULTILINE)


@dataclass(frozen=True)
class Machine:
    """Where a fake kernel's memory is, as its architecture and page size put it."""

    arch: str  # "x86_64" or "aarch64"
    platform: drgn.Platform
    e_machine: int
    page_shift: int
    ram_base: int  # physical address of the first byte of RAM
    page_offset: int  # virtual address of ram_base in the direct map
    vmemmap: int  # the struct page of pfn 0
    kernel_text: int  # virtual addresses of the kernel image (types ELF)
    kernel_data: int
    kimage_voffset: int  # kernel image virtual - physical address
    swapper_pg_dir: int
    max_physmem_bits: int
    va_bits: int  # configured (VMCOREINFO VA_BITS)
    va_bits_actual: int  # at run time (64 - TCR_EL1.T1SZ)

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @property
    def direct_map_offset(self) -> int:
        """Virtual minus physical address in the direct map."""
        return self.page_offset - self.ram_base

    def vmcoreinfo(self) -> List[str]:
        """The architecture's own VMCOREINFO lines (arch_crash_save_vmcoreinfo())."""
        if self.arch == "x86_64":
            return ["NUMBER(phys_base)=0"]
        # PHYS_OFFSET is memstart_addr: with 52-bit VA configured and fewer
        # bits at run time, the kernel moves it so that PAGE_OFFSET (of
        # VA_BITS) + (pa - PHYS_OFFSET) lands in the smaller linear map.
        page_offset = -(1 << self.va_bits) % (1 << 64)
        phys_offset = (self.ram_base - (self.page_offset - page_offset)) % (1 << 64)
        return [
            f"NUMBER(VA_BITS)={self.va_bits}",
            f"NUMBER(kimage_voffset)={self.kimage_voffset:#x}",
            f"NUMBER(PHYS_OFFSET)={phys_offset:#x}",
            f"NUMBER(TCR_EL1_T1SZ)={64 - self.va_bits_actual:#x}",
            "NUMBER(KERNELPACMASK)=0x0",
        ]


def _x86_64() -> Machine:
    return Machine(
        arch="x86_64",
        platform=drgn.Platform(drgn.Architecture.X86_64, _LITTLE_64),
        e_machine=EM_X86_64,
        page_shift=12,
        ram_base=0,
        page_offset=0xFFFF888000000000,
        vmemmap=0xFFFFEA0000000000,
        kernel_text=0xFFFFFFFF81000000,
        kernel_data=0xFFFFFFFF82000000,
        kimage_voffset=0xFFFFFFFF80000000,
        swapper_pg_dir=0xFFFFFFFF82FFE000,
        max_physmem_bits=46,
        va_bits=48,
        va_bits_actual=48,
    )


# VMEMMAP_START of Debian's arm64 kernels (VA_BITS=52), by page shift, from
# their VMCOREINFO (NUMBER(VMEMMAP_START)).
_VMEMMAP_START = {12: 0xFFFFC1FFC0000000, 14: 0xFFFFF03FC0000000}


def _aarch64(page_shift: int) -> Machine:
    # Without LPA2 the kernel runs with 48-bit (4k) or 47-bit (16k) VA: the
    # linear map starts at -(1 << those bits), the kernel image (KIMAGE_VADDR,
    # without KASLR) at MODULES_END = _PAGE_END(VA_BITS_MIN) + 2 GiB, here
    # with .text 16 MiB in as on x86-64.
    va_actual = 48 if page_shift == 12 else 47
    ram_base = 0x40000000
    linear = -(1 << va_actual) % (1 << 64)
    text = (-(1 << (va_actual - 1)) % (1 << 64)) + 0x80000000 + 0x1000000
    # memstart_addr (PHYS_OFFSET), an s64 that the kernel moves below 0 so
    # that PAGE_OFFSET of VA_BITS=52 lands in the smaller linear map
    memstart = ram_base - (linear - (-(1 << 52) % (1 << 64)))
    # vmemmap = (struct page *)VMEMMAP_START - (memstart_addr >> PAGE_SHIFT)
    vmemmap = (_VMEMMAP_START[page_shift] - (memstart >> page_shift) * 64) % (1 << 64)
    return Machine(
        arch="aarch64",
        platform=drgn.Platform(drgn.Architecture.AARCH64, _LITTLE_64),
        e_machine=EM_AARCH64,
        page_shift=page_shift,
        ram_base=ram_base,
        page_offset=linear,
        vmemmap=vmemmap,
        kernel_text=text,
        kernel_data=text + 0x1000000,
        kimage_voffset=text - (ram_base + 0x1000000),
        swapper_pg_dir=text + 0x1000000 + 0xFF8000,
        max_physmem_bits=48,
        va_bits=52,
        va_bits_actual=va_actual,
    )


MACHINES: Dict[str, Machine] = {
    "x86_64": _x86_64(),
    "aarch64-4k": _aarch64(12),
    "aarch64-16k": _aarch64(14),
}


def machine_of_header(header_text: str) -> Machine:
    """The machine a layout header names (x86-64 with 4 KiB pages if none)."""
    match = _MACHINE_RE.search(header_text)
    if match is None:
        return MACHINES["x86_64"]
    arch, shift = match[1], int(match[2])
    key = arch if arch == "x86_64" else f"{arch}-{(1 << shift) >> 10}k"
    if key not in MACHINES or MACHINES[key].page_shift != shift:
        raise ValueError(f"no fake machine for {arch} with page shift {shift}")
    return MACHINES[key]
