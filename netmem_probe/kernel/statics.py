"""
Static data
-----------

Where a word of the kernel's or a module's static data lies.  The RAM search
(:mod:`netmem_probe.kernel.search`) reads memory physically and reports a
hit at the direct-map alias of its physical address, where no symbol is: a
module's memory is mapped elsewhere (the module area, vmalloc'd), and the
kernel image at its own link address.  :class:`StaticData` maps the
physical pages of the kernel image's data (``.data``, ``.bss``, the
read-only-after-init data) and of every loaded module's memory back to their
virtual addresses, so that such a hit is named by its symbol ("pp_test:
held[3]").
"""

import bisect
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.platform import page_shift
from netmem_probe.kernel.search import direct_map_base
from netmem_probe.kernel.slab import member_at
from netmem_probe.kernel.walk import Problems, list_nodes

__all__ = ("StaticData", "StaticPlace", "loaded_modules")

#: Far beyond any real kernel's few hundred modules: past it the list is corrupt.
MAX_MODULES = 1 << 14
#: Far beyond the largest module (a few MiB): past it a region size is corrupt.
MAX_MODULE_REGION = 1 << 30
#: Far beyond the largest module's symbol table (30,000 symbols).
MAX_MODULE_SYMBOLS = 1 << 20
#: x86-64's ``__START_KERNEL_map``: the kernel image's virtual base, at
#: physical ``phys_base``.
X86_64_KERNEL_MAP = 0xFFFFFFFF80000000
#: The kernel image's static data: (region, start symbol, end symbol).
IMAGE_REGIONS = (
    ("data", "_sdata", "_edata"),
    ("bss", "__bss_start", "__bss_stop"),
    ("ro_after_init", "__start_ro_after_init", "__end_ro_after_init"),
)


@dataclass(frozen=True)
class StaticPlace:
    """A word in the kernel image's or a module's static data."""

    module: Optional[str]  # None for the kernel image
    region: str  # "data", "bss", "ro_after_init"; a module's: "data", "rodata", ...
    address: int  # the word's virtual address
    symbol: Optional[str]  # the variable ("held"); None if no symbol contains the word
    member: str  # where in it: "[3]", ".entry.next", "+0x18" (from its type, if known)
    offset: int  # from the region's start

    @property
    def owner(self) -> str:
        return f"module {self.module}" if self.module is not None else "the kernel"

    @property
    def place(self) -> str:
        """``held[3]`` (``held+0x18`` without its type); ``data+0x1a0`` without a symbol."""
        if self.symbol is not None:
            return self.symbol + self.member
        return f"{self.region}+{self.offset:#x}"

    def __str__(self) -> str:
        if self.symbol is not None:
            return f"{self.module or 'kernel'}: {self.place}"
        return f"{self.owner} {self.place}"

    @property
    def release(self) -> str:
        """Who can drop the reference (the same for every word of a variable)."""
        where = self.symbol or self.region
        if self.module is not None:
            return f"module {self.module} dropping it from its own data ({where}), or unloading"
        return f"the kernel code that owns {where} dropping it"


def loaded_modules(prog: Program, problems: Optional[Problems] = None) -> Iterator[drgn.Object]:
    """
    The loaded modules' ``struct module``, over a bounded walk of the
    ``modules`` list (a corrupt list is reported in ``problems``).  Nothing
    if the kernel has no module support (no ``modules`` or ``struct module``).
    """
    try:
        module_type = prog.type("struct module")
        offset = drgn.offsetof(module_type, "list")
        head = prog["modules"].address_
    except LookupError:
        return
    for node in list_nodes(prog, head, what="modules", problems=problems, limit=MAX_MODULES):
        yield drgn.Object(prog, module_type, address=node - offset)


