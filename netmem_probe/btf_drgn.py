# SPDX-License-Identifier: GPL-2.0-or-later

"""
BTF types for drgn
------------------

The drgn types of a :class:`~netmem_probe.btf.Btf`, built on demand: a type
finder (:func:`add_btf_type_finder`) and an object finder for enumerators,
variables and functions (:func:`add_btf_object_finder`), so that drgn and its
helpers work on hosts and crash dumps that have no DWARF debugging
information.
"""

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from drgn import (
    FindObjectFlags,
    Object,
    PlatformFlags,
    Program,
    Qualifiers,
    Type,
    TypeEnumerator,
    TypeKind,
    TypeKindSet,
    TypeMember,
    TypeParameter,
    sizeof,
)

from netmem_probe.btf import (
    BTF_INT_BOOL,
    BTF_INT_SIGNED,
    MAX_REFERENCE_DEPTH,
    Btf,
    BtfError,
    BtfKind,
    BtfMember,
    BtfType,
    canonical_int_name,
)

__all__ = ("BtfTypeFinder", "add_btf_object_finder", "add_btf_type_finder")


class BtfTypeFinder:
    """
    The drgn types of one BTF in one program, built on demand and cached per
    type id. It is also the type finder callback that
    :func:`add_btf_type_finder()` registers.

    Name lookups prefer complete definitions over forward declarations (a
    ``FWD``, or an enum without enumerators), and this BTF's own types over its
    base's. When BTF deduplication has left
    several different definitions with the same name, the one with the lowest
    type id wins. BTF records no file names, so the finder ignores the filename
    drgn passes.
    """

    def __init__(self, prog: Program, btf: Btf) -> None:
        self.prog = prog
        self.btf = btf
        self._base = _type_finder_for(prog, btf.base) if btf.base is not None else None
        self._types: Dict[int, Type] = {}
        self._building: List[int] = []

    @property
    def built_count(self) -> int:
        """Number of drgn types built so far for this BTF's own type ids."""
        return len(self._types)

    def __call__(
        self, prog: Program, kinds: TypeKindSet, name: str, filename: Optional[str]
    ) -> Optional[Type]:
        return self.find(kinds, name)

    def find(self, kinds: Iterable[TypeKind], name: str) -> Optional[Type]:
        """
        Return the drgn type called *name* of one of the drgn *kinds* (the
        name without a ``struct``/``union``/``enum`` keyword), or ``None``.
        """
        type_id = self.find_id(kinds, name)
        return None if type_id is None else self.type(type_id)

    def find_id(self, kinds: Iterable[TypeKind], name: str) -> Optional[int]:
        """Return the BTF type id that :meth:`find()` would use, or ``None``."""
        best: Optional[Tuple[bool, bool, int]] = None
        for kind in kinds:
            for btf_kind, matches in _BTF_KINDS_FOR.get(kind, ()):
                for type_id in self.btf.find_types(name, (btf_kind,)):
                    if not matches(self.btf, type_id):
                        continue
                    rank = (
                        _is_declaration(self.btf, type_id),
                        type_id < self.btf.first_id,
                        type_id,
                    )
                    if best is None or rank < best:
                        best = rank
        return None if best is None else best[2]

    def type(self, type_id: int) -> Type:
        """
        Return the drgn type for a BTF type id (0 is void).

        :raises BtfError: if the type or a type it needs is malformed, or is
            not a data type (``VAR``, ``DATASEC``, ``DECL_TAG``).
        :raises ValueError: if the program has no platform yet, so neither
            byte order nor pointer size is known.
        """
        if type_id == 0:
            return self.prog.void_type()
        if self.prog.platform is None:
            raise ValueError(
                "program has no platform: open a core dump or kernel, or create "
                "Program(platform), before building types from BTF"
            )
        if type_id < self.btf.first_id and self._base is not None:
            return self._base.type(type_id)
        cached = self._types.get(type_id)
        if cached is not None:
            return cached
        if type_id in self._building:
            raise BtfError(f"type id {type_id}: reference cycle through {self._chain()}")
        if len(self._building) >= MAX_REFERENCE_DEPTH:
            raise BtfError(f"type id {type_id}: reference chain longer than {MAX_REFERENCE_DEPTH}")
        self._building.append(type_id)
        try:
            result = self._build(self.btf.type(type_id))
        finally:
            self._building.pop()
        self._types[type_id] = result
        return result

    def _chain(self) -> str:
        return " -> ".join(str(type_id) for type_id in self._building)

    def _build(self, t: BtfType) -> Type:
        builder = _BUILDERS.get(t.kind)
        if builder is None:
            raise BtfError(f"type id {t.id} is a {t.kind.name}, not a data type")
        return builder(self, t)

    def _build_int(self, t: BtfType) -> Type:
        # The kernel's BTF verifier enforces the same limits.
        if t.size not in (1, 2, 4, 8, 16):
            raise BtfError(f"type id {t.id}: INT size {t.size} is not 1, 2, 4, 8 or 16")
        if t.int_bits + t.int_offset > t.size * 8:
            raise BtfError(
                f"type id {t.id}: INT bits {t.int_bits} at offset {t.int_offset} "
                f"do not fit in {t.size} bytes"
            )
        if t.int_encoding & BTF_INT_BOOL:
            return self.prog.bool_type(t.name, t.size)
        return self.prog.int_type(
            canonical_int_name(t.name), t.size, bool(t.int_encoding & BTF_INT_SIGNED)
        )

    def _build_float(self, t: BtfType) -> Type:
        if t.size not in (2, 4, 8, 12, 16):
            raise BtfError(f"type id {t.id}: FLOAT size {t.size} is not 2, 4, 8, 12 or 16")
        return self.prog.float_type(t.name, t.size)

    def _build_ptr(self, t: BtfType) -> Type:
        return self.prog.pointer_type(self.type(t.type))

    def _build_array(self, t: BtfType) -> Type:
        assert t.array is not None
        element = self.type(t.array.type)
        try:
            sizeof(element)
        except TypeError as e:
            # void, function or incomplete elements; drgn would fail later,
            # on first use of a member of this array type.
            raise BtfError(f"type id {t.id}: array element has no size ({e})") from None
        return self.prog.array_type(element, t.array.nelems)

    def _build_compound(self, t: BtfType) -> Type:
        for m in t.members:
            # drgn can only address whole bytes outside bit fields.
            if m.bit_offset % 8 and not self._bit_field_size(t, m):
                raise BtfError(
                    f"type id {t.id}: member {m.name!r} at bit {m.bit_offset} is not "
                    "byte-aligned and not a bit field"
                )
        members = [
            TypeMember(self._member_thunk(t, m), m.name or None, m.bit_offset) for m in t.members
        ]
        if t.kind == BtfKind.STRUCT:
            return self.prog.struct_type(t.name or None, t.size, members)
        return self.prog.union_type(t.name or None, t.size, members)

    def _member_thunk(self, t: BtfType, member: BtfMember) -> Callable[[], Union[Type, Object]]:
        # drgn calls this the first time the member's type is needed, so
        # looking up a structure never builds the types of its members.
        def thunk() -> Union[Type, Object]:
            member_type = self.type(member.type)
            bit_field_size = self._bit_field_size(t, member)
            if not bit_field_size:
                return member_type
            try:
                return Object(self.prog, member_type, bit_field_size=bit_field_size)
            except ValueError as e:
                raise BtfError(
                    f"type id {t.id}: member {member.name!r} bit field of "
                    f"{bit_field_size} bits: {e}"
                ) from None

        return thunk

    def _bit_field_size(self, t: BtfType, member: BtfMember) -> int:
        """
        Return the bit field size of a member, or 0. Structures with
        ``kind_flag`` encode it in the member; the others in an ``INT`` member
        type narrower than its size (``BTF_INT_BITS``).
        """
        if t.kind_flag:
            return member.bit_field_size
        int_type = self.btf.type(self._skip_typedefs(member.type))
        if int_type.kind != BtfKind.INT or int_type.int_bits == int_type.size * 8:
            return 0
        if int_type.int_offset:
            # Neither pahole nor LLVM emits this; drgn's member offset is
            # fixed before member types are resolved.
            raise BtfError(
                f"type id {t.id}: member {member.name!r} uses an INT bit offset, "
                "which is not supported"
            )
        return int_type.int_bits

    def _skip_typedefs(self, type_id: int) -> int:
        for _ in range(MAX_REFERENCE_DEPTH):
            kind = self.btf.kind(type_id)
            if kind not in _ALIAS_KINDS:
                return type_id
            type_id = self.btf.type(type_id).type
        raise BtfError(f"type id {type_id}: typedef/qualifier chain too long or cyclic")

    def _build_enum(self, t: BtfType) -> Type:
        if not t.enumerators:
            # libbpf encodes "enum foo;" as an enum without enumerators.
            definition = self.find_id((TypeKind.ENUM,), t.name)
            if definition is not None and self.btf.type(definition).enumerators:
                return self.type(definition)
            return self.prog.enum_type(t.name or None)
        compatible = self._enum_compatible_type(t)
        bits = t.size * 8
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if t.kind_flag else (0, 1 << bits)
        for e in t.enumerators:
            if not low <= e.value < high:
                raise BtfError(
                    f"type id {t.id}: enumerator {e.name!r} value {e.value} does not fit "
                    f"in {t.size} bytes"
                )
        enumerators = [TypeEnumerator(e.name, e.value) for e in t.enumerators]
        return self.prog.enum_type(t.name or None, compatible, enumerators)

    def _enum_compatible_type(self, t: BtfType) -> Type:
        names = _INT_NAMES_BY_SIZE.get(t.size)
        if names is None:
            raise BtfError(f"type id {t.id}: enum size {t.size} is not 1, 2, 4 or 8")
        platform = self.prog.platform
        assert platform is not None  # checked by type()
        if t.size == 8 and not platform.flags & PlatformFlags.IS_64_BIT:
            names = ("long long", "unsigned long long")
        # Since the ENUM64 patches (Linux 6.0, pahole 1.24), kind_flag marks
        # signed enums; older BTF leaves it 0, so its negative values read as
        # large unsigned ones.
        if t.kind_flag:
            return self.prog.int_type(names[0], t.size, True)
        return self.prog.int_type(names[1], t.size, False)

    def _build_fwd(self, t: BtfType) -> Type:
        # A declaration-only type in one place may be defined elsewhere (BTF
        # deduplication does not always merge them); use the definition.
        kind = TypeKind.UNION if t.kind_flag else TypeKind.STRUCT
        definition = self.find_id((kind,), t.name)
        if definition is not None and self.btf.kind(definition) != BtfKind.FWD:
            return self.type(definition)
        if t.kind_flag:
            return self.prog.union_type(t.name or None)
        return self.prog.struct_type(t.name or None)

    def _build_typedef(self, t: BtfType) -> Type:
        return self.prog.typedef_type(t.name, self.type(t.type))

    def _build_qualified(self, t: BtfType) -> Type:
        target = self.type(t.type)
        return target.qualified(target.qualifiers | _QUALIFIERS[t.kind])

    def _build_type_tag(self, t: BtfType) -> Type:
        # Type tags (__user, __rcu, __percpu) have no drgn equivalent.
        return self.type(t.type)

    def _build_func_proto(self, t: BtfType) -> Type:
        params = list(t.params)
        variadic = bool(params) and params[-1].type == 0
        if variadic:
            params.pop()
        for param in params:
            if param.type == 0:
                raise BtfError(f"type id {t.id}: void parameter before the last one")
        return self.prog.function_type(
            self.type(t.type),
            [TypeParameter(self._param_thunk(p.type), p.name or None) for p in params],
            variadic,
        )

    def _param_thunk(self, type_id: int) -> Callable[[], Type]:
        return lambda: self.type(type_id)

    def _build_func(self, t: BtfType) -> Type:
        if self.btf.kind(t.type) != BtfKind.FUNC_PROTO:
            raise BtfError(f"type id {t.id}: FUNC {t.name!r} does not refer to a FUNC_PROTO")
        return self.type(t.type)


