"""
``pools --ynl`` and ``pool --ynl`` on dumps of real Debian kernels print the
objects the kernel's own netlink answered just before the dump (every
namespace's ``page-pool-get`` dump, and ``page-pool-stats-get``).
"""

import json

import pytest
from conftest import run_cli
from realkernel_dumps import SERIES, dumps, live_record, program, truth
from test_json_schema import check as check_schema

pytestmark = pytest.mark.realkernel


def _key(obj):
    return json.dumps(obj, sort_keys=True)


@pytest.mark.parametrize("series,kind", dumps())
def test_pools_ynl_prints_the_objects_of_netlinks_dump(series, kind):
    t = truth(series)
    theirs = [p for ns in t["netns"] for p in (ns["page-pool-get"] or [])]
    result = run_cli("pools", "--ynl", program=program(series, kind))
    assert result.code in (0, 1), result.err
    assert sorted(map(_key, json.loads(result.out))) == sorted(map(_key, theirs))


@pytest.mark.parametrize("series,kind", dumps())
def test_pool_ynl_prints_netlinks_stats_object(series, kind):
    stats = [s for ns in truth(series)["netns"] for s in (ns.get("page-pool-stats-get") or [])]
    prog = program(series, kind)
    for theirs in stats:
        result = run_cli("pool", str(theirs["info"]["id"]), "--ynl", program=prog)
        assert json.loads(result.out) == theirs


@pytest.mark.parametrize("series", SERIES)
def test_check_netlink_in_the_guest_found_netlink_and_memory_agree(series):
    # make-vmcore --live runs pools --check-netlink in the guest: netmem-probe
    # asked the running kernel's netlink itself, in every network namespace
    # (entered by its /run/netns file or a process in it), and compared it
    # with memory.
    if all(ns["page-pool-get"] is None for ns in truth(series)["netns"]):
        pytest.skip(f"{series}: the kernel has no page-pool netlink (Linux 6.8+) to compare with")
    check = live_record(series, "live-pools.json")["check-netlink"]
    assert check["ok"] and check["returncode"] == 0, check.get("stderr")
    netlink = live_record(series, "live-netlink.json")
    output = check["output"]
    check_schema(["pools", "--check-netlink"], json.dumps(output))
    assert output["disagreements"] == []
    namespaces = {ns["netns"]: ns for ns in output["namespaces"]}
    # Every namespace the scenario made was asked, none left unchecked.
    for ns in netlink["before"]:
        asked = namespaces[ns["inum"]]
        assert asked["error"] is None, asked
        assert asked["netlink-pools"] == len(ns["page-pool-get"] or []), (ns["name"], asked)
    assert not [ns for ns in output["namespaces"] if ns["error"] and ns["pools"]]
    total = sum(len(ns["page-pool-get"] or []) for ns in netlink["before"])
    assert output["netlink-pools"] == total > 0
