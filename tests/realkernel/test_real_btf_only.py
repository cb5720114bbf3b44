"""
Every command on the real Debian dumps with no ``-s`` at all: types from the
BTF in the dump's own memory (``__start_BTF``..``__stop_BTF``), symbols from
the kallsyms its VMCOREINFO locates, and the same answers, exit codes and
notes as with full DWARF (the -dbg vmlinux and the module debug files).
"""

import itertools
import json

import pytest
from conftest import run_cli
from realkernel_dumps import btf_program, dumps, live_record, program, small_kind, truth

from netmem_probe.target import fallback_note

pytestmark = pytest.mark.realkernel
DUMPS = dumps()
SERIES = sorted({series for series, _ in DUMPS})


def same_as_with_debug_info(series: str, kind: str, *args: str):
    want = run_cli(*args, program=program(series, kind))
    have = run_cli(*args, program=btf_program(series, kind))
    assert (have.code, have.out, have.err) == (want.code, want.out, want.err), args
    return have


def _lines(result):
    return [json.loads(line) for line in result.out.splitlines()]


@pytest.mark.parametrize("series,kind", DUMPS)
def test_the_dump_is_read_from_its_own_btf_and_kallsyms(series, kind):
    prog = btf_program(series, kind)
    assert prog.main_module().debug_file_path is None
    note = fallback_note(prog)
    assert note is not None and "BTF (the dump's memory)" in note and "kallsyms" in note


@pytest.mark.parametrize("series,kind", DUMPS)
def test_pools_and_each_pool_as_with_debug_info(series, kind):
    pools = same_as_with_debug_info(series, kind, "pools", "--json").json()
    assert pools
    for pool in pools:
        same_as_with_debug_info(series, kind, "pool", str(pool["id"]), "--json")


@pytest.mark.parametrize("series,kind", DUMPS)
def test_pages_count_as_with_debug_info(series, kind):
    counts = same_as_with_debug_info(series, kind, "pages", "--all-pools", "--count", "--json")
    assert counts.json()


@pytest.mark.parametrize("series,kind", DUMPS)
def test_decode_as_with_debug_info(series, kind):
    pages = _lines(same_as_with_debug_info(series, kind, "pages", "--all-pools", "--json"))
    niovs = _lines(same_as_with_debug_info(series, kind, "niovs", "--json"))
    values = [p["page"] for p in pages] + [n["netmem"] for n in niovs]
    assert values
    same_as_with_debug_info(series, kind, "decode", "--json", *values)


@pytest.mark.parametrize("series,kind", DUMPS)
def test_layout_as_with_debug_info(series, kind):
    rows = same_as_with_debug_info(series, kind, "layout", "--json").json()
    assert rows and all(row["ok"] for row in rows)


@pytest.mark.parametrize("series,kind", DUMPS)
def test_providers_holders_and_leaks_as_with_debug_info(series, kind):
    same_as_with_debug_info(series, kind, "providers", "--json")
    same_as_with_debug_info(series, kind, "leaks", "--json")
    pages = _lines(run_cli("pages", "--all-pools", "--json", program=program(series, kind)))
    niovs = _lines(run_cli("niovs", "--json", program=program(series, kind)))
    values = [p["page"] for p in pages[:4]] + [n["netmem"] for n in niovs[:4]]
    assert values
    same_as_with_debug_info(series, kind, "holders", "--json", *values)


@pytest.mark.parametrize("series", SERIES)
def test_the_command_line_with_no_symbols_says_how_it_read_the_dump(series):
    dump = truth(series)["dumps"][small_kind(series)]
    result = run_cli("-c", dump, "pools", "--json")
    want = run_cli("pools", "--json", program=program(series, small_kind(series)))
    note = (
        f"netmem-probe: note: no debug info for the kernel of {dump}: reading it with "
        "types from BTF (the dump's memory), symbols from kallsyms\n"
    )
    assert (result.code, result.out, result.err) == (want.code, want.out, note + want.err)


def _btf_file(series: str, tmp_path) -> str:
    """The BTF bytes of a series' dump, as a file."""
    prog = btf_program(series, small_kind(series))
    start, stop = (prog.symbol(name).address for name in ("__start_BTF", "__stop_BTF"))
    path = tmp_path / f"{series}.btf"
    path.write_bytes(prog.read(start, stop - start))
    return str(path)


@pytest.mark.parametrize("series", SERIES)
def test_btf_given_as_a_file_reads_the_dump_as_its_memory_does(series, tmp_path):
    dump = truth(series)["dumps"][small_kind(series)]
    result = run_cli("-c", dump, "--btf", _btf_file(series, tmp_path), "pools", "--json")
    want = run_cli("pools", "--json", program=program(series, small_kind(series)))
    assert (result.code, result.out, result.err) == (want.code, want.out, want.err)


@pytest.mark.parametrize("series,other", list(itertools.permutations(SERIES, 2)))
def test_btf_of_another_kernel_is_refused(series, other, tmp_path):
    dump = truth(series)["dumps"][small_kind(series)]
    result = run_cli("-c", dump, "--btf", _btf_file(other, tmp_path), "pools")
    assert result.code == 3 and result.out == ""
    assert result.err.startswith("netmem-probe: error: BTF from ")
    assert "is not this kernel's: VMCOREINFO has" in result.err
    assert len(result.err.splitlines()) == 1


IDENTITY = (
    "id",
    "address",
    "state",
    "netdev",
    "orig-netdev",
    "ifindex",
    "napi-id",
    "netns",
    "queue",
    "driver",
    "order",
    "pool-size",
    "nid",
    "cpuid",
    "flags",
)


@pytest.mark.parametrize("series", SERIES)
def test_live_run_with_no_symbols_read_btf_and_kallsyms_and_saw_the_same_pools(series):
    live = live_record(series, "live-pools.json")
    btf = live.get("btf")
    if btf is None:
        pytest.fail(
            f"{series}: the live run predates the BTF-only run "
            f"(scripts/realkernel/make-vmcore {series} --live)"
        )
    assert btf["ok"] and btf["returncode"] in (0, 1), btf.get("error") or btf["stderr"]
    assert (
        "reading it with types from BTF (/sys/kernel/btf/vmlinux), symbols from /proc/kallsyms"
    ) in btf["stderr"]
    # Both runs read the same running kernel one after the other: the same
    # pools, each with the same identity (counts move on a live kernel).
    assert [{k: p.get(k) for k in IDENTITY} for p in btf["output"]] == [
        {k: p.get(k) for k in IDENTITY} for p in live["output"]
    ]


@pytest.mark.parametrize("series,kind", DUMPS)
def test_module_symbols_come_from_the_module_list_as_from_module_debug_files(series, kind):
    from drgn.helpers.common.memory import identify_address

    dwarf = program(series, kind)
    for name in ("veth_xmit", "virtnet_poll"):
        address = dwarf.symbol(name).address + 1
        assert (
            identify_address(btf_program(series, kind), address)
            == identify_address(dwarf, address)
            == f"function symbol: {name}+0x1"
        )