_ALIAS_KINDS = frozenset(
    (
        BtfKind.TYPEDEF,
        BtfKind.VOLATILE,
        BtfKind.CONST,
        BtfKind.RESTRICT,
        BtfKind.TYPE_TAG,
    )
)

_QUALIFIERS = {
    BtfKind.CONST: Qualifiers.CONST,
    BtfKind.VOLATILE: Qualifiers.VOLATILE,
    BtfKind.RESTRICT: Qualifiers.RESTRICT,
}

# (signed, unsigned) C names of an enum's compatible type, by size (LP64).
_INT_NAMES_BY_SIZE = {
    1: ("signed char", "unsigned char"),
    2: ("short", "unsigned short"),
    4: ("int", "unsigned int"),
    8: ("long", "unsigned long"),
}

_BUILDERS: Dict[BtfKind, Callable[[BtfTypeFinder, BtfType], Type]] = {
    BtfKind.INT: BtfTypeFinder._build_int,
    BtfKind.FLOAT: BtfTypeFinder._build_float,
    BtfKind.PTR: BtfTypeFinder._build_ptr,
    BtfKind.ARRAY: BtfTypeFinder._build_array,
    BtfKind.STRUCT: BtfTypeFinder._build_compound,
    BtfKind.UNION: BtfTypeFinder._build_compound,
    BtfKind.ENUM: BtfTypeFinder._build_enum,
    BtfKind.ENUM64: BtfTypeFinder._build_enum,
    BtfKind.FWD: BtfTypeFinder._build_fwd,
    BtfKind.TYPEDEF: BtfTypeFinder._build_typedef,
    BtfKind.VOLATILE: BtfTypeFinder._build_qualified,
    BtfKind.CONST: BtfTypeFinder._build_qualified,
    BtfKind.RESTRICT: BtfTypeFinder._build_qualified,
    BtfKind.TYPE_TAG: BtfTypeFinder._build_type_tag,
    BtfKind.FUNC_PROTO: BtfTypeFinder._build_func_proto,
    BtfKind.FUNC: BtfTypeFinder._build_func,
}


