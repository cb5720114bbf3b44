# SPDX-License-Identifier: GPL-2.0-or-later
"""Tests for netmem_probe.btf (the BTF parser) and btf_drgn (the drgn type/object finders).

Three sources of BTF are used:
- small blobs written here by ``BtfWriter`` (from the format documentation), for
  every kind, every error and both byte orders;
- the host kernel's ``/sys/kernel/btf/vmlinux``, checked member by member
  against pahole's reading of the same bytes;
- split BTF that pahole encodes for a gcc-compiled object on top of the host's
  BTF, read back from the object's ``.BTF`` section.
"""

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import drgn
import pytest
from drgn import (
    Architecture,
    Object,
    Platform,
    PlatformFlags,
    Program,
    Qualifiers,
    TypeKind,
)
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.xarray import xa_for_each
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netmem_probe.btf import (
    BTF_INT_BOOL,
    BTF_INT_SIGNED,
    Btf,
    BtfError,
    BtfKind,
    parse_btf,
    read_btf_from_elf,
)
from netmem_probe.btf_drgn import BtfTypeFinder, add_btf_object_finder, add_btf_type_finder

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
needs_host_btf = pytest.mark.skipif(
    not VMLINUX_BTF.exists(),
    reason="/sys/kernel/btf/vmlinux is absent (kernel built without CONFIG_DEBUG_INFO_BTF)",
)
needs_pahole = pytest.mark.skipif(shutil.which("pahole") is None, reason="pahole is not installed")

LITTLE = Platform(Architecture.X86_64, PlatformFlags.IS_64_BIT | PlatformFlags.IS_LITTLE_ENDIAN)
BIG = Platform(Architecture.PPC64, PlatformFlags.IS_64_BIT)

# Hypothesis budget: a quick run by default, a long one on request.
FUZZ_EXAMPLES = int(os.environ.get("NETMEM_PROBE_FUZZ_EXAMPLES", "0"))
LONG_FUZZ = FUZZ_EXAMPLES > 0


