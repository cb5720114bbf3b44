"""
``check`` on dumps of real Debian kernels: its summary agrees with ``pools``,
every detached pool with pages out is a finding with its next command, the
kernel log is read, and without debug info (BTF) the answer is the same.
"""

import json

import pytest
from conftest import run_cli
from realkernel_dumps import btf_program, dumps, live_record, live_truth, pool_ref, program, truth

pytestmark = pytest.mark.realkernel
DUMPS = dumps()


# The leak verdicts search all of memory: on the ELF dump only (the kdump one
# is the same memory, zlib-compressed, and takes twice as long).
@pytest.mark.parametrize("series,kind", [(s, k) for s, k in DUMPS if k == "elf"])
def test_check_finds_every_detached_pool_with_pages_out(series, kind):
    prog = program(series, kind)
    pools = run_cli("pools", "--json", program=prog).json()
    result = run_cli("check", "--json", program=prog)
    report = result.json()
    assert report["release"] == truth(series)["kernel"]
    assert report["pools"]["total"] == len(pools)
    assert report["pools"]["inflight"] == sum(p["inflight"] for p in pools)
    # by id, or by address where the kernel has no registry (before 6.8): no ids
    waiting = {pool_ref(p): p for p in pools if p["detached"] and p["inflight"]}
    assert waiting, "the scenario makes detached pools with pages in flight"
    assert report["detached"]["inflight"] == sum(p["inflight"] for p in waiting.values())
    leak_finding = "netmem-probe leaks --pool "
    found = {
        f["next"][len(leak_finding) :]: f
        for f in report["findings"]
        if (f["next"] or "").startswith(leak_finding) and f["next"][len(leak_finding) :] in waiting
    }
    assert set(found) == set(waiting)
    for ref, finding in found.items():
        assert finding["severity"] in ("error", "warning")
        assert finding["pool-id"] == waiting[ref]["id"]
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


@pytest.mark.parametrize("series", sorted({series for series, _ in DUMPS}))
def test_live_check_and_exporter_in_the_guest_without_debug_info(series):
    from prometheus_client.parser import text_string_to_metric_families

    t = live_truth(series)
    live = live_record(series, "live-pools.json")
    # pools by id, or before the 6.8 registry (no ids) by address
    pools = {pool_ref(p): p for p in live["btf"]["output"]}
    check = live["check"]
    assert check["ok"] and check["returncode"] == 1, check.get("stderr")
    report = check["output"]
    assert report["target"] == "live kernel (racy snapshot)"
    assert report["release"] == t["kernel"]
    assert isinstance(report["growth"], list)  # measured over 1 s
    assert report["kernel-log"]["error"] is None
    waiting = {i for i, p in pools.items() if p["detached"] and p["inflight"]}
    # a finding names a pool without an id by its address ("pool 0x...")
    named = {
        str(f["pool-id"]) if f["pool-id"] is not None else f["message"].split()[1]
        for f in report["findings"]
        if f["message"].startswith("pool ")
    }
    assert waiting and waiting <= named
    # A live run that lasts past the kernel's first 60 s warning finds it, and
    # the pool it names is one netlink cannot show that waits for pages
    # (before Linux 6.8 the warning names no pool).
    for m in report["kernel-log"]["page-pool-messages"]:
        if m["kind"] == "stalled-shutdown" and m["pool-id"] is not None:
            ref = str(m["pool-id"])
            assert ref in waiting and pools[ref]["state"] == "invisible", m
    export = live["export"]
    assert export["ok"], export.get("stderr")
    samples = {
        # a pool's series by id, or by address where it has none
        (s.name, s.labels.get("id") or s.labels.get("address")): s.value
        for family in text_string_to_metric_families(export["output"])
        for s in family.samples
    }
    assert samples[("netmem_probe_up", None)] == 1
    exported = {ref for name, ref in samples if name == "netmem_page_pool_inflight_pages" and ref}
    assert exported == set(pools)
    for ref in waiting:  # nothing returns a detached pool's parked pages
        assert samples[("netmem_page_pool_inflight_pages", ref)] == pools[ref]["inflight"]


@pytest.mark.parametrize("series,kind", DUMPS)
def test_exporter_without_debug_info_exports_what_it_does_with_it(series, kind):
    def metrics(prog):
        result = run_cli("export", "--textfile", "-", program=prog)
        assert result.code == 0, result.err
        # Everything but how long the reading took.
        return [line for line in result.out.splitlines() if "read_duration" not in line]

    with_debug_info = metrics(program(series, kind))
    assert metrics(btf_program(series, kind)) == with_debug_info
    assert any(line.startswith("netmem_page_pool_inflight_pages{") for line in with_debug_info)
