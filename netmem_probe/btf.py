# SPDX-License-Identifier: GPL-2.0-or-later

"""
BTF
---

The ``netmem_probe.btf`` module reads the BPF Type Format (BTF), the compact
type information that modern kernels carry in ``/sys/kernel/btf/vmlinux``, in
kernel memory between ``__start_BTF`` and ``__stop_BTF``, and in the ``.BTF``
section of ``vmlinux`` and of each module. It makes BTF a type and object source
for drgn, so that drgn and its helpers work on hosts and crash dumps that have no
DWARF debugging information.

The parser follows the kernel's format documentation
(:linux:`Documentation/bpf/btf.rst` and :linux:`include/uapi/linux/btf.h`). It
handles both byte orders and split BTF (module BTF whose type ids and string
offsets continue after those of a base BTF). Any malformed input raises
:class:`BtfError`.

:mod:`netmem_probe.btf_drgn` builds drgn types from it: only for the types that
are asked for, and the members and parameters of a type only when they are first
used, so looking up one structure among a kernel's 100,000+ BTF types is cheap.

>>> from netmem_probe.btf_drgn import add_btf_object_finder, add_btf_type_finder
>>> btf = parse_btf(open("/sys/kernel/btf/vmlinux", "rb").read())
>>> prog = drgn.Program(drgn.host_platform)
>>> finder = add_btf_type_finder(prog, btf)
>>> drgn.sizeof(prog.type("struct page_pool"))
1664
>>> add_btf_object_finder(prog, btf)
>>> prog["NET_IOV_MAX"].value_()
18446744073709551615
"""

import enum
import struct
import sys
from array import array
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from netmem_probe.elf import ElfError, ElfFile

__all__ = (
    "BTF_INT_BOOL",
    "BTF_INT_CHAR",
    "BTF_INT_SIGNED",
    "MAX_REFERENCE_DEPTH",
    "Btf",
    "BtfArray",
    "BtfEnumerator",
    "BtfError",
    "BtfKind",
    "BtfMember",
    "BtfParam",
    "BtfType",
    "BtfVar",
    "BtfVarSecinfo",
    "canonical_int_name",
    "parse_btf",
    "read_btf_from_elf",
)


class BtfError(Exception):
    """Malformed or unsupported BTF data. The message is one line."""


class BtfKind(enum.IntEnum):
    """The kind of a BTF type (``BTF_KIND_*``). Type id 0, void, has kind ``UNKN``."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# BTF_INT_ENCODING() bits.
BTF_INT_SIGNED = 1 << 0
BTF_INT_CHAR = 1 << 1
BTF_INT_BOOL = 1 << 2

_BTF_VERSION = 1
_HEADER_LEN = 24  # struct btf_header as of version 1
# array typecode of a native 32-bit unsigned integer.
_U32 = "I" if array("I").itemsize == 4 else "L"

# Words (u32) that follow the 3-word struct btf_type, per kind: a fixed number
# plus a number per vlen entry. None marks kinds this parser does not know.
_FIXED_WORDS = (None, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
# Kind 0 has no entry: _FIXED_WORDS' None refuses it first.
_VLEN_WORDS = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)

# Named kinds, in two name indexes built on first use: the data types that
# type lookups ask for, and the rest (about 60% of a kernel's names are FUNCs,
# which only object lookups need).
_DATA_TYPE_KINDS = frozenset(
    (
        BtfKind.INT,
        BtfKind.STRUCT,
        BtfKind.UNION,
        BtfKind.ENUM,
        BtfKind.FWD,
        BtfKind.TYPEDEF,
        BtfKind.FLOAT,
        BtfKind.ENUM64,
    )
)
_OTHER_NAMED_KINDS = frozenset((BtfKind.FUNC, BtfKind.VAR, BtfKind.DATASEC))

# Longest chain of eagerly built references (pointer to typedef to const to
# array ...) before we call the BTF malformed. Real kernels stay under 15;
# members and parameters are built lazily, so they do not count.
MAX_REFERENCE_DEPTH = 64


class BtfMember(NamedTuple):
    """A member of a BTF ``STRUCT`` or ``UNION``."""

    name: str
    """Member name, or ``""`` for an anonymous member."""
    type: int
    """Type id of the member."""
    bit_offset: int
    """Offset from the start of the structure in bits."""
    bit_field_size: int
    """
    Bit field size encoded in the member (structures with ``kind_flag``), or
    0. Structures without ``kind_flag`` encode bit fields in their ``INT``
    member types instead.
    """


class BtfEnumerator(NamedTuple):
    """An enumerator of a BTF ``ENUM`` or ``ENUM64``."""

    name: str
    value: int
    """Value, signed or unsigned according to the enum's ``kind_flag``."""