def fuzz_settings(quick: int, deadline_ms: int) -> settings:
    """Quick examples normally; NETMEM_PROBE_FUZZ_EXAMPLES per test when set."""
    return settings(
        max_examples=FUZZ_EXAMPLES if LONG_FUZZ else quick,
        deadline=deadline_ms,
        derandomize=not LONG_FUZZ,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


# --------------------------------------------------------------------------
# A BTF writer for hand-built blobs
# --------------------------------------------------------------------------


class BtfWriter:
    """Builds BTF blobs type by type; each add method returns the new type id."""

    def __init__(self, first_id: int = 1, str_base: int = 0) -> None:
        self.first_id = first_id
        self.str_base = str_base
        self.strings = bytearray(b"\0")
        self._offsets = {"": str_base}
        self.records: List[List[int]] = []

    def add_string(self, s: str) -> int:
        if s not in self._offsets:
            self._offsets[s] = self.str_base + len(self.strings)
            self.strings += s.encode() + b"\0"
        return self._offsets[s]

    def add(
        self,
        kind: BtfKind,
        name: str = "",
        vlen: int = 0,
        kflag: bool = False,
        size_type: int = 0,
        extra: Sequence[int] = (),
    ) -> int:
        info = (int(kflag) << 31) | (int(kind) << 24) | vlen
        self.records.append([self.add_string(name), info, size_type, *extra])
        return self.first_id + len(self.records) - 1

    def int_(
        self, name: str, size: int, encoding: int = 0, bits: Optional[int] = None, offset: int = 0
    ) -> int:
        bits = size * 8 if bits is None else bits
        return self.add(
            BtfKind.INT, name, size_type=size, extra=[(encoding << 24) | (offset << 16) | bits]
        )

    def float_(self, name: str, size: int) -> int:
        return self.add(BtfKind.FLOAT, name, size_type=size)

    def ref(self, kind: BtfKind, target: int, name: str = "", kflag: bool = False) -> int:
        return self.add(kind, name, kflag=kflag, size_type=target)

    def array(self, elem: int, nelems: int, index_type: int = 0) -> int:
        return self.add(BtfKind.ARRAY, extra=[elem, index_type, nelems])

    def struct(
        self,
        name: str,
        size: int,
        members: Sequence[Tuple],
        kflag: bool = False,
        union: bool = False,
    ) -> int:
        extra: List[int] = []
        for member in members:
            mname, mtype, bit_offset = member[:3]
            bit_field_size = member[3] if len(member) > 3 else 0
            extra += [
                self.add_string(mname),
                mtype,
                (bit_field_size << 24) | bit_offset if kflag else bit_offset,
            ]
        kind = BtfKind.UNION if union else BtfKind.STRUCT
        return self.add(kind, name, len(members), kflag, size, extra)

    def enum(
        self, name: str, size: int, values: Sequence[Tuple[str, int]], signed: bool = False
    ) -> int:
        extra: List[int] = []
        for ename, value in values:
            extra += [self.add_string(ename), value & 0xFFFFFFFF]
        return self.add(BtfKind.ENUM, name, len(values), signed, size, extra)

    def enum64(
        self, name: str, size: int, values: Sequence[Tuple[str, int]], signed: bool = False
    ) -> int:
        extra: List[int] = []
        for ename, value in values:
            value &= (1 << 64) - 1
            extra += [self.add_string(ename), value & 0xFFFFFFFF, value >> 32]
        return self.add(BtfKind.ENUM64, name, len(values), signed, size, extra)

    def func_proto(self, ret: int, params: Sequence[Tuple[str, int]]) -> int:
        extra: List[int] = []
        for pname, ptype in params:
            extra += [self.add_string(pname), ptype]
        return self.add(BtfKind.FUNC_PROTO, vlen=len(params), size_type=ret, extra=extra)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self.add(BtfKind.FUNC, name, vlen=linkage, size_type=proto)

    def var(self, name: str, type_id: int, linkage: int = 1) -> int:
        return self.add(BtfKind.VAR, name, size_type=type_id, extra=[linkage])

    def datasec(self, name: str, size: int, entries: Sequence[Tuple[int, int, int]]) -> int:
        extra: List[int] = []
        for entry in entries:
            extra += list(entry)
        return self.add(BtfKind.DATASEC, name, len(entries), size_type=size, extra=extra)

    def decl_tag(self, name: str, target: int, component_idx: int = -1) -> int:
        return self.add(
            BtfKind.DECL_TAG, name, size_type=target, extra=[component_idx & 0xFFFFFFFF]
        )

    def to_bytes(self, byteorder: str = "little") -> bytes:
        p = "<" if byteorder == "little" else ">"
        types = b"".join(struct.pack(f"{p}{len(r)}I", *r) for r in self.records)
        header = struct.pack(
            f"{p}HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings)
        )
        return header + types + bytes(self.strings)


def swap_byteorder(data: bytes) -> bytes:
    """Return a BTF blob in the other byte order (every header and type field is a u32)."""
    p = "<" if data[:2] == b"\x9f\xeb" else ">"
    q = ">" if p == "<" else "<"
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(p + "5I", data, 4)
    out = bytearray(data)
    struct.pack_into(
        q + "HBB5I", out, 0, 0xEB9F, data[2], data[3], hdr_len, type_off, type_len, str_off, str_len
    )
    start = hdr_len + type_off
    words = struct.unpack_from(f"{p}{type_len // 4}I", data, start)
    struct.pack_into(f"{q}{type_len // 4}I", out, start, *words)
    return bytes(out)


def header_fields(data: bytes) -> Tuple[str, int, int, int, int, int]:
    p = "<" if data[:2] == b"\x9f\xeb" else ">"
    return (p,) + struct.unpack_from(p + "5I", data, 4)


def describe(t: drgn.Type, depth: int = 0) -> tuple:
    """What C would compare of a type (drgn 0.3 compares Python-built types by identity)."""
    d: tuple = (t.kind, t.type_name(), t.qualifiers)
    if t.kind in (TypeKind.INT, TypeKind.BOOL, TypeKind.FLOAT, TypeKind.POINTER):
        d += (t.size,)
    if t.kind == TypeKind.INT:
        d += (t.is_signed,)
    if t.kind in (TypeKind.STRUCT, TypeKind.UNION) and t.is_complete():
        d += (t.size, tuple((m.name, m.bit_offset, m.bit_field_size) for m in t.members))
    if t.kind == TypeKind.ENUM and t.is_complete():
        d += (tuple(tuple(e) for e in t.enumerators), describe(t.type))
    if (
        t.kind in (TypeKind.TYPEDEF, TypeKind.POINTER, TypeKind.ARRAY, TypeKind.FUNCTION)
        and depth < 3
    ):
        d += (describe(t.type, depth + 1),)
    return d


def same(a: drgn.Type, b: drgn.Type) -> bool:
    return describe(a) == describe(b)


def make_prog(btf: Btf, platform: Platform = LITTLE) -> Tuple[Program, BtfTypeFinder]:
    prog = Program(platform)
    return prog, add_btf_type_finder(prog, btf)


def all_kinds_writer() -> Tuple[BtfWriter, Dict[str, int]]:
    """A small BTF with every kind, the way pahole and clang emit them."""
    w = BtfWriter()
    ids: Dict[str, int] = {}
    ids["int"] = w.int_("int", 4, BTF_INT_SIGNED)
    ids["uint"] = w.int_("unsigned int", 4)
    ids["ulong"] = w.int_("long unsigned int", 8)
    ids["char"] = w.int_("char", 1, BTF_INT_SIGNED)
    ids["bool"] = w.int_("_Bool", 1, BTF_INT_BOOL)
    ids["u8bits3"] = w.int_("unsigned char", 1, 0, bits=3)
    ids["double"] = w.float_("double", 8)
    ids["node_fwd"] = w.add(BtfKind.FWD, "node")
    ids["node_ptr"] = w.ref(BtfKind.PTR, ids["node_fwd"])
    ids["cint"] = w.ref(BtfKind.CONST, ids["int"])
    ids["vint"] = w.ref(BtfKind.VOLATILE, ids["cint"])
    ids["user_tag"] = w.ref(BtfKind.TYPE_TAG, ids["char"], "user", kflag=False)
    ids["user_ptr"] = w.ref(BtfKind.PTR, ids["user_tag"])
    ids["rptr"] = w.ref(BtfKind.RESTRICT, ids["user_ptr"])
    ids["arr"] = w.array(ids["char"], 16, ids["uint"])
    ids["netmem_ref"] = w.ref(BtfKind.TYPEDEF, ids["ulong"], "netmem_ref")
    ids["state"] = w.enum("state", 4, [("ST_NEG", -1), ("ST_ZERO", 0), ("ST_ONE", 1)], signed=True)
    ids["flags"] = w.enum("flags", 4, [("F_HIGH", 0x80000000)])
    ids["big"] = w.enum64("big", 8, [("BIG_MAX", (1 << 64) - 1), ("BIG_ONE", 1)])
    ids["sbig"] = w.enum64("sbig", 8, [("SBIG_MIN", -(1 << 63))], signed=True)
    ids["u_anon"] = w.struct(
        "", 8, [("as_long", ids["ulong"], 0), ("as_int", ids["int"], 0)], union=True
    )
    ids["node"] = w.struct(
        "node",
        48,
        [
            ("next", ids["node_ptr"], 0),
            ("ref", ids["netmem_ref"], 64),
            ("", ids["u_anon"], 128),
            ("a", ids["uint"], 192, 3),
            ("b", ids["uint"], 195, 5),
            ("st", ids["state"], 200, 2),
            ("name", ids["arr"], 256),
            ("flag", ids["bool"], 384),
        ],
        kflag=True,
    )
    ids["old_bits"] = w.struct(
        "old_bits", 4, [("x", ids["u8bits3"], 0), ("y", ids["u8bits3"], 3), ("z", ids["int"], 0)]
    )
    ids["proto"] = w.func_proto(ids["int"], [("n", ids["node_ptr"]), ("fmt", ids["rptr"]), ("", 0)])
    ids["func"] = w.func("node_printf", ids["proto"])
    ids["fnptr"] = w.ref(BtfKind.PTR, ids["proto"])
    ids["var"] = w.var("global_node", ids["node"])
    ids["counter"] = w.var("counter", ids["vint"])
    ids["datasec"] = w.datasec(".data", 64, [(ids["var"], 0, 48), (ids["counter"], 48, 4)])
    ids["tag"] = w.decl_tag("kfunc", ids["func"], -1)
    ids["mtag"] = w.decl_tag("rcu", ids["node"], 0)
    return w, ids


# --------------------------------------------------------------------------
# Decoding and errors on hand-built BTF
# --------------------------------------------------------------------------


def test_decodes_every_kind_field_by_field():
    w, ids = all_kinds_writer()
    btf = parse_btf(w.to_bytes())
    assert btf.nr_types == len(w.records) + 1
    assert {btf.kind(i) for i in range(1, btf.nr_types)} == set(BtfKind) - {BtfKind.UNKN}

    t = btf.type(ids["u8bits3"])
    assert (t.kind, t.name, t.size, t.int_bits, t.int_encoding) == (
        BtfKind.INT,
        "unsigned char",
        1,
        3,
        0,
    )
    assert btf.type(ids["arr"]).array == (ids["char"], ids["uint"], 16)
    node = btf.type(ids["node"])
    assert node.kind_flag and node.size == 48
    assert node.members[3] == ("a", ids["uint"], 192, 3)
    assert node.members[2].name == ""
    assert btf.type(ids["state"]).enumerators == (("ST_NEG", -1), ("ST_ZERO", 0), ("ST_ONE", 1))
    assert btf.type(ids["flags"]).enumerators == (("F_HIGH", 0x80000000),)
    assert btf.type(ids["big"]).enumerators[0].value == (1 << 64) - 1
    assert btf.type(ids["sbig"]).enumerators[0].value == -(1 << 63)
    assert btf.type(ids["proto"]).params[-1] == ("", 0)
    assert btf.type(ids["func"]).linkage == 1
    assert btf.type(ids["var"]).linkage == 1
    assert btf.type(ids["datasec"]).secinfos[1] == (ids["counter"], 48, 4)
    assert btf.type(ids["tag"]).component_idx == -1
    assert btf.type(ids["mtag"]).component_idx == 0
    assert btf.type(ids["user_tag"]).name == "user"
    assert btf.type(0).kind == BtfKind.UNKN


def test_big_and_little_endian_blobs_decode_identically():
    w, _ = all_kinds_writer()
    little = parse_btf(w.to_bytes("little"))
    big = parse_btf(w.to_bytes("big"))
    assert (little.byteorder, big.byteorder) == ("little", "big")
    assert [little.type(i) for i in range(1, little.nr_types)] == [
        big.type(i) for i in range(1, big.nr_types)
    ]
    assert parse_btf(swap_byteorder(w.to_bytes("little"))).type(5) == little.type(5)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated BTF header"),
        (b"\x9f\xeb\x01\x00\x18\x00", "truncated BTF header"),
        (b"\x9f\xeb\x01\x00\x18\x00\x00\x00" + bytes(8), "truncated BTF header"),
        (b"\x7fELF" + bytes(40), "bad BTF magic"),
        (
            b"\x9f\xeb\x02\x00" + struct.pack("<5I", 24, 0, 0, 0, 1) + b"\0",
            "unsupported BTF version",
        ),
        (b"\x9f\xeb\x01\x00" + struct.pack("<5I", 16, 0, 0, 0, 1) + b"\0", "truncated BTF header"),
        (b"\x9f\xeb\x01\x00" + struct.pack("<5I", 4096, 0, 0, 0, 1) + b"\0", "exceeds data length"),
        (b"\x9f\xeb\x01\x00" + struct.pack("<5I", 24, 0, 12, 0, 1) + b"\0", "type section"),
        (b"\x9f\xeb\x01\x00" + struct.pack("<5I", 24, 0, 0, 0, 9) + b"\0", "string section"),
        (
            b"\x9f\xeb\x01\x00" + struct.pack("<5I", 24, 0, 0, 0, 2) + b"a\0",
            "does not start with an empty string",
        ),
        (b"\x9f\xeb\x01\x00" + struct.pack("<5I", 24, 0, 0, 0, 2) + b"\0a", "not NUL-terminated"),
        (
            b"\x9f\xeb\x01\x00" + struct.pack("<5I", 24, 0, 0, 0, 0),
            "does not start with an empty string",
        ),
        (b"\x9f\xeb\x01\x00" + struct.pack("<5I", 24, 1, 4, 5, 1) + bytes(6), "not 4-byte aligned"),
    ],
)
def test_malformed_header_raises_btf_error(data, message):
    with pytest.raises(BtfError, match=message):
        parse_btf(data)