def _module_regions(module: drgn.Object) -> List[Tuple[str, int, int]]:
    """
    A module's memory regions as ``(name, start, size)``: its
    ``mem[MOD_*]`` (a freed init region has no base), or before v6.4 its
    core layout split into text, rodata, ro_after_init and data, and its
    init layout.
    """
    regions = []
    # Since Linux kernel commit ac3b43283923 ("module: replace module_layout
    # with module_memory") (in v6.4).
    if module.type_.has_member("mem"):
        names = {value: name for name, value in module.prog_.type("enum mod_mem_type").enumerators}
        for i, mem in enumerate(module.mem):
            name = names.get(i, str(i)).lower().removeprefix("mod_")
            regions.append((name, mem.base.value_(), mem.size.value_()))
        return regions
    for layout_name in ("core_layout", "init_layout"):
        layout = getattr(module, layout_name)
        base, size = layout.base.value_(), layout.size.value_()
        if layout_name == "init_layout":
            regions.append(("init", base, size))
            continue
        # text, then rodata up to ro_size, ro_after_init up to
        # ro_after_init_size, data up to size (module_layout's own order).
        bounds = [("text", layout.text_size.value_()), ("rodata", layout.ro_size.value_())]
        if layout.type_.has_member("ro_after_init_size"):
            bounds.append(("ro_after_init", layout.ro_after_init_size.value_()))
        bounds.append(("data", size))
        start = 0
        for name, end in bounds:
            if start <= end <= size:
                regions.append((name, base + start, end - start))
                start = end
    return regions


def _contains(symbol: drgn.Symbol, address: int) -> bool:
    # drgn also answers with the nearest symbol of size 0 below an address
    return symbol.address <= address < symbol.address + symbol.size


