"""
Every exit code in the README's table, each from a run that gives it, and
the cases that once gave the wrong one.  The table itself is checked
against the codes :mod:`netmem_probe.context` defines.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import FIXTURES, ROOT, run_cli

from netmem_probe import context
from netmem_probe.elf import ElfFile
from netmem_probe.fake import scenarios
from netmem_probe.fake.faults import FaultyMemory

F = str(FIXTURES / "linux-7.3-mixed")
M = str(FIXTURES / "linux-7.3-many-pools")


def readme_codes():
    """code -> meaning, from the README's exit-code table."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Exit codes") :]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.*) \|$", table, re.M)}


def test_the_readme_table_lists_every_code_the_tool_defines():
    defined = {v for k, v in vars(context).items() if k.startswith("EXIT_")}
    assert set(readme_codes()) == defined


def _error_line(result):
    lines = result.err.strip().splitlines()
    assert lines and lines[-1].startswith("netmem-probe: error: "), result.err
    assert "Traceback" not in result.err
    return lines[-1]


def _subprocess(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "netmem_probe", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# -- 0 and 1 -------------------------------------------------------------------


def test_0_nothing_to_report():
    assert run_cli("-f", F, "pool", "3").code == 0


def test_1_findings():
    assert run_cli("-f", F, "pools").code == 1  # detached pools wait for pages


def test_a_page_a_live_pool_has_dma_mapped_is_held():
    # Pool 4 of eth0 handed the page out; only its dma_mapped XArray names it.
    # That pool structure holds it: not a "held by nothing" finding.
    result = run_cli("-f", M, "holders", "--json", "0xffffea0000180000")
    assert result.code == 0, result
    (record,) = result.json()
    assert [h["kind"] for h in record["holders"]] == ["pool-dma-mapped"]


# -- 2: usage ------------------------------------------------------------------


@pytest.mark.parametrize("option", ["-s", "--btf"])
def test_2_types_given_with_a_fixture_is_a_usage_error(option):
    result = run_cli("-f", F, option, "X", "pools")
    assert result.code == 2, result
    assert "does not apply to a fixture" in _error_line(result)


@pytest.mark.parametrize("command", ["leaks", "pages"])
def test_2_a_pool_id_the_target_lacks(command):
    result = run_cli("-f", F, command, "--pool", "999")
    assert result.code == 2, result
    assert "no page pool with id 999" in _error_line(result)
    assert result.out == ""


def test_leaks_of_a_pool_that_is_not_detached_says_so():
    result = run_cli("-f", F, "leaks", "--pool", "3")
    assert result.code == 0, result
    assert result.out == "no detached page pool with pages in flight among pool 3\n"


# -- 3: cannot open the target ------------------------------------------------


def _damaged_types(tmp_path):
    """A copy of F whose DWARF has an abbreviation code nothing declares."""
    fx = shutil.copytree(F, tmp_path / "fx")
    types = fx / "types.elf"
    with open(types, "rb") as f:
        debug_info = ElfFile(f, str(types)).section_header(".debug_info").offset
    raw = bytearray(types.read_bytes())
    raw[debug_info + 0x10 : debug_info + 0x20] = b"\xff" * 16
    types.write_bytes(raw)
    return fx


def test_3_damaged_debug_info_of_a_fixture(tmp_path):
    fx = _damaged_types(tmp_path)
    result = run_cli("-f", str(fx), "pools")
    assert result.code == 3, result
    assert "damaged debug info" in _error_line(result)


def test_3_damaged_debug_info_given_with_s(tmp_path):
    fx = _damaged_types(tmp_path)
    for args in (
        ["-c", str(fx / "vmcore"), "-s", str(fx / "types.elf"), "pools"],
        ["-s", str(fx / "types.elf"), "layout"],
    ):
        result = run_cli(*args)
        assert result.code == 3, (args, result)
        assert ".debug_info" in _error_line(result)


# -- 4: partial result ---------------------------------------------------------


def test_4_a_dump_cut_in_half_is_partial_and_not_called_consistent(tmp_path):
    core = tmp_path / "vmcore"
    whole = (FIXTURES / "linux-7.3-mixed" / "vmcore").read_bytes()
    core.write_bytes(whole[: len(whole) // 2])
    result = run_cli(
        "-c", str(core), "-s", str(FIXTURES / "linux-7.3-mixed" / "types.elf"), "pools"
    )
    assert result.code == 4, result
    assert "object(s) skipped" in result.err
    assert result.out.rstrip().endswith("[core dump (truncated)]"), result.out
    assert "consistent" not in result.out


# -- 70: internal error --------------------------------------------------------


def _program_that_fails(after_reads, exception):
    world = scenarios.build("linux-7.3-mixed")[0]
    world.commit()
    memory = FaultyMemory(world)

    def fail(memory, address, count):
        if memory.reads > after_reads:
            raise exception

    memory.on_read.append(fail)
    return memory.program()


@pytest.mark.parametrize("debug", [False, True])
def test_70_an_unexpected_exception_is_an_internal_error(debug):
    program = _program_that_fails(50, RuntimeError("nobody expected this"))
    result = run_cli(*(["--debug"] if debug else []), "pools", program=program)
    assert result.code == 70, result
    last = result.err.strip().splitlines()[-1]
    assert last.startswith(
        "netmem-probe: error: RuntimeError: nobody expected this: an internal error"
    ), last
    if debug:
        assert "Traceback" in result.err and "use --debug" not in result.err
    else:
        assert "Traceback" not in result.err and "(use --debug for the traceback)" in last


# -- 130: interrupted ----------------------------------------------------------


def test_130_ctrl_c():
    # A real SIGINT, delivered while the tool reads the target's memory.
    script = textwrap.dedent("""
        import os, signal, sys
        from netmem_probe.cli import main
        from netmem_probe.fake import scenarios
        from netmem_probe.fake.faults import FaultyMemory
        world = scenarios.build("linux-7.3-mixed")[0]
        world.commit()
        memory = FaultyMemory(world)
        def interrupt(memory, address, count):
            if memory.reads == 50:
                os.kill(os.getpid(), signal.SIGINT)
        memory.on_read.append(interrupt)
        sys.exit(main(["pools"], program=memory.program()))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "netmem-probe: error: interrupted"
    assert "Traceback" not in done.stderr


# -- 141: the reader went away -------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [M, "pools"],  # a table, written at the end
        [F, "niovs", "--json"],  # JSON Lines, flushed line by line
    ],
)
def test_141_a_closed_pipe_is_not_a_finding(args):
    fixture, *command = args
    reader, writer = os.pipe()
    os.close(reader)  # like `| head -1` after its line: nobody reads any more
    try:
        child = _subprocess("-f", fixture, *command, stdout=writer)
    finally:
        os.close(writer)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 141, err
    assert err == "", err  # no error, no "Exception ignored" from the final flush
