"""
Where a Program's memory and debug info come from: the only backend-aware code.

- live: ``/proc/kcore`` of the running kernel, with debug info drgn finds
  (or the files given with ``-s``);
- vmcore: an ELF or kdump-compressed core dump plus ``-s`` symbol files or
  directories (as drgn's own ``-c``/``-s``);
- fixture: a vmcore stub directory (``vmcore``, ``types.elf``,
  ``expected.json``), as written by :mod:`netmem_probe.fake.fixture`.

Everything after :func:`open_program` is the same for all three.
"""

import logging
import os
import stat
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import drgn
from drgn import Program

__all__ = ("FIXTURE_FILES", "TargetError", "describe", "open_debug_info", "open_program")

FIXTURE_FILES = ("vmcore", "types.elf", "expected.json")
_SYMBOL_SUFFIXES = (".ko", ".ko.debug", ".debug")
_MAX_SYMBOL_FILES = 10000


class TargetError(Exception):
    """The target cannot be opened (exit code 3)."""


def open_program(core: Optional[str] = None, symbols: Sequence[str] = (),
                 fixture: Optional[str] = None) -> Program:
    """
    Make the Program for a target.

    :param core: path of a vmcore, or None.
    :param symbols: debug-info files or directories (vmlinux, .ko.debug, ...).
    :param fixture: path of a vmcore stub directory, or None.
    :raises TargetError: with a one-line reason.
    """
    # drgn logs every module it finds no debug info for; the tool says what
    # matters itself.
    logging.getLogger("drgn").setLevel(logging.ERROR)
    if core is not None and fixture is not None:
        raise TargetError("-c/--core and -f/--fixture are mutually exclusive")
    if fixture is not None:
        if symbols:
            raise TargetError("-s/--symbols does not apply to a fixture (it carries its types)")
        return _open_fixture(Path(fixture))
    if core is not None:
        return _open_core(Path(core), symbols)
    return _open_live(symbols)


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
        except (ValueError, OSError) as e:
            raise TargetError(f"cannot read debug info {path}: {e}")
        if module.debug_file_path is None:
            raise TargetError(f"{path} has no usable DWARF debug info")
    return prog


def describe(prog: Program) -> str:
    """A short description of what kind of target a Program reads."""
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        return "live kernel (racy snapshot)"
    return "core dump (consistent)"


def _check_file(path: Path, what: str) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise TargetError(f"{what} {path} does not exist")
    except OSError as e:
        raise TargetError(f"cannot read {what} {path}: {e.strerror}")
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
        return prog
    raise TargetError(f"cannot open core dump {path}: {errors[0]}")


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


def _load_symbols(prog: Program, symbols: Sequence[str], default_hint: str) -> None:
    files = _symbol_files(symbols)
    try:
        prog.load_debug_info(files, main=True)
    except drgn.MissingDebugInfoError:
        pass  # modules without debug info are fine; the kernel is checked below
    except (ValueError, OSError) as e:
        raise TargetError(f"cannot load debug info: {e}")
    main = prog.main_module()
    if main.debug_file_path is None:
        if files:
            raise TargetError(
                f"none of {', '.join(files)} is debug info for this kernel "
                f"({prog['UTS_RELEASE'].string_().decode()}; build ID mismatch or no DWARF)"
            )
        raise TargetError(default_hint)


def _open_core(path: Path, symbols: Sequence[str]) -> Program:
    prog = _set_core_dump(path)
    _load_symbols(prog, symbols,
                  f"no debug info for the kernel of {path} "
                  "(pass its vmlinux with -s, e.g. from linux-image-VERSION-dbg)")
    return prog


def _open_live(symbols: Sequence[str]) -> Program:
    prog = Program()
    try:
        prog.set_kernel()
    except PermissionError:
        raise TargetError("reading the live kernel needs root (cannot open /proc/kcore)")
    except FileNotFoundError:
        raise TargetError("/proc/kcore does not exist (kernel built without CONFIG_PROC_KCORE?)")
    except (ValueError, OSError) as e:
        raise TargetError(f"cannot open the live kernel: {e}")
    release = os.uname().release
    _load_symbols(prog, symbols,
                  f"no debug info found for the running kernel {release} "
                  f"(install linux-image-{release}-dbg or pass -s VMLINUX)")
    return prog


def _open_fixture(path: Path) -> Program:
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise TargetError(f"fixture {path} does not exist")
    if not real.is_dir():
        raise TargetError(f"fixture {path} is not a directory")
    names = sorted(p.name for p in real.iterdir())
    unexpected = [n for n in names if n not in FIXTURE_FILES]
    if unexpected:
        raise TargetError(f"fixture {path} holds unexpected files ({', '.join(unexpected)}); "
                          "fixtures are vmcore, types.elf and expected.json only")
    for name in FIXTURE_FILES:
        member = real / name
        if member.is_symlink() and real not in member.resolve().parents:
            raise TargetError(f"fixture file {member} links outside the fixture directory")
        _check_file(member, "fixture file")
    prog = _set_core_dump(real / "vmcore")
    types = str(real / "types.elf")
    module = prog.main_module("kernel", create=True)
    try:
        module.try_file(types, force=True)
    except (ValueError, OSError) as e:
        raise TargetError(f"cannot read fixture types {types}: {e}")
    if module.debug_file_path is None:
        raise TargetError(f"fixture types {types} are not an ELF with DWARF")
    want = _vmcoreinfo_build_id(prog)
    have = module.build_id.hex() if module.build_id else None
    if want is None or have != want:
        raise TargetError(f"fixture types {types} do not match its vmcore "
                          f"(build ID {have}, VMCOREINFO has {want})")
    return prog


def _vmcoreinfo_build_id(prog: Program) -> Optional[str]:
    for line in prog["VMCOREINFO"].string_().decode(errors="replace").splitlines():
        if line.startswith("BUILD-ID="):
            return line.split("=", 1)[1].strip()
    return None
