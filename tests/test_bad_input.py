"""
Bad input: every way of naming a target or an argument wrongly ends in one
line on stderr (``netmem-probe: error: ...``), the documented exit code, and
no traceback.  Exit codes (README): 2 usage, 3 cannot open the target, 1 a
finding (a netmem value that points at nothing valid), 4 a partial result.
"""

import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, run_cli

GOOD = FIXTURES / "linux-7.3-mixed"
OTHER = FIXTURES / "linux-6.18-mixed"
CORE = GOOD / "vmcore"
TYPES = GOOD / "types.elf"


def one_line_error(result, code, *, says=None):
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netmem-probe: error: "), result.err
    assert "Traceback" not in result.err + result.out
    assert "--debug for the traceback" not in result.err, "an exception escaped the tool's checks"
    if says is not None:
        assert says in lines[0], lines[0]
    return lines[0]


def patched(src: Path, dst: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(src.read_bytes())
    raw[offset : offset + len(data)] = data
    dst.write_bytes(raw)
    return dst


def user_space_core(path: Path) -> Path:
    """An x86-64 ELF core of a process: NT_PRSTATUS and memory, no VMCOREINFO."""
    name = b"CORE\0\0\0\0"
    prstatus = bytes(336)
    note = struct.pack("<III", 5, len(prstatus), 1) + name + prstatus
    memory = b"\xcc" * 4096
    notes_off = 64 + 2 * 56
    load_off = -(-(notes_off + len(note)) // 4096) * 4096
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + bytes(9),
        4,
        62,
        1,
        0,
        64,
        0,
        0,
        64,
        56,
        2,
        64,
        0,
        0,
    )
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, notes_off, 0, 0, len(note), 0, 4)
    phdrs += struct.pack("<IIQQQQQQ", 1, 5, load_off, 0x400000, 0, 4096, 4096, 4096)
    body = ehdr + phdrs + note
    path.write_bytes(body + bytes(load_off - len(body)) + memory)
    return path


def copy_fixture(tmp_path: Path, name: str = "fx") -> Path:
    return Path(shutil.copytree(GOOD, tmp_path / name))


# -- core dumps (-c) ------------------------------------------------------------


def test_missing_core_file(tmp_path):
    one_line_error(run_cli("-c", str(tmp_path / "nope"), "pools"), 3, says="does not exist")


def test_empty_core_file(tmp_path):
    core = tmp_path / "vmcore"
    core.write_bytes(b"")
    one_line_error(run_cli("-c", str(core), "pools"), 3, says="is empty")


@pytest.mark.parametrize("size", [4, 64, 100, 1000])
def test_core_truncated_in_its_headers(tmp_path, size):
    core = tmp_path / "vmcore"
    core.write_bytes(CORE.read_bytes()[:size])
    one_line_error(run_cli("-c", str(core), "-s", str(TYPES), "pools"), 3)


def test_core_truncated_in_its_memory_is_a_partial_result(tmp_path):
    # A dump cut short by a full disk is still evidence: what can be read is
    # shown, the rest is counted as unreadable, and the cut is named.
    core = tmp_path / "vmcore"
    core.write_bytes(CORE.read_bytes()[:20000])
    result = run_cli("-c", str(core), "-s", str(TYPES), "pools")
    assert result.code == 4, result
    assert "is truncated: 20000 bytes" in result.err
    assert "object(s) skipped" in result.err and "Traceback" not in result.err


def test_garbage_core_file(tmp_path):
    core = tmp_path / "vmcore"
    core.write_bytes(os.urandom(4096))
    one_line_error(run_cli("-c", str(core), "-s", str(TYPES), "pools"), 3)


@pytest.mark.parametrize("kind", ["text", "gzip", "executable", "debug-info"])
def test_non_core_files(tmp_path, kind):
    core = tmp_path / "vmcore"
    if kind == "text":
        core.write_text("this is not a core dump\n")
    elif kind == "gzip":
        core.write_bytes(gzip.compress(CORE.read_bytes()))
    elif kind == "executable":
        shutil.copyfile(sys.executable, core)
    else:
        shutil.copyfile(TYPES, core)
    one_line_error(
        run_cli("-c", str(core), "-s", str(TYPES), "pools"), 3, says="cannot open core dump"
    )


@pytest.mark.parametrize("path", ["/dev/null", "/"])
def test_core_that_is_not_a_regular_file(path):
    one_line_error(run_cli("-c", path, "pools"), 3, says="not a regular file")


