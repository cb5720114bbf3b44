"""``pools`` and ``pool``: every fixture's pools exactly as its scenario built them."""

import pytest
from conftest import FIXTURE_NAMES, expected, fixtures_with, run_cli

from netmem_probe.fake.net import NetNamespace
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.page_pool import PagePoolScanner, for_each_page_pool, page_pool_inflight
from netmem_probe.kernel.walk import Problems

POOL_FIXTURES = fixtures_with("pools")


@pytest.mark.parametrize("name", POOL_FIXTURES)
def test_pools_json_equals_the_scenario(name):
    result = run_cli("-f", f"fixtures/vmcore-stubs/{name}", "pools", "--json")
    assert result.json() == expected(name)["pools"]
    stalled = any(p["detached"] and p["inflight"] for p in expected(name)["pools"])
    assert result.code == (1 if stalled else 0), result.err


@pytest.mark.parametrize("name", POOL_FIXTURES)
def test_pool_detail_equals_the_scenario(name):
    truth = expected(name)
    for record in truth["pools"][:12]:
        # before Linux 6.8 pools have no id: the address names them
        key = record["address"] if record["id"] is None else str(record["id"])
        result = run_cli("-f", f"fixtures/vmcore-stubs/{name}", "pool", key, "--json")
        got = result.json()
        details = truth["pool-details"][key]
        assert got["breakdown"] == details["breakdown"]
        assert got["stats"] == details["stats"]
        if "kernel-log" in truth:
            assert [m["text"] for m in got["kernel-log"]] == [
                m["text"]
                for m in truth["kernel-log"]
                if m["pool-id"] is not None and m["pool-id"] == record["id"]
            ]
        else:
            assert got["kernel-log"] is None  # a layout without the printk ring buffer
        assert {
            k: v for k, v in got.items() if k not in ("breakdown", "stats", "kernel-log")
        } == record


def test_pool_by_address_finds_the_same_pool():
    record = expected("linux-7.3-mixed")["pools"][3]
    by_id = run_cli(
        "-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "pool", str(record["id"]), "--json"
    ).json()
    by_addr = run_cli(
        "-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "pool", record["address"], "--json"
    ).json()
    assert by_id == by_addr


def test_stats_are_na_without_config_page_pool_stats():
    result = run_cli("-f", "fixtures/vmcore-stubs/linux-6.18-mixed", "pool", "3")
    assert "n/a (CONFIG_PAGE_POOL_STATS off)" in result.out


def test_state_filter_keeps_only_detached_pools():
    result = run_cli(
        "-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "pools", "--state", "detached", "--json"
    )
    want = [p for p in expected("linux-7.3-mixed")["pools"] if p["detached"]]
    assert result.json() == want and want


def test_netdev_filter_and_inflight_sort():
    result = run_cli(
        "-f",
        "fixtures/vmcore-stubs/linux-7.3-mixed",
        "pools",
        "--netdev",
        "eth0",
        "--sort",
        "inflight",
        "--json",
    )
    got = result.json()
    want = [p for p in expected("linux-7.3-mixed")["pools"] if p["netdev"] == "eth0"]
    assert sorted(p["id"] for p in got) == sorted(p["id"] for p in want)
    assert [p["inflight"] for p in got] == sorted((p["inflight"] for p in want), reverse=True)


def test_inflight_only_hides_idle_pools():
    result = run_cli(
        "-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "pools", "--inflight-only", "--json"
    )
    want = [p for p in expected("linux-7.3-mixed")["pools"] if p["inflight"]]
    assert result.json() == want


@pytest.mark.parametrize("name", POOL_FIXTURES)
def test_table_shows_every_pool_and_a_summary(name):
    result = run_cli("-f", f"fixtures/vmcore-stubs/{name}", "pools")
    pools = expected(name)["pools"]
    lines = result.out.splitlines()
    assert len(lines) == 2 + len(pools) + 1
    assert lines[-1].startswith(f"{len(pools)} pools")


def test_many_pools_fixture_needs_a_two_level_xarray():
    pools = expected("linux-7.3-many-pools")["pools"]
    assert max(p["id"] for p in pools) >= 64


def _scanned(world):
    prog = world.program()
    problems = Problems()
    return {i.id: i for i in PagePoolScanner(prog, problems).pools()}, problems


def test_counters_wrapped_past_2_32_give_the_s32_distance():
    w = World("linux-7.3")
    pool = FakePagePool(w, counter_base=(1 << 32) - 2)
    pool.alloc_pages(5)
    infos, problems = _scanned(w)
    assert infos[pool.id].hold == 3 and infos[pool.id].inflight == 5 and not problems


def test_release_ahead_of_hold_reports_zero_in_flight():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    pool.alloc_pages(2)
    pool.release = pool.hold + 3  # a racy live read can see this
    infos, _ = _scanned(w)
    assert infos[pool.id].inflight == 0


def test_a_pool_on_a_hlist_but_not_in_the_xarray_is_reported():
    w = World("linux-7.3")
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    pool = FakePagePool(w, netdev=dev)
    assert w.page_pools_xa is not None and pool.id is not None
    del w.page_pools_xa.entries[pool.id]
    infos, problems = _scanned(w)
    assert pool.id not in infos
    assert any("not in the page_pools xarray" in p.reason for p in problems.items)


def test_namespace_dismantled_pool_is_invisible_and_poisoned():
    w = World("linux-7.3")
    ns = NetNamespace(w, "gone")
    pool = FakePagePool(w, netdev=ns.netdev("eth0", driver="virtio_net"))
    pool.alloc_pages(1)
    ns.dismantle()
    infos, _ = _scanned(w)
    info = infos[pool.id]
    assert info.state == "invisible" and info.netdev is None and info.queue == 0
    assert any("NET_PTR_POISON" in warning for warning in info.warnings)


def test_helpers_take_and_return_drgn_objects():
    w = World("linux-6.18")
    pool = FakePagePool(w)
    pool.alloc_pages(4)
    prog = w.program()
    pools = list(for_each_page_pool(prog))
    assert [p.user.id.value_() for p in pools] == [1, 2, pool.id]
    assert page_pool_inflight(pools[-1]) == 4


def test_every_fixture_is_covered():
    assert set(POOL_FIXTURES) <= set(FIXTURE_NAMES) and len(POOL_FIXTURES) >= 4
