#!/usr/bin/env python3
"""Write a fixture layout header from a real kernel's type information.

    gen_layout_header.py --types FILE --name NAME --source "WHERE IT CAME FROM" > HEADER

FILE is anything drgn reads DWARF from: a Debian ``-dbg`` vmlinux, or an ELF
compiled from ``bpftool btf dump file /sys/kernel/btf/vmlinux format c`` (see
``from-btf.sh``).  The header keeps only what ``spec.py`` lists, every kept
member at its real offset (gaps are padded) and each offset and size checked
by a ``_Static_assert``, so the fixture's DWARF reproduces the kernel's layout
for exactly the members netmem-probe reads.
"""

import argparse
import os
import re
import sys
from typing import List

import drgn
from drgn import Program, Qualifiers, TypeKind

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spec  # noqa: E402

# The type of each global, for inputs without DWARF variables (BTF-derived
# ELFs carry types only); the same table types globals on BTF-only targets.
from netmem_probe.kernel.globals import global_type  # noqa: E402

COMPOUND = (TypeKind.STRUCT, TypeKind.UNION)

# Globals that exist only when a subsystem's types do.
GLOBAL_NEEDS = {
    "dmabuf_devmem_ops": "struct net_devmem_dmabuf_binding",
    "io_uring_pp_zc_ops": "struct io_zcrx_ifq",
    "net_devmem_dmabuf_bindings": "struct net_devmem_dmabuf_binding",
    "pp_system_recycle_stats": "struct page_pool_recycle_stats",
    "timekeeper_data": "enum timekeeper_ids",
}
# Globals that exist only when a member does: the page_pools registry came
# with pool->user in Linux kernel commit f17c69649c69 ("net: page_pool: id
# the page pools") (in v6.8), the per-CPU system pools with pool->cpuid in
# Linux kernel commit 2b0cfa6e4956 ("net: add generic percpu page_pool
# allocator") (in v6.9).
GLOBAL_NEEDS_MEMBER = {
    "page_pools": ("struct page_pool", "user"),
    "system_page_pool": ("struct page_pool", "cpuid"),
    "pp_system_recycle_stats": ("struct page_pool", "cpuid"),
}
# Globals that a later kernel replaced: since Linux kernel commit 22c62b9a84b8
# ("timekeeping: Introduce auxiliary timekeepers") (in v6.17), tk_core is an
# element of timekeeper_data[].
# And since Linux kernel commit aa70d2d16f28 ("net: move skbuff_cache(s) to
# net_hotdata") (in v6.10) the skb slab caches are net_hotdata's.
GLOBAL_UNLESS = {
    "tk_core": "enum timekeeper_ids",
    "skbuff_head_cache": "struct net_hotdata",
    "skbuff_fclone_cache": "struct net_hotdata",
}


def has_type(prog, name):
    try:
        prog.type(name)
        return True
    except LookupError:
        return False


def contains_member(type_, names):
    for member in type_.unaliased().members:
        if member.name in names:
            return True
        if member.name is None and contains_member(member.type, names):
            return True
    return False


