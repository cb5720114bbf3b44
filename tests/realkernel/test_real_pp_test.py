"""
The pools of the pp_test module (scripts/realkernel/c/pp_test), on every
kernel it was built for: made as a driver makes them, on its own device, and
counted by the module itself inside the guest.  On Debian 12's 6.1 they are
the only page pools there are, and the kernel keeps no registry of them.
"""

import json

import pytest
from conftest import run_cli
from realkernel_dumps import dumps, program, truth

pytestmark = pytest.mark.realkernel
DUMPS = dumps()


def _pp_test(series):
    t = truth(series)
    if not t.get("pp_test"):
        pytest.skip(f"no pp_test on {series}: {t.get('pp_test_note')}")
    return t["pp_test"]


def _ours(series, kind):
    result = run_cli("pools", "--json", program=program(series, kind))
    assert result.code in (0, 1), result.err
    return {p["address"]: p for p in result.json()}, result


@pytest.mark.parametrize("series,kind", DUMPS)
def test_every_pool_with_pages_in_flight_is_found_with_hold_minus_release(series, kind):
    pp = _pp_test(series)
    ours, result = _ours(series, kind)
    for pool in pp["pools"]:
        mine = ours.get(pool["address"])
        assert mine is not None, (pool, result.err)
        assert (mine["hold"], mine["release"]) == (pool["hold"], pool["release"])
        assert mine["inflight"] == pool["inflight"] > 0
        assert mine["detached"] == pool["destroyed"]
        if mine["id"] is None:  # no registry: found from its pages, says the kernel has none
            assert mine["state"] == "unregistered" and "pages" in mine["found-by"]
            assert "no registry of page pools" in result.err
    destroyed = [ours[p["address"]] for p in pp["pools"] if p["destroyed"]]
    assert destroyed and all(p["release-pending"] is not False for p in destroyed)


@pytest.mark.parametrize("series,kind", DUMPS)
def test_the_pages_of_each_pool_are_its_in_flight_count(series, kind):
    pp = _pp_test(series)
    prog = program(series, kind)
    for pool in pp["pools"]:
        result = run_cli("pages", "--pool", pool["address"], "--count", "--json", program=prog)
        (record,) = result.json()
        assert record["found"] == pool["inflight"] and record["difference"] == 0, record
    lines = run_cli("pages", "--all-pools", "--json", program=prog).out.splitlines()
    out = {r["page"] for r in map(json.loads, lines) if r["where"] == "out"}
    assert {h["page"] for h in pp["held"]} <= out


@pytest.mark.parametrize("series,kind", DUMPS)
def test_the_destroyed_pools_pages_are_parked_in_the_socket(series, kind):
    pp = _pp_test(series)
    (pool,) = [p for p in pp["pools"] if p["destroyed"]]
    result = run_cli("leaks", "--pool", pool["address"], "--json", program=program(series, kind))
    verdicts = [json.loads(line) for line in result.out.splitlines() if line.strip()]
    assert len(verdicts) == pool["inflight"] == pp["datagrams"]["pool1"]
    assert {v["verdict"] for v in verdicts} == {"parked"}
    assert {e["local"] for v in verdicts for e in v["evidence"]} == {"10.99.0.1:7000"}


@pytest.mark.parametrize("series,kind", DUMPS)
def test_a_held_page_is_decoded_to_its_pool(series, kind):
    pp = _pp_test(series)
    addresses = {p["n"]: p["address"] for p in pp["pools"]}
    held = pp["held"][0]
    result = run_cli("decode", held["page"], "--json", program=program(series, kind))
    (record,) = result.json()
    assert record["pp"] is True and record["pool"] == addresses[held["pool"]]


@pytest.mark.parametrize("series,kind", DUMPS)
def test_the_pages_waiting_in_a_stopped_devices_qdisc_are_held_by_the_qdisc(series, kind):
    pp = _pp_test(series)
    sent = pp["datagrams"].get("pool2-qdisc")
    if not sent:
        pytest.skip(f"the {series} dump predates pp_test's tx command (no pages in a qdisc)")
    (pool,) = [p for p in pp["pools"] if p["n"] == 2]
    result = run_cli("pool", pool["address"], "--holders", "--json", program=program(series, kind))
    holders = result.json()["holders"]
    kinds = holders["holder-kinds"]
    # Every datagram the module sent waits in pptest0's qdisc (its tx queue
    # stopped): the first requeued as gso_skb, the rest in the default
    # qdisc's queue; the pool's alloc cache has the other pages.
    assert kinds.pop("qdisc") == sent, (holders, pp["qdisc"])
    assert (
        set(kinds) <= {"pool-cache", "pool-ring"} and sum(kinds.values()) + sent == pool["inflight"]
    ), holders
    qdisc = [r for r in holders["release"] if r["action"].startswith("the qdisc sending it")]
    assert sum(r["pages"] for r in qdisc) == sent
    assert all("of pptest0" in r["action"] for r in qdisc)