def test_unknown_kind_raises_btf_error():
    w = BtfWriter()
    w.int_("int", 4, BTF_INT_SIGNED)
    w.add(20, "future")  # type: ignore[arg-type]
    with pytest.raises(BtfError, match="type id 2: unknown BTF kind 20"):
        parse_btf(w.to_bytes())


def test_vlen_overrunning_the_type_section_raises_btf_error():
    w = BtfWriter()
    w.records.append([0, (int(BtfKind.STRUCT) << 24) | 100, 8, 0, 0, 0])
    with pytest.raises(BtfError, match=r"type id 1 \(STRUCT\): vlen 100 overruns"):
        parse_btf(w.to_bytes())


def test_record_cut_in_the_middle_raises_btf_error():
    w = BtfWriter()
    w.int_("int", 4, BTF_INT_SIGNED)
    w.records.append([0, int(BtfKind.PTR) << 24])  # 2 of the 3 common words
    with pytest.raises(BtfError, match="type id 2: truncated"):
        parse_btf(w.to_bytes())


def test_out_of_range_type_id_raises_btf_error_when_used():
    w = BtfWriter()
    w.int_("int", 4, BTF_INT_SIGNED)
    ptr = w.ref(BtfKind.PTR, 1000)
    s = w.struct("s", 8, [("bad", 1000, 0)])
    btf = parse_btf(w.to_bytes())
    prog, finder = make_prog(btf)
    with pytest.raises(BtfError, match="type id 1000 out of range"):
        finder.type(ptr)
    with pytest.raises(BtfError, match="type id 1000 out of range"):
        _ = prog.type("struct s").members[0].type
    with pytest.raises(BtfError, match="out of range"):
        btf.type(s + 1)
    with pytest.raises(BtfError, match="out of range"):
        btf.type(-1)


def test_out_of_range_string_offset_raises_btf_error():
    w = BtfWriter()
    w.records.append([5000, (int(BtfKind.INT) << 24), 4, 32])
    btf = parse_btf(w.to_bytes())
    with pytest.raises(BtfError, match="string offset 5000 out of range"):
        btf.type(1)
    with pytest.raises(BtfError, match="string offset 5000 out of range"):
        btf.find_types("int")


def test_typedef_const_cycle_raises_btf_error_not_recursion_error():
    w = BtfWriter()
    # typedef loop_t -> const -> typedef loop_t
    w.records.append([w.add_string("loop_t"), int(BtfKind.TYPEDEF) << 24, 2])
    w.records.append([0, int(BtfKind.CONST) << 24, 1])
    w.struct("holder", 8, [("x", 1, 0)])
    btf = parse_btf(w.to_bytes())
    prog, finder = make_prog(btf)
    with pytest.raises(BtfError, match="reference cycle through 1 -> 2"):
        prog.type("loop_t")
    with pytest.raises(BtfError, match="cycle"):
        _ = prog.type("struct holder").members[0].type


def test_pointer_to_itself_raises_btf_error():
    w = BtfWriter()
    w.records.append([0, int(BtfKind.PTR) << 24, 1])
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    with pytest.raises(BtfError, match="cycle"):
        finder.type(1)


def test_very_long_reference_chain_raises_btf_error():
    w = BtfWriter()
    prev = w.int_("int", 4, BTF_INT_SIGNED)
    for _ in range(5000):
        prev = w.ref(BtfKind.CONST, prev)
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    with pytest.raises(BtfError, match="reference chain longer than"):
        finder.type(prev)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda w: w.int_("huge", 1 << 27, BTF_INT_SIGNED), "INT size 134217728 is not"),
        (lambda w: w.int_("wide", 4, 0, bits=40), "INT bits 40 at offset 0 do not fit in 4 bytes"),
        (lambda w: w.float_("odd", 3), "FLOAT size 3 is not"),
        (lambda w: w.enum("e", 3, [("A", 1)]), "enum size 3 is not"),
        (
            lambda w: w.enum("e", 1, [("BIG", 300)]),
            "enumerator 'BIG' value 300 does not fit in 1 bytes",
        ),
        (lambda w: w.enum64("e", 4, [("BIG", 1 << 40)]), "does not fit in 4 bytes"),
        (
            lambda w: w.struct("s", 8, [("x", 0, 3)], kflag=True),
            "member 'x' at bit 3 is not byte-aligned",
        ),
        (lambda w: w.array(0, 4), r"array element has no size \(cannot get size of void type\)"),
        (lambda w: w.array(w.func_proto(0, []), 4), "array element has no size"),
        (lambda w: w.array(w.add(BtfKind.FWD, "opaque"), 4), "array element has no size"),
    ],
)
def test_impossible_sizes_and_values_raise_btf_error(make, message):
    w = BtfWriter()
    type_id = make(w)
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    with pytest.raises(BtfError, match=message):
        finder.type(type_id)


def test_bit_field_wider_than_its_type_raises_btf_error():
    w = BtfWriter()
    i = w.int_("int", 4, BTF_INT_SIGNED)
    w.struct("s", 8, [("x", i, 0, 40)], kflag=True)
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    with pytest.raises(BtfError, match="member 'x' bit field of 40 bits"):
        _ = prog.type("struct s").members[0].type


def test_non_data_types_raise_btf_error():
    w, ids = all_kinds_writer()
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    for name in ("var", "datasec", "tag"):
        with pytest.raises(BtfError, match="not a data type"):
            finder.type(ids[name])


# --------------------------------------------------------------------------
# drgn types from hand-built BTF
# --------------------------------------------------------------------------


def test_struct_members_offsets_bit_fields_and_anonymous_union():
    w, ids = all_kinds_writer()
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    node = prog.type("struct node")
    assert node.size == 48
    assert [m.name for m in node.members] == ["next", "ref", None, "a", "b", "st", "name", "flag"]
    assert node.member("as_int").offset == 16  # found through the anonymous union
    assert drgn.offsetof(node, "as_long") == 16
    a, b, st = node.members[3:6]
    assert (a.bit_offset, a.bit_field_size, b.bit_offset, b.bit_field_size) == (192, 3, 195, 5)
    assert st.bit_field_size == 2 and st.type.kind == TypeKind.ENUM
    assert same(node.member("name").type, prog.array_type(prog.type("char"), 16))
    assert node.member("flag").type.kind == TypeKind.BOOL
    assert same(node.member("next").type, prog.pointer_type(node))  # FWD resolved to the definition


def test_bit_fields_encoded_in_int_types_without_kind_flag():
    w, ids = all_kinds_writer()
    prog, _ = make_prog(parse_btf(w.to_bytes()))
    old = prog.type("struct old_bits")
    assert [(m.name, m.bit_offset, m.bit_field_size) for m in old.members] == [
        ("x", 0, 3),
        ("y", 3, 3),
        ("z", 0, None),
    ]


def test_qualifiers_type_tags_typedefs_and_restrict():
    w, ids = all_kinds_writer()
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    vint = finder.type(ids["vint"])
    assert vint.qualifiers == Qualifiers.CONST | Qualifiers.VOLATILE
    assert same(vint.unqualified(), prog.type("int"))
    rptr = finder.type(ids["rptr"])
    assert rptr.qualifiers == Qualifiers.RESTRICT
    assert same(rptr.type, prog.type("char"))  # the __user type tag is skipped
    netmem_ref = prog.type("netmem_ref")
    assert netmem_ref.kind == TypeKind.TYPEDEF and same(netmem_ref.type, prog.type("unsigned long"))


def test_enum_signedness_and_enum64_values():
    w, ids = all_kinds_writer()
    prog, _ = make_prog(parse_btf(w.to_bytes()))
    state = prog.type("enum state")
    assert same(state.type, prog.int_type("int", 4, True))
    assert [tuple(e) for e in state.enumerators] == [("ST_NEG", -1), ("ST_ZERO", 0), ("ST_ONE", 1)]
    flags = prog.type("enum flags")
    assert same(flags.type, prog.int_type("unsigned int", 4, False))
    assert flags.enumerators[0].value == 0x80000000
    big = prog.type("enum big")
    assert same(big.type, prog.int_type("unsigned long", 8, False))
    assert big.enumerators[0].value == (1 << 64) - 1
    assert prog.type("enum sbig").enumerators[0].value == -(1 << 63)


