"""
Where a Program's memory and debug info come from: the only backend-aware code.

- live: ``/proc/kcore`` of the running kernel, with debug info drgn finds
  (or the files given with ``-s``);
- vmcore: an ELF or kdump-compressed core dump plus ``-s`` symbol files or
  directories (as drgn's own ``-c``/``-s``);
- fixture: a vmcore stub directory (``vmcore``, ``types.elf``,
  ``expected.json``), as written by :mod:`netmem_probe.fake.fixture`.

A live kernel or a dump without debug info (no ``-s``, and none where drgn
looks) is read with the kernel's own BTF and kallsyms instead
(:mod:`netmem_probe.kallsyms_btf`), and :func:`fallback_note` says so;
``--btf`` asks for a BTF file outright.

Everything after :func:`open_program` is the same for all three.
"""

import json
import logging
import os
import stat
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import drgn
from drgn import Program

from netmem_probe.elf import ElfError, ElfFile
from netmem_probe.kallsyms_btf import (
    LIVE_BTF,
    KernelBtfError,
    add_kernel_btf,
    load_btf_file,
    use_btf_and_kallsyms,
)

__all__ = (
    "FIXTURE_FILES",
    "TargetError",
    "core_truncation",
    "describe",
    "fallback_note",
    "open_btf_types",
    "open_debug_info",
    "open_program",
)

FIXTURE_FILES = ("vmcore", "types.elf", "expected.json")
_SYMBOL_SUFFIXES = (".ko", ".ko.debug", ".debug")
_MAX_SYMBOL_FILES = 10000
# expected.json is the scenario's truth, a few KiB; anything near this is not a fixture's.
_MAX_EXPECTED_JSON = 64 << 20
_FALLBACK_NOTE = "netmem_probe.target.fallback_note"

# ELF e_machine -> drgn architecture, for (ELFCLASS32, ELFCLASS64).
_ELF_ARCHES = {
    3: (drgn.Architecture.I386, None),
    40: (drgn.Architecture.ARM, None),
    62: (None, drgn.Architecture.X86_64),
    21: (None, drgn.Architecture.PPC64),
    22: (drgn.Architecture.S390, drgn.Architecture.S390X),
    183: (None, drgn.Architecture.AARCH64),
    243: (drgn.Architecture.RISCV32, drgn.Architecture.RISCV64),
    258: (None, drgn.Architecture.LOONGARCH64),
}


class TargetError(Exception):
    """The target cannot be opened (exit code 3)."""


def open_program(
    core: Optional[str] = None,
    symbols: Sequence[str] = (),
    fixture: Optional[str] = None,
    btf: Optional[str] = None,
) -> Program:
    """
    Make the Program for a target.

    :param core: path of a vmcore, or None.
    :param symbols: debug-info files or directories (vmlinux, .ko.debug, ...).
    :param fixture: path of a vmcore stub directory, or None.
    :param btf: a BTF file to take the kernel's types from instead of debug
        info (symbols then come from kallsyms), or None.
    :raises TargetError: with a one-line reason.
    """
    # drgn logs every module it finds no debug info for; the tool says what
    # matters itself.
    logging.getLogger("drgn").setLevel(logging.ERROR)
    if core is not None and fixture is not None:
        raise TargetError("-c/--core and -f/--fixture are mutually exclusive")
    if btf is not None and symbols:
        raise TargetError("--btf and -s/--symbols are mutually exclusive")
    if fixture is not None:
        if symbols:
            raise TargetError("-s/--symbols does not apply to a fixture (it carries its types)")
        if btf is not None:
            raise TargetError("--btf does not apply to a fixture (it carries its types)")
        return _open_fixture(Path(fixture))
    if core is not None:
        return _open_core(Path(core), symbols, btf)
    return _open_live(symbols, btf)


def open_debug_info(symbols: Sequence[str]) -> Program:
    """
    A Program with types only: the debug info of ``symbols``, no memory.
    Enough for commands that check layouts.
    """
    logging.getLogger("drgn").setLevel(logging.ERROR)
    files = _symbol_files(symbols)
    if not files:
        raise TargetError("no debug info files found in " + ", ".join(symbols))
    prog = Program(drgn.host_platform)
    for i, path in enumerate(files):
        module = prog.extra_module(path, i, create=True)
        try:
            module.try_file(path, force=True)
        except (ValueError, OSError, drgn.BadDataError) as e:
            raise TargetError(f"cannot read debug info {path}: {e}") from e
        if module.debug_file_path is None:
            raise TargetError(f"{path} has no usable DWARF debug info")
    # Any program's DWARF loads; without struct page the layout check would
    # report "nothing applies" about something that is not a kernel at all.
    _check_debug_info(prog, f"{', '.join(files)}: not a Linux kernel's debug info")
    return prog


