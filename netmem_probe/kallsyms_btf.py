"""
Kernel types from BTF and symbols from kallsyms: a Program for a kernel or a
core dump that has no debug info.

Every kernel built with ``CONFIG_DEBUG_INFO_BTF`` carries its own types
(``/sys/kernel/btf/vmlinux``; in memory between ``__start_BTF`` and
``__stop_BTF``), and drgn reads its symbol table from ``/proc/kallsyms`` or,
in a dump, from the kallsyms tables VMCOREINFO locates (Linux 6.0+).  Types
come from :mod:`netmem_probe.btf`; global variables are placed at their
kallsyms address, typed by their BTF ``VAR`` (per-CPU variables) or else by
:data:`netmem_probe.kernel.globals.GLOBAL_TYPES`.  Functions and enumerators
come from BTF too, so drgn's own ``linux`` object finder (``vmemmap`` from
``vmemmap_populate`` and ``mem_section``, ``PAGE_SHIFT``, ...) keeps working.
Module symbols, and the types of modules (their split BTF, ``mod->btf_data``),
are read from the kernel's module list when first needed.

BTF carries no build ID, so before it is used its sizes and offsets are checked
against the ``SIZE(...)`` and ``OFFSET(...)`` lines of the kernel's VMCOREINFO
(``struct page``, ``struct zone``, ``pglist_data``, the printk ring buffer):
BTF of another kernel or configuration is refused rather than misread.
"""

import re
from typing import Callable, List, Optional

import drgn
from drgn import Program

from netmem_probe.btf import (
    Btf,
    BtfError,
    parse_btf,
    read_btf_from_elf,
)
from netmem_probe.btf_drgn import BtfTypeFinder, add_btf_object_finder, add_btf_type_finder
from netmem_probe.kernel.globals import global_type
from netmem_probe.kernel.statics import loaded_modules
from netmem_probe.kernel.walk import list_nodes

__all__ = ("LIVE_BTF", "KernelBtfError", "add_kernel_btf", "load_btf_file", "use_btf_and_kallsyms")

LIVE_BTF = "/sys/kernel/btf/vmlinux"
# A vmlinux's BTF is 5-6 MiB; far more means a corrupt dump or the wrong file.
_MAX_BTF_SIZE = 256 << 20
# Far beyond any real kernel's (a few hundred modules, 30,000 symbols for
# the largest); past them the module list or a module is corrupt.
_MAX_MODULES = 1 << 14
_MAX_MODULE_SYMBOLS = 1 << 20
# The largest module BTF of a Debian kernel is under 1 MiB.
_MAX_MODULE_BTF_SIZE = 16 << 20


class KernelBtfError(Exception):
    """No usable BTF or kallsyms. The message is one line."""