def test_function_prototype_variadic_parameters_and_func():
    w, ids = all_kinds_writer()
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    proto = finder.type(ids["proto"])
    assert proto.kind == TypeKind.FUNCTION and proto.is_variadic
    assert [p.name for p in proto.parameters] == ["n", "fmt"]
    assert same(proto.parameters[0].type, prog.pointer_type(prog.type("struct node")))
    assert finder.type(ids["func"]) is proto
    assert finder.type(ids["fnptr"]).type is proto


def test_int_float_and_bool_lookups_use_drgn_spellings():
    w, ids = all_kinds_writer()
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    assert same(prog.type("unsigned long"), finder.type(ids["ulong"]))
    assert same(prog.type("long unsigned int"), finder.type(ids["ulong"]))
    assert prog.type("unsigned long").name == "unsigned long"
    assert prog.type("_Bool").kind == TypeKind.BOOL
    assert same(prog.type("double"), finder.type(ids["double"]))


def test_lookups_honour_the_kinds_asked_for():
    w = BtfWriter()
    i = w.int_("int", 4, BTF_INT_SIGNED)
    s = w.struct("foo", 4, [("s", i, 0)])
    u = w.struct("foo", 4, [("u", i, 0)], union=True)
    t = w.ref(BtfKind.TYPEDEF, u, "foo")
    e = w.enum("foo", 4, [("FOO", 1)])
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    assert same(prog.type("struct foo"), finder.type(s))
    assert same(prog.type("union foo"), finder.type(u))
    assert same(prog.type("foo"), finder.type(t))
    assert same(prog.type("enum foo"), finder.type(e))
    assert finder.find_id([TypeKind.CLASS], "foo") is None


def test_complete_definition_preferred_over_forward_and_lowest_id_among_duplicates():
    w = BtfWriter()
    i = w.int_("int", 4, BTF_INT_SIGNED)
    fwd = w.add(BtfKind.FWD, "dup")
    first = w.struct("dup", 4, [("first", i, 0)])
    w.struct("dup", 8, [("second", i, 0)])
    lonely = w.add(BtfKind.FWD, "lonely", kflag=True)
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    assert finder.find_id([TypeKind.STRUCT], "dup") == first
    assert prog.type("struct dup").members[0].name == "first"
    assert finder.type(fwd) is finder.type(first)
    assert not prog.type("union lonely").is_complete()
    assert same(finder.type(lonely), prog.union_type("lonely"))


def test_enum_without_enumerators_is_a_declaration():
    w = BtfWriter()
    declared = w.enum("mode", 4, [])
    defined = w.enum("mode", 4, [("MODE_A", 0)])
    lonely = w.enum("lonely", 4, [])
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    assert finder.find_id([TypeKind.ENUM], "mode") == defined
    assert finder.type(declared) is finder.type(defined)
    assert not prog.type("enum lonely").is_complete()
    assert not finder.type(lonely).is_complete()


def test_struct_lookup_is_lazy_and_recursive_structs_are_cheap():
    w = BtfWriter()
    fwd = w.add(BtfKind.FWD, "list_head")
    ptr = w.ref(BtfKind.PTR, fwd)
    lh = w.struct("list_head", 16, [("next", ptr, 0), ("prev", ptr, 64)])
    prog, finder = make_prog(parse_btf(w.to_bytes()))
    t = prog.type("struct list_head")
    assert finder.built_count == 1
    assert same(t.members[0].type.type, t)
    assert finder.built_count == 3  # list_head, the pointer, the forward declaration
    assert same(finder.type(lh), t)
    assert finder.built_count == 3


def test_byte_order_mismatch_with_the_program_is_rejected():
    w, _ = all_kinds_writer()
    with pytest.raises(BtfError, match="BTF is big-endian but the program is little-endian"):
        add_btf_type_finder(Program(LITTLE), parse_btf(w.to_bytes("big")))


def test_program_without_platform_gets_a_clear_error_not_btf_error():
    w, _ = all_kinds_writer()
    prog = Program()
    add_btf_type_finder(prog, parse_btf(w.to_bytes()))
    with pytest.raises(ValueError, match="program has no platform"):
        prog.type("struct node")


def test_big_endian_program_reads_big_endian_btf():
    w, ids = all_kinds_writer()
    prog, finder = make_prog(parse_btf(w.to_bytes("big")), BIG)
    prog.add_memory_segment(
        0x1000, 8, lambda a, n, off, phys: struct.pack(">Q", 0x1122334455667788)[off : off + n]
    )
    assert Object(prog, "netmem_ref", address=0x1000).value_() == 0x1122334455667788


def test_find_var_and_find_enumerator():
    w, ids = all_kinds_writer()
    btf = parse_btf(w.to_bytes())
    var = btf.find_var("counter")
    assert var is not None
    assert (var.var_id, var.type, var.datasec, var.offset, var.size) == (
        ids["counter"],
        ids["vint"],
        ".data",
        48,
        4,
    )
    assert btf.find_var("nope") is None
    assert btf.find_enumerator("ST_NEG") == (ids["state"], -1)
    assert btf.find_enumerator("BIG_MAX") == (ids["big"], (1 << 64) - 1)
    assert btf.find_enumerator("nope") is None


def test_var_outside_any_datasec_is_found_without_section():
    w = BtfWriter()
    i = w.int_("int", 4, BTF_INT_SIGNED)
    v = w.var("loose", i)
    var = parse_btf(w.to_bytes()).find_var("loose")
    assert var is not None and (var.var_id, var.type, var.datasec, var.offset) == (v, i, None, None)


def test_object_finder_answers_constants_variables_and_functions():
    w, ids = all_kinds_writer()
    btf = parse_btf(w.to_bytes())
    prog, _ = make_prog(btf)
    symbols = {"global_node": 0xFFFF0000, "counter": 0xFFFF0030, "node_printf": 0xFFFF1000}
    add_btf_object_finder(prog, btf, symbols.get)
    memory = bytearray(64)
    struct.pack_into("<i", memory, 48, 7)
    struct.pack_into("<Q", memory, 8, 0xABC)  # global_node.ref
    prog.add_memory_segment(
        0xFFFF0000, len(memory), lambda a, n, off, phys: bytes(memory[off : off + n])
    )

    assert prog["ST_NEG"].value_() == -1
    assert same(prog["ST_NEG"].type_, prog.type("enum state"))
    assert prog.constant("BIG_MAX").value_() == (1 << 64) - 1
    assert prog["counter"].value_() == 7
    assert prog["counter"].type_.qualifiers == Qualifiers.CONST | Qualifiers.VOLATILE
    assert prog["global_node"].ref.value_() == 0xABC
    assert prog.function("node_printf").address_ == 0xFFFF1000
    with pytest.raises(LookupError):
        prog.variable("ST_NEG")  # a constant, not a variable


def test_object_finder_takes_addresses_from_a_drgn_symbol_index():
    # The way kallsyms plugs in: load_vmlinux_kallsyms() returns a SymbolIndex.
    w, ids = all_kinds_writer()
    btf = parse_btf(w.to_bytes())
    prog, _ = make_prog(btf)
    symbol = drgn.Symbol(
        "counter", 0xFFFF0030, 4, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT
    )
    prog.register_symbol_finder("kallsyms", drgn.SymbolIndex([symbol]), enable_index=0)

    def symbol_lookup(name):
        try:
            return prog.symbol(name).address
        except LookupError:
            return None

    add_btf_object_finder(prog, btf, symbol_lookup)
    assert prog.variable("counter").address_ == 0xFFFF0030
    with pytest.raises(LookupError):
        prog.variable("global_node")  # in BTF, but not in the symbol table


def test_object_finder_without_symbols_answers_constants_only():
    w, ids = all_kinds_writer()
    btf = parse_btf(w.to_bytes())
    prog, _ = make_prog(btf)
    add_btf_object_finder(prog, btf)
    assert prog["ST_ONE"].value_() == 1
    with pytest.raises(LookupError):
        prog["counter"]


def test_object_finder_skips_variables_the_symbol_lookup_does_not_know():
    w, ids = all_kinds_writer()
    btf = parse_btf(w.to_bytes())
    prog, _ = make_prog(btf)
    add_btf_object_finder(prog, btf, lambda name: None)
    with pytest.raises(LookupError):
        prog["counter"]


