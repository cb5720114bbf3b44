"""``layout``: the kernel's netmem asserts, on fixtures, debug info alone, and real BTF."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Tuple

import pytest
from conftest import FIXTURES, ROOT, expected, fixtures_with, run_cli

LAYOUT_FIXTURES = fixtures_with("layout")


@pytest.mark.parametrize("name", LAYOUT_FIXTURES)
def test_layout_checks_the_asserts_of_the_fixture_kernel(name):
    truth = expected(name)["layout"]
    result = run_cli("-f", f"fixtures/vmcore-stubs/{name}", "layout", "--json")
    rows = result.json()
    assert len(rows) == truth["asserts"]
    assert sum(not row["ok"] for row in rows) == truth["mismatches"]
    assert result.code == (1 if truth["mismatches"] else 0)


def test_broken_layout_names_both_members_and_offsets():
    result = run_cli("-f", "fixtures/vmcore-stubs/broken-netmem-desc", "layout")
    assert result.code == 1
    assert (
        "struct page._pp_mapping_pad is 8 bytes but struct netmem_desc._pp_mapping_pad is 4"
    ) in result.err
    assert "MISMATCH" in result.out


def test_layout_runs_on_debug_info_alone():
    types = FIXTURES / "linux-7.3-mixed" / "types.elf"
    result = run_cli("-s", str(types), "layout", "--json")
    assert result.code == 0, result.err
    assert len(result.json()) == expected("linux-7.3-mixed")["layout"]["asserts"]


def _pahole_members(btf: str, struct: str):
    """member name -> (offset, size), and the struct size, from pahole."""
    text = subprocess.run(
        ["pahole", "-C", struct, btf], capture_output=True, text=True, check=True
    ).stdout
    members: Dict[str, Tuple[int, int]] = {}
    for line in text.splitlines():
        m = re.match(r"\s+.*?[\s*]([A-Za-z_]\w*)(\[\d*\])*;\s+/\*\s+(\d+)\s+(\d+)\s+\*/", line)
        if m:
            members.setdefault(m[1], (int(m[3]), int(m[4])))
    size = re.search(r"/\* size: (\d+)", text)
    assert size, text
    return members, int(size[1])


def test_layout_on_the_hosts_btf_matches_pahole(tmp_path):
    btf = "/sys/kernel/btf/vmlinux"
    if not Path(btf).exists():
        pytest.skip("this host's kernel has no BTF (/sys/kernel/btf/vmlinux)")
    for tool in ("bpftool", "pahole", "gcc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required for this test (apt-get install bpftool dwarves gcc)")
    types = tmp_path / "host-btf.o"
    subprocess.run([str(ROOT / "scripts/layouts/from-btf.sh"), btf, str(types)], check=True)
    _assert_agrees_with_pahole(run_cli("-s", str(types), "layout", "--json"), btf)


def test_layout_with_btf_of_the_host_matches_pahole():
    """``--btf`` reads the BTF itself: no bpftool, no compiler, no root."""
    btf = "/sys/kernel/btf/vmlinux"
    if not Path(btf).exists():
        pytest.skip("this host's kernel has no BTF (/sys/kernel/btf/vmlinux)")
    if shutil.which("pahole") is None:
        pytest.fail("pahole is required for this test (apt-get install dwarves)")
    result = run_cli("--btf", btf, "layout", "--json")
    assert result.err == "", result.err
    _assert_agrees_with_pahole(result, btf)


def _assert_agrees_with_pahole(result, btf: str) -> None:
    rows = result.json()
    assert rows, "no netmem layout asserts apply to the host kernel"
    pahole = {}
    for row in rows:
        for side in ("left", "right"):
            struct = row[side]["type"].split()[-1]
            if struct not in pahole:
                pahole[struct] = _pahole_members(btf, struct)
            members, size = pahole[struct]
            if row[side]["member"] == "*":
                assert row[side]["size"] == size
            else:
                assert (row[side]["offset"], row[side]["size"]) == members[row[side]["member"]]
    assert result.code == 0 and all(row["ok"] for row in rows)