class BtfParam(NamedTuple):
    """A parameter of a BTF ``FUNC_PROTO``."""

    name: str
    type: int
    """Type id; 0 for the last parameter of a variadic function."""


class BtfArray(NamedTuple):
    """The array description that follows a BTF ``ARRAY``."""

    type: int
    """Element type id."""
    index_type: int
    nelems: int


class BtfVarSecinfo(NamedTuple):
    """One variable of a BTF ``DATASEC``."""

    type: int
    """Type id of the ``VAR`` (or ``FUNC``)."""
    offset: int
    """Offset of the variable in the section."""
    size: int


class BtfType(NamedTuple):
    """
    One decoded BTF type. Fields that do not apply to the kind are zero or empty.
    """

    id: int
    kind: BtfKind
    name: str
    """Name, or ``""`` for anonymous types."""
    kind_flag: bool
    vlen: int
    """Raw vlen; for ``FUNC`` this is the linkage."""
    size: int
    """Size in bytes for INT, STRUCT, UNION, ENUM, ENUM64, FLOAT and DATASEC."""
    type: int
    """
    Referenced type id for PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
    FUNC_PROTO (the return type), VAR, DECL_TAG and TYPE_TAG.
    """
    int_encoding: int = 0
    """``BTF_INT_SIGNED``, ``BTF_INT_CHAR`` or ``BTF_INT_BOOL`` bits (INT)."""
    int_offset: int = 0
    int_bits: int = 0
    array: Optional[BtfArray] = None
    members: Tuple[BtfMember, ...] = ()
    enumerators: Tuple[BtfEnumerator, ...] = ()
    params: Tuple[BtfParam, ...] = ()
    linkage: int = 0
    """Linkage of a VAR (``BTF_VAR_*``) or FUNC (``BTF_FUNC_*``)."""
    secinfos: Tuple[BtfVarSecinfo, ...] = ()
    component_idx: int = -1
    """DECL_TAG: the member or parameter index tagged, or -1 for the type."""


class BtfVar(NamedTuple):
    """Where a global variable's type and location are described in BTF."""

    name: str
    var_id: int
    """Type id of the ``VAR``."""
    type: int
    """Type id of the variable's type."""
    linkage: int
    datasec: Optional[str]
    """Name of the ``DATASEC`` that lists the variable, or ``None``."""
    offset: Optional[int]
    """Offset of the variable in that section, or ``None``."""
    size: Optional[int]
    """Size recorded in that section, or ``None``."""


