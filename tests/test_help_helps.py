"""
Help that helps: a near-miss command names the right one, a directory of
fixtures lists them, a live host without /proc/kcore says what works (and
layout and --drgn do), the shell completes paths, fixture names and columns,
and standard input is read word by word, a bad word skipped, not fatal.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE_NAMES, FIXTURES, ROOT, run_cli

F = str(FIXTURES / "linux-7.3-mixed")
LIVE_BTF = Path("/sys/kernel/btf/vmlinux")


def test_pools_with_an_id_points_at_pool():
    result = run_cli("-f", F, "pools", "10")
    assert result.code == 2
    assert result.err.strip().endswith("; for one pool: netmem-probe pool 10"), result.err


def test_a_directory_of_fixtures_lists_them():
    result = run_cli("-f", str(FIXTURES), "pools")
    assert result.code == 3
    assert f"-f {FIXTURES}/NAME with NAME one of {', '.join(FIXTURE_NAMES)}" in result.err


no_kcore = pytest.mark.skipif(
    Path("/proc/kcore").exists() or not os.access(LIVE_BTF, os.R_OK),
    reason="needs a host without /proc/kcore and with /sys/kernel/btf/vmlinux",
)


@no_kcore
def test_without_proc_kcore_the_error_says_what_works():
    result = run_cli("pools")
    assert result.code == 3
    assert "layout and --drgn scripts work without it" in result.err
    assert "-c VMCORE" in result.err


@no_kcore
@pytest.mark.parametrize(
    "args", [["layout"], ["layout", "--json"], ["pools", "--drgn"], ["leaks", "--drgn"]]
)
def test_without_proc_kcore_commands_that_need_only_types_work(args):
    result = run_cli(*args)
    assert result.code in (0, 1), result.err  # layout: 1 if this kernel's layout disagrees
    assert result.out
    assert f"its types come from {LIVE_BTF}" in result.err


def complete(*words):
    env = {
        **os.environ,
        "COMP_WORDS": " ".join(["netmem-probe", *words]),
        "COMP_CWORD": str(len(words)),
        "_NETMEM_PROBE_COMPLETE": "bash_complete",
    }
    done = subprocess.run(
        [sys.executable, "-m", "netmem_probe"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [tuple(line.split(",", 1)) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("option", ["-c", "-s", "--btf"])
def test_completion_completes_paths(option):
    assert complete(option, "fix") == [("file", "fix")]


def test_completion_completes_fixture_names_and_directories():
    got = complete("-f", "linux-7.3")
    assert got == [
        ("dir", "linux-7.3"),
        ("plain", "linux-7.3-arm64-16k-mixed"),
        ("plain", "linux-7.3-arm64-mixed"),
        ("plain", "linux-7.3-many-pools"),
        ("plain", "linux-7.3-mixed"),
    ]


def test_completion_completes_columns_one_after_the_other():
    assert ("plain", "id,inflight-mem") in complete("-f", F, "pools", "--columns", "id,inflight")


def test_holders_reads_standard_input_like_decode():
    pages = "0xffffea0000180500\n0xffffea0000180e00\n"
    from_stdin = run_cli("-f", F, "holders", "--json", "-", stdin=pages)
    from_args = run_cli("-f", F, "holders", "--json", *pages.split())
    assert from_stdin.code == from_args.code and from_stdin.out == from_args.out
    assert len(from_stdin.json()) == 2


@pytest.mark.parametrize("command", ["decode", "holders"])
def test_one_bad_word_on_standard_input_is_skipped_not_fatal(command):
    good = "0xffffea0000180500"
    result = run_cli("-f", F, command, "--json", "-", stdin=f"{good} zzz\n0x{'f' * 17}\n")
    assert result.code == 4, result  # partial: words were skipped
    assert [r["netmem"] for r in result.json()] == [good]
    warnings = result.err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("netmem-probe: warning: '") for w in warnings)
    assert "'zzz' on standard input is not a netmem_ref" in warnings[0]


def test_a_bad_word_on_the_command_line_is_still_a_usage_error():
    assert run_cli("-f", F, "holders", "zzz").code == 2