def test_user_space_core(tmp_path):
    core = user_space_core(tmp_path / "core")
    one_line_error(
        run_cli("-c", str(core), "-s", str(TYPES), "pools"), 3, says="not a Linux kernel core dump"
    )


@pytest.mark.skipif(shutil.which("gcore") is None, reason="needs gdb's gcore")
def test_user_space_core_from_gcore(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        made = subprocess.run(
            ["gcore", "-o", str(tmp_path / "core"), str(sleeper.pid)],
            capture_output=True,
            timeout=60,
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    cores = list(tmp_path.glob("core.*"))
    if made.returncode or not cores:
        pytest.skip("gcore cannot attach here (ptrace restricted)")
    one_line_error(
        run_cli("-c", str(cores[0]), "-s", str(TYPES), "pools"),
        3,
        says="not a Linux kernel core dump",
    )


def test_core_without_debug_info():
    one_line_error(run_cli("-c", str(CORE), "pools"), 3, says="no debug info")


def test_core_with_mismatched_debug_info():
    one_line_error(
        run_cli("-c", str(CORE), "-s", str(OTHER / "types.elf"), "pools"), 3, says="build ID"
    )


def test_core_with_debug_info_of_another_architecture(tmp_path):
    # e_machine EM_AARCH64 with the build ID still matching: only the
    # architecture check stands between this and a wrong answer.
    arm = patched(TYPES, tmp_path / "vmlinux", 18, struct.pack("<H", 183))
    one_line_error(run_cli("-c", str(CORE), "-s", str(arm), "pools"), 3, says="AARCH64")


def test_core_of_another_architecture(tmp_path):
    arm = patched(CORE, tmp_path / "vmcore", 18, struct.pack("<H", 183))
    one_line_error(run_cli("-c", str(arm), "-s", str(TYPES), "pools"), 3, says="X86_64")


def test_32_bit_debug_info_for_a_64_bit_core(tmp_path):
    elf32 = patched(TYPES, tmp_path / "vmlinux", 4, b"\x01")
    one_line_error(run_cli("-c", str(CORE), "-s", str(elf32), "pools"), 3)


def test_symbols_that_do_not_exist():
    one_line_error(
        run_cli("-c", str(CORE), "-s", "/nonexistent/vmlinux", "pools"), 3, says="does not exist"
    )


@pytest.mark.parametrize("kind", ["text", "no-dwarf"])
def test_symbols_that_are_not_debug_info(tmp_path, kind):
    vmlinux = tmp_path / "vmlinux"
    if kind == "text":
        vmlinux.write_text("not an ELF\n")
    else:
        shutil.copyfile(sys.executable, vmlinux)
    one_line_error(run_cli("-c", str(CORE), "-s", str(vmlinux), "pools"), 3)
    one_line_error(run_cli("-s", str(vmlinux), "layout"), 3)


def test_symbols_directory_without_debug_info(tmp_path):
    (tmp_path / "README").write_text("nothing here\n")
    one_line_error(run_cli("-c", str(CORE), "-s", str(tmp_path), "pools"), 3, says="no debug info")


# -- fixtures (-f) --------------------------------------------------------------


def test_fixture_that_does_not_exist(tmp_path):
    one_line_error(run_cli("-f", str(tmp_path / "nope"), "pools"), 3, says="does not exist")


def test_fixture_that_is_a_file():
    one_line_error(run_cli("-f", str(CORE), "pools"), 3, says="not a directory")


@pytest.mark.parametrize("member", ["vmcore", "types.elf", "expected.json"])
def test_fixture_missing_a_file(tmp_path, member):
    fx = copy_fixture(tmp_path)
    (fx / member).unlink()
    one_line_error(run_cli("-f", str(fx), "pools"), 3, says="does not exist")


def test_fixture_with_foreign_files_is_refused(tmp_path):
    fx = copy_fixture(tmp_path)
    (fx / "run.sh").write_text("#!/bin/sh\n")
    one_line_error(run_cli("-f", str(fx), "pools"), 3, says="unexpected files (run.sh)")


def test_fixture_types_of_another_kernel_are_refused(tmp_path):
    fx = copy_fixture(tmp_path)
    shutil.copyfile(OTHER / "types.elf", fx / "types.elf")
    one_line_error(run_cli("-f", str(fx), "pools"), 3, says="do not match its vmcore")


def test_fixture_with_a_garbage_vmcore(tmp_path):
    fx = copy_fixture(tmp_path)
    (fx / "vmcore").write_bytes(os.urandom(8192))
    one_line_error(run_cli("-f", str(fx), "pools"), 3)


def test_fixture_with_a_truncated_vmcore(tmp_path):
    # Unlike a vmcore, a fixture is generated whole: a short one is damaged.
    fx = copy_fixture(tmp_path)
    (fx / "vmcore").write_bytes(CORE.read_bytes()[:20000])
    one_line_error(run_cli("-f", str(fx), "pools"), 3, says="is truncated")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        '{"pools": [1, 2,',
        "not json",
        '["an", "array"]',
        "[" * 100000,
        "\udcff",
    ],
)
def test_fixture_with_malformed_expected_json(tmp_path, text):
    # The tool never reads a fixture's truth, but a fixture is ELF + JSON
    # data only: a file that is not a JSON object means a damaged fixture.
    fx = copy_fixture(tmp_path)
    (fx / "expected.json").write_bytes(text.encode(errors="surrogateescape"))
    one_line_error(run_cli("-f", str(fx), "pools"), 3, says="expected.json")