class Btf:
    """
    Parsed BTF data. Create it with :func:`parse_btf()`.

    Type ids of a split BTF continue after those of its :attr:`base`, and all
    methods accept any id up to :attr:`nr_types`, answering base ids from the
    base.
    """

    base: Optional["Btf"]
    """The base BTF of a split BTF, or ``None``."""
    byteorder: str
    """``"little"`` or ``"big"``."""
    first_id: int
    """The smallest type id that this BTF (not its base) defines."""
    nr_types: int
    """One more than the largest valid type id, counting the base's."""

    def __init__(
        self,
        base: Optional["Btf"],
        byteorder: str,
        words: "array[int]",
        starts: "array[int]",
        strings: bytes,
    ) -> None:
        self.base = base
        self.byteorder = byteorder
        self._words = words
        self._starts = starts
        self._strings = strings
        self.first_id = base.nr_types if base is not None else 1
        self.nr_types = self.first_id + len(starts)
        self._str_base: int = base._str_end if base is not None else 0
        self._str_end: int = self._str_base + len(strings)
        # Built on first use: names of this BTF's own types, enumerators, VARs.
        self._data_type_names: Optional[Dict[str, List[int]]] = None
        self._other_names: Optional[Dict[str, List[int]]] = None
        self._enumerators: Optional[Dict[str, Tuple[int, int]]] = None
        self._vars: Optional[Dict[str, BtfVar]] = None
        self._kinds: Optional[bytes] = None

    def __repr__(self) -> str:
        split = "" if self.base is None else f", split after {self.first_id - 1}"
        return f"<Btf {self.nr_types - 1} types, {self.byteorder}-endian{split}>"

    def _owner(self, type_id: int) -> Tuple["Btf", int]:
        """Return the BTF that defines *type_id* and the type's word index in it."""
        if not 0 < type_id < self.nr_types:
            raise BtfError(
                f"type id {type_id} out of range (valid ids are 1 to {self.nr_types - 1})"
            )
        btf = self
        while type_id < btf.first_id:
            assert btf.base is not None  # ids below first_id exist only in split BTF
            btf = btf.base
        return btf, btf._starts[type_id - btf.first_id]

    def string(self, offset: int) -> str:
        """Return the string at *offset* in the string section (base first)."""
        local = offset - self._str_base
        strings = self._strings
        if 0 <= local < len(strings):
            # The section ends with a NUL (checked when parsing).
            return strings[local : strings.index(0, local)].decode("utf-8", "replace")
        if local < 0 and self.base is not None:
            return self.base.string(offset)
        raise BtfError(
            f"string offset {offset} out of range (string section is {self._str_end} bytes)"
        )

    def kind(self, type_id: int) -> BtfKind:
        """Return the kind of a type id (``UNKN`` for void, id 0)."""
        if type_id == 0:
            return BtfKind.UNKN
        btf, i = self._owner(type_id)
        return BtfKind((btf._words[i + 1] >> 24) & 0x1F)

    def kind_flag(self, type_id: int) -> bool:
        """Return the ``kind_flag`` bit of a type id."""
        if type_id == 0:
            return False
        btf, i = self._owner(type_id)
        return bool(btf._words[i + 1] >> 31)

    def name(self, type_id: int) -> str:
        """Return the name of a type id, or ``""`` if it is anonymous."""
        if type_id == 0:
            return "void"
        btf, i = self._owner(type_id)
        return self.string(btf._words[i])

    def type(self, type_id: int) -> BtfType:
        """Decode and return the type with the given id."""
        if type_id == 0:
            return BtfType(0, BtfKind.UNKN, "void", False, 0, 0, 0)
        btf, i = self._owner(type_id)
        return btf._decode(type_id, i)

    def _decode(self, type_id: int, i: int) -> BtfType:
        w = self._words
        info = w[i + 1]
        kind = BtfKind((info >> 24) & 0x1F)
        kind_flag = bool(info >> 31)
        vlen = info & 0xFFFF
        size_type = w[i + 2]
        name = self.string(w[i])
        j = i + 3
        common = (type_id, kind, name, kind_flag, vlen)
        if kind in _SIZED_KINDS:
            head = common + (size_type, 0)
        else:
            head = common + (0, size_type)

        if kind == BtfKind.INT:
            v = w[j]
            return BtfType(
                *head,
                int_encoding=(v >> 24) & 0x0F,
                int_offset=(v >> 16) & 0xFF,
                int_bits=v & 0xFF,
            )
        if kind == BtfKind.ARRAY:
            return BtfType(*head, array=BtfArray(w[j], w[j + 1], w[j + 2]))
        if kind in (BtfKind.STRUCT, BtfKind.UNION):
            members = []
            for k in range(j, j + 3 * vlen, 3):
                offset = w[k + 2]
                if kind_flag:
                    members.append(
                        BtfMember(self.string(w[k]), w[k + 1], offset & 0xFFFFFF, offset >> 24)
                    )
                else:
                    members.append(BtfMember(self.string(w[k]), w[k + 1], offset, 0))
            return BtfType(*head, members=tuple(members))
        if kind == BtfKind.ENUM:
            enumerators = []
            for k in range(j, j + 2 * vlen, 2):
                value = w[k + 1]
                if kind_flag and value >= 1 << 31:
                    value -= 1 << 32
                enumerators.append(BtfEnumerator(self.string(w[k]), value))
            return BtfType(*head, enumerators=tuple(enumerators))
        if kind == BtfKind.ENUM64:
            enumerators = []
            for k in range(j, j + 3 * vlen, 3):
                value = w[k + 1] | (w[k + 2] << 32)
                if kind_flag and value >= 1 << 63:
                    value -= 1 << 64
                enumerators.append(BtfEnumerator(self.string(w[k]), value))
            return BtfType(*head, enumerators=tuple(enumerators))
        if kind == BtfKind.FUNC_PROTO:
            params = tuple(BtfParam(self.string(w[k]), w[k + 1]) for k in range(j, j + 2 * vlen, 2))
            return BtfType(*head, params=params)
        if kind == BtfKind.FUNC:
            return BtfType(*head, linkage=vlen)
        if kind == BtfKind.VAR:
            return BtfType(*head, linkage=w[j])
        if kind == BtfKind.DATASEC:
            secinfos = tuple(
                BtfVarSecinfo(w[k], w[k + 1], w[k + 2]) for k in range(j, j + 3 * vlen, 3)
            )
            return BtfType(*head, secinfos=secinfos)
        if kind == BtfKind.DECL_TAG:
            idx = w[j]
            return BtfType(*head, component_idx=idx - (1 << 32) if idx >= 1 << 31 else idx)
        # PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FLOAT, TYPE_TAG: no extra data.
        return BtfType(*head)

    def _own_ids_of_kind(self, kind: BtfKind) -> List[int]:
        """Return the ids of this BTF's own types of one kind, in order."""
        if self._kinds is None:
            # One byte per type, so that scans for a kind run at C speed.
            words = self._words
            self._kinds = bytes((words[i + 1] >> 24) & 0x1F for i in self._starts)
        kinds = self._kinds
        needle = bytes((kind,))
        ids = []
        position = kinds.find(needle)
        while position >= 0:
            ids.append(self.first_id + position)
            position = kinds.find(needle, position + 1)
        return ids

    def _name_index(self, data_types: bool) -> Dict[str, List[int]]:
        index = self._data_type_names if data_types else self._other_names
        if index is None:
            index = {}
            words = self._words
            starts = self._starts
            first_id = self.first_id
            strings = self._strings
            str_base = self._str_base
            for kind in _DATA_TYPE_KINDS if data_types else _OTHER_NAMED_KINDS:
                for type_id in self._own_ids_of_kind(kind):
                    name_off = words[starts[type_id - first_id]]
                    if not name_off:
                        continue
                    # self.string() inlined for this BTF's own strings: this
                    # loop runs for every named type.
                    local = name_off - str_base
                    if 0 <= local < len(strings):
                        name = strings[local : strings.index(0, local)].decode("utf-8", "replace")
                    else:
                        name = self.string(name_off)
                    if kind == BtfKind.INT:
                        name = canonical_int_name(name)
                    index.setdefault(name, []).append(type_id)
            for ids in index.values():
                ids.sort()
            if data_types:
                self._data_type_names = index
            else:
                self._other_names = index
        return index

    def find_types(self, name: str, kinds: Optional[Iterable[BtfKind]] = None) -> List[int]:
        """
        Return the ids of the types called *name*, optionally only those of the
        given kinds: this BTF's own types first, then its base's, each in id
        order. ``INT`` names are matched in drgn's spelling (``"unsigned
        long"`` finds ``long unsigned int``).
        """
        wanted = None if kinds is None else frozenset(kinds)
        # Only names made of C keywords change, and only INTs have those.
        name = canonical_int_name(name)
        indexes = []
        if wanted is None or not wanted.isdisjoint(_DATA_TYPE_KINDS):
            indexes.append(True)
        if wanted is None or not wanted.isdisjoint(_OTHER_NAMED_KINDS):
            indexes.append(False)
        result: List[int] = []
        btf: Optional[Btf] = self
        while btf is not None:
            ids: List[int] = []
            for data_types in indexes:
                ids.extend(btf._name_index(data_types).get(name, ()))
            ids.sort()
            result.extend(
                type_id for type_id in ids if wanted is None or btf.kind(type_id) in wanted
            )
            btf = btf.base
        return result

    def find_enumerator(self, name: str) -> Optional[Tuple[int, int]]:
        """
        Return ``(enum type id, value)`` for an enumerator constant, or
        ``None``. If several enums define the name, this BTF's first one wins,
        then the base's.
        """
        btf: Optional[Btf] = self
        while btf is not None:
            if btf._enumerators is None:
                btf._enumerators = btf._index_enumerators()
            found = btf._enumerators.get(name)
            if found is not None:
                return found
            btf = btf.base
        return None

    def _index_enumerators(self) -> Dict[str, Tuple[int, int]]:
        index: Dict[str, Tuple[int, int]] = {}
        enum_ids = self._own_ids_of_kind(BtfKind.ENUM) + self._own_ids_of_kind(BtfKind.ENUM64)
        for type_id in sorted(enum_ids):
            for enumerator in self.type(type_id).enumerators:
                index.setdefault(enumerator.name, (type_id, enumerator.value))
        return index

    def find_var(self, name: str) -> Optional[BtfVar]:
        """
        Return the :class:`BtfVar` for a global variable, or ``None``. A VAR
        listed in a DATASEC comes with its section name and offset; if several
        VARs share the name, the first one in a DATASEC wins, then the first
        one at all. This BTF is searched before its base.
        """
        btf: Optional[Btf] = self
        while btf is not None:
            if btf._vars is None:
                btf._vars = btf._index_vars()
            found = btf._vars.get(name)
            if found is not None:
                return found
            btf = btf.base
        return None

    def _index_vars(self) -> Dict[str, BtfVar]:
        index: Dict[str, BtfVar] = {}
        for type_id in self._own_ids_of_kind(BtfKind.DATASEC):
            datasec = self.type(type_id)
            for info in datasec.secinfos:
                if self.kind(info.type) != BtfKind.VAR:
                    continue  # DATASECs may also list FUNCs (extern ksyms)
                var = self.type(info.type)
                index.setdefault(
                    var.name,
                    BtfVar(
                        var.name,
                        var.id,
                        var.type,
                        var.linkage,
                        datasec.name,
                        info.offset,
                        info.size,
                    ),
                )
        for type_id in self._own_ids_of_kind(BtfKind.VAR):
            var = self.type(type_id)
            if var.name not in index:
                index[var.name] = BtfVar(var.name, var.id, var.type, var.linkage, None, None, None)
        return index