def test_split_btf_continues_ids_and_strings_of_its_base():
    base_writer, ids = all_kinds_writer()
    base_data = base_writer.to_bytes()
    base = parse_btf(base_data)
    split_writer = BtfWriter(first_id=base.nr_types, str_base=header_fields(base_data)[5])
    node_ptr = split_writer.ref(BtfKind.PTR, ids["node"])
    mod = split_writer.struct(
        "mod_priv", 16, [("node", node_ptr, 0), ("ref", ids["netmem_ref"], 64)]
    )
    split = parse_btf(split_writer.to_bytes(), base=base)
    assert (split.first_id, split.nr_types) == (base.nr_types, base.nr_types + 2)
    assert split.type(mod).members[1].name == "ref"
    assert split.type(ids["node"]) == base.type(ids["node"])

    prog = Program(LITTLE)
    base_finder = add_btf_type_finder(prog, base, name="vmlinux")
    split_finder = add_btf_type_finder(prog, split, name="mod")
    mod_type = prog.type("struct mod_priv")
    assert same(mod_type.members[0].type.type, prog.type("struct node"))
    assert same(mod_type.member("ref").type, prog.type("netmem_ref"))
    # Base types are built once, by the base's finder, for both finders.
    assert split_finder.built_count == 2
    built = base_finder.built_count
    assert split_finder.type(ids["node"]) is base_finder.type(ids["node"])
    assert base_finder.built_count == built


def test_split_btf_parsed_without_its_base_says_so():
    base_writer, ids = all_kinds_writer()
    base_data = base_writer.to_bytes()
    split_writer = BtfWriter(
        first_id=parse_btf(base_data).nr_types, str_base=header_fields(base_data)[5]
    )
    split_writer.strings = bytearray(b"m\0")  # real module string sections start mid-table
    split_writer.ref(BtfKind.PTR, ids["node"])
    with pytest.raises(BtfError, match="split BTF: parse it with base="):
        parse_btf(split_writer.to_bytes())


def test_split_btf_with_other_byte_order_than_base_is_rejected():
    w, _ = all_kinds_writer()
    with pytest.raises(BtfError, match="split BTF is big-endian but its base is little-endian"):
        parse_btf(BtfWriter(first_id=100).to_bytes("big"), base=parse_btf(w.to_bytes()))


# --------------------------------------------------------------------------
# read_btf_from_elf
# --------------------------------------------------------------------------


def write_elf(
    path: Path,
    sections: Sequence[Tuple[str, int, int, bytes]],
    byteorder: str = "<",
    elf64: bool = True,
) -> None:
    """Write a minimal ELF file with the given (name, type, flags, data) sections."""
    sections = [(".shstrtab", 3, 0, b"")] + list(sections)  # SHT_STRTAB first
    names = bytearray(b"\0")
    name_offsets = []
    for name, *_ in sections:
        name_offsets.append(len(names))
        names += name.encode() + b"\0"
    sections[0] = (".shstrtab", 3, 0, bytes(names))
    ehsize, shentsize = (64, 64) if elf64 else (52, 40)
    body = bytearray()
    headers = bytearray(shentsize)  # section 0 is SHT_NULL
    for (_name, type_, flags, data), name_off in zip(sections, name_offsets):
        fields = (name_off, type_, flags, 0, ehsize + len(body), len(data), 0, 0, 1, 0)
        headers += struct.pack(byteorder + ("IIQQQQIIQQ" if elf64 else "10I"), *fields)
        body += data
    shoff = ehsize + len(body)
    ident = b"\x7fELF" + bytes([2 if elf64 else 1, 1 if byteorder == "<" else 2, 1]) + bytes(9)
    fixed = (
        1,
        62 if elf64 else 3,
        1,
        0,
        0,
        shoff,
        0,
        ehsize,
        0,
        0,
        shentsize,
        len(sections) + 1,
        1,
    )
    ehdr = ident + struct.pack(byteorder + ("HHIQQQIHHHHHH" if elf64 else "HHIIIIIHHHHHH"), *fixed)
    path.write_bytes(ehdr + body + headers)


def test_read_btf_from_elf_returns_the_btf_section(tmp_path):
    w, _ = all_kinds_writer()
    blob = w.to_bytes()
    path = tmp_path / "mod.ko"
    write_elf(
        path, [(".text", 1, 6, b"\x90" * 16), (".BTF", 1, 0, blob), (".BTF.ext", 1, 0, b"x" * 8)]
    )
    assert read_btf_from_elf(str(path)) == blob


def test_read_btf_from_elf_handles_32_bit_big_endian_and_compressed_sections(tmp_path):
    w, _ = all_kinds_writer()
    blob = w.to_bytes("big")
    compressed = struct.pack(">III", 1, len(blob), 1) + zlib.compress(blob)
    path = tmp_path / "vmlinux32"
    write_elf(path, [(".BTF", 1, 0x800, compressed)], byteorder=">", elf64=False)
    assert read_btf_from_elf(str(path)) == blob


@pytest.mark.parametrize(
    "contents, message",
    [
        (None, "no .BTF section"),
        (b"not an elf file at all, just text" * 3, "not an ELF file"),
        (b"\x7fELF\x02\x01", "truncated ELF file"),
    ],
)
def test_read_btf_from_elf_rejects_files_without_btf(tmp_path, contents, message):
    path = tmp_path / "file.o"
    if contents is None:
        write_elf(path, [(".text", 1, 6, b"\x90" * 16)])
    else:
        path.write_bytes(contents)
    with pytest.raises(BtfError, match=message):
        read_btf_from_elf(str(path))


# --------------------------------------------------------------------------
# The host kernel's BTF, checked against pahole
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_btf_data() -> bytes:
    if not VMLINUX_BTF.exists():
        pytest.skip(
            "/sys/kernel/btf/vmlinux is absent (kernel built without CONFIG_DEBUG_INFO_BTF)"
        )
    return VMLINUX_BTF.read_bytes()


@pytest.fixture(scope="module")
def host_btf(host_btf_data) -> Btf:
    return parse_btf(host_btf_data)


@pytest.fixture(scope="module")
def host_prog(host_btf) -> Program:
    prog = Program(drgn.host_platform)
    add_btf_type_finder(prog, host_btf)
    add_btf_object_finder(prog, host_btf)
    return prog


_PAHOLE_COMMENT = re.compile(r"/\*\s*(\d+)(?::\s*(\d+))?\s+(\d+)\s*\*/\s*$")
_ATTRIBUTE = re.compile(r"__attribute__\(\(.*\)\)")


