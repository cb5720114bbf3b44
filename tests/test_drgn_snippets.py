"""
``--drgn``: every command prints plain drgn code, and that code, run on the
fixture's Program, prints the rows the command reports (the keys of
``netmem_probe.snippets.KEYS``, same values).
"""

import ast
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import FIXTURES, expected, run_cli
from netmem_probe.commands import COMMANDS
from netmem_probe.snippets import COUNT_KEYS, KEYS

MIXED = ["linux-6.12-mixed", "linux-6.16-mixed", "linux-6.18-mixed", "linux-7.1-rc-mixed",
         "linux-7.3-mixed"]
MISSING = object()


def snippet(prog, *args: str) -> str:
    """The code ``netmem-probe ARGS --drgn`` prints for ``prog``."""
    result = run_cli(*args, "--drgn", program=prog)
    assert result.code == 0, result
    assert result.err == "", result
    return result.out


def run_snippet(code: str, prog) -> List[Dict[str, Any]]:
    """Rows a snippet prints, executed the way drgn runs a script: ``prog`` defined."""
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), {"prog": prog, "__name__": "__main__"})
    return [json.loads(line) for line in out.getvalue().splitlines()]


def project(rows: List[Dict[str, Any]], keys) -> List[Dict[str, Any]]:
    """Rows reduced to ``keys``; a key a row leaves out stays left out."""
    return [{k: row.get(k, MISSING) for k in keys} for row in rows]


def compare(name: str, fixture_program, command: List[str], keys) -> List[Dict[str, Any]]:
    """Run the command's --json and its snippet; assert the same rows; return them."""
    prog = fixture_program(name)
    result = run_cli(*command, "--json", program=prog)
    assert result.code in (0, 1), result
    text = result.out.strip()
    mine = json.loads(text) if text.startswith("[") or text.startswith("{\n") else [
        json.loads(line) for line in text.splitlines()]
    mine = mine if isinstance(mine, list) else [mine]
    theirs = run_snippet(snippet(prog, *command), prog)
    for row in theirs:
        assert set(row) <= set(keys), set(row) - set(keys)
    assert project(theirs, keys) == project(mine, keys)
    return mine


@pytest.mark.parametrize("name", MIXED)
@pytest.mark.parametrize("args", [[], ["--state", "detached", "--sort", "detach-age"],
                                  ["--netdev", "eth2", "--inflight-only"]],
                         ids=["all", "detached", "netdev"])
def test_pools_snippet_prints_the_pools(name, args, fixture_program):
    rows = compare(name, fixture_program, ["pools", *args], KEYS["pools"])
    assert rows


@pytest.mark.parametrize("name", MIXED)
def test_pool_snippet_prints_the_breakdown_and_stats(name, fixture_program):
    for pool in expected(name)["pools"]:
        if pool["inflight"] and pool["state"] != "invisible":
            compare(name, fixture_program, ["pool", str(pool["id"])], KEYS["pool"])
    detached = next(p for p in expected(name)["pools"] if p["detached"])
    compare(name, fixture_program, ["pool", detached["address"]], KEYS["pool"])


def normal(row: Dict[str, Any]) -> Dict[str, Any]:
    """A decode row as compared: null keys dropped; of a row with an error,
    the value, its kind and that it has an error."""
    if row.get("error"):
        return {"netmem": row["netmem"], "kind": row["kind"], "error": True}
    return {k: v for k, v in row.items() if v is not None and k in KEYS["decode"]}


@pytest.mark.parametrize("name", MIXED)
def test_decode_snippet_decodes_pages_niovs_and_bad_values(name, fixture_program):
    values = [d["netmem"] for d in expected(name)["decode"] + expected(name)["decode-niovs"]]
    prog = fixture_program(name)
    mine = run_cli("decode", *values, "--json", program=prog).json()
    theirs = run_snippet(snippet(prog, "decode", *values), prog)
    assert [normal(r) for r in theirs] == [normal(r) for r in mine]
    assert {r["kind"] for r in mine} == {"page", "net_iov"}
    assert any(r["error"] for r in mine) and not all(r["error"] for r in mine)


@pytest.mark.parametrize("name", [*MIXED, "broken-netmem-desc"])
def test_layout_snippet_evaluates_the_asserts_of_this_kernel(name, fixture_program):
    rows = compare(name, fixture_program, ["layout"], KEYS["layout"])
    assert len(rows) == expected(name)["layout"]["asserts"]
    assert sum(not r["ok"] for r in rows) == expected(name)["layout"]["mismatches"]
