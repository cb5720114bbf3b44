"""
The JSON contract on a real kernel: every command's ``--json`` on the Debian
dump (ELF) validates against its schema in docs/schema/, and the
``--drgn`` script of each prints the same records.
"""

import contextlib
import io
import json
from typing import List

import pytest
from conftest import run_cli
from realkernel_dumps import SERIES, has_registry, pool_ref, program, truth
from test_drgn_snippets import records, run_snippet, same_records, snippet
from test_json_schema import check

from netmem_probe.snippets import COUNT_KEYS, KEYS

pytestmark = pytest.mark.realkernel


def _invocations(prog):
    pools = run_cli("pools", "--json", program=prog).json()
    pages = [
        json.loads(line)["page"]
        for line in run_cli("pages", "--all-pools", "--json", program=prog).out.splitlines()
    ]
    detached = [pool_ref(p) for p in pools if p["detached"] and p["inflight"]]
    return [
        ["pools"],
        ["layout"],
        ["pool", pool_ref(pools[0])],
        *(["pool", ref] for ref in detached[:1]),
        ["decode", *pages[:2], "0x1"],
        ["pages", "--all-pools"],
        ["pages", "--all-pools", "--count"],
        ["providers"],
        ["niovs"],
        ["holders", *pages[:2]],
        ["leaks"],
    ]


@pytest.mark.parametrize("series", SERIES)
def test_every_commands_json_matches_its_schema_on_a_real_dump(series):
    prog = program(series, "elf")
    for args in _invocations(prog):
        result = run_cli(*args, "--json", program=prog)
        assert result.code in (0, 1), (args, result.err)
        check(args, result.out)


def _searched(prog) -> List[List[str]]:
    """
    holders and leaks on a targeted case: their scripts search RAM with
    drgn's search_memory_word(), which tests each word against every range, so
    the time grows with the pages searched for: two pages, and the detached
    pool with the fewest pages in flight (all of leaks: minutes).
    """
    pools = run_cli("pools", "--json", program=prog).json()
    detached = sorted((p["inflight"], p["id"]) for p in pools if p["detached"] and p["inflight"])
    pages = [
        json.loads(line)["page"]
        for line in run_cli("pages", "--all-pools", "--json", program=prog).out.splitlines()
    ]
    return [["holders", *pages[:2]], ["leaks", "--pool", str(detached[0][1])]]


@pytest.mark.parametrize("series", SERIES)
def test_every_script_prints_the_records_of_json_on_a_real_dump(series):
    prog = program(series, "elf")
    if not has_registry(prog):
        pytest.skip(
            f"{series}: the --drgn scripts walk the page_pools registry, which Linux "
            "before 6.8 does not have (--drgn is refused there, exit 2)"
        )
    invocations = [a for a in _invocations(prog) if a[0] not in ("holders", "leaks")]
    for args in invocations + _searched(prog):
        result = run_cli(*args, "--json", program=prog)
        keys = COUNT_KEYS if "--count" in args else KEYS[args[0]]
        theirs = run_snippet(snippet(prog, *args), prog)
        assert same_records(args[0], theirs, records(args[0], result.out), keys), args


def _skipped(stderr: str) -> List[str]:
    """The objects a warning on stderr says were skipped, one line each."""
    return sorted(line.strip() for line in stderr.splitlines() if line.startswith("  "))


@pytest.mark.parametrize("series", SERIES)
def test_the_holders_script_names_the_tcp_out_of_order_queue_on_a_real_dump(series):
    """
    The scenario's TCP connection whose out-of-order queue holds veth pool
    pages: the holders script, over every in-flight page of that pool, prints
    the records of --json, the out-of-order queue included (measured on the
    7.3.4 dump: pool 9, 64 pages, 94 references, 4 of them tcp-ofo; the
    script before this test named none of them and 2 records differed).
    """
    prog = program(series, "elf")
    if not has_registry(prog):
        pytest.skip(f"{series}: no page_pools registry, so no --drgn script (Linux 6.8+)")
    ofo = truth(series)["holders"]["tcp_ofo"]
    veth = next(s for s in truth(series)["scenario"] if s["netns"] == ofo["netns"])
    if not veth["pool_expected"]:  # veth took page_pool in Linux 6.4
        pytest.skip(f"{series}: veth of this kernel makes no page pool")
    pages = [
        json.loads(line)
        for line in run_cli("pages", "--all-pools", "--json", program=prog).out.splitlines()
    ]
    found = run_cli("holders", *[p["page"] for p in pages], "--json", program=prog).json()
    held = {r["pool-id"] for r in found if any(h["queue"] == "tcp-ofo" for h in r["holders"])}
    assert held, "no page of any pool is in the TCP out-of-order queue"
    pool = min(held)
    values = [p["page"] for p in pages if p["pool-id"] == pool]
    result = run_cli("holders", *values, "--json", program=prog)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        theirs = run_snippet(snippet(prog, "holders", *values), prog)
    assert same_records("holders", theirs, result.json(), KEYS["holders"])
    assert any(h["queue"] == "tcp-ofo" for r in theirs for h in r["holders"])
    assert _skipped(err.getvalue()) == _skipped(result.err)