def pahole_layout(
    name: str, path: str = str(VMLINUX_BTF)
) -> Tuple[int, Dict[str, Tuple[int, int, int]]]:
    """
    Return pahole's size of struct *name* and {member path: (bit offset, bit
    field size, size)}; members of anonymous structs and unions are flattened
    to their own names, members of named inline ones become "outer.inner".
    """
    out = subprocess.run(
        ["pahole", "-C", name, path], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip(), f"pahole knows no struct {name}"
    total_size = None
    frames: List[List[Tuple[str, int, int, int]]] = []
    result: Dict[str, Tuple[int, int, int]] = {}
    for line in out.splitlines():
        code, _, comment = line.partition("/*")
        code = _ATTRIBUTE.sub("", code).strip()
        m = _PAHOLE_COMMENT.search(line)
        size_match = re.search(r"/\* size: (\d+),", line)
        if size_match and len(frames) == 1:
            total_size = int(size_match.group(1))
        if code.endswith("{"):
            frames.append([])
            continue
        if code.startswith("}"):
            entries = frames.pop()
            outer = re.match(r"\}\s*(\w+)?\s*;", code)
            inner_name = outer.group(1) if outer else None
            if not frames:
                for path_, bit_offset, bits, size in entries:
                    result.setdefault(path_, (bit_offset, bits, size))
                break
            prefix = inner_name + "." if inner_name else ""
            frames[-1].extend((prefix + p, o, b, s) for p, o, b, s in entries)
            if inner_name and m:
                frames[-1].append((inner_name, int(m.group(1)) * 8, 0, int(m.group(3))))
            continue
        if not code.endswith(";") or not m:
            continue
        fnptr = re.search(r"\(\s*\*\s*(\w+)", code)
        bitfield = re.search(r":\s*(\d+)\s*;$", code)
        if fnptr:
            member = fnptr.group(1)
        else:
            stripped = re.sub(r"(:\s*\d+)?\s*;$", "", code)
            stripped = re.sub(r"(\[\d*\])+$", "", stripped.strip())
            member = re.findall(r"\w+", stripped)[-1]
        bit_offset = int(m.group(1)) * 8 + int(m.group(2) or 0)
        frames[-1].append(
            (member, bit_offset, int(bitfield.group(1)) if bitfield else 0, int(m.group(3)))
        )
    assert total_size is not None, f"no size line in pahole output for {name}"
    return total_size, result


def require_type(btf: Btf, kind: BtfKind, name: str, *more_kinds: BtfKind) -> None:
    """Skip the test on kernels that predate a type."""
    if not btf.find_types(name, (kind,) + more_kinds):
        pytest.skip(f"this kernel's BTF has no {kind.name.lower()} {name}")


def drgn_member_layout(type_: drgn.Type, path: str) -> Tuple[int, int, int]:
    """Return (bit offset, bit field size, size) of a member path in a drgn type."""
    bit_offset = 0
    member = None
    for part in path.split("."):
        member = type_.member(part)
        bit_offset += member.bit_offset
        type_ = member.type
    assert member is not None
    return bit_offset, member.bit_field_size or 0, drgn.sizeof(member.type)


NETMEM_STRUCTS = [
    "page",
    "netmem_desc",
    "net_iov",
    "net_iov_area",
    "page_pool",
    "page_pool_params_fast",
    "pp_alloc_cache",
    "ptr_ring",
    "net_device",
    "sk_buff",
    "skb_shared_info",
]


@needs_host_btf
@needs_pahole
@pytest.mark.parametrize("name", NETMEM_STRUCTS)
def test_struct_layout_matches_pahole(host_btf, host_prog, name):
    require_type(host_btf, BtfKind.STRUCT, name)
    size, members = pahole_layout(name)
    type_ = host_prog.type("struct " + name)
    assert drgn.sizeof(type_) == size
    assert len(members) >= 2
    for path, expected in members.items():
        got = drgn_member_layout(type_, path)
        assert got == expected, f"struct {name}.{path}: drgn {got} != pahole {expected}"
        if not expected[1]:
            assert drgn.offsetof(type_, path) * 8 == expected[0]


def pahole_enum(name: str) -> Dict[str, int]:
    out = subprocess.run(
        ["pahole", "-C", name, str(VMLINUX_BTF)], capture_output=True, text=True, check=True
    ).stdout
    return {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\w+)\s*=\s*(-?\d+),", out, re.M)
    }


@needs_host_btf
@needs_pahole
@pytest.mark.parametrize(
    "name", ["net_iov_type", "pagetype", "xdp_mem_type", "netdev_stat_type", "skb_drop_reason"]
)
def test_enum_values_match_pahole(host_btf, host_prog, name):
    require_type(host_btf, BtfKind.ENUM, name, BtfKind.ENUM64)
    expected = pahole_enum(name)
    assert expected, f"pahole printed no enumerators for enum {name}"
    assert {e.name: e.value for e in host_prog.type("enum " + name).enumerators} == expected


@needs_host_btf
def test_net_iov_type_is_an_8_byte_unsigned_enum(host_btf, host_prog):
    if host_btf.find_enumerator("NET_IOV_MAX") is None:
        pytest.skip("this kernel's enum net_iov_type has no NET_IOV_MAX (before Linux 6.14)")
    t = host_prog.type("enum net_iov_type")
    assert drgn.sizeof(t) == 8 and not t.type.is_signed
    assert host_prog["NET_IOV_MAX"].value_() == (1 << 64) - 1
    assert same(host_prog["NET_IOV_DMABUF"].type_, t)


@needs_host_btf
def test_netmem_ref_resolves_to_unsigned_long(host_btf, host_prog):
    require_type(host_btf, BtfKind.TYPEDEF, "netmem_ref")
    t = host_prog.type("netmem_ref")
    assert t.kind == TypeKind.TYPEDEF
    assert same(t.type, host_prog.type("unsigned long"))


@needs_host_btf
def test_host_btf_round_trips_through_the_other_byte_order(host_btf_data, host_btf):
    swapped = parse_btf(swap_byteorder(host_btf_data))
    assert swapped.byteorder == "big" and swapped.nr_types == host_btf.nr_types
    little_prog, _ = make_prog(host_btf, drgn.host_platform)
    big_prog, _ = make_prog(swapped, BIG)
    for name in ("page_pool", "sk_buff", "net_device"):
        little = little_prog.type("struct " + name)
        big = big_prog.type("struct " + name)
        assert drgn.sizeof(big) == drgn.sizeof(little)
        assert [(m.name, m.bit_offset, m.bit_field_size) for m in big.members] == [
            (m.name, m.bit_offset, m.bit_field_size) for m in little.members
        ]


@needs_host_btf
def test_host_per_cpu_variables_are_found_in_datasec(host_btf):
    var = host_btf.find_var("runqueues")
    if var is None:
        pytest.skip("this kernel's BTF has no runqueues VAR")
    assert var.datasec == ".data..percpu"
    assert host_btf.name(var.type) == "rq"


@needs_host_btf
def test_sysfs_module_split_btf_resolves_base_types(host_btf):
    modules = sorted(p for p in VMLINUX_BTF.parent.iterdir() if p.name != "vmlinux")
    if not modules:
        pytest.skip("no module BTF under /sys/kernel/btf (no modules loaded)")
    preferred = [p for p in modules if p.name == "veth"] or modules
    split = parse_btf(preferred[0].read_bytes(), base=host_btf)
    assert split.first_id == host_btf.nr_types
    prog = Program(drgn.host_platform)
    finder = add_btf_type_finder(prog, split)
    # Find one of the module's own structs that refers to a base type.
    for type_id in range(split.first_id, split.nr_types):
        t = split.type(type_id)
        if t.kind == BtfKind.STRUCT and t.name and any(m.type < split.first_id for m in t.members):
            drgn_type = prog.type("struct " + t.name)
            for member in drgn_type.members:
                _ = member.type  # resolves through the base
            assert finder.built_count >= 1
            return
    pytest.skip(f"{preferred[0].name} has no struct referring to a base type")


@needs_host_btf
@needs_pahole
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_pahole_encoded_split_btf_of_a_module_object(tmp_path, host_btf):
    source = tmp_path / "mod.c"
    source.write_text(
        "struct list_head { struct list_head *next, *prev; };\n"
        "typedef unsigned long netmem_ref;\n"
        "struct page;\n"
        "struct veth_probe_priv {\n"
        "\tstruct list_head list;\n\tnetmem_ref head;\n\tstruct page *page;\n"
        "\tunsigned int flags:3;\n\tunsigned int more:5;\n\tint id;\n};\n"
        "struct veth_probe_priv veth_probe_global;\n"
    )
    obj = tmp_path / "mod.o"
    subprocess.run(["gcc", "-g", "-c", str(source), "-o", str(obj)], check=True)
    size, members = pahole_layout("veth_probe_priv", str(obj))  # from the DWARF
    encoded = subprocess.run(
        ["pahole", "-J", "--btf_base", str(VMLINUX_BTF), str(obj)], capture_output=True, text=True
    )
    if encoded.returncode != 0:
        pytest.skip(f"pahole could not encode split BTF: {encoded.stderr.strip()}")

    split = parse_btf(read_btf_from_elf(str(obj)), base=host_btf)
    prog = Program(drgn.host_platform)
    base_finder = add_btf_type_finder(prog, host_btf, name="vmlinux")
    add_btf_type_finder(prog, split, name="veth_probe")
    priv = prog.type("struct veth_probe_priv")
    assert drgn.sizeof(priv) == size
    for path, expected in members.items():
        assert drgn_member_layout(priv, path) == expected, path
    # The deduplicated members are the base's types.
    assert split.type(split.find_types("veth_probe_priv")[0]).members[0].type < split.first_id
    assert same(
        priv.member("list").type,
        base_finder.type(host_btf.find_types("list_head", [BtfKind.STRUCT])[0]),
    )
    assert same(priv.member("page").type.type, prog.type("struct page"))


# --------------------------------------------------------------------------
# drgn helpers on a program whose only types are ours
# --------------------------------------------------------------------------


class Memory:
    """A few pages of fake kernel memory for a Program."""

    BASE = 0xFFFF888000100000

    def __init__(self, size: int = 0x4000) -> None:
        self.buf = bytearray(size)

    def put(self, address: int, fmt: str, *values: int) -> None:
        struct.pack_into("<" + fmt, self.buf, address - self.BASE, *values)

    def attach(self, prog: Program) -> None:
        buf = self.buf
        prog.add_memory_segment(
            self.BASE, len(buf), lambda a, n, off, phys: bytes(buf[off : off + n])
        )


