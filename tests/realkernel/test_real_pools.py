"""
``pools``, ``pool``, ``decode`` and ``layout`` on dumps of real Debian kernels,
against what the kernel's own netlink said just before the dump.
"""

import json

import pytest
from conftest import run_cli
from realkernel_dumps import (
    dumps,
    live_record,
    netlink_pools,
    page_size,
    program,
    small_kind,
    truth,
)

from netmem_probe.netlink import PAGE_POOL_GET_KEYS

pytestmark = pytest.mark.realkernel
DUMPS = dumps()


@pytest.mark.parametrize("series,kind", DUMPS)
def test_every_pool_netlink_listed_is_reported_as_netlink_reported_it(series, kind):
    t = truth(series)
    result = run_cli("pools", "--json", program=program(series, kind))
    ours = {p["id"]: p for p in result.json()}
    for pool_id, theirs in netlink_pools(t).items():
        assert pool_id in ours, f"netlink's pool {pool_id} missing"
        mine = {k: v for k, v in ours[pool_id].items() if k in PAGE_POOL_GET_KEYS}
        assert mine == theirs
        assert ours[pool_id]["state"] in ("listed", "orphaned")
    assert result.code in (0, 1), result.err


@pytest.mark.parametrize("series,kind", DUMPS)
def test_pools_netlink_cannot_see_appear_in_their_scenario_state(series, kind):
    t = truth(series)
    ours = run_cli("pools", "--json", program=program(series, kind)).json()
    visible = set(netlink_pools(t))
    hidden = [p for p in ours if p["id"] not in visible]
    for scenario in t["scenario"]:
        if not scenario.get("pool_expected"):
            continue
        state = scenario["expected_state"]
        if state == "detached":
            assert any(p["detached"] and p["state"] == "invisible" for p in hidden), scenario["id"]
        elif state == "invisible":
            assert any(p["state"] == "invisible" for p in hidden), scenario["id"]
        if scenario.get("expect_netdev") == "NET_PTR_POISON":
            result = run_cli("pools", "--state", "invisible", program=program(series, kind))
            assert "NET_PTR_POISON" in result.err
    system = [p for p in ours if p["flags"] & 4]
    expected_system = [s for s in t["scenario"] if s["id"] == "system" and s["pool_expected"]]
    assert len(system) == len(expected_system) * 2


@pytest.mark.parametrize("series,kind", DUMPS)
def test_pool_stats_equal_netlink_page_pool_stats(series, kind):
    t = truth(series)
    stats = [s for ns in t["netns"] for s in (ns.get("page-pool-stats-get") or [])]
    prog = program(series, kind)
    for theirs in stats:
        pool_id = theirs["info"]["id"]
        mine = run_cli("pool", str(pool_id), "--json", program=prog).json()["stats"]
        assert mine == {k: v for k, v in theirs.items() if k != "info"}
    if not t["page_pool_stats"]:
        listed = next(iter(netlink_pools(t)), None)
        if listed is not None:
            mine = run_cli("pool", str(listed), "--json", program=prog).json()
            assert mine["stats"] is None


@pytest.mark.parametrize("series,kind", DUMPS)
def test_inflight_mem_is_inflight_times_the_kernels_page_size_by_order(series, kind):
    size = page_size(truth(series))
    pools = run_cli("pools", "--json", program=program(series, kind)).json()
    assert pools and any(p["inflight"] for p in pools)
    for pool in pools:
        assert pool["inflight-mem"] == pool["inflight"] * (size << pool["order"])


@pytest.mark.parametrize("series,kind", DUMPS)
def test_pool_breakdown_accounts_for_every_inflight_page(series, kind):
    prog = program(series, kind)
    for pool in run_cli("pools", "--json", program=prog).json():
        # by address where the kernel gives pools no id (before Linux 6.8)
        key = pool["address"] if pool["id"] is None else str(pool["id"])
        detail = run_cli("pool", key, "--json", program=prog).json()
        parts = detail["breakdown"]
        assert parts["alloc-cache"] + parts["ring"] + parts["out"] == pool["inflight"]


@pytest.mark.parametrize("series,kind", DUMPS)
def test_decode_agrees_with_the_scan_on_real_pp_pages(series, kind):
    prog = program(series, kind)
    scan = run_cli("pages", "--all-pools", "--json", program=prog)
    pages = [json.loads(line) for line in scan.out.splitlines()][:40]
    assert pages, scan.err
    result = run_cli("decode", "--json", *[p["page"] for p in pages], program=prog)
    for page, decoded in zip(pages, result.json()):
        assert decoded["error"] is None and decoded["pp"] is True
        assert (decoded["pool-id"], decoded["pool"]) == (page["pool-id"], page["pool"])
    assert result.code == 0


@pytest.mark.parametrize("series,kind", DUMPS)
def test_layout_agrees_on_the_real_kernel(series, kind):
    result = run_cli("layout", "--json", program=program(series, kind))
    rows = result.json()
    assert rows and all(r["ok"] for r in rows) and result.code == 0


@pytest.mark.parametrize("series", sorted({s for s, _ in DUMPS}))
def test_live_run_in_the_guest_matched_its_own_netlink(series):
    t = truth(series)
    if not netlink_pools(t) and t["netns"][0].get("page-pool-get") is None:
        pytest.skip(f"{series}: no page-pool netlink to match (Linux < 6.8)")
    live = live_record(series, "live-pools.json")
    netlink = live_record(series, "live-netlink.json")
    assert live["ok"] and live["returncode"] in (0, 1), live["stderr"]
    assert "live kernel (racy snapshot)" in live["stderr"]
    ours = {p["id"]: p for p in live["output"]}
    # The live run follows the dump in the same boot: every pool of the dump
    # is still there, in the same state (6.12's netlink lists no pool at all).
    dumped = run_cli("pools", "--json", program=program(series, small_kind(series))).json()
    assert {p["id"]: p["state"] for p in dumped} == {
        i: ours[i]["state"] for i in (p["id"] for p in dumped)
    }
    for moment in ("before", "after"):
        listed = {p["id"]: p for ns in netlink[moment] for p in ns["page-pool-get"]}
        for pool_id, theirs in listed.items():
            mine = ours[pool_id]
            # The kernel runs on between the two netlink dumps and our read:
            # identity must match exactly, counts only as a live snapshot can.
            assert (mine["id"], mine.get("ifindex"), mine.get("napi-id")) == (
                theirs["id"],
                theirs.get("ifindex"),
                theirs.get("napi-id"),
            )
            assert mine["state"] in ("listed", "orphaned")
    before = {p["id"]: p["inflight"] for ns in netlink["before"] for p in ns["page-pool-get"]}
    after = {p["id"]: p["inflight"] for ns in netlink["after"] for p in ns["page-pool-get"]}
    for pool_id in before:
        low, high = sorted((before[pool_id], after.get(pool_id, before[pool_id])))
        assert low <= ours[pool_id]["inflight"] <= high
