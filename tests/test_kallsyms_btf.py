"""
No debug info: kernel types from BTF, symbols from kallsyms.

The fixtures' worlds, read through BTF that pahole encodes from their DWARF
(like a kernel build does; it too emits VARs for per-CPU variables only) and
their symbol table standing in for kallsyms, give every command's answers
unchanged.  ``--btf`` and the automatic fallback fail in one line.  (The
real dumps, read from their own memory's BTF and kallsyms, are in
tests/realkernel/test_real_btf_only.py.)
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import drgn
import pytest
from conftest import FIXTURES, run_cli
from test_bad_input import one_line_error

from netmem_probe.btf import BtfKind, parse_btf, read_btf_from_elf
from netmem_probe.kallsyms_btf import KernelBtfError, add_kernel_btf
from netmem_probe.kernel.globals import GLOBAL_TYPES, global_type

MIXED = [p.name for p in sorted(FIXTURES.iterdir()) if p.name.endswith("-mixed")]
HOST_BTF = Path("/sys/kernel/btf/vmlinux")


def _pahole() -> str:
    path = shutil.which("pahole")
    if path is None:
        pytest.fail("pahole is required for this test (apt-get install dwarves)")
    return path


_btf_programs: Dict[str, drgn.Program] = {}


def btf_program(name: str, dwarf: drgn.Program, tmp_path_factory) -> drgn.Program:
    """The fixture's core with types from BTF and symbols from a symbol index only."""
    if name not in _btf_programs:
        elf = tmp_path_factory.mktemp(name) / "types.elf"
        shutil.copyfile(FIXTURES / name / "types.elf", elf)
        subprocess.run([_pahole(), "-J", str(elf)], check=True, capture_output=True)
        btf = parse_btf(read_btf_from_elf(str(elf)))
        prog = drgn.Program()
        prog.set_core_dump(str(FIXTURES / name / "vmcore"))
        add_kernel_btf(prog, btf, drgn.SymbolIndex(dwarf.symbols()))
        _btf_programs[name] = prog
    return _btf_programs[name]


def _commands(dwarf: drgn.Program):
    """Every command, with arguments naming the fixture's real pages, niovs and pools."""
    pools = run_cli("pools", "--json", program=dwarf).json()
    pages = [
        json.loads(line)["page"]
        for line in run_cli("pages", "--all-pools", "--json", program=dwarf).out.splitlines()
    ][:8]
    niovs = [
        json.loads(line)["netmem"]
        for line in run_cli("niovs", "--json", program=dwarf).out.splitlines()
    ][:8]
    yield ("pools", "--json")
    for pool in pools:
        yield ("pool", str(pool["id"]), "--json")
    yield ("pages", "--all-pools", "--json")
    yield ("pages", "--all-pools", "--count", "--json")
    yield ("layout", "--json")
    yield ("providers", "--json")
    yield ("niovs", "--json")
    yield ("leaks", "--json")
    if pages or niovs:
        yield ("decode", "--json", *pages, *niovs)
        yield ("holders", "--json", *pages[:3], *niovs[:3])


@pytest.mark.parametrize("name", MIXED)
def test_every_command_answers_the_same_from_btf_and_a_symbol_table(
    name, fixture_program, tmp_path_factory
):
    dwarf = fixture_program(name)
    prog = btf_program(name, dwarf, tmp_path_factory)
    for args in _commands(dwarf):
        want, have = run_cli(*args, program=dwarf), run_cli(*args, program=prog)
        assert (have.code, have.out, have.err) == (want.code, want.out, want.err), args


@pytest.mark.parametrize("name", MIXED)
def test_btf_globals_are_where_debug_info_puts_them(name, fixture_program, tmp_path_factory):
    dwarf = fixture_program(name)
    prog = btf_program(name, dwarf, tmp_path_factory)
    checked = 0
    for global_name in GLOBAL_TYPES:
        try:
            want = dwarf[global_name]
        except KeyError:
            continue
        have = prog[global_name]
        assert have.address_ == want.address_, global_name
        assert drgn.sizeof(have) == drgn.sizeof(want), global_name
        checked += 1
    assert checked >= 10
    # drgn's own linux finder derives vmemmap from the BTF FUNC
    # vmemmap_populate and mem_section at its symbol's address.
    assert prog["vmemmap"].value_() == dwarf["vmemmap"].value_()


def test_an_anonymous_global_type_is_laid_out_as_c_does(fixture_program):
    dwarf = fixture_program("linux-6.12-mixed")
    want = dwarf["tk_core"].type_
    assert want.tag is None  # Linux 6.12's tk_core has an unnamed struct type
    have = global_type(dwarf, "tk_core")
    assert drgn.sizeof(have) == drgn.sizeof(want)
    for member in ("seq", "timekeeper"):  # the fixture's header pads explicitly
        assert drgn.offsetof(have, member) == drgn.offsetof(want, member)


def test_the_btf_finder_builds_only_the_types_a_command_touches(fixture_program, tmp_path_factory):
    dwarf = fixture_program("linux-7.3-mixed")
    prog = btf_program("linux-7.3-mixed", dwarf, tmp_path_factory)
    run_cli("pools", "--json", program=prog)
    finder = prog.cache[next(k for k in prog.cache if k[:1] == ("netmem_probe.btf_drgn",))]
    assert 0 < finder.built_count < finder.btf.nr_types


