"""
Read-only and data-only: the tool never writes to its target, never runs
anything it finds next to it, and takes a fixture's files from the fixture
directory only (the symbolic-link cases are in test_bad_input.py).
"""

import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from conftest import FIXTURES, run_cli

from netmem_probe.commands import COMMANDS
from netmem_probe.fake import scenarios

GOOD = FIXTURES / "linux-7.3-mixed"


def _digest(world) -> str:
    h = hashlib.sha256()
    for region in world.mem.regions:
        h.update(region.read(0, region.size))
    return h.hexdigest()


def _args(command, world):
    pool = next(p for p in world.pools if p.pages)
    args = [command.name]
    for param in command.params:
        if param.param_type_name == "argument":
            name = f"{param.metavar} {param.name}".upper()
            args.append(str(pool.id) if "POOL" in name else hex(pool.pages[0].netmem))
    return args


@pytest.mark.parametrize("fixture", ["linux-7.3-mixed", "linux-6.18-mixed"])
def test_no_command_writes_to_the_target(fixture):
    # The world's own Program reads its FakeMemory, which refuses writes once
    # frozen; every command runs on it, and every byte stays as it was.
    world = scenarios.build(fixture)[0]
    world.commit()
    world.mem.frozen = True
    before = _digest(world)
    for command in COMMANDS:
        for extra in ([], ["--json"]):
            if extra and not any(p.name == "as_json" for p in command.params):
                continue
            result = run_cli(*_args(command, world), *extra, program=world.prog)
            assert result.code in (0, 1), (command.name, result)
            assert "PermissionError" not in result.err
    assert _digest(world) == before


def test_frozen_fake_memory_refuses_writes():
    world = scenarios.build("broken-netmem-desc")[0]
    world.commit()
    world.mem.frozen = True
    with pytest.raises(PermissionError):
        world.mem.write(world.heap.va, b"x")


def test_core_and_debug_files_are_only_read(tmp_path):
    for name in ("vmcore", "types.elf"):
        shutil.copyfile(GOOD / name, tmp_path / name)
        (tmp_path / name).chmod(0o444)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    for command in COMMANDS:
        run_cli(
            "-c",
            str(tmp_path / "vmcore"),
            "-s",
            str(tmp_path / "types.elf"),
            *_args(command, scenarios.build("linux-7.3-mixed")[0]),
        )
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before


def _script(path: Path, marker: Path) -> None:
    """An executable that leaves ``marker`` behind if anything ever runs it."""
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.mark.parametrize("member", ["vmcore", "types.elf"])
def test_an_executable_fixture_file_is_not_run(tmp_path, member):
    fx = Path(shutil.copytree(GOOD, tmp_path / "fx"))
    marker = tmp_path / "ran"
    _script(fx / member, marker)
    result = run_cli("-f", str(fx), "pools")
    assert result.code == 3 and not marker.exists(), result


@pytest.mark.parametrize("name", ["run.sh", "sitecustomize.py", "__init__.py", ".hidden", "sub"])
def test_anything_but_elf_and_json_in_a_fixture_is_refused(tmp_path, name):
    fx = Path(shutil.copytree(GOOD, tmp_path / "fx"))
    marker = tmp_path / "ran"
    if name == "sub":
        (fx / name).mkdir()
    else:
        _script(fx / name, marker)
    result = run_cli("-f", str(fx), "pools")
    assert result.code == 3 and "unexpected files" in result.err and not marker.exists()


def test_scripts_next_to_a_vmcore_or_among_symbols_are_not_run(tmp_path):
    marker = tmp_path / "ran"
    symbols = tmp_path / "debug"
    symbols.mkdir()
    for name in ("vmlinux", "vmlinux-7.3.0", "nf_tables.ko", "veth.ko.debug"):
        _script(symbols / name, marker)
    _script(tmp_path / "vmcore", marker)
    assert run_cli("-c", str(tmp_path / "vmcore"), "-s", str(symbols), "pools").code == 3
    assert run_cli("-c", str(GOOD / "vmcore"), "-s", str(symbols), "pools").code == 3
    assert run_cli("-s", str(symbols), "layout").code == 3
    assert not marker.exists()
