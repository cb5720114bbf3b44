"""
Platform facts of the target
----------------------------

Word size and byte order come from drgn's platform of the Program (the
core's or vmlinux's ELF header), the page size from the kernel itself
(``PAGE_SIZE``/``PAGE_SHIFT``, which drgn takes from VMCOREINFO's
``PAGESIZE``): 4 KiB on x86-64, 4, 16 or 64 KiB on arm64.  Nothing in
``kernel/`` assumes a value for any of them; helpers that decode raw bytes
build their ``struct`` formats from :func:`word_format`.

This module is at the bottom of the helper stack: it imports only
:mod:`netmem_probe.kernel.cache`.
"""

from typing import Literal, NamedTuple

import drgn
from drgn import Program

from netmem_probe.kernel.cache import per_program

__all__ = (
    "Platform",
    "byte_order",
    "page_shift",
    "page_size",
    "platform_facts",
    "word_format",
    "word_size",
)


ByteOrder = Literal["little", "big"]


class Platform(NamedTuple):
    """What decoding raw kernel memory needs to know about the target."""

    byte_order: ByteOrder  # for int.from_bytes()
    endian: str  # "<" or ">", for the struct module
    word_size: int  # bytes in an unsigned long / a pointer
    word_code: str  # "Q" or "I"
    page_shift: int
    page_size: int


@per_program
def platform_facts(prog: Program) -> Platform:
    """The target's :class:`Platform`, computed once per Program."""
    platform = prog.platform
    if platform is None:  # a Program always has one once a core or kernel is set
        raise ValueError("program has no platform")
    little = bool(platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    wide = bool(platform.flags & drgn.PlatformFlags.IS_64_BIT)
    shift = prog["PAGE_SHIFT"].value_()
    return Platform(
        byte_order="little" if little else "big",
        endian="<" if little else ">",
        word_size=8 if wide else 4,
        word_code="Q" if wide else "I",
        page_shift=shift,
        page_size=1 << shift,
    )


def byte_order(prog: Program) -> ByteOrder:
    """``"little"`` or ``"big"``: the target's byte order, for ``int.from_bytes()``."""
    return platform_facts(prog).byte_order


def word_size(prog: Program) -> int:
    """Bytes in the target's ``unsigned long`` (and pointers)."""
    return platform_facts(prog).word_size


def page_shift(prog: Program) -> int:
    """The kernel's ``PAGE_SHIFT``."""
    return platform_facts(prog).page_shift


def page_size(prog: Program) -> int:
    """The kernel's ``PAGE_SIZE`` in bytes."""
    return platform_facts(prog).page_size


def word_format(prog: Program, count: int = 1) -> str:
    """A ``struct`` format of ``count`` target words (``"<2Q"`` on x86-64 and arm64)."""
    facts = platform_facts(prog)
    return f"{facts.endian}{count}{facts.word_code}"
