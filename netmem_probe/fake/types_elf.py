"""
Compile a fixture layout header into the *types ELF* of a fake kernel.

The types ELF is what a vmlinux is to a real vmcore: DWARF for every type the
layout header defines, the global variables at fixed kernel addresses, and a
build ID.  It is compiled with gcc -g and linked with ld, one translation unit
per kernel source file that defines a global, so ``prog.object(name,
filename=...)`` resolves as it does on a real vmlinux.  The output is a pure
function of the header and the toolchain: regenerating a fixture gives the same
bytes.
"""

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, NamedTuple

from netmem_probe.fake.machine import MACHINES, Machine, machine_of_header

__all__ = (
    "LAYOUTS_DIR",
    "layout_machine",
    "FixtureError",
    "GlobalDecl",
    "available_layouts",
    "build_types_elf",
    "layout_globals",
    "layout_header",
)

LAYOUTS_DIR = Path(__file__).parent / "layouts"
# The x86-64 kernel image addresses (see fake.machine for the others).
KERNEL_TEXT = MACHINES["x86_64"].kernel_text
KERNEL_DATA = MACHINES["x86_64"].kernel_data


def _linker_script(machine: Machine) -> str:
    return f"""\
SECTIONS {{
  .data..percpu 0x1000 : {{ *(.data..percpu) }}
  . = {machine.kernel_text:#x};
  .notes : {{ *(.note.gnu.build-id) }}
  .text : {{ *(.text*) }}
  . = {machine.kernel_data:#x};
  .data : {{ _sdata = .; *(.data) *(.data.*) *(.rodata*) _edata = .; }}
  .bss : {{ __bss_start = .; *(.bss*) *(COMMON) __bss_stop = .; }}
  /DISCARD/ : {{ *(.note.GNU-stack) *(.comment) *(.eh_frame) }}
}}
"""


_GLOBAL_RE = re.compile(r"^/\* netmem-global: (\S+) (\S+)( percpu)? \*/$", re.MULTILINE)


class FixtureError(Exception):
    """A fixture or layout could not be built or read."""


class GlobalDecl(NamedTuple):
    name: str
    source_file: str
    percpu: bool


def available_layouts() -> List[str]:
    """Names of the layout headers shipped with netmem-probe."""
    return sorted(p.stem for p in LAYOUTS_DIR.glob("*.h"))


def layout_header(layout: str) -> Path:
    """Path of a layout header, by name (``linux-7.3``) or as a path."""
    path = Path(layout)
    if path.suffix == ".h" and path.exists():
        return path
    path = LAYOUTS_DIR / f"{layout}.h"
    if not path.exists():
        raise FixtureError(f"unknown layout {layout!r} (have: {', '.join(available_layouts())})")
    return path


def layout_machine(layout: str) -> Machine:
    """The machine (architecture, page size, memory map) a layout is from."""
    return machine_of_header(layout_header(layout).read_text())


def layout_globals(header_text: str) -> List[GlobalDecl]:
    """The kernel globals a layout header declares, with their source files."""
    return [GlobalDecl(m[1], m[2], bool(m[3])) for m in _GLOBAL_RE.finditer(header_text)]


def _cache_dir() -> Path:
    base = os.environ.get("NETMEM_PROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "netmem-probe"
    )
    return Path(base) / "types"


def _run(cmd: List[str], cwd: str) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise FixtureError(
            f"{cmd[0]} is needed to build fixture types (apt-get install gcc binutils)"
        ) from None
    except subprocess.CalledProcessError as e:
        first = (e.stderr.strip().splitlines() or ["?"])[0]
        raise FixtureError(f"{cmd[0]} failed building fixture types: {first}") from e


def _translation_units(header_text: str) -> Dict[str, str]:
    units: Dict[str, List[str]] = {}
    for decl in layout_globals(header_text):
        section = '__attribute__((section(".data..percpu"))) ' if decl.percpu else ""
        units.setdefault(decl.source_file, []).append(
            f"{section}__typeof__({decl.name}) {decl.name};"
        )
    # drgn derives vmemmap only for kernels that have this function.
    units.setdefault("mm/sparse-vmemmap.c", []).append("void vmemmap_populate(void) {}")
    return {
        path: '#include "layout.h"\n' + "\n".join(lines) + "\n" for path, lines in units.items()
    }


def _set_machine(path: Path, machine: Machine) -> None:
    """
    Mark the ELF as the layout's machine.  The host's compiler wrote it, but
    it holds nothing the host's architecture shapes: DWARF of types whose
    every member offset and size the header asserts (LP64, as on the
    target), symbol addresses of the linker script, and no code that is
    run; drgn and the build ID then see the target's ELF.
    """
    with open(path, "r+b") as f:
        f.seek(18)  # e_machine, after e_ident and e_type
        f.write(machine.e_machine.to_bytes(2, "little"))


def build_types_elf(layout: str) -> Path:
    """
    Build (or reuse from the cache) the types ELF for a layout.

    :param layout: a layout name from :func:`available_layouts` or a header path.
    :return: path of the cached ELF.
    """
    header = layout_header(layout)
    text = header.read_text()
    machine = machine_of_header(text)
    script = _linker_script(machine)
    digest = hashlib.sha256(text.encode() + script.encode()).hexdigest()[:16]
    out = _cache_dir() / f"{header.stem}-{digest}.elf"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="netmem-types-") as tmp:
        Path(tmp, "layout.h").write_text(text)
        Path(tmp, "fake.ld").write_text(script)
        units = _translation_units(text)
        units["types.c"] = '#include "layout.h"\n'
        objects = []
        for i, (path, source) in enumerate(sorted(units.items())):
            Path(tmp, path).parent.mkdir(parents=True, exist_ok=True)
            Path(tmp, path).write_text(source)
            obj = f"{i}.o"
            flags = ["-fno-eliminate-unused-debug-types"] if path == "types.c" else []
            _run(
                [
                    "gcc",
                    "-g",
                    "-O0",
                    "-c",
                    "-fno-common",
                    "-w",
                    f"-fdebug-prefix-map={tmp}=.",
                    "-I",
                    ".",
                    *flags,
                    "-o",
                    obj,
                    path,
                ],
                tmp,
            )
            objects.append(obj)
        _run(["ld", "--build-id=sha1", "-T", "fake.ld", "-o", "types.elf", *objects], tmp)
        _set_machine(Path(tmp, "types.elf"), machine)
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(Path(tmp, "types.elf"), staged)
        os.replace(staged, out)
    return out
