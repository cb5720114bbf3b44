"""
``check``: the one command to run first.  Its summary and findings are
compared with each fixture's truth (``expected.json``, written from the
scenario), and the growth measurement with a fake live kernel whose pools'
counters move between samples.
"""

from collections import Counter

import pytest
from conftest import FIXTURE_NAMES, FIXTURES, expected, run_cli

from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World


def _check(name: str, *args: str):
    return run_cli("-f", str(FIXTURES / name), "check", *args)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_check_summarises_every_fixture_as_its_scenario_built_it(name):
    truth = expected(name)
    result = _check(name, "--json")
    report = result.json()
    pools = truth["pools"]
    waiting = [p for p in pools if p["detached"] and p["inflight"]]
    assert report["pools"]["total"] == len(pools)
    assert report["pools"]["inflight"] == sum(p["inflight"] for p in pools)
    for state in ("listed", "orphaned", "invisible", "unreachable", "unregistered"):
        assert report["pools"][state] == sum(1 for p in pools if p["state"] == state)
    assert report["detached"]["waiting"] == len(waiting)
    assert report["detached"]["inflight"] == sum(p["inflight"] for p in waiting)
    assert report["layout"] == {
        "asserts": truth["layout"]["asserts"],
        "mismatches": truth["layout"]["mismatches"],
    }
    verdicts = Counter(v["verdict"] for v in truth.get("leaks", []))
    for verdict in ("parked", "cached", "leaked"):
        assert report["leaks"][verdict] == verdicts[verdict]
    assert report["growth"] is None  # a dump does not change
    wrong = bool(waiting) or truth["layout"]["mismatches"] > 0
    assert report["verdict"] == ("unhealthy" if wrong else "healthy")
    assert result.code == (1 if wrong else 0), result.err


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_check_names_pools_by_id_or_before_the_registry_by_address(name):
    findings = _check(name, "--json").json()["findings"]
    ids = {p["id"] for p in expected(name)["pools"]}
    for f in findings:
        assert "None" not in f["message"], f
        if f["code"] == "detached-pool-inflight" and None in ids:
            assert f["pool-id"] is None and f["message"].startswith("pool 0x"), f


def test_check_names_each_stalled_pool_with_its_verdicts_and_the_next_command():
    name = "linux-7.3-mixed"
    truth = expected(name)
    findings = _check(name, "--json").json()["findings"]
    by_pool = {f["pool-id"]: f for f in findings if f["pool-id"] is not None}
    for pool in truth["pools"]:
        if not (pool["detached"] and pool["inflight"]):
            assert pool["id"] not in by_pool or by_pool[pool["id"]]["severity"] == "info"
            continue
        finding = by_pool[pool["id"]]
        leaked = sum(
            1 for v in truth["leaks"] if v["pool-id"] == pool["id"] and v["verdict"] == "leaked"
        )
        assert finding["severity"] == ("error" if leaked else "warning")
        assert finding["code"] == ("leaked-pages" if leaked else "detached-pool-inflight")
        assert f"waits for {pool['inflight']} pages" in finding["message"]
        assert finding["next"] == (f"netmem-probe -f {FIXTURES / name} leaks --pool {pool['id']}")
    # Errors first.
    severities = [f["severity"] for f in findings]
    assert severities == sorted(severities, key=("error", "warning", "info").index)


def test_check_table_ends_with_the_findings_and_their_next_commands():
    result = _check("linux-7.3-mixed")
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].startswith("kernel      7.3.0-netmem-fixture [core dump (consistent)]")
    assert any(line.startswith("detached    4 pools, 4 waiting for 15 pages") for line in lines)
    assert "unhealthy: " in result.out
    assert "ERROR    pool 10 (invisible, no netdev, detached 2h00m ago)" in result.out
    assert "next: netmem-probe -f " in result.out


def test_check_is_healthy_and_exits_0_when_no_pool_waits_for_pages():
    result = _check("linux-7.3-many-pools")
    assert result.code == 0, result.err
    assert "healthy: nothing to report" in result.out


def test_check_reports_a_layout_mismatch_as_an_error():
    report = _check("broken-netmem-desc", "--json").json()
    (finding,) = [f for f in report["findings"] if f["code"] == "layout-mismatch"]
    assert finding["severity"] == "error"
    assert finding["next"].endswith(" layout")


def test_check_without_leaks_does_not_search_memory_and_still_flags_stalled_pools():
    report = _check("linux-7.3-mixed", "--no-leaks", "--json").json()
    assert report["leaks"] is None
    codes = {f["code"] for f in report["findings"]}
    assert "leaked-pages" not in codes and "detached-pool-inflight" in codes


def _live_world(layout: str):
    w = World(layout)
    eth0 = w.init_net.netdev("eth0", driver="virtio_net")
    pools = []
    for queue in range(2):
        pool = FakePagePool(w, netdev=eth0, napi_id=8200 + queue, queue=queue, flags=1)
        pool.alloc_pages(5, "out")
        pools.append(pool)
    w.commit()
    return w, pools


# 5.15: no registry, so no pool ids; the pool is named by its address
@pytest.mark.parametrize("layout", ["linux-7.3", "linux-5.15"])
def test_check_on_a_live_kernel_names_the_pool_whose_inflight_grows(layout):
    w, (growing, steady) = _live_world(layout)
    fm = FaultyMemory(w)
    at_hold = growing.obj.addr_of("pages_state_hold_cnt")

    def grow(fm: FaultyMemory, address: int, count: int) -> None:
        # Each read of the whole pool (one per sample) finds 2 more pages out.
        if address <= at_hold < address + count:
            fm.write_word(at_hold, fm.peek_word(at_hold, 4) + 2, 4)

    fm.on_read.append(grow)
    result = run_cli("check", "--interval", "0.02", "--json", program=fm.program(live=True))
    report = result.json()
    assert report["target"] == "live kernel (racy snapshot)"
    assert [(g["id"], g["address"]) for g in report["growth"]] == [
        (growing.id, hex(growing.obj.addr))
    ]
    # 2 pages per read of the pool: one read a sample through the registry;
    # without it, the pool found from its pages is read again
    delta = report["growth"][0]["inflight-delta"]
    assert delta == 4 if growing.id is not None else delta >= 4
    (finding,) = [f for f in report["findings"] if f["code"] == "growing-pool"]
    assert finding["severity"] == "info" and finding["pool-id"] == growing.id
    name = hex(growing.obj.addr) if growing.id is None else str(growing.id)
    assert finding["message"].startswith(f"pool {name}: ")
    assert finding["next"] == "netmem-probe pools --watch"
    # Growth alone is a note, not a fault.
    assert report["verdict"] == "healthy" and result.code == 0, result.err
