"""Opening targets: every failure is one line on stderr and exit code 3."""

import os
import shutil

import pytest

from conftest import FIXTURES, run_cli


def _one_line_error(result, code=3):
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netmem-probe: error:"), result.err
    assert "Traceback" not in result.err


def test_missing_core_file(tmp_path):
    _one_line_error(run_cli("-c", str(tmp_path / "nope"), "pools"))


def test_empty_core_file(tmp_path):
    core = tmp_path / "vmcore"
    core.write_bytes(b"")
    _one_line_error(run_cli("-c", str(core), "pools"))


def test_garbage_core_file(tmp_path):
    core = tmp_path / "vmcore"
    core.write_bytes(os.urandom(4096))
    _one_line_error(run_cli("-c", str(core), "pools"))


def test_truncated_core_file(tmp_path):
    core = tmp_path / "vmcore"
    core.write_bytes((FIXTURES / "linux-7.3-mixed" / "vmcore").read_bytes()[:100])
    _one_line_error(run_cli("-c", str(core), "pools"))


def test_core_without_debug_info():
    _one_line_error(run_cli("-c", str(FIXTURES / "linux-7.3-mixed" / "vmcore"), "pools"))


def test_core_with_mismatched_debug_info():
    result = run_cli("-c", str(FIXTURES / "linux-7.3-mixed" / "vmcore"), "-s",
                     str(FIXTURES / "linux-6.18-mixed" / "types.elf"), "pools")
    _one_line_error(result)
    assert "build ID" in result.err


def test_core_with_its_own_types_works_like_the_fixture():
    d = FIXTURES / "linux-7.3-mixed"
    as_core = run_cli("-c", str(d / "vmcore"), "-s", str(d / "types.elf"), "pools", "--json")
    as_fixture = run_cli("-f", str(d), "pools", "--json")
    assert as_core.out == as_fixture.out and as_core.code == as_fixture.code


def test_core_and_fixture_together_is_a_usage_error():
    _one_line_error(run_cli("-c", "x", "-f", "y", "pools"), code=2)


def test_fixture_missing_a_file(tmp_path):
    shutil.copytree(FIXTURES / "linux-7.3-mixed", tmp_path / "fx")
    (tmp_path / "fx" / "types.elf").unlink()
    _one_line_error(run_cli("-f", str(tmp_path / "fx"), "pools"))


def test_fixture_with_foreign_files_is_refused(tmp_path):
    shutil.copytree(FIXTURES / "linux-7.3-mixed", tmp_path / "fx")
    (tmp_path / "fx" / "run.sh").write_text("#!/bin/sh\n")
    _one_line_error(run_cli("-f", str(tmp_path / "fx"), "pools"))


def test_fixture_types_of_another_kernel_are_refused(tmp_path):
    shutil.copytree(FIXTURES / "linux-7.3-mixed", tmp_path / "fx")
    shutil.copyfile(FIXTURES / "linux-6.18-mixed" / "types.elf", tmp_path / "fx" / "types.elf")
    _one_line_error(run_cli("-f", str(tmp_path / "fx"), "pools"))


@pytest.mark.skipif(os.path.exists("/proc/kcore") and os.geteuid() == 0,
                    reason="this host can open /proc/kcore")
def test_live_without_kcore_or_root():
    _one_line_error(run_cli("pools"))


def test_unknown_subcommand_is_a_usage_error():
    _one_line_error(run_cli("frobnicate"), code=2)