@needs_host_btf
def test_list_for_each_entry_walks_pages_with_btf_types(host_btf):
    prog, _ = make_prog(host_btf, drgn.host_platform)
    mem = Memory()
    page = prog.type("struct page")
    lru = drgn.offsetof(page, "lru")
    head = Memory.BASE
    pages = [Memory.BASE + 0x100 + i * page.size for i in range(3)]
    nodes = [p + lru for p in pages]
    ring = [head] + nodes
    for i, node in enumerate(ring):
        mem.put(node, "QQ", ring[(i + 1) % len(ring)], ring[i - 1])
    for i, p in enumerate(pages):
        mem.put(p + drgn.offsetof(page, "_refcount"), "i", i + 1)
    mem.attach(prog)
    head_obj = Object(prog, "struct list_head", address=head)
    found = list(list_for_each_entry("struct page", head_obj.address_of_(), "lru"))
    assert [p.value_() for p in found] == pages
    assert [p._refcount.counter.value_() for p in found] == [1, 2, 3]


@needs_host_btf
def test_xa_for_each_walks_an_xarray_with_btf_types(host_btf):
    prog, _ = make_prog(host_btf, drgn.host_platform)
    mem = Memory()
    xa_node = prog.type("struct xa_node")
    xarray = Memory.BASE
    node = Memory.BASE + 0x1000
    entries = {1: 0xFFFF888000200000, 5: 0xFFFF888000200040, 63: 0xFFFF888000200080}
    mem.put(xarray + drgn.offsetof(prog.type("struct xarray"), "xa_head"), "Q", node | 2)
    mem.put(node + drgn.offsetof(xa_node, "shift"), "B", 0)
    for index, entry in entries.items():
        mem.put(node + drgn.offsetof(xa_node, "slots") + 8 * index, "Q", entry)
    mem.attach(prog)
    xa = Object(prog, "struct xarray", address=xarray).address_of_()
    assert [(index, entry.value_()) for index, entry in xa_for_each(xa)] == sorted(entries.items())


# --------------------------------------------------------------------------
# Laziness and speed on the host's BTF
# --------------------------------------------------------------------------


@needs_host_btf
def test_page_pool_lookup_builds_only_a_handful_of_types(host_btf):
    prog, finder = make_prog(host_btf, drgn.host_platform)
    pool = prog.type("struct page_pool")
    assert finder.built_count == 1
    for member in pool.members:
        drgn.sizeof(member.type)
    # Each member type, plus the pointers' targets and typedef chains; the
    # graph reachable from page_pool has tens of thousands of types.
    assert finder.built_count < 80
    assert finder.built_count < host_btf.nr_types / 1000


# --------------------------------------------------------------------------
# Fuzzing: malformed BTF raises BtfError and nothing else
# --------------------------------------------------------------------------


def exercise_type(t: drgn.Type, depth: int = 0) -> None:
    """Touch what helpers touch: members, offsets, sizes, targets, enumerators."""
    if depth > 3:
        return
    kind = t.kind
    if kind in (TypeKind.STRUCT, TypeKind.UNION) and t.is_complete():
        drgn.sizeof(t)
        for member in t.members[:40]:
            _ = member.bit_offset
            if not member.bit_field_size:
                _ = member.offset
            exercise_type(member.type, depth + 1)
    elif kind in (TypeKind.TYPEDEF, TypeKind.POINTER, TypeKind.ARRAY):
        exercise_type(t.type, depth + 1)
    elif kind == TypeKind.ENUM and t.is_complete():
        list(t.enumerators)
        drgn.sizeof(t)
    elif kind == TypeKind.FUNCTION:
        for param in t.parameters[:10]:
            exercise_type(param.type, depth + 1)


def exercise_btf(
    btf: Btf, platform: Platform, names: Sequence[Tuple[TypeKind, str]], max_ids: int
) -> None:
    """Look up some names and decode/build up to max_ids types, as a user would."""
    prog = Program(platform)
    finder = add_btf_type_finder(prog, btf)
    add_btf_object_finder(prog, btf, lambda name: 0x1000)
    for kind, name in names:
        t = finder.find([kind], name)
        if t is not None:
            exercise_type(t)
    for type_id in range(1, min(btf.nr_types, max_ids + 1)):
        btf.type(type_id)
        if btf.kind(type_id) not in (BtfKind.VAR, BtfKind.DATASEC, BtfKind.DECL_TAG):
            exercise_type(finder.type(type_id))
    for name in (
        "ST_NEG",
        "BIG_MAX",
        "NET_IOV_MAX",
        "PGTY_buddy",
        "counter",
        "global_node",
        "runqueues",
    ):
        try:
            prog.object(name)
        except LookupError:
            pass


def check_only_btf_error(data: bytes, names: Sequence[Tuple[TypeKind, str]], max_ids: int) -> None:
    """Parse and use *data*; BtfError (one line) is the only acceptable failure."""
    try:
        btf = parse_btf(data)
        exercise_btf(btf, LITTLE if btf.byteorder == "little" else BIG, names, max_ids)
    except BtfError as e:
        message = str(e)
        assert message and "\n" not in message
        # Shown by --hypothesis-show-statistics: which checks fired.
        event("BtfError: " + re.sub(r"'[^']*'|0x[0-9a-f]+|\d+", "N", message))
    else:
        event("parsed and used")


SMALL_NAMES = [
    (TypeKind.STRUCT, "node"),
    (TypeKind.STRUCT, "old_bits"),
    (TypeKind.ENUM, "state"),
    (TypeKind.ENUM, "big"),
    (TypeKind.TYPEDEF, "netmem_ref"),
    (TypeKind.INT, "unsigned long"),
    (TypeKind.BOOL, "_Bool"),
]
SMALL_BLOBS = {
    "little": all_kinds_writer()[0].to_bytes("little"),
    "big": all_kinds_writer()[0].to_bytes("big"),
}

# Examples are descriptions of a change (blob name plus edits), not the bytes,
# so that a failure report stays short even for the 5.5 MB host blob.


@st.composite
def corruptions(draw, blobs: Dict[str, bytes], hot: Sequence[Tuple[int, int]] = ()):
    """(blob name, [(position, new byte)]); with *hot* ranges, half the edits land in them."""
    name = draw(st.sampled_from(sorted(blobs)))
    length = len(blobs[name])
    edits = []
    for _ in range(draw(st.integers(1, 8))):
        if hot and draw(st.booleans()):
            lo, hi = draw(st.sampled_from(hot))
            position = draw(st.integers(lo, min(hi, length) - 1))
        else:
            position = draw(st.integers(4 if hot else 0, length - 1))
        edits.append((position, draw(st.integers(0, 255))))
    return name, edits


def corrupt(blobs: Dict[str, bytes], name: str, edits: Sequence[Tuple[int, int]]) -> bytes:
    data = bytearray(blobs[name])
    for position, value in edits:
        data[position] = value
    return bytes(data)


def record_boundaries(data: bytes) -> List[int]:
    """Offsets in the type section where a record starts, plus its end."""
    btf = parse_btf(data)
    return [4 * start for start in btf._starts] + [4 * len(btf._words)]


def string_boundaries(data: bytes) -> List[int]:
    """String section lengths that end right after a NUL."""
    _, hdr_len, _, _, str_off, str_len = header_fields(data)
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    return [i + 1 for i, byte in enumerate(strings) if byte == 0]


TRUNCATION_CLASSES = (
    "prefix",
    "types at a record boundary",
    "types word-aligned",
    "types anywhere",
    "strings after a NUL",
    "strings anywhere",
)


