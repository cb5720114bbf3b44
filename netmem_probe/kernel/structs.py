"""
Read a kernel object once and decode the members a report needs.

Reports read many objects of one type (every page pool, every struct page of a
scan), so instead of one drgn Object per member they read each object with a
single ``prog.read()`` and decode members from the bytes at offsets computed
once per type.  One read per object also means a record never mixes fields
from two moments of a live kernel.

Members that a kernel version lacks decode to ``None``; which members exist is
decided from the target's types, never from its version number.
"""

import struct
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import drgn
from drgn import Program, TypeKind

from netmem_probe.kernel.platform import platform_facts
from netmem_probe.kernel.walk import wrap

__all__ = ("Field", "StructReader", "member_exists", "read_cstring")


class Field(NamedTuple):
    offset: int  # bytes
    size: int  # bytes
    signed: bool
    bit_offset: int  # within the bytes read, for bit fields
    bit_size: int  # 0 unless a bit field
    is_string: bool


def member_exists(type_: drgn.Type, path: str) -> bool:
    try:
        drgn.offsetof(type_, path)
        return True
    except (LookupError, ValueError, TypeError):  # TypeError: a path through a scalar
        return False


def _field(type_: drgn.Type, path: str) -> Optional[Field]:
    try:
        member_type, bit_offset, bit_size = _walk(type_, path)
    except LookupError:
        return None
    kind = member_type.unaliased_kind()
    if kind == TypeKind.ARRAY:
        elem = member_type.unaliased().type
        is_string = elem.unaliased_kind() == TypeKind.INT and drgn.sizeof(elem) == 1
        return Field(bit_offset // 8, drgn.sizeof(member_type), False, 0, 0, is_string)
    signed = kind in (TypeKind.INT, TypeKind.ENUM) and _is_signed(member_type)
    if bit_size:
        span = (bit_offset % 8 + bit_size + 7) // 8
        return Field(bit_offset // 8, span, signed, bit_offset % 8, bit_size, False)
    return Field(bit_offset // 8, drgn.sizeof(member_type), signed, 0, 0, False)


def _is_signed(type_: drgn.Type) -> bool:
    type_ = type_.unaliased()
    if type_.kind == TypeKind.ENUM:
        type_ = type_.type
    return bool(type_.is_signed) if type_ is not None else False


def _walk(type_: drgn.Type, path: str) -> Tuple[drgn.Type, int, int]:
    """Type, bit offset and bit-field size of a dotted member path."""
    bits = 0
    bit_size = 0
    current = type_
    for name in path.split("."):
        # Type.member() looks through anonymous members and gives the offset
        # from the start of the type being searched.
        info = current.unaliased().member(name)
        bits += info.bit_offset
        bit_size = info.bit_field_size or 0
        current = info.type
    return current, bits, bit_size


class StructReader:
    """
    Decoder for chosen members of one struct type.

    :param prog: the target program.
    :param type_name: e.g. ``"struct page_pool"``.
    :param members: key -> member path (``"user.id"``).  Paths the target's
        type lacks decode to ``None``.
    """

    def __init__(self, prog: Program, type_name: str, members: Mapping[str, str]) -> None:
        self.prog = prog
        self.type = prog.type(type_name)
        self.size = drgn.sizeof(self.type)
        self.fields: Dict[str, Optional[Field]] = {
            key: _field(self.type, path) for key, path in members.items()
        }
        facts = platform_facts(prog)
        self._byte_order = facts.byte_order
        self._plan = _plan(self.fields, facts.endian)

    def has(self, key: str) -> bool:
        return self.fields[key] is not None

    def offset(self, key: str) -> int:
        field = self.fields[key]
        if field is None:
            raise LookupError(f"{self.type.type_name()} has no member for {key!r}")
        return field.offset

    def read(self, address: int) -> Dict[str, Any]:
        """Read the object at ``address`` in one go and decode it."""
        return self.decode(self.prog.read(wrap(address), self.size))

    def decode(self, raw: Union[bytes, memoryview]) -> Dict[str, Any]:
        out: Dict[str, Any] = dict.fromkeys(self._plan.missing)
        for unpacker, keys in self._plan.groups:
            out.update(zip(keys, unpacker.unpack_from(raw)))
        for key, field in self._plan.others:
            chunk = raw[field.offset : field.offset + field.size]
            if field.is_string:
                out[key] = bytes(chunk).split(b"\0", 1)[0].decode(errors="replace")
                continue
            value = int.from_bytes(chunk, self._byte_order)
            if not field.bit_size:  # wider than 8 bytes (an in6_addr, an array): whole
                out[key] = value
                continue
            value = (value >> field.bit_offset) & ((1 << field.bit_size) - 1)
            if field.signed and value >> (field.bit_size - 1):
                value -= 1 << field.bit_size
            out[key] = value
        return out


class _Plan(NamedTuple):
    groups: List[Tuple[struct.Struct, Tuple[str, ...]]]
    others: List[Tuple[str, Field]]
    missing: Tuple[str, ...]


_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


def _plan(fields: Mapping[str, Optional[Field]], endian: str) -> _Plan:
    """
    Group plain integer members into as few ``struct.Struct`` unpackers as
    their overlaps allow (unions alias offsets), so decoding an object is a
    handful of C calls instead of one per member.
    """
    plain = sorted(
        (
            (f.offset, key, f)
            for key, f in fields.items()
            if f is not None and not f.bit_size and not f.is_string and f.size in _CODES
        ),
        key=lambda t: t[0],
    )
    groups: List[Tuple[struct.Struct, Tuple[str, ...]]] = []
    while plain:
        fmt, keys, end, rest = endian, [], 0, []
        for offset, key, f in plain:
            if offset < end:
                rest.append((offset, key, f))
                continue
            code = _CODES[f.size]
            fmt += f"{offset - end}x" + (code if f.signed else code.upper())
            keys.append(key)
            end = offset + f.size
        groups.append((struct.Struct(fmt), tuple(keys)))
        plain = rest
    grouped = {key for _, keys in groups for key in keys}
    others = [(key, f) for key, f in fields.items() if f is not None and key not in grouped]
    missing = tuple(key for key, f in fields.items() if f is None)
    return _Plan(groups, others, missing)


def read_cstring(prog: Program, address: int, limit: int = 64) -> Optional[str]:
    """A NUL-terminated string of at most ``limit`` bytes, or None if unreadable."""
    if not address:
        return None
    raw = b""
    page = platform_facts(prog).page_size
    while b"\0" not in raw and len(raw) < limit:
        here = wrap(address + len(raw))
        try:
            # Never read across a page boundary the string may not reach.
            raw += prog.read(here, min(16, page - (here & (page - 1))))
        except drgn.FaultError:
            return None
    if b"\0" not in raw[:limit]:
        return None
    return raw.split(b"\0", 1)[0].decode(errors="replace")