_SIZED_KINDS = frozenset(
    (
        BtfKind.INT,
        BtfKind.STRUCT,
        BtfKind.UNION,
        BtfKind.ENUM,
        BtfKind.ENUM64,
        BtfKind.FLOAT,
        BtfKind.DATASEC,
    )
)

_INT_WORDS = frozenset(("signed", "unsigned", "char", "short", "int", "long"))


def canonical_int_name(name: str) -> str:
    """
    Return drgn's spelling of a C integer type name (``"long unsigned int"``
    becomes ``"unsigned long"``), or *name* itself if it is not a standard C
    integer type (``"__int128"``, ``"_Bool"``).
    """
    words = name.split()
    if not words or not _INT_WORDS.issuperset(words):
        return name
    unsigned = "unsigned" in words
    if "char" in words:
        if "signed" in words:
            return "signed char"
        return "unsigned char" if unsigned else "char"
    nlong = words.count("long")
    if "short" in words:
        base = "short"
    elif nlong == 1:
        base = "long"
    elif nlong == 2:
        base = "long long"
    else:
        base = "int"
    return "unsigned " + base if unsigned else base


def parse_btf(data: Union[bytes, bytearray, memoryview], base: Optional[Btf] = None) -> Btf:
    """
    Parse BTF data.

    The header and the layout of the type section are checked here; references
    between types and string offsets are checked when a type is decoded.

    :param data: The raw BTF, e.g. the contents of ``/sys/kernel/btf/vmlinux``.
    :param base: For split BTF (``/sys/kernel/btf/<module>``), the parsed base
        BTF (vmlinux) whose type ids and strings this one continues.
    :raises BtfError: if the data is not valid BTF.
    """
    data = bytes(data)
    if len(data) < 8:
        raise BtfError(f"truncated BTF header: {len(data)} bytes")
    if data[:2] == b"\x9f\xeb":
        byteorder, prefix = "little", "<"
    elif data[:2] == b"\xeb\x9f":
        byteorder, prefix = "big", ">"
    else:
        raise BtfError(f"bad BTF magic 0x{data[0]:02x}{data[1]:02x} (expected 0xeb9f)")
    version, _flags, hdr_len = struct.unpack_from(prefix + "BBI", data, 2)
    if version != _BTF_VERSION:
        raise BtfError(f"unsupported BTF version {version}")
    if hdr_len < _HEADER_LEN or len(data) < _HEADER_LEN:
        raise BtfError(f"truncated BTF header: hdr_len {hdr_len}, {len(data)} bytes")
    if hdr_len > len(data):
        raise BtfError(f"BTF header length {hdr_len} exceeds data length {len(data)}")
    type_off, type_len, str_off, str_len = struct.unpack_from(prefix + "4I", data, 8)
    if base is not None and base.byteorder != byteorder:
        raise BtfError(f"split BTF is {byteorder}-endian but its base is {base.byteorder}-endian")

    body = len(data) - hdr_len
    for section, off, length in (("type", type_off, type_len), ("string", str_off, str_len)):
        if off + length > body:
            raise BtfError(
                f"BTF {section} section ({off}+{length}) runs past the end of the data "
                f"({body} bytes)"
            )
    if type_off % 4 or type_len % 4:
        raise BtfError(f"BTF type section ({type_off}+{type_len}) is not 4-byte aligned")

    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    if base is None and (not strings or strings[0] != 0):
        raise BtfError(
            "BTF string section does not start with an empty string "
            "(module BTF is split BTF: parse it with base=)"
        )
    if strings and strings[-1] != 0:
        raise BtfError("BTF string section is not NUL-terminated")

    words = array(_U32)
    words.frombytes(data[hdr_len + type_off : hdr_len + type_off + type_len])
    if byteorder != sys.byteorder:
        words.byteswap()

    first_id = base.nr_types if base is not None else 1
    return Btf(base, byteorder, words, _walk_types(words, first_id), strings)


