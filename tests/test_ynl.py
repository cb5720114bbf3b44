"""
``--ynl``: what ``ynl --family netdev --output-json`` prints, from memory:
``pools`` the ``page-pool-get`` dump, ``pool`` a ``page-pool-stats-get``.
"""

import json
import os
import shutil
import subprocess
import time

import drgn
import pytest
from conftest import expected, fixtures_with, run_cli

from netmem_probe.netlink import PAGE_POOL_GET_KEYS

POOL_FIXTURES = fixtures_with("pools")


def _key(obj):
    return json.dumps(obj, sort_keys=True)


@pytest.mark.parametrize("name", POOL_FIXTURES)
def test_pools_ynl_prints_netlinks_attributes_of_the_pools_netlink_shows(name, fixture_program):
    result = run_cli("pools", "--ynl", program=fixture_program(name))
    assert result.code in (0, 1), result.err
    assert result.out.count("\n") == 1  # one line, as ynl prints a dump
    mine = json.loads(result.out)
    want = [
        {k: v for k, v in p.items() if k in PAGE_POOL_GET_KEYS}
        for p in expected(name)["pools"]
        if p["state"] in ("listed", "orphaned")
    ]
    assert sorted(map(_key, mine)) == sorted(map(_key, want))
    assert all(list(p) == [k for k in PAGE_POOL_GET_KEYS if k in p] for p in mine)


def test_pools_ynl_is_in_netlinks_dump_order(fixture_program):
    # Netdev by netdev, each one's list newest pool first (hlist_add_head()).
    mine = json.loads(run_cli("pools", "--ynl", program=fixture_program("linux-7.3-mixed")).out)
    eth0 = [p["id"] for p in mine if p.get("ifindex") == 2]
    assert eth0 == sorted(eth0, reverse=True) and len(eth0) > 1


@pytest.mark.parametrize("name", POOL_FIXTURES)
def test_pool_ynl_prints_the_stats_object_netlink_would(name, fixture_program):
    prog = fixture_program(name)
    for pool in expected(name)["pools"]:
        if pool["id"] is None:  # before Linux 6.8: no netlink, no ids
            result = run_cli("pool", pool["address"], "--ynl", program=prog)
            assert result.code == 1 and result.out == ""
            continue
        result = run_cli("pool", str(pool["id"]), "--ynl", program=prog)
        if pool["state"] not in ("listed", "orphaned"):
            assert result.code == 1 and result.out == ""
            assert "netlink does not show pool" in result.err
            continue
        stats = expected(name)["pool-details"][str(pool["id"])]["stats"]
        if stats is None:  # no CONFIG_PAGE_POOL_STATS: netlink answers EOPNOTSUPP
            assert result.code == 1 and "CONFIG_PAGE_POOL_STATS" in result.err
            continue
        info = {k: pool[k] for k in ("id", "ifindex") if k in pool}
        assert json.loads(result.out) == {"info": info, **stats}


def test_ynl_does_not_mix_with_other_output_modes(fixture_program):
    prog = fixture_program("linux-7.3-mixed")
    for args in (
        ["pools", "--ynl", "--json"],
        ["pool", "3", "--ynl", "--holders"],
        ["pool", "3", "--ynl", "--json"],
    ):
        result = run_cli(*args, program=prog)
        assert result.code == 2 and result.out == "", args


def test_check_netlink_reports_each_pool_and_attribute_that_disagree(fixture_program):
    from netmem_probe.commands.pools import netlink_disagreements

    memory = json.loads(run_cli("pools", "--ynl", program=fixture_program("linux-7.3-mixed")).out)
    assert netlink_disagreements(memory, memory, memory) == []
    first, second, third = memory[:3]
    moved = [dict(p) for p in memory]
    moved[0]["inflight"] += 1  # the kernel ran on: the second read has it
    netlink = [dict(p) for p in moved[2:]] + [{"id": 999, "inflight": 0, "inflight-mem": 0}]
    netlink[0]["napi-id"] = 1
    found = netlink_disagreements(memory, netlink, moved)
    assert found == sorted(
        [
            {"id": first["id"], "key": None, "memory": first, "netlink": None},
            {"id": second["id"], "key": None, "memory": second, "netlink": None},
            {"id": third["id"], "key": "napi-id", "memory": third.get("napi-id"), "netlink": 1},
            {"id": 999, "key": None, "memory": None, "netlink": netlink[-1]},
        ],
        key=lambda d: d["id"],
    )