class StaticData:
    """
    Names words of static data by their direct-map address.  The map from
    physical pages to virtual addresses is built the first time it is asked
    (once per run): the kernel image maps linearly, and a module's pages are
    translated through the kernel's page tables one page at a time (a few
    hundred pages in all).

    :param prog: the target program.
    :param problems: collects an unreadable module list or module.
    """

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.prog = prog
        self.problems = problems
        self._segments: Optional[List[Tuple[int, int, int, Optional[str], str, int]]] = None
        self._starts: List[int] = []
        self._module_symbols: Dict[str, Optional[drgn.SymbolIndex]] = {}
        self._modules: Dict[str, drgn.Object] = {}

    def at(self, address: int) -> Optional[StaticPlace]:
        """The static-data place of the word at direct-map ``address``, if it is one."""
        if self._segments is None:
            self._build()
        base = direct_map_base(self.prog, self.problems)
        if base is None or address < base:
            return None
        phys = address - base
        i = bisect.bisect_right(self._starts, phys) - 1
        if i < 0:
            return None
        start, end, vaddr, module, region, region_start = self._segments[i]  # type: ignore[index]
        if phys >= end:
            return None
        virtual = vaddr + phys - start
        symbol, member = self._symbol(virtual, module)
        return StaticPlace(module, region, virtual, symbol, member, virtual - region_start)

    # -- the map -------------------------------------------------------------

    def _build(self) -> None:
        segments: List[Tuple[int, int, int, Optional[str], str, int]] = []
        offset = self._image_offset()
        if offset is not None:
            for region, start_name, end_name in IMAGE_REGIONS:
                try:
                    start = self.prog.symbol(start_name).address
                    end = self.prog.symbol(end_name).address
                except LookupError:
                    continue
                if start < end:
                    segments.append((start - offset, end - offset, start, None, region, start))
        segments += self._module_segments()
        segments.sort()
        self._segments = segments
        self._starts = [s[0] for s in segments]

    def _image_offset(self) -> Optional[int]:
        """
        The kernel image's virtual minus physical address, from VMCOREINFO:
        x86-64's ``phys_base``, arm64's ``kimage_voffset``; None elsewhere or
        if VMCOREINFO lacks it.
        """
        try:
            info = self.prog["VMCOREINFO"].string_().decode(errors="replace")
        except (LookupError, drgn.FaultError):
            return None
        numbers = dict(re.findall(r"^NUMBER\((\w+)\)=(-?\w+)$", info, re.M))
        arch = self.prog.platform.arch if self.prog.platform else None
        try:
            if arch == drgn.Architecture.X86_64 and "phys_base" in numbers:
                return X86_64_KERNEL_MAP - int(numbers["phys_base"], 0)
            if arch == drgn.Architecture.AARCH64 and "kimage_voffset" in numbers:
                return int(numbers["kimage_voffset"], 16)
        except ValueError:
            self.problems.add("VMCOREINFO", 0, "an unreadable kernel image offset")
        return None

    def _module_segments(self) -> List[Tuple[int, int, int, Optional[str], str, int]]:
        """The physical pages of every loaded module's memory, merged into runs."""
        from drgn.helpers.linux.mm import follow_phys

        try:
            init_mm = self.prog["init_mm"].address_of_()
        except LookupError:
            return []
        page = 1 << page_shift(self.prog)
        segments: List[Tuple[int, int, int, Optional[str], str, int]] = []
        for module in loaded_modules(self.prog, self.problems):
            try:
                name = module.name.string_().decode(errors="replace")
                regions = _module_regions(module)
            except (drgn.FaultError, LookupError) as e:
                self.problems.add("module", module.address_, f"unreadable: {e}")
                continue
            self._modules[name] = module
            for region, start, size in regions:
                if not start or not size:
                    continue
                if size > MAX_MODULE_REGION or start % page:
                    self.problems.add(
                        "module", module.address_, f"{name}: impossible {region} region"
                    )
                    continue
                for vaddr in range(start, start + size, page):
                    try:
                        phys = follow_phys(init_mm, vaddr).value_()
                    except drgn.FaultError:
                        continue  # not mapped (yet, or any more)
                    end = phys + min(page, start + size - vaddr)
                    last = segments[-1] if segments else None
                    if (
                        last is not None
                        and last[1] == phys
                        and last[2] + (last[1] - last[0]) == vaddr
                        and last[3:5] == (name, region)
                    ):
                        segments[-1] = (last[0], end, last[2], name, region, start)
                    else:
                        segments.append((phys, end, vaddr, name, region, start))
        return segments

    # -- symbols -------------------------------------------------------------

    def _symbol(self, address: int, module: Optional[str]) -> Tuple[Optional[str], str]:
        """
        The symbol a word lies in and where in it (``[3]``, ``.member``, or
        ``+0x18`` without its type); ``(None, "")`` if none contains it:
        from drgn's symbols (vmlinux, a module's debug info, kallsyms), else
        for a module from its own kallsyms (``mod->kallsyms``).
        """
        symbol: Optional[drgn.Symbol] = None
        try:
            symbol = self.prog.symbol(address)
        except LookupError:
            pass
        if symbol is None or not _contains(symbol, address):
            symbol = None
            index = self._kallsyms(module) if module is not None else None
            for found in index(self.prog, None, address, False) if index is not None else ():
                if _contains(found, address):
                    symbol = found
        if symbol is None:
            return None, ""
        offset = address - symbol.address
        member = None
        try:
            obj = self.prog.object(symbol.name)
            if obj.address_ == symbol.address:
                member = member_at(obj.type_, offset)
        except (LookupError, ValueError):
            pass
        if member is None:
            return symbol.name, f"+{offset:#x}"
        return symbol.name, ("" if member.startswith("[") else ".") + member

    def _kallsyms(self, module: str) -> Optional[drgn.SymbolIndex]:
        """A module's own kallsyms (``CONFIG_KALLSYMS``), read once."""
        if module not in self._module_symbols:
            from drgn.helpers.linux.kallsyms import module_kallsyms

            index = None
            mod = self._modules[module]
            try:
                if mod.kallsyms.num_symtab.value_() > MAX_MODULE_SYMBOLS:
                    raise ValueError("too many symbols")
                index = drgn.SymbolIndex(module_kallsyms(mod))
            except (LookupError, ValueError, UnicodeDecodeError, MemoryError, drgn.FaultError):
                self.problems.add("module", mod.address_, f"{module}: unreadable kallsyms")
            self._module_symbols[module] = index
        return self._module_symbols[module]