@pytest.mark.parametrize("series,kind", DUMPS)
def test_the_datagrams_nobody_read_are_on_the_sinks_receive_queues(series, kind):
    pp = _pp_test(series)
    (pool,) = [p for p in pp["pools"] if p["n"] == 0]
    result = run_cli("pool", pool["address"], "--holders", "--json", program=program(series, kind))
    kinds = result.json()["holders"]["holder-kinds"]
    # After the sink read some, UDP moved the rest from sk_receive_queue to
    # its reader_queue: a receive queue too, not "an skb on no queue".
    datagrams = pp["datagrams"]
    assert kinds.get("socket-receive") == datagrams["pool0"] - datagrams["pool0-read-back"]
    assert "skb" not in kinds, kinds


@pytest.mark.parametrize("series,kind", DUMPS)
def test_the_pages_waiting_in_an_fq_qdisc_are_held_by_its_flows(series, kind):
    pp = _pp_test(series)
    sent = pp["datagrams"].get("pool3-fq")
    if not sent:
        pytest.skip(
            f"no pages in an fq qdisc on the {series} dump: {pp.get('fq', 'it predates them')}"
        )
    (pool,) = [p for p in pp["pools"] if p["n"] == 3]
    result = run_cli("pool", pool["address"], "--holders", "--json", program=program(series, kind))
    holders = result.json()["holders"]
    kinds = holders["holder-kinds"]
    # Every datagram the module sent out of pptest1 waits in its fq qdisc (its
    # tx queue stopped): on 7.3 the first ones in the fast path's internal
    # flow, the rest in one flow, the first of them on its list and the others,
    # each stamped to leave earlier than the one before, in its rbtree.
    assert kinds.pop("qdisc") == sent, (holders, pp["fq"])
    assert (
        set(kinds) <= {"pool-cache", "pool-ring"} and sum(kinds.values()) + sent == pool["inflight"]
    ), holders
    fq = [r for r in holders["release"] if r["action"].startswith("the qdisc sending it")]
    assert sum(r["pages"] for r in fq) == sent
    assert all(r["action"].startswith("the qdisc sending it (qdisc fq ") for r in fq), fq
    assert all("of pptest1" in r["action"] for r in fq) and len(fq) <= 2, fq


@pytest.mark.parametrize("series,kind", DUMPS)
def test_the_pages_held_in_a_cpus_backlog_are_named_by_it(series, kind):
    pp = _pp_test(series)
    backlog = pp.get("backlog")
    if not backlog or backlog.get("cpu") is None:
        pytest.skip(f"no pages held in a backlog on the {series} dump: {backlog}")
    # pp_test's work item received them on that CPU with its bottom halves off
    # and kept them off for hold_ms, long past the host's stop.
    assert backlog["queued"] == backlog["staged"] and not backlog["done_at_check"], backlog
    (pool,) = [p for p in pp["pools"] if p["n"] == backlog["pool"]]
    prog = program(series, kind)
    result = run_cli("pool", pool["address"], "--holders", "--json", program=prog)
    kinds = result.json()["holders"]["holder-kinds"]
    assert kinds.pop("backlog") == backlog["queued"], (kinds, backlog)
    assert set(kinds) <= {"pool-cache", "pool-ring"}, kinds
    assert sum(kinds.values()) + backlog["queued"] == pool["inflight"]
    lines = run_cli("pages", "--pool", pool["address"], "--json", program=prog).out.splitlines()
    out = [r["page"] for r in map(json.loads, lines) if r["where"] == "out"]
    records = run_cli("holders", "--json", *out, program=prog).json()
    details = {h["detail"] for r in records for h in r["holders"] if h["queue"] == "backlog"}
    assert details == {f"backlog of CPU {backlog['cpu']} (input_pkt_queue)"}, records
