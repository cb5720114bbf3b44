"""
``check`` on dumps of real Debian kernels: its summary agrees with ``pools``,
every detached pool with pages out is a finding with its next command, the
kernel log is read, and without debug info (BTF) the answer is the same.
"""

import json

import pytest

from conftest import run_cli
from realkernel_dumps import btf_program, dumps, program, truth

pytestmark = pytest.mark.realkernel
DUMPS = dumps()


@pytest.mark.parametrize("series,kind", DUMPS)
def test_check_finds_every_detached_pool_with_pages_out(series, kind):
    prog = program(series, kind)
    pools = run_cli("pools", "--json", program=prog).json()
    result = run_cli("check", "--json", program=prog)
    report = result.json()
    assert report["release"] == truth(series)["kernel"]
    assert report["pools"]["total"] == len(pools)
    assert report["pools"]["inflight"] == sum(p["inflight"] for p in pools)
    waiting = {p["id"]: p for p in pools if p["detached"] and p["inflight"]}
    assert waiting, "the scenario makes detached pools with pages in flight"
    assert report["detached"]["inflight"] == sum(p["inflight"] for p in waiting.values())
    found = {f["pool-id"]: f for f in report["findings"] if f["pool-id"] in waiting}
    assert set(found) == set(waiting)
    for pool_id, finding in found.items():
        assert finding["severity"] in ("error", "warning")
        assert finding["next"] == f"netmem-probe leaks --pool {pool_id}"
    leaks = report["leaks"]
    assert sum(leaks[k] for k in ("parked", "cached", "leaked", "missing")) == sum(
        p["inflight"] for p in waiting.values()
    )
    log = report["kernel-log"]
    assert log["error"] is None and log["records"] > 0
    assert report["verdict"] == "unhealthy" and result.code == 1, result.err


@pytest.mark.parametrize("series,kind", DUMPS)
def test_check_without_debug_info_answers_as_with_it(series, kind):
    args = ("check", "--no-leaks", "--json")
    want = run_cli(*args, program=program(series, kind))
    have = run_cli(*args, program=btf_program(series, kind))
    assert (have.code, have.out, have.err) == (want.code, want.out, want.err)
    assert have.json()["kernel-log"]["error"] is None


@pytest.mark.parametrize("series", sorted({series for series, _ in DUMPS}))
def test_triage_of_the_dumps_without_debug_info(series):
    t = truth(series)
    dumps = [t["dumps"][kind] for s, kind in DUMPS if s == series]
    result = run_cli("triage", "--no-leaks", "--json", "--jobs", "2", *dumps)
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [row["dump"] for row in rows] == dumps
    pools = run_cli("pools", "--json", program=program(series, "elf")).json()
    waiting = [p for p in pools if p["detached"] and p["inflight"]]
    for row in rows:
        assert row["error"] is None, row
        assert row["release"] == t["kernel"]
        assert row["pools"] == len(pools)
        assert row["detached-waiting"] == len(waiting)
        assert row["verdict"] == "unhealthy"
    assert result.code == 1