def _is_any(btf: Btf, type_id: int) -> bool:
    return True


def _is_declaration(btf: Btf, type_id: int) -> bool:
    """Whether a type only declares a name: a FWD, or an enum without enumerators."""
    kind = btf.kind(type_id)
    if kind in (BtfKind.ENUM, BtfKind.ENUM64):
        return not btf.type(type_id).enumerators
    return kind == BtfKind.FWD


def _is_bool(btf: Btf, type_id: int) -> bool:
    return bool(btf.type(type_id).int_encoding & BTF_INT_BOOL)


# For each drgn kind a finder is asked for: the BTF kinds that can answer, and
# a test that the BTF type really is of that drgn kind.
_BTF_KINDS_FOR: Dict[TypeKind, Sequence[Tuple[BtfKind, Callable[[Btf, int], bool]]]] = {
    TypeKind.STRUCT: (
        (BtfKind.STRUCT, _is_any),
        (BtfKind.FWD, lambda btf, type_id: not btf.kind_flag(type_id)),
    ),
    TypeKind.UNION: (
        (BtfKind.UNION, _is_any),
        (BtfKind.FWD, Btf.kind_flag),
    ),
    TypeKind.ENUM: ((BtfKind.ENUM, _is_any), (BtfKind.ENUM64, _is_any)),
    TypeKind.TYPEDEF: ((BtfKind.TYPEDEF, _is_any),),
    TypeKind.INT: ((BtfKind.INT, lambda btf, type_id: not _is_bool(btf, type_id)),),
    TypeKind.BOOL: ((BtfKind.INT, _is_bool),),
    TypeKind.FLOAT: ((BtfKind.FLOAT, _is_any),),
}