@st.composite
def truncations(draw, blobs: Dict[str, bytes]):
    """
    (blob name, class, length): a raw prefix of the blob, or the blob with its
    header rewritten so that the type or string section itself ends early; the
    classes cover cuts between records, inside a record, inside a word, and
    inside or between strings.
    """
    name = draw(st.sampled_from(sorted(blobs)))
    data = blobs[name]
    how = draw(st.sampled_from(TRUNCATION_CLASSES))
    _, _, _, type_len, _, str_len = header_fields(data)
    if how == "prefix":
        length = draw(st.integers(0, len(data)))
    elif how == "types at a record boundary":
        length = draw(st.sampled_from(BOUNDARIES[name][0]))
    elif how == "types word-aligned":
        length = 4 * draw(st.integers(0, type_len // 4))
    elif how == "types anywhere":
        length = draw(st.integers(0, type_len))
    elif how == "strings after a NUL":
        length = draw(st.sampled_from(BOUNDARIES[name][1]))
    else:
        length = draw(st.integers(0, str_len))
    return name, how, length


def truncate(blobs: Dict[str, bytes], name: str, how: str, length: int) -> bytes:
    data = blobs[name]
    if how == "prefix":
        return data[:length]
    p, _, type_off, type_len, str_off, str_len = header_fields(data)
    if how.startswith("types"):
        type_len = length
    else:
        str_len = length
    out = bytearray(data)
    struct.pack_into(p + "4I", out, 8, type_off, type_len, str_off, str_len)
    return bytes(out)


BOUNDARIES = {
    name: (record_boundaries(data), string_boundaries(data)) for name, data in SMALL_BLOBS.items()
}


@given(truncations(SMALL_BLOBS))
@fuzz_settings(quick=100, deadline_ms=2000)
def test_fuzz_truncated_small_btf_raises_only_btf_error(case):
    check_only_btf_error(truncate(SMALL_BLOBS, *case), SMALL_NAMES, max_ids=200)


@given(corruptions(SMALL_BLOBS))
@fuzz_settings(quick=150, deadline_ms=2000)
def test_fuzz_corrupted_small_btf_raises_only_btf_error(case):
    check_only_btf_error(corrupt(SMALL_BLOBS, *case), SMALL_NAMES, max_ids=200)


RANDOM_NAMES = [
    "",
    "node",
    "int",
    "unsigned long",
    "_Bool",
    "state",
    "netmem_ref",
    "ST_NEG",
    "counter",
]
RANDOM_STRINGS = b"\0" + b"".join(n.encode() + b"\0" for n in RANDOM_NAMES[1:])
# Valid name offsets (weighted), one inside a string, and one past the end.
RANDOM_NAME_OFFSETS = (
    [0]
    + [RANDOM_STRINGS.index(n.encode() + b"\0") for n in RANDOM_NAMES[1:]] * 4
    + [3, len(RANDOM_STRINGS)]
)
# Known kinds, and now and then an unknown one (any one record makes parsing fail).
RANDOM_KINDS = st.sampled_from(list(range(1, 20)) * 10 + [0, 20, 31])
RANDOM_LOOKUPS = [
    (kind, name)
    for kind in (
        TypeKind.STRUCT,
        TypeKind.UNION,
        TypeKind.ENUM,
        TypeKind.TYPEDEF,
        TypeKind.INT,
        TypeKind.BOOL,
        TypeKind.FLOAT,
    )
    for name in RANDOM_NAMES[1:7]
]


@st.composite
def random_btf(draw):
    """
    (byte order, records): a few type records of random kinds whose fields are
    small, mostly plausible values, so that type references, cycles, sizes and
    bit fields get exercised rather than only the header checks.
    """
    count = draw(st.integers(1, 10))
    type_id = st.integers(0, count + 1)  # sometimes one past the last
    name_off = st.sampled_from(RANDOM_NAME_OFFSETS)
    small = st.sampled_from([0, 1, 2, 3, 4, 8, 12, 16, 48, 1 << 31, 0xFFFFFFFF])
    records = []
    for _ in range(count):
        kind = draw(RANDOM_KINDS)
        kflag = draw(st.booleans())
        vlen = draw(st.integers(0, 3))
        sized = kind in (1, 4, 5, 6, 15, 16, 19)
        record = [
            draw(name_off),
            (kflag << 31) | (kind << 24) | vlen,
            draw(small if sized else type_id),
        ]
        if kind == BtfKind.INT:
            record.append(
                (draw(st.sampled_from([0, 1, 2, 4, 5])) << 24)
                | (draw(st.sampled_from([0, 0, 3])) << 16)
                | draw(st.sampled_from([0, 1, 3, 8, 16, 32, 64, 128, 200]))
            )
        elif kind == BtfKind.ARRAY:
            record += [draw(type_id), draw(type_id), draw(small)]
        elif kind in (BtfKind.STRUCT, BtfKind.UNION):
            for _ in range(vlen):
                offset = draw(st.sampled_from([0, 3, 8, 32, 64, 1000]))
                record += [
                    draw(name_off),
                    draw(type_id),
                    (
                        (draw(st.sampled_from([0, 1, 3, 8, 33, 255])) << 24 | offset)
                        if kflag
                        else offset
                    ),
                ]
        elif kind == BtfKind.ENUM:
            for _ in range(vlen):
                record += [draw(name_off), draw(small)]
        elif kind == BtfKind.ENUM64:
            for _ in range(vlen):
                record += [draw(name_off), draw(small), draw(small)]
        elif kind == BtfKind.FUNC_PROTO:
            for _ in range(vlen):
                record += [draw(name_off), draw(type_id)]
        elif kind in (BtfKind.VAR, BtfKind.DECL_TAG):
            record.append(draw(small))
        elif kind == BtfKind.DATASEC:
            for _ in range(vlen):
                record += [draw(type_id), draw(small), draw(small)]
        records.append(record)
    return draw(st.sampled_from(["little", "big"])), records


def random_btf_bytes(byteorder: str, records: List[List[int]]) -> bytes:
    w = BtfWriter()
    w.records = records
    w.strings = bytearray(RANDOM_STRINGS)
    return w.to_bytes(byteorder)


@given(random_btf())
@fuzz_settings(quick=200, deadline_ms=2000)
def test_fuzz_random_type_records_raise_only_btf_error(case):
    check_only_btf_error(random_btf_bytes(*case), RANDOM_LOOKUPS, max_ids=20)


HOST_NAMES = [
    (TypeKind.STRUCT, "page_pool"),
    (TypeKind.STRUCT, "sk_buff"),
    (TypeKind.STRUCT, "net_iov"),
    (TypeKind.TYPEDEF, "netmem_ref"),
    (TypeKind.ENUM, "net_iov_type"),
    (TypeKind.INT, "unsigned long"),
]


def host_fuzz_inputs() -> Tuple[Dict[str, bytes], List[Tuple[int, int]]]:
    """
    The host blob, and the byte ranges where a corruption matters most: the
    header, and the records and names of the types the lookups reach first.
    """
    if not VMLINUX_BTF.exists():
        return {"vmlinux": b""}, []
    data = VMLINUX_BTF.read_bytes()
    btf = parse_btf(data)
    _, hdr_len, type_off, _, str_off, _ = header_fields(data)
    types_start = hdr_len + type_off

    def record(type_id: int) -> Tuple[int, int]:
        start = types_start + 4 * btf._starts[type_id - 1]
        size = (
            4 * (len(btf._words) - btf._starts[type_id - 1])
            if type_id == btf.nr_types - 1
            else 4 * (btf._starts[type_id] - btf._starts[type_id - 1])
        )
        return start, start + size

    hot = [(4, hdr_len)]  # the small blobs cover magic and version
    for _kind, name in HOST_NAMES:
        for type_id in btf.find_types(name)[:1]:
            hot.append(record(type_id))
            hot.extend(record(m.type) for m in btf.type(type_id).members[:8] if m.type)
            name_off = hdr_len + str_off + btf._words[btf._starts[type_id - 1]]
            hot.append((name_off, name_off + len(name) + 1))
    return {"vmlinux": data}, hot


HOST_BLOBS, HOST_HOT = host_fuzz_inputs()
if HOST_BLOBS["vmlinux"]:
    BOUNDARIES["vmlinux"] = (
        record_boundaries(HOST_BLOBS["vmlinux"]),
        string_boundaries(HOST_BLOBS["vmlinux"]),
    )


@needs_host_btf
@given(truncations(HOST_BLOBS))
@fuzz_settings(quick=20, deadline_ms=10000)
def test_fuzz_truncated_host_btf_raises_only_btf_error(case):
    check_only_btf_error(truncate(HOST_BLOBS, *case), HOST_NAMES, max_ids=50)


@needs_host_btf
@given(corruptions(HOST_BLOBS, HOST_HOT))
@fuzz_settings(quick=25, deadline_ms=10000)
def test_fuzz_corrupted_host_btf_raises_only_btf_error(case):
    check_only_btf_error(corrupt(HOST_BLOBS, *case), HOST_NAMES, max_ids=50)