def _check_debug_info(prog: Program, not_kernel: str) -> None:
    """
    Look up ``struct page``: drgn indexes the DWARF on the first lookup, so
    damaged debug info is found here, while the target is being opened,
    not halfway through a command.
    """
    try:
        prog.type("struct page")
    except LookupError:
        raise TargetError(f"{not_kernel} (no struct page)") from None
    except drgn.BadDataError as e:
        raise TargetError(f"damaged debug info: {e}") from e


def open_btf_types(path: str) -> Program:
    """
    A Program with types only, from a BTF file (``/sys/kernel/btf/vmlinux``,
    or an ELF with a ``.BTF`` section), no memory: enough for commands that
    check layouts, with no root and no debug info.
    """
    _check_file(Path(path), "BTF file")
    try:
        btf = load_btf_file(path)
    except KernelBtfError as e:
        raise TargetError(str(e)) from e
    ident = _elf_ident(path)
    platform = drgn.host_platform
    if ident is not None and ident[0] is not None:
        arch, is_64, little, _ = ident
        flags = drgn.PlatformFlags(0)
        if is_64:
            flags |= drgn.PlatformFlags.IS_64_BIT
        if little:
            flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
        platform = drgn.Platform(arch, flags)
    prog = Program(platform)
    try:
        add_kernel_btf(prog, btf, where=f"BTF {path}")
        prog.type("struct page")
    except KernelBtfError as e:
        raise TargetError(str(e)) from e
    except LookupError:
        raise TargetError(f"{path}: not a Linux kernel's BTF (no struct page)") from None
    return prog


def fallback_note(prog: Program) -> Optional[str]:
    """
    How a target without debug info is being read (its BTF and kallsyms),
    if :func:`open_program` fell back to them; None otherwise.
    """
    return prog.cache.get(_FALLBACK_NOTE)


def describe(prog: Program) -> str:
    """A short description of what kind of target a Program reads."""
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        return "live kernel (racy snapshot)"
    return "core dump (consistent)"