def _walk_types(words: "array[int]", first_id: int) -> "array[int]":
    """Return the word index of every type in the type section, checking sizes."""
    starts = array(_U32)
    append = starts.append
    fixed_words = _FIXED_WORDS
    vlen_words = _VLEN_WORDS
    n = len(words)
    i = 0
    while i < n:
        type_id = first_id + len(starts)
        if i + 3 > n:
            raise BtfError(f"type id {type_id}: truncated at the end of the type section")
        info = words[i + 1]
        kind = (info >> 24) & 0x1F
        fixed = fixed_words[kind] if kind < len(fixed_words) else None
        if fixed is None:
            raise BtfError(f"type id {type_id}: unknown BTF kind {kind}")
        end = i + 3 + fixed + (info & 0xFFFF) * vlen_words[kind]
        if end > n:
            raise BtfError(
                f"type id {type_id} ({BtfKind(kind).name}): vlen {info & 0xFFFF} "
                "overruns the type section"
            )
        append(i)
        i = end
    return starts


def read_btf_from_elf(path: str) -> bytes:
    """
    Return the contents of the ``.BTF`` section of an ELF file (``vmlinux`` or
    a kernel module), decompressing it if it is zlib-compressed.

    :raises BtfError: if the file is not ELF, is truncated, or has no ``.BTF``
        section.
    :raises OSError: if the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return ElfFile(f, path).section(".BTF")
    except ElfError as e:
        raise BtfError(str(e)) from None