class HeaderWriter:
    def __init__(self, prog, overrides=None, drops=(), excludes=()):
        self.prog = prog
        self.overrides = overrides or {}
        self.drops = set(drops)
        # types (struct/enum keys, typedef names) a kernel older than the
        # input does not have yet
        self.excludes = set(excludes)
        self.definitions = []  # C text, in dependency order
        self.done = set()
        self.forward = set()
        self.asserts = []

    # -- declarators -------------------------------------------------------

    def decl(self, type_, inner, by_value):
        qual = ""
        if type_.qualifiers & Qualifiers.CONST:
            qual += "const "
        if type_.qualifiers & Qualifiers.VOLATILE:
            qual += "volatile "
        kind = type_.kind
        if kind == TypeKind.POINTER:
            inner = "*" + inner
            if type_.type.kind in (TypeKind.ARRAY, TypeKind.FUNCTION):
                inner = "(" + inner + ")"
            return self.decl(type_.type, inner, False)
        if kind == TypeKind.ARRAY:
            length = "" if type_.length is None else str(type_.length)
            return self.decl(type_.type, f"{inner}[{length}]", True)
        if kind == TypeKind.FUNCTION:
            params = ", ".join(self.decl(p.type, "", False) for p in type_.parameters)
            if type_.is_variadic:
                params += ", ..."
            return self.decl(type_.type, f"{inner}({params or 'void'})", False)
        return f"{qual}{self.base_name(type_, by_value)} {inner}".rstrip()

    def base_name(self, type_, by_value):
        kind = type_.kind
        if kind == TypeKind.VOID:
            return "void"
        if kind in (TypeKind.INT, TypeKind.BOOL, TypeKind.FLOAT):
            return type_.name
        if kind == TypeKind.TYPEDEF:
            self.typedef(type_)
            if by_value:
                self.require_complete(type_.type)
            return type_.name
        if kind == TypeKind.ENUM:
            if type_.tag is None:
                return self.enum_body(type_)
            self.enum(type_)
            return f"enum {type_.tag}"
        if kind in COMPOUND:
            keyword = "struct" if kind == TypeKind.STRUCT else "union"
            if type_.tag is None:
                return f"{keyword} {{\n{self.body(type_, spec.ALL, 2)}\n\t}}"
            if by_value:
                self.require_complete(type_)
            else:
                self.forward.add(f"{keyword} {type_.tag}")
            return f"{keyword} {type_.tag}"
        raise ValueError(f"cannot spell {type_}")

    def require_complete(self, type_):
        while type_.kind == TypeKind.TYPEDEF:
            self.typedef(type_)
            type_ = type_.type
        if type_.kind == TypeKind.ARRAY:
            return self.require_complete(type_.type)
        if type_.kind in COMPOUND and type_.tag is not None:
            self.compound(type_)
        elif type_.kind == TypeKind.ENUM and type_.tag is not None:
            self.enum(type_)

    # -- definitions -------------------------------------------------------

    def typedef(self, type_):
        key = "typedef " + type_.name
        if key in self.done:
            return
        self.done.add(key)
        text = self.decl(type_.type, type_.name, False)
        self.definitions.append(f"typedef {text};\n")

    def enum_body(self, type_):
        values = ",\n".join(
            f"\t{e.name} = {e.value}{'UL' if e.value >= 1 << 63 else ''}" for e in type_.enumerators
        )
        tag = f" {type_.tag}" if type_.tag else ""
        return f"enum{tag} {{\n{values}\n}}"

    def emit_override(self, key):
        """Emit a definition written from kernel source in place of the input's."""
        self.done.add(key)
        text = self.overrides[key]
        for other in self.overrides:
            if other not in self.done and re.search(rf"\b{re.escape(other)}\b", text):
                self.emit_override(other)
        # Types the definition embeds by value must come first.
        attribute = r"(?:__attribute__\(\(\w+(?:\(\d+\))?\)\))?"
        for used in re.findall(rf"\b((?:struct|union|enum) \w+)\s+\w+\s*{attribute}\s*[;\[]", text):
            if used != key and used not in self.done and has_type(self.prog, used):
                self.require_complete(self.prog.type(used))
        # So do the typedefs it names (spinlock_t, u16, netdevice_tracker...),
        # which the input may use nowhere else the header keeps.
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for word in sorted(set(re.findall(r"\b[A-Za-z_]\w*\b", code))):
            try:
                type_ = self.prog.type(word)
            except (LookupError, SyntaxError, ValueError):
                continue
            if type_.kind == TypeKind.TYPEDEF:
                self.require_complete(type_)
        self.definitions.append(text.strip() + "\n")

    def enum(self, type_):
        key = f"enum {type_.tag}"
        if key in self.done:
            return
        if key in self.overrides:
            return self.emit_override(key)
        self.done.add(key)
        if type_.enumerators is None:
            raise ValueError(f"{key} is incomplete in the input")
        self.definitions.append(self.enum_body(type_) + ";\n")
        self.asserts.append((f"sizeof({key})", drgn.sizeof(type_)))

    def compound(self, type_):
        keyword = "struct" if type_.kind == TypeKind.STRUCT else "union"
        key = f"{keyword} {type_.tag}"
        if key in self.done:
            return
        if key in self.overrides:
            return self.emit_override(key)
        self.done.add(key)
        if not type_.is_complete():
            self.forward.add(key)
            return
        if key in spec.STRUCTS:
            body = self.body(type_, spec.STRUCTS[key], 1, key)
        else:
            body = f"\tunsigned char __opaque[{type_.size}];"
        packed = " __attribute__((packed))" if self.needs_packing(type_, key) else ""
        self.definitions.append(f"{key} {{\n{body}\n}}{packed};\n")
        self.asserts.append((f"sizeof({key})", type_.size))

    def needs_packing(self, type_, key):
        if key not in spec.STRUCTS:
            return False
        for member in type_.members:
            if member.bit_field_size or member.type.kind == TypeKind.FUNCTION:
                continue
            try:
                align = drgn.alignof(member.type)
            except (ValueError, TypeError):
                continue
            if member.bit_offset % (8 * align):
                return True
        return False

    def kept_members(self, type_, keep):
        for member in type_.members:
            if keep is spec.ALL or member.name in keep:
                yield member, spec.ALL
            elif member.name is None and contains_member(member.type, keep):
                yield member, keep

    def body(self, type_, keep, depth, assert_root=None, base_bits=0, path=""):
        tabs = "\t" * depth
        lines = []
        cur = 0
        is_union = type_.kind == TypeKind.UNION
        members = sorted(self.kept_members(type_, keep), key=lambda mk: mk[0].bit_offset)
        for member, sub_keep in members:
            off = member.bit_offset
            member_path = f"{path}.{member.name}" if path and member.name else (member.name or path)
            if assert_root is not None and f"{assert_root}:{member_path}" in self.drops:
                continue  # dropped: this kernel version lacks it; padding takes its place
            if not is_union:
                if off < cur:
                    raise ValueError(
                        f"{type_.type_name()}.{member.name} overlaps the previous member"
                    )
                lines += self.pad(cur, off, tabs)
            anonymous_type = (
                member.type.kind in COMPOUND
                and member.type.tag is None
                and not member.type.qualifiers
            )
            if member.name is None or anonymous_type:
                keyword = "struct" if member.type.kind == TypeKind.STRUCT else "union"
                inner = self.body(
                    member.type, sub_keep, depth + 1, assert_root, base_bits + off, member_path
                )
                name = f" {member.name}" if member.name else ""
                text = f"{tabs}{keyword} {{\n{inner}\n{tabs}}}{name};"
                size = member.type.size * 8
            else:
                text = tabs + self.decl(member.type, member.name, True)
                if member.bit_field_size:
                    text += f" : {member.bit_field_size}"
                    size = member.bit_field_size
                else:
                    size = self.bits_of(member.type)
                    if assert_root is not None and size:
                        self.asserts.append(
                            (
                                f"__builtin_offsetof({assert_root}, {member_path})",
                                (base_bits + off) // 8,
                            )
                        )
                text += ";"
            lines.append(text)
            cur = max(cur, off + size) if not is_union else max(cur, size)
        total = type_.size * 8
        if is_union:
            if cur < total:
                lines.append(f"{tabs}unsigned char __size[{total // 8}];")
        else:
            lines += self.pad(cur, total, tabs)
        return "\n".join(lines)

    @staticmethod
    def bits_of(type_):
        try:
            return drgn.sizeof(type_) * 8
        except TypeError:  # flexible array member
            return 0

    @staticmethod
    def pad(cur, off, tabs):
        lines: List[str] = []
        if off <= cur:
            return lines
        if cur % 8:
            fill = min(8 - cur % 8, off - cur)
            lines.append(f"{tabs}unsigned char : {fill};")
            cur += fill
        if off - cur >= 8:
            lines.append(f"{tabs}unsigned char __pad_{cur // 8}[{(off - cur) // 8}];")
            cur += (off - cur) // 8 * 8
        if off > cur:
            lines.append(f"{tabs}unsigned char : {off - cur};")
        return lines

    # -- globals -----------------------------------------------------------

    def has_member(self, type_name, member):
        """Whether the header's ``type_name`` (an override's, or the input's) has ``member``."""
        if type_name in self.overrides:
            return re.search(rf"\b{re.escape(member)}\b", self.overrides[type_name]) is not None
        return has_type(self.prog, type_name) and contains_member(
            self.prog.type(type_name), {member}
        )

    def global_type(self, name):
        if GLOBAL_NEEDS.get(name) in self.excludes:
            return None
        if name in GLOBAL_NEEDS_MEMBER and not self.has_member(*GLOBAL_NEEDS_MEMBER[name]):
            return None
        try:
            return self.prog.object(name).type_
        except (LookupError, ValueError):
            pass
        # An override can bring a subsystem the input lacks (io_uring zcrx
        # for linux-6.16 over the 6.12 DWARF).
        need = GLOBAL_NEEDS.get(name)
        if need and not has_type(self.prog, need) and need not in self.overrides:
            return None
        if name in GLOBAL_UNLESS and has_type(self.prog, GLOBAL_UNLESS[name]):
            return None
        return global_type(self.prog, name)