def _check_file(path: Path, what: str) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise TargetError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise TargetError(f"cannot read {what} {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise TargetError(f"{what} {path} is not a regular file")
    if st.st_size == 0:
        raise TargetError(f"{what} {path} is empty")
    if not os.access(path, os.R_OK):
        raise TargetError(f"cannot read {what} {path}: permission denied")


def _set_core_dump(path: Path) -> Program:
    _check_file(path, "core dump")
    errors: List[str] = []
    # QEMU's kdump files carry no architecture name; drgn then needs an
    # explicit platform (libkdumpfile: "KDUMP_ATTR_ARCH_NAME: Key has no value").
    for platform in (None, drgn.host_platform):
        prog = Program(platform)
        try:
            prog.set_core_dump(str(path))
        except Exception as e:  # noqa: BLE001 - libkdumpfile errors are plain Exceptions
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
            raise TargetError(f"{path} is not a Linux kernel core dump (no VMCOREINFO)")
        # A segment past what a file offset (off_t) can address is no
        # truncation but a corrupt header: every read of it fails with
        # EINVAL (an OSError, where the helpers expect a FaultError).
        extent = _elf_core_extent(str(path))
        if extent is not None and extent[1] >= 1 << 63:
            raise TargetError(
                f"core dump {path} is corrupt: its program headers place data "
                f"at file offset {extent[1]:#x}"
            )
        return prog
    raise TargetError(f"cannot open core dump {path}: {errors[0]}")


def _elf_ident(path: str) -> Optional[Tuple[Optional[drgn.Architecture], bool, bool, int]]:
    """(architecture or None if unknown, 64-bit, little-endian, e_machine) of an ELF file."""
    elf = ElfFile.ident(path)
    if elf is None:
        return None
    arch = _ELF_ARCHES.get(elf.machine, (None, None))[elf.is_64]
    return arch, elf.is_64, elf.little, elf.machine


def _check_platform(prog: Program, path: str) -> None:
    """Refuse debug info built for another architecture than the target's."""
    ident = _elf_ident(path)
    platform = prog.platform
    if ident is None or platform is None:
        return
    arch, is_64, little, machine = ident
    want = (
        platform.arch,
        bool(platform.flags & drgn.PlatformFlags.IS_64_BIT),
        bool(platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN),
    )
    # An unknown e_machine cannot be compared; its word size and byte order can.
    if (arch is None or arch == want[0]) and (is_64, little) == want[1:]:
        return

    def name(arch_name: str, bits64: bool, le: bool) -> str:
        return f"{arch_name} ({64 if bits64 else 32}-bit {'little' if le else 'big'}-endian)"

    have = name(arch.name if arch else f"e_machine {machine}", is_64, little)
    raise TargetError(
        f"debug info {path} is for {have}, the target is {name(want[0].name, *want[1:])}"
    )


def core_truncation(path: str) -> Optional[str]:
    """
    Why an ELF core file is shorter than its program headers say (a dump
    interrupted by a full disk or a reboot), or None.  drgn opens such a
    file and faults only when a read reaches the missing part.
    """
    extent = _elf_core_extent(path)
    if extent is None or extent[1] <= extent[0]:
        return None
    return (
        f"core dump {path} is truncated: {extent[0]} bytes, its headers describe "
        f"{extent[1]}; objects in the missing part are unreadable"
    )


def _elf_core_extent(path: str) -> Optional[Tuple[int, int]]:
    """(file size, end of the last note or load its program headers describe) of an ELF file."""
    try:
        with open(path, "rb") as f:
            headers, need = ElfFile(f, path).program_headers()
            size = os.fstat(f.fileno()).st_size
    except (OSError, ElfError):
        return None
    if not need:
        return None
    for header in headers:
        if header.type in (1, 4):  # PT_LOAD, PT_NOTE
            need = max(need, header.offset + header.filesz)
    return size, need


def _symbol_files(paths: Iterable[str]) -> List[str]:
    files: List[str] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            for root, _, names in os.walk(path):
                for name in sorted(names):
                    if name.startswith("vmlinux") or name.endswith(_SYMBOL_SUFFIXES):
                        files.append(os.path.join(root, name))
                if len(files) > _MAX_SYMBOL_FILES:
                    raise TargetError(f"symbol directory {path} holds too many files")
        else:
            _check_file(path, "symbol file")
            files.append(str(path))
    return files


def _load_symbols(prog: Program, symbols: Sequence[str], missing: str, hint: str) -> None:
    """
    Load the debug info of ``symbols``, or what drgn finds by default; with
    none for the kernel and no ``symbols``, fall back to its BTF and kallsyms.
    """
    files = _symbol_files(symbols)
    for arg in symbols:
        if not Path(arg).is_dir():
            _check_platform(prog, arg)
    try:
        prog.load_debug_info(files, main=True)
    except drgn.MissingDebugInfoError:
        pass  # modules without debug info are fine; the kernel is checked below
    except (ValueError, OSError, drgn.BadDataError) as e:
        raise TargetError(f"cannot load debug info: {e}") from e
    main = prog.main_module()
    if main.debug_file_path is not None:
        _check_platform(prog, main.debug_file_path)
        _check_debug_info(prog, f"{main.debug_file_path} is not a Linux kernel's debug info")
    else:
        if files:
            # OSRELEASE comes from the dump's VMCOREINFO: any bytes at all.
            release = prog["UTS_RELEASE"].string_().decode(errors="replace")
            raise TargetError(
                f"none of {', '.join(files)} is debug info for this kernel "
                f"({release}; build ID mismatch or no DWARF)"
            )
        if symbols:
            raise TargetError(f"{missing} ({hint})")
        try:
            how = use_btf_and_kallsyms(prog)
        except KernelBtfError as e:
            raise TargetError(f"{missing} ({hint}), and no BTF to fall back on: {e}") from e
        prog.cache[_FALLBACK_NOTE] = f"{missing}: reading it with {how}"


def _use_btf(prog: Program, path: str) -> None:
    """Types from the BTF file ``path``, symbols from the target's kallsyms."""
    _check_file(Path(path), "BTF file")
    _check_platform(prog, path)
    try:
        use_btf_and_kallsyms(prog, path)
    except KernelBtfError as e:
        raise TargetError(str(e)) from e


def _open_core(path: Path, symbols: Sequence[str], btf: Optional[str]) -> Program:
    prog = _set_core_dump(path)
    if btf is not None:
        _use_btf(prog, btf)
        return prog
    _load_symbols(
        prog,
        symbols,
        f"no debug info for the kernel of {path}",
        "pass its vmlinux with -s, e.g. from linux-image-VERSION-dbg",
    )
    return prog


def _open_live(symbols: Sequence[str], btf: Optional[str]) -> Program:
    prog = Program()
    try:
        prog.set_kernel()
    except PermissionError:
        raise TargetError(
            "reading the live kernel needs root (cannot open /proc/kcore); without it, "
            f"layout and --drgn scripts work from {LIVE_BTF}"
        ) from None
    except FileNotFoundError:
        raise TargetError(
            "/proc/kcore does not exist (kernel built without CONFIG_PROC_KCORE, or a "
            "container); layout and --drgn scripts work without it, from "
            f"{LIVE_BTF}, and every command reads a crash dump (-c VMCORE)"
        ) from None
    except (ValueError, OSError) as e:
        raise TargetError(f"cannot open the live kernel: {e}") from e
    if btf is not None:
        _use_btf(prog, btf)
        return prog
    release = os.uname().release
    _load_symbols(
        prog,
        symbols,
        f"no debug info found for the running kernel {release}",
        f"install linux-image-{release}-dbg or pass -s VMLINUX",
    )
    return prog


def _resolve_link(path: Path, within: Path, what: str) -> Path:
    """Where the symbolic link ``path`` leads; it must stay directly in ``within``."""
    try:
        target = path.resolve(strict=True)
        inside = within.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        raise TargetError(f"{what} {path} is a broken or looping symbolic link") from None
    if target.parent != inside:
        raise TargetError(f"{what} {path} is a symbolic link to {target}, outside {inside}")
    return target


BUNDLED_FIXTURES = Path(__file__).parent / "fixtures"


def _open_fixture(path: Path) -> Program:
    if not path.exists() and len(path.parts) == 1 and (BUNDLED_FIXTURES / path).is_dir():
        # A bare name is a fixture bundled with netmem-probe.
        path = BUNDLED_FIXTURES / path
    if path.is_symlink():
        _resolve_link(path, path.absolute().parent, "fixture")
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise TargetError(f"fixture {path} does not exist") from None
    except (OSError, RuntimeError) as e:
        raise TargetError(f"cannot open fixture {path}: {getattr(e, 'strerror', None) or e}") from e
    if not real.is_dir():
        raise TargetError(f"fixture {path} is not a directory")
    try:
        names = sorted(p.name for p in real.iterdir())
    except OSError as e:
        raise TargetError(f"cannot list fixture {path}: {e.strerror}") from e
    unexpected = [n for n in names if n not in FIXTURE_FILES]
    inside = [n for n in names if (real / n / "vmcore").is_file()]
    if inside and not set(names) & set(FIXTURE_FILES):
        raise TargetError(
            f"{path} is a directory of fixtures, not a fixture: pick one, "
            f"-f {path}/NAME with NAME one of {', '.join(inside)}"
        )
    if unexpected:
        raise TargetError(
            f"fixture {path} holds unexpected files ({', '.join(unexpected)}); "
            "fixtures are vmcore, types.elf and expected.json only"
        )
    for name in FIXTURE_FILES:
        member = real / name
        if member.is_symlink():
            _resolve_link(member, real, "fixture file")
        _check_file(member, "fixture file")
    _check_expected_json(real / "expected.json")
    # A fixture is generated whole; a short one is damaged, not evidence.
    truncated = core_truncation(str(real / "vmcore"))
    if truncated:
        raise TargetError(f"fixture {truncated.split('; ')[0]}")
    prog = _set_core_dump(real / "vmcore")
    types = str(real / "types.elf")
    module = prog.main_module("kernel", create=True)
    try:
        module.try_file(types, force=True)
    except (ValueError, OSError, drgn.BadDataError) as e:
        raise TargetError(f"cannot read fixture types {types}: {e}") from e
    if module.debug_file_path is None:
        raise TargetError(f"fixture types {types} are not an ELF with DWARF")
    _check_debug_info(prog, f"fixture types {types} are not a Linux kernel's")
    _check_platform(prog, types)
    want = _vmcoreinfo_build_id(prog)
    have = module.build_id.hex() if module.build_id else None
    if want is None or have != want:
        raise TargetError(
            f"fixture types {types} do not match its vmcore "
            f"(build ID {have}, VMCOREINFO has {want})"
        )
    return prog


def _check_expected_json(path: Path) -> None:
    """
    The tool never reads a fixture's truth, but a fixture is data only (ELF
    and JSON): an expected.json that is not a JSON object means the
    directory is damaged or is not a fixture.
    """
    if path.stat().st_size > _MAX_EXPECTED_JSON:
        raise TargetError(f"fixture file {path} is too large for a fixture's expected.json")
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        reason = str(e).splitlines()[0] if isinstance(e, ValueError) else "nested too deeply"
        raise TargetError(f"fixture file {path} is not valid JSON ({reason})") from e
    if not isinstance(value, dict):
        raise TargetError(f"fixture file {path} is not a JSON object")


def _vmcoreinfo_build_id(prog: Program) -> Optional[str]:
    for line in prog["VMCOREINFO"].string_().decode(errors="replace").splitlines():
        if line.startswith("BUILD-ID="):
            return line.split("=", 1)[1].strip()
    return None