def _type_finder_for(prog: Program, btf: Btf) -> BtfTypeFinder:
    """
    Return the one :class:`BtfTypeFinder` of *btf* in *prog*, so that a
    module's finder and vmlinux's finder share the drgn types of vmlinux.
    """
    # The finder holds a reference to btf, so id(btf) stays unique while the
    # cache entry exists.
    key = ("netmem_probe.btf_drgn", id(btf))
    finder = prog.cache.get(key)
    if finder is None:
        finder = prog.cache[key] = BtfTypeFinder(prog, btf)
    return finder


def add_btf_type_finder(
    prog: Program, btf: Btf, *, name: str = "btf", enable_index: Optional[int] = 0
) -> BtfTypeFinder:
    """
    Register and enable a type finder that answers drgn type lookups from BTF.

    :param prog: Program to add the finder to.
    :param btf: Parsed BTF; a split BTF also answers lookups from its base.
    :param name: Finder name (must be unique among the program's type finders).
    :param enable_index: Where to insert the finder among the enabled ones
        (0 puts it first, -1 last, ``None`` registers it without enabling it).
    :return: The finder, whose :meth:`~BtfTypeFinder.type()` maps BTF type ids
        to drgn types.
    :raises BtfError: if the BTF's byte order is not the program's.
    """
    _check_byteorder(prog, btf)
    finder = _type_finder_for(prog, btf)
    prog.register_type_finder(name, finder, enable_index=enable_index)
    return finder


