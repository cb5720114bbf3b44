"""``providers``, ``niovs`` and niov ``decode``: every layout's memory providers as built."""

import json
from typing import Any, Dict, List

import pytest
from conftest import expected, fixtures_with, run_cli

from netmem_probe.fake.providers import FakeBinding, FakeRing, FakeZcrxIfq
from netmem_probe.fake.tasks import FakeTask
from netmem_probe.fake.world import World

PROVIDER_FIXTURES = fixtures_with("providers")
RING_FIXTURES = fixtures_with("providers-ring")


def fixture(name: str) -> str:
    return f"fixtures/vmcore-stubs/{name}"


def json_lines(text: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_every_net_iov_layout_has_a_provider_fixture():
    layouts = {"linux-6.12", "linux-6.16", "linux-6.18", "linux-7.1-rc", "linux-7.3"}
    assert {f"{layout}-mixed" for layout in layouts} <= set(PROVIDER_FIXTURES)
    kinds = {name: {p["kind"] for p in expected(name)["providers"]} for name in PROVIDER_FIXTURES}
    for name, have in kinds.items():
        # io_uring zcrx came in Linux 6.15: 6.12 has devmem only.
        assert have == ({"dmabuf"} if "6.12" in name else {"dmabuf", "io_uring"}), name


@pytest.mark.parametrize("name", PROVIDER_FIXTURES)
def test_providers_json_equals_the_scenario(name):
    result = run_cli("-f", fixture(name), "providers", "--json")
    assert result.json() == expected(name)["providers"]
    assert result.code == 0, result.err


@pytest.mark.parametrize("name", RING_FIXTURES)
def test_a_rings_zcrx_ifqs_add_their_areas(name):
    truth = expected(name)["providers-ring"]
    result = run_cli("-f", fixture(name), "providers", "--ring", truth["ring"], "--json")
    assert result.json() == truth["providers"]
    assert result.code == 0, result.err


@pytest.mark.parametrize("name", PROVIDER_FIXTURES)
def test_each_niovs_state_equals_the_scenario(name):
    for selection in expected(name)["niovs"]:
        result = run_cli("-f", fixture(name), "niovs", *selection["args"], "--json")
        assert json_lines(result.out) == selection["niovs"], selection["args"]
        assert result.code == 0, result.err


@pytest.mark.parametrize("name", PROVIDER_FIXTURES)
def test_decode_names_a_niovs_provider_area_and_index(name):
    cases = expected(name)["decode-niovs"]
    result = run_cli("-f", fixture(name), "decode", "--json", *[c["netmem"] for c in cases])
    assert result.json() == cases
    assert result.code == 0, result.err


def test_state_filter_keeps_only_user_held_niovs():
    truth = expected("linux-7.3-mixed")
    area = next(p for p in truth["providers"] if p["kind"] == "io_uring" and p["user"])
    result = run_cli(
        "-f",
        fixture("linux-7.3-mixed"),
        "niovs",
        "--area",
        area["address"],
        "--state",
        "user",
        "--json",
    )
    got = json_lines(result.out)
    assert len(got) == area["user"] and {n["state"] for n in got} == {"user"}
    assert all(n["user-refs"] > 0 for n in got)


def test_no_selection_lists_every_area():
    truth = expected("linux-7.3-mixed")["providers"]
    got = json_lines(run_cli("-f", fixture("linux-7.3-mixed"), "niovs", "--json").out)
    assert len(got) == sum(p["niovs"] for p in truth)
    assert list(dict.fromkeys(n["area"] for n in got)) == [p["area"] for p in truth]


def test_io_uring_area_id_selects_when_unique():
    truth = expected("linux-7.3-mixed")["providers"]
    area = next(p for p in truth if p["kind"] == "io_uring" and p["id"] == 1)
    by_id = run_cli("-f", fixture("linux-7.3-mixed"), "niovs", "--area", "io_uring:1", "--json")
    by_key = run_cli("-f", fixture("linux-7.3-mixed"), "niovs", "--area", area["area"], "--json")
    assert by_id.out == by_key.out and len(json_lines(by_id.out)) == area["niovs"]


@pytest.mark.parametrize("name", ["linux-6.12-mixed", "linux-7.3-mixed"])
def test_tables_show_every_area_with_a_summary(name):
    truth = expected(name)["providers"]
    lines = run_cli("-f", fixture(name), "providers").out.splitlines()
    assert len(lines) == 2 + len(truth) + 1
    assert lines[-1].startswith(f"{sum(p['kind'] == 'dmabuf' for p in truth)} dma-buf bindings")
    niov_lines = run_cli("-f", fixture(name), "niovs").out.splitlines()
    headings = [line for line in niov_lines if not line.startswith(" ")]
    assert [h.split()[0] for h in headings] == [p["area"] for p in truth]
    # Each area: its heading, the table's header and rule, a row per niov.
    assert len(niov_lines) == sum(3 + p["niovs"] for p in truth)


@pytest.mark.parametrize(
    "args",
    [
        ["niovs", "--area", "dmabuf:99"],
        ["niovs", "--area", "io_uring:0"],  # 6.12 has no io_uring zcrx
        ["niovs", "--area", "banana"],
        ["niovs", "--pool", "1"],  # a system pool: no provider
        ["niovs", "--area", "dmabuf:1", "--pool", "3"],
        ["providers", "--ring", "zzz"],
    ],
)
def test_bad_selections_are_one_line_usage_errors(args):
    result = run_cli("-f", fixture("linux-6.12-mixed"), *args)
    assert result.code == 2, result
    assert result.err.startswith("netmem-probe: error:") and len(result.err.splitlines()) == 1


def test_rings_need_a_kernel_with_zcrx():
    result = run_cli("-f", fixture("linux-6.12-mixed"), "providers", "--ring", "0x1000")
    assert result.code == 2 and "no zcrx" in result.err


def test_help_ends_with_examples():
    for command in ("providers", "niovs"):
        out = run_cli(command, "--help").out
        assert "EXAMPLES:" in out and out.rstrip().splitlines()[-1].startswith("      ")


# -- inconsistent memory: reported, counted, exit 4, never a traceback -----------------


def zcrx_world(layout: str = "linux-7.3"):
    w = World(layout)
    nic = w.init_net.netdev("eth9", driver="bnxt_en", num_rx_queues=2)
    ifq = FakeZcrxIfq(w, nic, 1, [8], napi_id=8400)
    ifq.alloc(2, "ring")
    ifq.alloc(2, "stack")
    return w, ifq


def area_record(result) -> Dict[str, Any]:
    (record,) = result.json()
    return record


def test_a_niov_outside_its_area_is_reported_not_counted():
    w, ifq = zcrx_world()
    area = ifq.areas[0]
    # A net_iov that names the area as its owner but is not in its niovs[]
    # sits in the pool's ring.
    stray = w.alloc("struct net_iov", {"owner": area.owner_addr, "type": 1})
    ifq.pool.ring.append(stray.addr | 1)
    ifq.pool.hold += 1
    prog = w.program()
    result = run_cli("providers", "--json", program=prog)
    assert result.code == 4
    assert f"net_iov at {stray.addr:#x}: in pool {ifq.pool.id}'s ring but outside" in result.err
    record = area_record(result)
    assert (record["free"], record["in-pool"], record["stack"]) == (4, 2, 2)
    decoded = run_cli("decode", "--json", hex(stray.addr | 1), program=prog)
    assert decoded.code == 1 and "outside its owner's niovs" in decoded.json()[0]["error"]
    assert "Traceback" not in result.err + decoded.err


def test_a_niov_whose_owner_leads_nowhere_is_skipped_and_counted():
    w, ifq = zcrx_world("linux-6.18")
    bad = ifq.areas[0].niovs[5]
    bad.owner_override = 0xDEAD000000000000
    prog = w.program()
    result = run_cli("providers", "--json", program=prog)
    assert result.code == 4
    assert f"net_iov at {bad.addr:#x}: owner is 0xdead000000000000" in result.err
    record = area_record(result)
    assert record["inconsistent"] == 1 and record["niovs"] == 8
    assert record["free"] + record["in-pool"] + record["stack"] + record["user"] == 7
    rows = json_lines(run_cli("niovs", "--json", program=prog).out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4, 6, 7]
    decoded = run_cli("decode", "--json", hex(bad.netmem), program=prog)
    assert decoded.code == 1 and "unreadable" in decoded.json()[0]["error"]


@pytest.mark.parametrize("layout", ["linux-6.12", "linux-7.3"])
def test_a_chunk_owner_pointer_that_leads_nowhere_skips_only_that_chunk(layout):
    w = World(layout)
    nic = w.init_net.netdev("eth9", driver="bnxt_en", num_rx_queues=1)
    binding = FakeBinding(w, nic, [0], [4, 6], binding_id=2, napi_base=8400)
    binding.alloc(binding.pools[0], 2, "cache")
    broken = binding.chunks[1]
    w.before_commit(lambda: broken.chunk.value.update(owner=0x10))
    result = run_cli("providers", "--json", program=w.program())
    assert result.code == 4
    assert f"gen_pool_chunk at {broken.chunk.addr:#x}: owner pointer 0x10 leads nowhere" in (
        result.err
    )
    record = area_record(result)
    assert (record["chunks"], record["niovs"], record["in-pool"], record["free"]) == (1, 4, 2, 2)


def test_an_area_pointer_that_leads_nowhere_leaves_the_other_areas():
    w = World("linux-7.3")
    nic = w.init_net.netdev("eth9", driver="mlx5_core")
    ifq = FakeZcrxIfq(w, nic, 0, [4, 4], napi_id=8400)
    ifq.alloc(1, "user", area=1)

    areas_array = ifq.areas_array
    assert areas_array is not None  # 7.3 has several areas

    def break_second_area():
        areas_array.value[1] = 0xDEAD000000001000

    w.before_commit(break_second_area)
    result = run_cli("providers", "--json", program=w.program())
    assert result.code == 4 and "area pointer 0xdead000000001000 leads nowhere" in result.err
    assert [r["address"] for r in result.json()] == [hex(ifq.areas[0].obj.addr)]


def test_an_area_id_two_zcrx_areas_share_is_refused_with_both_named(fixture_program):
    # zcrx area ids count from 0 in each ifq: eth3's and eth4's area 0.
    prog = fixture_program("linux-7.3-mixed")
    result = run_cli("niovs", "--area", "io_uring:0", program=prog)
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1
    assert (
        "io_uring:0 names 2 areas: io_uring:0xffff888004224a00 (eth3), "
        "io_uring:0xffff8880042271c0 (eth4); name one by its address"
    ) in result.err
    script = run_cli("niovs", "--area", "io_uring:0", "--drgn", program=prog).out
    with pytest.raises(SystemExit, match="io_uring:0 names 2 areas: .*eth3.*eth4"):
        exec(compile(script, "<snippet>", "exec"), {"prog": prog, "__name__": "__main__"})
    # An id one area has, and an address, still name it.
    assert run_cli("niovs", "--area", "io_uring:1", program=prog).code == 0
    assert run_cli("niovs", "--area", "io_uring:0xffff8880042271c0", program=prog).code == 0


def test_a_zcrx_area_names_the_processes_holding_its_ring():
    w, ifq = zcrx_world()
    ring = FakeRing(w)
    ring.add(ifq)
    FakeTask(w, 1, "init", w.init_net)
    FakeTask(w, 812, "zcrx-rx", w.init_net).open_ring(ring, 6)
    record = area_record(run_cli("providers", "--json", program=w.program()))
    assert record["owners"] == [
        {"pid": 812, "comm": "zcrx-rx", "fd": 6, "cgroup": None, "netns": w.init_net.inum}
    ]


def test_without_the_file_scan_a_zcrx_areas_owners_are_not_read():
    w, ifq = zcrx_world()
    result = run_cli("providers", "--no-scan-files", "--json", program=w.program())
    assert area_record(result)["owners"] is None


def _binding_world():
    w = World("linux-7.3")
    nic = w.init_net.netdev("eth3", driver="bnxt_en", num_rx_queues=2)
    binding = FakeBinding(w, nic, [0], [8], binding_id=4, napi_base=8300)
    binding.alloc(binding.pools[0], 2, "stack")
    return w, binding


def test_a_binding_names_the_process_holding_its_netlink_socket():
    w, binding = _binding_world()
    FakeTask(w, 1, "init", w.init_net)
    binding.bound_by(FakeTask(w, 940, "ncdevmem", w.init_net), 5)
    record = area_record(run_cli("providers", "--json", program=w.program()))
    assert record["owners"] == [
        {"pid": 940, "comm": "ncdevmem", "fd": 5, "cgroup": None, "netns": w.init_net.inum}
    ]
    assert record == binding.expected()


def test_an_unbound_binding_has_no_owner_and_is_not_read_without_the_file_scan():
    w, binding = _binding_world()
    other = FakeBinding(w, w.init_net.netdev("eth4"), [0], [4], binding_id=5, napi_base=8400)
    other.bound_by(FakeTask(w, 941, "ncdevmem", w.init_net), 3)
    binding.unbind()
    prog = w.program()
    records = {r["id"]: r for r in run_cli("providers", "--json", program=prog).json()}
    assert records[4]["owners"] == [] and [o["pid"] for o in records[5]["owners"]] == [941]
    scanless = run_cli("providers", "--no-scan-files", "--json", program=prog).json()
    assert [r["owners"] for r in scanless] == [None, None]


def test_a_detached_binding_pools_niovs_name_the_bindings_owner_in_leaks():
    w, binding = _binding_world()
    binding.bound_by(FakeTask(w, 942, "ncdevmem", w.init_net), 7)
    binding.pools[0].detach(w.boottime_ns / 1e9 - 60)
    rows = [
        json.loads(line)
        for line in run_cli("leaks", "--json", program=w.program()).out.splitlines()
    ]
    assert len(rows) == 2
    assert {(o["pid"], o["fd"]) for r in rows for o in r["owners"]} == {(942, 7)}
