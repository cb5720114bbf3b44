"""
``pages``, ``holders`` and ``leaks`` on real Debian kernel dumps (the real-kernel tier).

Runs when ``NETMEM_PROBE_REALKERNEL`` names a series (``scripts/test`` sets it)
whose dumps ``scripts/realkernel/make-vmcore`` has cached.  The scenario keeps
every in-flight page of its pools in UDP sinks' receive queues, so on these
consistent dumps: every pool's pages found = its in-flight count (and
netlink's, for the pools netlink shows), and every page of a detached pool is
parked in a sink's receive queue.
"""

import json

import pytest
from conftest import run_cli
from realkernel_dumps import dumps, program, truth

pytestmark = pytest.mark.realkernel


@pytest.fixture(params=dumps(), ids=lambda d: "-".join(d))
def dump(request):
    series, kind = request.param
    return truth(series), program(series, kind)


def _lines(result):
    return [json.loads(line) for line in result.out.splitlines()]


def test_pages_found_equal_every_pools_inflight(dump):
    truth, prog = dump
    result = run_cli("pages", "--all-pools", "--count", "--json", program=prog)
    assert result.code == 0, result.err
    counts = {r["address"]: r for r in result.json()}
    assert counts and all(r["found"] == r["inflight"] for r in counts.values())
    ids = {r["id"]: r for r in counts.values() if r["id"] is not None}
    netlink = {p["id"]: p["inflight"] for ns in truth["netns"] for p in ns["page-pool-get"] or []}
    for pool_id, inflight in netlink.items():
        assert ids[pool_id]["found"] == inflight


def test_detached_pools_pages_are_parked_in_the_sinks(dump):
    truth, prog = dump
    result = run_cli("leaks", "--json", program=prog)
    assert result.code == 0, result.err
    rows = _lines(result)
    sinks = {f"{s['sink']['addr']}:{s['sink']['port']}" for s in truth["scenario"] if s.get("sink")}
    if truth.get("pp_test"):  # the pp_test module's socket (scripts/realkernel/c/pp_test)
        sinks.add("10.99.0.1:7000")
    assert rows and {r["verdict"] for r in rows} == {"parked"}
    for row in rows:
        queues = {(e["local"], e["queue"]) for e in row["evidence"]}
        assert queues and all(local in sinks and queue == "receive" for local, queue in queues)


def test_holders_of_a_listed_pools_pages(dump):
    truth, prog = dump
    listed = [s for s in truth["scenario"] if s.get("expected_state") == "listed"]
    pool_ids = (
        [
            p["id"]
            for ns in truth["netns"]
            for p in ns["page-pool-get"] or []
            if p.get("ifindex") == listed[0]["ifindex"]
        ]
        if listed
        else []
    )
    if not pool_ids:
        pytest.skip("no listed pool on this kernel")
    pages = _lines(run_cli("pages", "--pool", str(pool_ids[0]), "--json", program=prog))
    result = run_cli("holders", "--json", *[p["page"] for p in pages], program=prog)
    holders = {r["netmem"]: r["holders"] for r in result.json()}
    sink = f"{listed[0]['sink']['addr']}:{listed[0]['sink']['port']}"
    # Every page is referenced: from the pool's cache, a sink's skb, or the
    # driver's rx ring (a slab object netmem-probe does not name).
    assert all(holders[p["page"]] for p in pages)
    for page in pages:
        kinds = {h["kind"] for h in holders[page["page"]]}
        if page["where"] == "cache":
            assert "pool-cache" in kinds
    in_sink = [
        p
        for p in pages
        if any(h["local"] == sink and h["queue"] == "receive" for h in holders[p["page"]])
    ]
    assert in_sink and all(p["where"] == "out" for p in in_sink)