def add_btf_object_finder(
    prog: Program,
    btf: Btf,
    symbol_lookup: Optional[Callable[[str], Optional[int]]] = None,
    *,
    var_type: Optional[Callable[[Program, str], Optional[Type]]] = None,
    name: str = "btf",
    enable_index: Optional[int] = 0,
) -> None:
    """
    Register and enable an object finder that answers from BTF:

    - constants: enumerators, as values of their enum type (``prog["PGTY_netpp"]``);
    - variables: a BTF ``VAR``'s type (else ``var_type(prog, name)``) at the
      address ``symbol_lookup(name)`` gives;
    - functions: a BTF ``FUNC``'s type at the address ``symbol_lookup(name)`` gives.

    :param symbol_lookup: Callable returning the address of a symbol, or ``None``
        if it is unknown. Without it only constants are found. With kallsyms
        (:func:`drgn.helpers.linux.kallsyms.load_vmlinux_kallsyms()` returns a
        :class:`drgn.SymbolIndex` to register as a symbol finder), it can be::

            def symbol_lookup(name):
                try:
                    return prog.symbol(name).address
                except LookupError:
                    return None

    :param var_type: Callable returning the type of a variable that the BTF
        has no ``VAR`` for, or ``None`` if it does not know it. A kernel's BTF
        describes only its per-CPU variables, so the other globals need it.
    :param name: Finder name (must be unique among the program's object finders).
    :param enable_index: As for :func:`add_btf_type_finder()`.
    :raises BtfError: if the BTF's byte order is not the program's.
    """
    _check_byteorder(prog, btf)
    types = _type_finder_for(prog, btf)

    def find_object(
        prog: Program, name: str, flags: FindObjectFlags, filename: Optional[str]
    ) -> Optional[Object]:
        try:
            return lookup(prog, name, flags)
        except (ValueError, TypeError, OverflowError) as e:
            # drgn refused an object of a malformed type (a VAR of type void).
            raise BtfError(f"object {name!r}: {e}") from None

    def lookup(prog: Program, name: str, flags: FindObjectFlags) -> Optional[Object]:
        if flags & FindObjectFlags.CONSTANT:
            found = btf.find_enumerator(name)
            if found is not None:
                return Object(prog, types.type(found[0]), found[1])
        if symbol_lookup is None:
            return None
        if flags & FindObjectFlags.VARIABLE:
            var = btf.find_var(name)
            type_ = types.type(var.type) if var is not None else None
            if type_ is None and var_type is not None:
                type_ = var_type(prog, name)
            if type_ is not None:
                address = symbol_lookup(name)
                if address is not None:
                    return Object(prog, type_, address=address)
        if flags & FindObjectFlags.FUNCTION:
            func_ids = btf.find_types(name, (BtfKind.FUNC,))
            if func_ids:
                address = symbol_lookup(name)
                if address is not None:
                    return Object(prog, types.type(func_ids[0]), address=address)
        return None

    prog.register_object_finder(name, find_object, enable_index=enable_index)


def _check_byteorder(prog: Program, btf: Btf) -> None:
    platform = prog.platform
    if platform is None:
        return
    little = bool(platform.flags & PlatformFlags.IS_LITTLE_ENDIAN)
    if (btf.byteorder == "little") != little:
        raise BtfError(
            f"BTF is {btf.byteorder}-endian but the program is "
            f"{'little' if little else 'big'}-endian"
        )
