"""``leaks``: each in-flight page or niov of a detached pool gets the scenario's verdict."""

import json

import pytest
from conftest import expected, fixtures_with, run_cli

from netmem_probe.fake.net import NetNamespace
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.world import World

LEAK_FIXTURES = fixtures_with("leaks")


def _lines(result):
    return [json.loads(line) for line in result.out.splitlines()]


@pytest.mark.parametrize("name", LEAK_FIXTURES)
def test_verdicts_and_evidence_are_the_scenarios(name):
    truth = expected(name)["leaks"]
    result = run_cli("-f", f"fixtures/vmcore-stubs/{name}", "leaks", "--json")
    got = _lines(result)
    assert [(g["pool-id"], g["netmem"], g["verdict"]) for g in got] == [
        (t["pool-id"], t["netmem"], t["verdict"]) for t in truth
    ]
    for have, want in zip(got, truth):
        assert len(have["evidence"]) == len(want["evidence"])
        for row, evidence in zip(
            sorted(have["evidence"], key=lambda r: r["kind"]),
            sorted(want["evidence"], key=lambda r: r["kind"]),
        ):
            assert {k: row[k] for k in evidence} == evidence
    assert result.code == (1 if any(t["verdict"] == "leaked" for t in truth) else 0)


@pytest.mark.parametrize("name", LEAK_FIXTURES)
def test_fixtures_hold_every_verdict(name):
    verdicts = {(t["kind"], t["verdict"]) for t in expected(name)["leaks"]}
    assert {("page", "parked"), ("page", "cached"), ("page", "leaked")} <= verdicts
    if "providers" in expected(name):
        assert {("net_iov", "parked"), ("net_iov", "leaked")} <= verdicts


def test_pool_filter_and_summary():
    truth = expected("linux-7.3-mixed")["leaks"]
    pool = truth[0]["pool-id"]
    mine = [t for t in truth if t["pool-id"] == pool]
    result = run_cli("-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "leaks", "--pool", str(pool))
    lines = result.out.splitlines()
    counts = ", ".join(
        f"{sum(t['verdict'] == v for t in mine)} {v}" for v in ("parked", "cached", "leaked")
    )
    assert lines[0].startswith(f"pool {pool} (") and lines[0].endswith(counts)
    # The table, then the pool's holder summary and what releases its pages.
    summary = lines[3 + len(mine) :]
    assert summary[0].startswith("holders: ")
    assert summary[1:] and all(line.startswith("to release ") for line in summary[1:])


def _detached(world, pool):
    pool.detach(world.boottime_ns / 1e9 - 60)


def test_only_parked_pages_are_no_finding():
    w = World("linux-7.3")
    ns = NetNamespace(w, "nsA")
    pool = FakePagePool(w)
    pages = pool.alloc_pages(2)
    sock = FakeSocket(w, ns, local=("10.9.9.9", 80), remote=("10.9.9.8", 1234))
    sock.queue(FakeSkb(w, pages))
    _detached(w, pool)
    result = run_cli("leaks", "--json", program=w.program())
    assert [r["verdict"] for r in _lines(result)] == ["parked", "parked"]
    assert result.code == 0, result.err


def test_pages_missing_from_the_memmap_count_as_leaked():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    pool.alloc_pages(1)
    pool.hold += 1  # returned to the page allocator behind the pool's back
    sock = FakeSocket(w, w.init_net, local=("10.9.9.9", 80))
    sock.queue(FakeSkb(w, pool.pages))
    _detached(w, pool)
    result = run_cli("leaks", program=w.program())
    assert "1 missing from the memmap" in result.out and result.code == 1


def test_no_detached_pool_means_nothing_to_do():
    w = World("linux-7.3")
    FakePagePool(w).alloc_pages(3)
    result = run_cli("leaks", program=w.program())
    assert result.out.strip() == "no detached page pool has pages in flight"
    assert result.code == 0


def test_a_net_iov_user_space_holds_names_the_process_holding_its_ring():
    from netmem_probe.fake.providers import FakeRing, FakeZcrxIfq
    from netmem_probe.fake.tasks import FakeTask

    w = World("linux-7.3")
    nic = w.init_net.netdev("eth9", driver="bnxt_en", num_rx_queues=2)
    ifq = FakeZcrxIfq(w, nic, 1, [8], napi_id=8400)
    held = ifq.alloc(2, "user", user_refs=3)
    ring = FakeRing(w)
    ring.add(ifq)
    FakeTask(w, 1, "init", w.init_net)
    FakeTask(w, 812, "zcrx-rx", w.init_net).open_ring(ring, 6)
    _detached(w, ifq.pool)
    prog = w.program()
    rows = _lines(run_cli("leaks", "--json", program=prog))
    assert sorted(r["net-iov"] for r in rows) == sorted(hex(n.addr) for n in held)
    owner = {"pid": 812, "comm": "zcrx-rx", "fd": 6, "cgroup": None, "netns": w.init_net.inum}
    for row in rows:
        assert (row["verdict"], row["user-refs"], row["owners"]) == ("parked", 3, [owner])
        assert row["release"].endswith("close fd 6 of pid 812 (zcrx-rx)")
    table = run_cli("leaks", program=prog).out
    assert "io_uring user space holds it (user_refs 3; fd 6 of pid 812 (zcrx-rx))" in table
    assert "to release 2 pages: the io_uring process returning its buffers, or: close fd 6" in table


def test_a_page_has_no_owners_in_its_verdict():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    sock = FakeSocket(w, w.init_net, local=("10.9.9.9", 80))
    sock.queue(FakeSkb(w, pool.alloc_pages(1)))
    _detached(w, pool)
    (row,) = _lines(run_cli("leaks", "--json", program=w.program()))
    assert row["owners"] is None
