# SPDX-License-Identifier: GPL-2.0-or-later

"""
ELF
---

Just enough ELF for the tool's own needs, in one reader: the identification
(class, byte order, machine) of a debug info file or core dump, one section
by name (``.BTF``, decompressed when ``SHF_COMPRESSED``), and the program
headers of a core dump.  drgn reads everything else.
"""

import os
import struct
import zlib
from typing import BinaryIO, List, NamedTuple, Optional, Tuple

__all__ = ("ElfError", "ElfFile", "ProgramHeader")

SHT_NOBITS = 8
SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB = 1
SHN_XINDEX = 0xFFFF
PN_XNUM = 0xFFFF


class ElfError(Exception):
    """The file is not ELF, is truncated where it matters, or lacks what was asked for."""


class SectionHeader(NamedTuple):
    name: int
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int


class ProgramHeader(NamedTuple):
    type: int  # p_type: PT_LOAD is 1, PT_NOTE 4
    offset: int  # p_offset
    filesz: int  # p_filesz


class ElfFile:
    """
    An open ELF file: its identification, read on construction, and its
    section and program headers, read when asked for.

    :raises ElfError: if ``f`` does not start with an ELF identification of a
        known class and data encoding.
    """

    def __init__(self, f: BinaryIO, path: str) -> None:
        self._f = f
        self.path = path
        ident = self._read(0, 20)
        if ident[:4] != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        if ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise ElfError(f"{path}: unknown ELF class {ident[4]} or data encoding {ident[5]}")
        #: ELFCLASS64 (else ELFCLASS32).
        self.is_64 = ident[4] == 2
        #: ELFDATA2LSB (else ELFDATA2MSB).
        self.little = ident[5] == 1
        self._prefix = "<" if self.little else ">"
        #: e_machine (EM_X86_64 is 62, EM_AARCH64 183).
        self.machine: int = self._unpack(18, "H")[0]
        if self.is_64:
            self._phoff, self._shoff = self._unpack(0x20, "QQ")
            self._phentsize, self._phnum, self._shentsize, shnum, shstrndx = self._unpack(
                0x36, "HHHHH"
            )
        else:
            self._phoff, self._shoff = self._unpack(0x1C, "II")
            self._phentsize, self._phnum, self._shentsize, shnum, shstrndx = self._unpack(
                0x2A, "HHHHH"
            )
        self._shnum = shnum
        self._shstrndx = shstrndx

    @classmethod
    def ident(cls, path: str) -> Optional["ElfFile"]:
        """The file at ``path`` with its identification read, or None if unreadable or not ELF."""
        try:
            with open(path, "rb") as f:
                return cls(f, path)
        except (OSError, ElfError):
            return None

    # -- reading -------------------------------------------------------------

    def _read(self, offset: int, size: int) -> bytes:
        self._f.seek(offset)
        data = self._f.read(size)
        if len(data) != size:
            raise ElfError(f"{self.path}: truncated ELF file (wanted {size} bytes at {offset})")
        return data

    def _unpack(self, offset: int, fmt: str) -> Tuple[int, ...]:
        fmt = self._prefix + fmt
        return struct.unpack(fmt, self._read(offset, struct.calcsize(fmt)))

    # -- sections ------------------------------------------------------------

    def _header(self, index: int) -> SectionHeader:
        offset = self._shoff + index * self._shentsize
        if self.is_64:
            name, type_, flags, _, off, size, link, info = self._unpack(offset, "IIQQQQII")
        else:
            name, type_, flags, _, off, size, link, info = self._unpack(offset, "IIIIIIII")
        return SectionHeader(name, type_, flags, off, size, link, info)

    def _section_counts(self) -> Tuple[int, int]:
        """(number of sections, index of the section name table)."""
        if self._shoff == 0:
            raise ElfError(f"{self.path}: no section headers")
        if self._shentsize < (64 if self.is_64 else 40):
            raise ElfError(f"{self.path}: bad section header size {self._shentsize}")
        shnum, shstrndx = self._shnum, self._shstrndx
        # Extended numbering: the real counts live in section header 0.
        if shnum == 0 or shstrndx == SHN_XINDEX:
            first = self._header(0)
            shnum = shnum or first.size
            if shstrndx == SHN_XINDEX:
                shstrndx = first.link
        return shnum, shstrndx

    def section_header(self, wanted: str) -> SectionHeader:
        """
        The header of section ``wanted`` (where its contents lie in the file).

        :raises ElfError: if there is no such section or the file is truncated
            or corrupt in its section headers.
        """
        shnum, shstrndx = self._section_counts()
        if shstrndx >= shnum:
            raise ElfError(f"{self.path}: section name table index out of range")
        strtab = self._header(shstrndx)
        names = self._read(strtab.offset, strtab.size)
        key = wanted.encode() + b"\0"
        for index in range(1, shnum):
            header = self._header(index)
            if names[header.name : header.name + len(key)] == key:
                return header
        raise ElfError(f"{self.path}: no {wanted} section")

    def section(self, wanted: str) -> bytes:
        """
        The contents of section ``wanted``, zlib-decompressed if compressed.

        :raises ElfError: if there is no such section, it has no data in this
            file (``SHT_NOBITS``: a separate debug info file), or the file is
            truncated or corrupt there.
        """
        header = self.section_header(wanted)
        if header.type == SHT_NOBITS:
            raise ElfError(
                f"{self.path}: {wanted} section has no data (a separate debug info "
                "file; read the BTF from the kernel image or memory instead)"
            )
        data = self._read(header.offset, header.size)
        if header.flags & SHF_COMPRESSED:
            data = self._decompress(data, wanted)
        return data

    def _decompress(self, data: bytes, wanted: str) -> bytes:
        fmt = self._prefix + ("IIQQ" if self.is_64 else "III")
        if len(data) < struct.calcsize(fmt):
            raise ElfError(f"{self.path}: truncated compressed {wanted} section")
        ch_type = struct.unpack_from(fmt, data)[0]
        if ch_type != ELFCOMPRESS_ZLIB:
            raise ElfError(f"{self.path}: {wanted} section uses unsupported compression {ch_type}")
        try:
            return zlib.decompress(data[struct.calcsize(fmt) :])
        except zlib.error as e:
            raise ElfError(f"{self.path}: corrupt compressed {wanted} section: {e}") from None

    # -- program headers -----------------------------------------------------

    def program_headers(self) -> Tuple[List[ProgramHeader], int]:
        """
        The program headers the file holds (fewer than ``e_phnum`` if it is
        truncated inside the table), and where the table should end.  Empty
        when there are none or they cannot be read.
        """
        phnum = self._phnum
        if phnum == PN_XNUM:  # the real count is section header 0's sh_info
            try:
                phnum = self._header(0).info
            except ElfError:
                return [], 0
        fmt = self._prefix + ("I4xQ16xQ" if self.is_64 else "II8xI")
        size = os.fstat(self._f.fileno()).st_size
        if not phnum or self._phentsize < struct.calcsize(fmt) or self._phoff >= size:
            return [], 0
        self._f.seek(self._phoff)
        table = self._f.read(phnum * self._phentsize)
        headers = [
            ProgramHeader(*struct.unpack_from(fmt, table, i * self._phentsize))
            for i in range(len(table) // self._phentsize)
        ]
        return headers, self._phoff + phnum * self._phentsize
