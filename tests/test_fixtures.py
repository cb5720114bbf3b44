"""The bundled fixtures are what scripts/make-fixtures writes from today's layouts."""

import re
from pathlib import Path
from typing import Set

import drgn
import pytest
from conftest import FIXTURE_NAMES, FIXTURES

from netmem_probe.elf import ElfFile
from netmem_probe.fake.scenarios import FIXTURES as SCENARIO_OF
from netmem_probe.fake.scenarios import build
from netmem_probe.fake.types_elf import LAYOUTS_DIR

SIZEOF = re.compile(r"^_Static_assert\(sizeof\(struct (\w+)\) == (\d+),", re.M)
OFFSETOF = re.compile(
    r"^_Static_assert\(__builtin_offsetof\(struct (\w+), ([\w.]+)\) == (\d+),", re.M
)


def test_every_bundled_fixture_has_a_scenario():
    assert sorted(SCENARIO_OF) == FIXTURE_NAMES


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_a_bundled_fixtures_types_are_its_layout_headers(name, fixture_program):
    # A layout header changed without scripts/make-fixtures leaves `-f NAME`
    # on the old types: a struct the new code walks is then missing.
    header = (LAYOUTS_DIR / f"{SCENARIO_OF[name][1]}.h").read_text()
    prog = fixture_program(name)
    stale = []
    for struct, size in SIZEOF.findall(header):
        try:
            if prog.type(f"struct {struct}").size != int(size):
                stale.append(f"sizeof(struct {struct})")
        except LookupError:
            stale.append(f"struct {struct} missing")
    for struct, member, offset in OFFSETOF.findall(header):
        try:
            if drgn.offsetof(prog.type(f"struct {struct}"), member) != int(offset):
                stale.append(f"offsetof(struct {struct}, {member})")
        except LookupError:
            stale.append(f"struct {struct}.{member} missing")
    assert not stale, f"{name}: run scripts/make-fixtures {name}: {stale[:10]}"


def _symbol_names(path: Path) -> Set[bytes]:
    with open(path, "rb") as f:
        return set(ElfFile(f, str(path)).section(".strtab").split(b"\0"))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_a_bundled_fixture_has_the_symbols_the_fake_kernel_defines_today(name):
    # The names, not the bytes: another gcc or binutils lays the same image out
    # at other addresses.  A change to the fake kernel image (b8d7687's _sdata,
    # __bss_start) without scripts/make-fixtures left 8 fixtures without them.
    world, _ = build(name)
    world.commit()
    fresh = _symbol_names(Path(world.types_elf))
    assert fresh == _symbol_names(FIXTURES / name / "types.elf"), (
        f"run scripts/make-fixtures {name}"
    )
