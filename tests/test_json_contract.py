"""
The ``--json`` contract (README, "JSON output"): netlink's kebab-case keys in
every command, and ``null`` for what was not read, never an invented value.
"""

import json
import re
from typing import Any, Iterator, List, Tuple

import pytest
from conftest import FIXTURE_NAMES, run_cli
from invocations import invocations

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
F = "fixtures/vmcore-stubs/linux-7.3-mixed"


def parse(text: str) -> Any:
    """A command's --json output: one JSON document, or JSON Lines."""
    text = text.strip()
    try:
        return json.loads(text) if text else []
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]


def keys(value: Any, path: str = "") -> Iterator[Tuple[str, str]]:
    """(path, key) of every object key in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key
            yield from keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from keys(item, f"{path}[]")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_json_key_is_kebab_case(name, fixture_program):
    prog = fixture_program(name)
    bad: List[str] = []
    for args in invocations(name):
        result = run_cli(*args, "--json", program=prog)
        assert result.code in (0, 1), (args, result)
        bad += [
            f"{' '.join(args)}: {path}.{key}"
            for path, key in keys(parse(result.out))
            if not KEBAB.match(key)
        ]
    assert not bad


@pytest.mark.parametrize("value", ["0x1", "0xffffffffffffffff"])
def test_an_unreadable_net_iov_shows_nothing_it_did_not_read(value):
    result = run_cli("-f", F, "decode", value, "--json")
    assert result.code == 1
    [record] = result.json()
    assert record["error"].startswith("struct net_iov is unmapped")
    for key in ("owner", "dma-addr", "pp-ref-count", "num-niovs", "index", "pool"):
        assert record[key] is None, key
    table = run_cli("-f", F, "decode", value).out
    assert "owner" not in table and "pp-ref-count" not in table and "dma-addr" not in table


def test_decode_shows_the_pfn_as_the_tables_do():
    pages = run_cli("-f", F, "pages", "--pool", "10").out.splitlines()
    pfn = pages[2].split()[0]
    assert pfn.startswith("0x")
    block = run_cli("-f", F, "decode", pages[2].split()[1]).out
    assert f"  pfn           {pfn}\n" in block
