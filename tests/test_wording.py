"""
Wording: the lines people read say exactly one thing, in English: counts
agree with their nouns, nothing empty is printed, a path or a hint is named
once, values line up.
"""

import re

from conftest import FIXTURES, run_cli

F = FIXTURES / "linux-7.3-mixed"


def summary(result):
    return result.out.strip().splitlines()[-1]


def test_no_pools_is_not_followed_by_empty_parentheses():
    line = summary(run_cli("-f", str(F), "pools", "--netdev", "nope"))
    assert line.startswith("0 pools, 0 pages in flight ["), line


def test_one_pool_and_one_page_are_singular():
    line = summary(run_cli("-f", str(F), "pools", "--netdev", "lo", "--state", "detached"))
    assert line.startswith(
        "1 pool (1 orphaned), 4 pages in flight; 1 detached, still waiting for 4 pages ["
    ), line
    line = summary(run_cli("-f", str(F), "pages", "--pool", "3"))
    assert line.startswith("15 page-pool pages of 1 pool;"), line


def test_a_provider_kind_is_not_put_after_an_article():
    result = run_cli("-f", str(F), "pages", "--count", "--pool", "14", "--pool", "15")
    assert "a io_uring" not in result.err and "a dmabuf" not in result.err
    assert "pool 15 is filled by a memory provider (io_uring)" in result.err


def test_a_fast_scan_is_not_said_to_take_no_time():
    line = summary(run_cli("-f", str(F), "pages"))
    assert "0.0s" not in line
    assert re.search(r" scanned in (under 1 ms|\d+ ms|\d+\.\d s) \[", line), line


def _value_column(line: str) -> int:
    """Where the last word of a "name   value" line starts."""
    found = re.search(r"\S+\s+(?=\S+$)", line)
    assert found, line
    return found.end()


def test_every_value_of_pool_is_in_one_column():
    lines = run_cli("-f", str(F), "pool", "4").out.splitlines()[1:]
    valued = [line for line in lines if not line.rstrip().endswith(":")]
    starts = {_value_column(line) for line in valued}
    assert len(starts) == 1, valued
    assert any("recycle-released-refcnt" in line for line in valued)


def test_the_missing_kallsyms_are_the_dumps():
    result = run_cli("-c", str(F / "vmcore"), "pools")
    assert "its VMCOREINFO" not in result.err
    assert "the dump's VMCOREINFO does not locate kallsyms" in result.err


def test_a_btf_file_without_btf_is_named_once():
    types = str(F / "types.elf")
    result = run_cli("--btf", types, "layout")
    assert result.code == 3
    assert result.err.count(types) == 1, result.err
    assert "no .BTF section" in result.err


def test_an_error_with_its_own_hint_gets_no_second_one():
    result = run_cli("-f", str(F), "niovs", "--area", "dmabuf:9")
    assert result.code == 2
    assert result.err.strip().endswith("(see netmem-probe providers)"), result.err
    assert result.err.count("(see ") == 1