def test_fixture_member_linking_outside_is_refused(tmp_path):
    fx = copy_fixture(tmp_path)
    outside = tmp_path / "elsewhere.json"
    shutil.copyfile(GOOD / "expected.json", outside)
    (fx / "expected.json").unlink()
    (fx / "expected.json").symlink_to(outside)
    one_line_error(run_cli("-f", str(fx), "pools"), 3, says="outside")


def test_fixture_member_linking_in_a_loop_is_refused(tmp_path):
    fx = copy_fixture(tmp_path)
    (fx / "vmcore").unlink()
    (fx / "vmcore").symlink_to("vmcore")
    one_line_error(run_cli("-f", str(fx), "pools"), 3, says="looping symbolic link")


def test_fixture_path_linking_outside_its_directory_is_refused(tmp_path):
    fx = copy_fixture(tmp_path / "real")
    (tmp_path / "stubs").mkdir()
    (tmp_path / "stubs" / "fx").symlink_to(fx)
    one_line_error(run_cli("-f", str(tmp_path / "stubs" / "fx"), "pools"), 3, says="outside")


def test_fixture_path_linking_within_its_directory_is_followed(tmp_path):
    fx = copy_fixture(tmp_path)
    (tmp_path / "alias").symlink_to(fx.name)
    assert run_cli("-f", str(tmp_path / "alias"), "pools", "--json").json()


def test_fixture_with_symbols_is_refused():
    one_line_error(run_cli("-f", str(GOOD), "-s", str(TYPES), "pools"), 2, says="-s/--symbols")


# -- the live kernel ------------------------------------------------------------


def _live(tmp_path: Path, kcore: str, drop_dac: bool):
    """
    Run ``netmem-probe pools`` on a live target in a private mount namespace
    whose /proc holds only the ``kcore`` given ("absent", "unreadable",
    "junk"), so the real target-opening code meets each case on any host.
    """
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs root, unshare and setpriv to fake /proc")
    proc = tmp_path / "proc"
    proc.mkdir()
    setup = f"mount -t tmpfs none {proc}"
    if kcore == "unreadable":
        setup += f" && touch {proc}/kcore && chmod 000 {proc}/kcore"
    elif kcore == "junk":
        setup += f" && echo junk > {proc}/kcore"
    run = f"{sys.executable} -m netmem_probe pools"
    if drop_dac:
        # root without CAP_DAC_OVERRIDE: file modes apply, as for a user.
        run = f"setpriv --bounding-set=-dac_override,-dac_read_search --inh-caps=-all {run}"
    script = f"{setup} && mount --bind {proc} /proc && exec {run}"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("cannot make a mount namespace here")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )

    class Result:
        code, out, err = done.returncode, done.stdout, done.stderr

        def __repr__(self):
            return f"Result({self.code}, {self.err!r})"

    return Result()


def test_live_without_proc_kcore(tmp_path):
    one_line_error(_live(tmp_path, "absent", drop_dac=False), 3, says="/proc/kcore does not exist")


def test_live_without_permission_to_read_proc_kcore(tmp_path):
    one_line_error(_live(tmp_path, "unreadable", drop_dac=True), 3, says="needs root")


def test_live_with_a_proc_kcore_that_is_not_a_core(tmp_path):
    one_line_error(_live(tmp_path, "junk", drop_dac=False), 3, says="cannot open the live kernel")