def parse_overrides(text):
    """Top-level ``struct X {...};`` / ``enum X {...};`` definitions, by key."""
    overrides = {}
    for match in re.finditer(r"^((?:struct|union|enum) \w+) \{.*?^\};", text, re.M | re.S):
        overrides[match[1]] = match[0]
    return overrides


def generate(
    prog, name, source, overrides=None, drops=(), excludes=(), arch="x86_64", page_shift=12
):
    writer = HeaderWriter(prog, overrides, drops, excludes)
    for key in spec.STRUCTS:
        if key in writer.excludes:
            continue
        try:
            type_ = prog.type(key)
        except LookupError:
            continue  # this kernel has no such struct (e.g. no io_uring zcrx)
        if type_.kind == TypeKind.TYPEDEF:
            writer.typedef(type_)
            writer.require_complete(type_)
        else:
            writer.compound(type_)
    for key in writer.overrides:
        if key not in writer.done:
            writer.emit_override(key)
    for key in spec.TYPEDEFS:
        if key in writer.excludes:
            continue
        try:
            writer.typedef(prog.type(key))
        except LookupError:
            continue
    for key in spec.ENUMS:
        if key in writer.excludes:
            continue
        try:
            writer.enum(prog.type(key))
        except LookupError:
            continue
    globals_ = []
    for gname in spec.GLOBALS:
        if spec.ARCH_GLOBALS.get(gname, arch) != arch:
            continue
        type_ = writer.global_type(gname)
        if type_ is not None:
            globals_.append((gname, writer.decl(type_, gname, True)))

    guard = "NETMEM_LAYOUT_" + "".join(c if c.isalnum() else "_" for c in name).upper()
    out = [
        f"/* netmem-probe fixture layout: {name}",
        " *",
        f" * Offsets from: {source}",
        " * Generated by scripts/layouts/gen_layout_header.py; every kept member sits",
        " * at the kernel's offset and the asserts below make gcc check it.",
        " */",
    ]
    if (arch, page_shift) != ("x86_64", 12):
        out.append(f"/* netmem-machine: {arch} page-shift={page_shift} */")
    out += [
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
    ]
    out += sorted(f"{fwd};" for fwd in writer.forward)
    out.append("")
    out += writer.definitions
    for expr, value in writer.asserts:
        out.append(f'_Static_assert({expr} == {value}, "{expr}");')
    out.append("")
    for gname, text in globals_:
        percpu = " percpu" if gname in spec.PERCPU_GLOBALS else ""
        source_file = spec.ARCH_SOURCES.get(arch, {}).get(gname, spec.GLOBALS[gname])
        out.append(f"/* netmem-global: {gname} {source_file}{percpu} */")
        out.append(f"extern {text};")
    out += ["", f"#endif /* {guard} */", ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument(
        "--types",
        required=True,
        action="append",
        help="ELF with the kernel's DWARF; repeat for modules' .ko.debug (drivers' ring layouts)",
    )
    parser.add_argument("--name", required=True, help="layout name, e.g. linux-7.3")
    parser.add_argument("--source", required=True, help="where the offsets came from")
    parser.add_argument(
        "--override",
        help="C file of definitions taken from kernel source "
        "that replace the input's (for versions without a debug vmlinux)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="TYPE",
        help="a type of the input the kernel at hand does not have yet "
        "(struct net_iov, netmem_ref); its globals go too",
    )
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="TYPE:MEMBER",
        help="leave out a member this version does not have (becomes padding)",
    )
    parser.add_argument(
        "--page-shift",
        type=int,
        default=12,
        help="the kernel's PAGE_SHIFT (CONFIG_PAGE_SHIFT of its config)",
    )
    args = parser.parse_args()
    arch = elf_arch(args.types[0])  # the vmlinux's
    prog = Program(drgn.host_platform)
    for i, path in enumerate(args.types):
        prog.extra_module(f"kernel-types-{i}", create=True).try_file(path, force=True)
    overrides = parse_overrides(open(args.override).read()) if args.override else None
    sys.stdout.write(
        generate(
            prog, args.name, args.source, overrides, args.drop, args.exclude, arch, args.page_shift
        )
    )


def elf_arch(path):
    """``x86_64`` or ``aarch64``, from the ELF header's e_machine."""
    with open(path, "rb") as f:
        head = f.read(20)
    machine = int.from_bytes(head[18:20], "little")
    arches = {62: "x86_64", 183: "aarch64"}
    if head[:4] != b"\x7fELF" or machine not in arches:
        sys.exit(f"gen_layout_header: {path}: not an x86-64 or aarch64 ELF file")
    return arches[machine]


if __name__ == "__main__":
    main()