def load_btf_file(path: str) -> Btf:
    """
    Parse a BTF file: raw BTF (``/sys/kernel/btf/vmlinux``) or an ELF file
    with a ``.BTF`` section (a vmlinux or kernel image).

    :raises KernelBtfError: if it cannot be read or is not BTF.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head == b"\x7fELF":
                data = read_btf_from_elf(path)
            else:
                data = head + f.read(_MAX_BTF_SIZE)
        if len(data) > _MAX_BTF_SIZE:
            raise KernelBtfError(f"BTF {path} is larger than {_MAX_BTF_SIZE >> 20} MiB")
        return parse_btf(data)
    except BtfError as e:
        # The ELF reader's errors name the file already.
        text = str(e)
        raise KernelBtfError(
            text if text.startswith(f"{path}:") else f"BTF {path}: {text}"
        ) from None
    except OSError as e:
        raise KernelBtfError(f"cannot read BTF {path}: {e.strerror or e}") from None


def add_kernel_btf(
    prog: Program, btf: Btf, symbols: Optional[drgn.SymbolIndex] = None, where: str = "BTF"
) -> None:
    """
    Make BTF the program's type source, and with ``symbols`` (kallsyms) its
    symbol table and its source of global variables and functions.  The
    finders go after drgn's own, which then keep answering what they know.

    :param where: names the BTF in errors.
    :raises KernelBtfError: if a kernel program's VMCOREINFO states a size
        or offset the BTF contradicts, or the BTF does not suit the program.
    """
    lookup = None
    if symbols is not None:
        prog.register_symbol_finder("kallsyms", symbols, enable_index=-1)
        prog.register_symbol_finder("module_kallsyms", _ModuleKallsyms(), enable_index=-1)
        lookup = _symbol_lookup(prog, symbols)
    try:
        add_btf_type_finder(prog, btf, enable_index=-1)
        if symbols is not None:
            prog.register_type_finder("module_btf", _ModuleBtf(btf), enable_index=-1)
        add_btf_object_finder(prog, btf, lookup, var_type=global_type, enable_index=-1)
        if prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
            _check_vmcoreinfo_layout(prog, where)
    except BtfError as e:
        raise KernelBtfError(f"{where}: {e}") from None


def use_btf_and_kallsyms(prog: Program, btf_path: Optional[str] = None) -> str:
    """
    Give a live or core-dump kernel Program (opened, without debug info) its
    symbols from kallsyms and its types from BTF: the file ``btf_path``, else
    the kernel's own (``/sys/kernel/btf/vmlinux`` live, the dump's memory
    otherwise).

    :return: where the types and symbols came from, for a note to the user.
    :raises KernelBtfError: with a one-line reason.
    """
    live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE)
    index = _load_kallsyms(prog, live)
    if btf_path is not None:
        btf, where = load_btf_file(btf_path), btf_path
    elif live:
        btf, where = load_btf_file(LIVE_BTF), LIVE_BTF
    else:
        btf, where = _btf_in_memory(prog, _symbol_lookup(prog, index)), "the dump's memory"
    add_kernel_btf(prog, btf, index, f"BTF from {where}")
    return f"types from BTF ({where}), symbols from {'/proc/kallsyms' if live else 'kallsyms'}"


_VMCOREINFO_LAYOUT = re.compile(r"^(SIZE|OFFSET)\((\w+)(?:\.([\w.]+))?\)=(\d+)$", re.M)


def _check_vmcoreinfo_layout(prog: Program, what: str) -> None:
    """Refuse BTF whose sizes and offsets differ from what VMCOREINFO states."""
    vmcoreinfo = prog["VMCOREINFO"].string_().decode(errors="replace")
    for kind, name, member, value in _VMCOREINFO_LAYOUT.findall(vmcoreinfo):
        type_ = _vmcoreinfo_type(prog, name)
        if type_ is None or (kind == "OFFSET") != bool(member):
            continue  # a type this BTF lacks (or a malformed line) is no evidence
        try:
            have = str(drgn.offsetof(type_, member) if kind == "OFFSET" else drgn.sizeof(type_))
        except (LookupError, TypeError, ValueError):
            have = "no such member"
        if have != value:
            label = f"{kind}({name}{'.' + member if member else ''})"
            raise KernelBtfError(
                f"{what} is not this kernel's: VMCOREINFO has {label}={value}, the BTF {have}"
            )


def _vmcoreinfo_type(prog: Program, name: str) -> Optional[drgn.Type]:
    # VMCOREINFO names structures by tag (page, zone) and typedefs by name
    # (nodemask_t, atomic_long_t).
    for spelling in (f"struct {name}", name):
        try:
            return prog.type(spelling)
        except LookupError:
            continue
    return None


def _load_kallsyms(prog: Program, live: bool) -> drgn.SymbolIndex:
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    try:
        index = load_vmlinux_kallsyms(prog)
    except drgn.MissingDebugInfoError:
        # drgn's word for "VMCOREINFO does not locate the kallsyms tables".
        raise KernelBtfError(
            "the dump's VMCOREINFO does not locate kallsyms (Linux 6.0+ does)"
        ) from None
    except (LookupError, ValueError, OSError, drgn.FaultError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        where = "/proc/kallsyms" if live else "the kallsyms VMCOREINFO locates"
        raise KernelBtfError(f"cannot read kallsyms ({where}): {reason}") from None
    if not index(prog, "_stext", None, True):
        where = "/proc/kallsyms" if live else "the dump's kallsyms"
        raise KernelBtfError(f"{where} has no kernel symbols")
    return index


def _symbol_lookup(prog: Program, index: drgn.SymbolIndex) -> Callable[[str], Optional[int]]:
    # kallsyms records no file names, and CONFIG_KALLSYMS_ALL puts static
    # variables (page_pools) in it: the first symbol of the name wins.
    def lookup(name: str) -> Optional[int]:
        found = index(prog, name, None, True)
        return found[0].address if found else None

    return lookup


class _ModuleKallsyms:
    """
    A symbol finder for the loaded modules' symbols (what ``-s MODULE.ko.debug``
    gives identify_address()), read from the kernel's module list the first
    time vmlinux's kallsyms cannot answer: a hundred modules take a second
    that most commands never need.
    """

    def __init__(self) -> None:
        self._index: Optional[drgn.SymbolIndex] = None

    def __call__(
        self, prog: Program, name: Optional[str], address: Optional[int], one: bool
    ) -> List[drgn.Symbol]:
        if self._index is None:
            # Empty while the list is read, so that a symbol lookup made
            # meanwhile cannot start a second read.
            self._index = drgn.SymbolIndex([])
            self._index = _module_symbols(prog)
        return self._index(prog, name, address, one)


class _ModuleBtf:
    """
    A type finder for the types only modules define (a driver's private
    structs: ``struct virtnet_info``, ``struct veth_priv``), from each loaded
    module's split BTF (``mod->btf_data``, ``CONFIG_DEBUG_INFO_BTF_MODULES``),
    read from the module list the first time vmlinux's BTF cannot answer.
    """

    def __init__(self, base: Btf) -> None:
        self._base = base
        self._finders: Optional[List[BtfTypeFinder]] = None

    def __call__(
        self, prog: Program, kinds: drgn.TypeKindSet, name: str, filename: Optional[str]
    ) -> Optional[drgn.Type]:
        if self._finders is None:
            # Empty while the list is read, so that a lookup made meanwhile
            # cannot start a second read.
            self._finders = []
            self._finders = [BtfTypeFinder(prog, btf) for btf in _module_btfs(prog, self._base)]
        for finder in self._finders:
            found = finder.find(kinds, name)
            if found is not None:
                return found
        return None


def _module_btfs(prog: Program, base: Btf) -> List[Btf]:
    """
    Every loaded module's split BTF, as the BPF subsystem keeps it
    (``btf_modules``: a module's own ``btf_data`` is freed once it is loaded);
    a module whose BTF is unreadable is left out.
    """
    try:
        entry_type = prog.type("struct btf_module")
        offset = drgn.offsetof(entry_type, "list")
        head = prog.symbol("btf_modules").address
    except LookupError:
        return []
    btfs = []
    for node in list_nodes(prog, head, what="btf_modules", limit=_MAX_MODULES):
        try:
            btf = drgn.Object(prog, entry_type, address=node - offset).btf
            size = btf.data_size.value_()
            if not 0 < size <= _MAX_MODULE_BTF_SIZE:
                continue
            btfs.append(parse_btf(prog.read(btf.data.value_(), size), base=base))
        except (AttributeError, LookupError, BtfError, drgn.FaultError):
            continue
    return btfs


def _module_symbols(prog: Program) -> drgn.SymbolIndex:
    """
    Every loaded module's kallsyms, as drgn's ``load_module_kallsyms()``
    reads them, but over a bounded walk of the module list: a module that
    cannot be read, or claims an absurd symbol count, is left out.
    """
    from drgn.helpers.linux.kallsyms import module_kallsyms

    symbols: List[drgn.Symbol] = []
    for module in loaded_modules(prog):
        try:
            if module.kallsyms.num_symtab.value_() <= _MAX_MODULE_SYMBOLS:
                symbols.extend(module_kallsyms(module))
        except (
            AttributeError,
            LookupError,
            ValueError,
            UnicodeDecodeError,
            MemoryError,
            drgn.FaultError,
        ):
            continue
    return drgn.SymbolIndex(symbols)


def _btf_in_memory(prog: Program, lookup: Callable[[str], Optional[int]]) -> Btf:
    start, stop = lookup("__start_BTF"), lookup("__stop_BTF")
    if start is None or stop is None:
        raise KernelBtfError(
            "the dump's kernel has no BTF (no __start_BTF in kallsyms; CONFIG_DEBUG_INFO_BTF off)"
        )
    if not 0 < stop - start <= _MAX_BTF_SIZE:
        raise KernelBtfError(f"the dump's BTF bounds are absurd ({start:#x}-{stop:#x})")
    try:
        data = prog.read(start, stop - start)
    except drgn.FaultError as e:
        raise KernelBtfError(
            f"the dump's BTF is unreadable ({e.message} at {e.address:#x})"
        ) from None
    try:
        return parse_btf(data)
    except BtfError as e:
        raise KernelBtfError(f"the dump's BTF at {start:#x}: {e}") from None