# -- usage ----------------------------------------------------------------------


def test_core_and_fixture_together_is_a_usage_error():
    one_line_error(run_cli("-c", str(CORE), "-f", str(GOOD), "pools"), 2, says="exclusive")


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus", "pools"],
        ["-f", str(GOOD), "pools", "--bogus"],
        ["-f", str(GOOD), "pools", "--state", "bogus"],
        ["-f", str(GOOD), "pools", "--sort", "size"],
        ["-f", str(GOOD), "pools", "--netdev"],
        ["-c"],
    ],
)
def test_unknown_or_incomplete_options(args):
    one_line_error(run_cli(*args), 2)


def test_unknown_command():
    one_line_error(run_cli("-f", str(GOOD), "frobnicate"), 2, says="frobnicate")


def test_no_command_prints_the_help_and_one_error_line():
    result = run_cli()
    one_line_error(result, 2, says="no command given")
    assert "Commands:" in result.out


def test_missing_argument():
    one_line_error(run_cli("-f", str(GOOD), "pool"), 2, says="POOL")


# -- decode values --------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["zzz", "0xzz", "-4", "-0x10", "0x" + "f" * 17, str(1 << 64), "1.5", "", " ", "0x"]
)
def test_decode_values_that_are_not_netmem_refs(value):
    one_line_error(run_cli("-f", str(GOOD), "decode", "--", value), 2)


def test_decode_without_values_on_stdin():
    one_line_error(run_cli("-f", str(GOOD), "decode", "-", stdin=""), 2, says="no NETMEM")


@pytest.mark.parametrize(
    "value, reason",
    [
        ("0", "NULL"),
        ("0xffffea0000000008", "misaligned"),  # inside the memmap, not on a struct page
        ("0xffff888000001000", "outside the memmap"),  # a direct-map address
        ("0xffffea00ffffffc0", "no struct page"),  # a pfn beyond memory
        ("0xffffffffffffffc0", "no struct page"),  # the top of the address space
        ("0x1", "unmapped"),  # NET_IOV | NULL
        ("0xdead000000000001", "unmapped"),  # a net_iov in unmapped memory
        ("0x00007f0000000001", "unmapped"),  # a user-space address
    ],
)
def test_decode_values_that_point_at_nothing_valid(value, reason):
    # A value that names nothing is a finding about the value (exit 1), with
    # the reason in the record, not an error.
    result = run_cli("-f", str(GOOD), "decode", "--json", value)
    assert result.code == 1 and result.err == "", result
    (record,) = result.json()
    assert reason in record["error"], record


# -- pool keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, says",
    [
        ("99999", "no page pool with id 99999"),
        ("0xffff888000000000", "no page pool with address"),
        ("eth0", "neither a pool id nor an address"),
        ("-1", "-1"),
        ("1" * 40, "no page pool with id"),
        ("0x", "neither a pool id nor an address"),
    ],
)
def test_pool_keys_that_name_no_pool(key, says):
    one_line_error(run_cli("-f", str(GOOD), "pool", "--", key), 2, says=says)


def test_core_whose_osrelease_is_not_utf8(tmp_path):
    # VMCOREINFO's OSRELEASE with a stray byte, and debug info that does not
    # match: the error names the release as well as it can (found by fuzzing).
    raw = CORE.read_bytes()
    at = raw.index(b"OSRELEASE=") + len(b"OSRELEASE=")
    core = tmp_path / "vmcore"
    core.write_bytes(raw[:at] + b"\x80" + raw[at + 1 :])
    one_line_error(
        run_cli("-c", str(core), "-s", str(OTHER / "types.elf"), "pools"), 3, says="\ufffd"
    )


def test_core_whose_headers_place_data_past_any_file(tmp_path):
    # p_offset 1 << 63 in the last PT_LOAD: not a truncation (which is read
    # as far as it goes) but a corrupt header (found by fuzzing).
    raw = bytearray(CORE.read_bytes())
    phoff, phnum = struct.unpack_from("<Q", raw, 32)[0], struct.unpack_from("<H", raw, 56)[0]
    struct.pack_into("<Q", raw, phoff + 56 * (phnum - 1) + 8, 1 << 63)
    core = tmp_path / "vmcore"
    core.write_bytes(raw)
    one_line_error(run_cli("-c", str(core), "-s", str(TYPES), "pools"), 3, says="is corrupt")