@pytest.mark.skipif(not HOST_BTF.exists(), reason="this host's kernel has no BTF")
def test_layout_reads_btf_from_an_elf_section_as_from_the_raw_file(tmp_path):
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        pytest.fail("objcopy is required for this test (apt-get install binutils)")
    elf = tmp_path / "vmlinux-btf.elf"
    shutil.copyfile(FIXTURES / "linux-7.3-mixed" / "types.elf", elf)
    subprocess.run([objcopy, "--add-section", f".BTF={HOST_BTF}", str(elf)], check=True)
    raw = run_cli("--btf", str(HOST_BTF), "layout", "--json")
    section = run_cli("--btf", str(elf), "layout", "--json")
    assert raw.code == 0 and raw.json()
    assert (section.code, section.out) == (raw.code, raw.out)


def test_bad_btf_files_fail_in_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not BTF at all\n")
    one_line_error(run_cli("--btf", str(text), "layout"), 3, says="bad BTF magic")
    one_line_error(run_cli("--btf", str(tmp_path / "missing"), "layout"), 3, says="does not exist")
    one_line_error(
        run_cli("--btf", str(FIXTURES / "linux-7.3-mixed" / "types.elf"), "layout"),
        3,
        says="no .BTF section",
    )
    truncated = tmp_path / "truncated"
    truncated.write_bytes(
        HOST_BTF.read_bytes()[:5000] if HOST_BTF.exists() else b"\x9f\xeb\x01\x00" + bytes(20)
    )
    one_line_error(run_cli("--btf", str(truncated), "layout"), 3, says="BTF")


def test_btf_that_is_not_a_kernels_fails_in_one_line(tmp_path):
    # A valid BTF of one int: parses, but has no struct page.
    strings = b"\0int\0"
    types = (
        (1).to_bytes(4, "little")
        + (1 << 24).to_bytes(4, "little")
        + (4).to_bytes(4, "little")
        + ((1 << 24) | 32).to_bytes(4, "little")
    )
    header = (
        b"\x9f\xeb\x01\x00"
        + (24).to_bytes(4, "little")
        + bytes(4)
        + len(types).to_bytes(4, "little")
        + len(types).to_bytes(4, "little")
        + len(strings).to_bytes(4, "little")
    )
    path = tmp_path / "int.btf"
    path.write_bytes(header + types + strings)
    assert parse_btf(path.read_bytes()).kind(1) == BtfKind.INT
    one_line_error(run_cli("--btf", str(path), "layout"), 3, says="no struct page")


def test_btf_options_that_conflict_are_usage_errors():
    types = str(FIXTURES / "linux-7.3-mixed" / "types.elf")
    one_line_error(
        run_cli("--btf", str(HOST_BTF), "-s", types, "layout"), 2, says="mutually exclusive"
    )
    one_line_error(
        run_cli("--btf", str(HOST_BTF), "-f", str(FIXTURES / "linux-7.3-mixed"), "pools"),
        2,
        says="does not apply to a fixture",
    )


def test_a_dump_without_debug_info_or_kallsyms_says_both_in_one_line():
    # The fixtures' VMCOREINFO has no kallsyms, like a dump of Linux < 6.0.
    result = run_cli("-c", str(FIXTURES / "linux-7.3-mixed" / "vmcore"), "pools")
    line = one_line_error(result, 3, says="no debug info for the kernel of")
    assert "no BTF to fall back on" in line and "kallsyms" in line


@pytest.mark.skipif(not HOST_BTF.exists(), reason="this host's kernel has no BTF")
def test_btf_that_contradicts_vmcoreinfo_sizes_is_refused():
    btf = parse_btf(HOST_BTF.read_bytes())
    probe = drgn.Program(drgn.host_platform)
    add_kernel_btf(probe, btf)
    page = drgn.sizeof(probe.type("struct page"))
    vmcoreinfo = (
        "OSRELEASE=6.18.0-other\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82ffe000\n"
        "SIZE(list_head)=16\nOFFSET(list_head.prev)=8\nSIZE(page)={}\n"
    )
    same = drgn.Program(drgn.host_platform)
    same.set_linux_kernel_custom(vmcoreinfo.format(page).encode(), False)
    add_kernel_btf(same, btf)
    other = drgn.Program(drgn.host_platform)
    other.set_linux_kernel_custom(vmcoreinfo.format(page + 8).encode(), False)
    with pytest.raises(
        KernelBtfError,
        match=rf"VMCOREINFO has SIZE\(page\)={page + 8}, "
        rf"the BTF {page}",
    ):
        add_kernel_btf(other, btf, where="BTF x")


@pytest.mark.skipif(not HOST_BTF.exists(), reason="this host's kernel has no BTF")
def test_layout_from_btf_needs_no_root():
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("dropping to an unprivileged user needs root and setpriv")
    nobody = [setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    if subprocess.run([*nobody, sys.executable, "-c", ""], capture_output=True).returncode:
        # pyenv's 3.9 (the floor run) loads its libpython from root's home.
        pytest.skip("this Python cannot run as an unprivileged user")
    result = subprocess.run(
        [*nobody, sys.executable, "-m", "netmem_probe", "--btf", str(HOST_BTF), "layout", "--json"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == run_cli("--btf", str(HOST_BTF), "layout", "--json").json()


def test_a_kernel_without_a_module_list_has_vmlinux_symbols_only(fixture_program, tmp_path_factory):
    dwarf = fixture_program("linux-7.3-mixed")
    prog = btf_program("linux-7.3-mixed", dwarf, tmp_path_factory)
    # The fixture has no 'modules' list: the module symbol finder has none.
    with pytest.raises(LookupError):
        prog.symbol(0xFFFFFFFFC0000000)
    assert prog.symbol("init_net").address == dwarf["init_net"].address_
