"""Opening targets that are fine (every bad one is in test_bad_input.py)."""

from conftest import FIXTURES, run_cli


def test_core_with_its_own_types_works_like_the_fixture():
    d = FIXTURES / "linux-7.3-mixed"
    as_core = run_cli("-c", str(d / "vmcore"), "-s", str(d / "types.elf"), "pools", "--json")
    as_fixture = run_cli("-f", str(d), "pools", "--json")
    assert as_core.out == as_fixture.out and as_core.code == as_fixture.code
    assert "truncated" not in as_core.err