def test_check_netlink_needs_a_live_kernel(fixture_program):
    result = run_cli("pools", "--check-netlink", program=fixture_program("linux-7.3-mixed"))
    assert result.code == 2 and "live" in result.err and result.out == ""


def _host_netlink_program():
    """The running kernel's types (for the NETDEV_* numbers), if it has page-pool-get."""
    from netmem_probe.kallsyms_btf import LIVE_BTF
    from netmem_probe.target import open_btf_types

    if os.geteuid() != 0 or shutil.which("unshare") is None or not os.access(LIVE_BTF, os.R_OK):
        pytest.skip("needs root, unshare(1) and /sys/kernel/btf/vmlinux")
    prog = open_btf_types(LIVE_BTF)
    try:
        prog.object("NETDEV_CMD_PAGE_POOL_GET")
    except LookupError:
        pytest.skip("this host's kernel has no page-pool-get (Linux 6.8+)")
    return prog


def test_check_netlink_asks_netlink_in_a_namespace_entered_by_a_process_in_it():
    # pools --check-netlink enters each network namespace to dump it there:
    # a process alone in a new one leads to it, and netlink answers for it.
    from netmem_probe.netlink import NetlinkError, netns_files, page_pool_dump

    prog = _host_netlink_program()
    process = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        path = f"/proc/{process.pid}/ns/net"
        for _ in range(100):  # until unshare has made the namespace and run sleep
            if os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino:
                break
            time.sleep(0.05)
        inum = os.stat(path).st_ino
        files = netns_files()
        assert os.stat(files[inum]).st_ino == inum
        assert os.stat("/proc/self/ns/net").st_ino in files
        # A new namespace has only lo: no page pools, whatever this one has.
        assert page_pool_dump(prog, (inum, files[inum])) == []
        assert os.stat("/proc/thread-self/ns/net").st_ino != inum  # this thread stayed
        with pytest.raises(NetlinkError, match="is now another namespace"):
            page_pool_dump(prog, (inum + 1, path))
    finally:
        process.kill()
        process.wait()


def test_check_netlink_names_the_pools_of_namespaces_it_cannot_enter():
    # A fake world's pools live in namespaces of its own, which no process or
    # file on this host leads to: --check-netlink asks this host's netlink
    # where it can, and lists those pools as not checked, saying why (exit 4),
    # never dropping them in silence.
    from netmem_probe.fake import scenarios
    from netmem_probe.fake.faults import FaultyMemory

    host = _host_netlink_program()
    world = scenarios.build("linux-7.3-mixed")[0]
    world.commit()
    prog = FaultyMemory(world).program(live=True)

    def netdev_constants(prog, name, flags, filename):
        # The NETDEV_* numbers of the kernel netlink runs in: this host's.
        if name.startswith("NETDEV_") and flags & drgn.FindObjectFlags.CONSTANT:
            try:
                value = host.constant(name)
            except LookupError:
                return None
            return drgn.Object(prog, "int", value.value_())
        return None

    prog.register_object_finder("host netdev", netdev_constants, enable_index=-1)
    result = run_cli("pools", "--check-netlink", "--json", program=prog)
    assert result.code == 4, result
    output = json.loads(result.out)
    unchecked = {ns["netns"]: ns for ns in output["namespaces"] if ns["error"]}
    truth = {p["id"]: p for p in expected("linux-7.3-mixed")["pools"]}
    shown = [p for p in truth.values() if p["state"] in ("listed", "orphaned")]
    assert shown and sorted(p for ns in unchecked.values() for p in ns["pools"]) == sorted(
        p["id"] for p in shown
    )
    assert all("no process is in it" in ns["error"] for ns in unchecked.values())
    own = os.stat("/proc/self/ns/net").st_ino
    assert any(ns["netns"] == own and ns["error"] is None for ns in output["namespaces"])
    assert "were not checked" in result.err and str(next(iter(unchecked))) in result.err
    prog = FaultyMemory(world).program(live=True)
    prog.register_object_finder("host netdev", netdev_constants, enable_index=-1)
    table = run_cli("pools", "--check-netlink", program=prog)
    assert table.code == 4, table
    for ns in unchecked.values():
        ids = ", ".join(map(str, ns["pools"]))
        assert f"({ids}) of network namespace {ns['netns']}: not checked: no process" in table.out
    summary = table.out.splitlines()[-1]
    assert f"; {len(shown)} pools not checked [" in summary, summary
