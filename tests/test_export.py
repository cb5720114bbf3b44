"""
``export``: Prometheus metrics of the pools.  The textfile output is parsed
with prometheus_client's own parser and checked by ``promtool check
metrics``; a real Prometheus server (Debian's ``prometheus``, installed by
scripts/test) scrapes the exporter serving a fixture on loopback, and the
series it stored, asked for through its HTTP API, must hold the values
``pools --json`` prints.
"""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Tuple

import drgn
import pytest
from conftest import FIXTURE_NAMES, FIXTURES, ROOT, run_cli
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netmem_probe.commands.export import POOL_LABELS, PoolCollector
from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World

MIXED = str(FIXTURES / "linux-7.3-mixed")


def _samples(text: str) -> Dict[str, List[Tuple[Dict[str, str], float]]]:
    out: Dict[str, List[Tuple[Dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _by_pool(samples, name: str, key: str = "id") -> Dict[Any, float]:
    """A pool series by pool id, or by ``key="address"`` (no ids before Linux 6.8)."""
    return {
        int(labels[key]) if key == "id" else labels[key]: value
        for labels, value in samples.get(name, [])
    }


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_textfile_holds_what_pools_json_says(name, tmp_path):
    pools = run_cli("-f", str(FIXTURES / name), "pools", "--json").json()
    path = tmp_path / "netmem.prom"
    result = run_cli("-f", str(FIXTURES / name), "export", "--textfile", str(path))
    assert result.code == 0, result.err
    assert result.out == ""
    samples = _samples(path.read_text())
    key = "id" if all(p["id"] is not None for p in pools) else "address"
    want = {p[key]: p for p in pools}
    assert _by_pool(samples, "netmem_page_pool_inflight_pages", key) == {
        i: p["inflight"] for i, p in want.items()
    }
    assert _by_pool(samples, "netmem_page_pool_inflight_bytes", key) == {
        i: p["inflight-mem"] for i, p in want.items()
    }
    assert _by_pool(samples, "netmem_page_pool_pages_hold_total", key) == {
        i: p["hold"] for i, p in want.items()
    }
    assert _by_pool(samples, "netmem_page_pool_detach_age_seconds", key) == {
        i: p["detach-age"] for i, p in want.items() if p["detach-age"] is not None
    }
    for labels, _value in samples["netmem_page_pool_inflight_pages"]:
        pool = want[int(labels["id"]) if key == "id" else labels["address"]]
        assert set(labels) == set(POOL_LABELS)
        assert labels["state"] == pool["state"]
        assert labels["detached"] == ("true" if pool["detached"] else "false")
        assert labels["netdev"] == (pool["netdev"] or "")
        assert labels["queue"] == ("" if pool["queue"] is None else str(pool["queue"]))
    by_state: Dict[Tuple[str, str], float] = {
        (labels["state"], labels["detached"]): value
        for labels, value in samples["netmem_page_pools"]
    }
    assert sum(by_state.values()) == len(pools)
    assert by_state[("invisible", "true")] == sum(
        1 for p in pools if p["state"] == "invisible" and p["detached"]
    )
    assert samples["netmem_probe_up"] == [({}, 1.0)]
    assert [v for _, v in samples["netmem_probe_scrape_errors_total"]] == [0.0, 0.0]


def test_textfile_has_the_stats_and_niov_states_of_the_fixture():
    result = run_cli("-f", MIXED, "export", "--textfile", "-")
    samples = _samples(result.out)
    pool3 = run_cli("-f", MIXED, "pool", "3", "--json").json()
    assert _by_pool(samples, "netmem_page_pool_alloc_fast_total")[3] == pool3["stats"]["alloc-fast"]
    assert (
        _by_pool(samples, "netmem_page_pool_recycle_released_refcnt_total")[3]
        == pool3["stats"]["recycle-released-refcnt"]
    )
    areas = run_cli("-f", MIXED, "providers", "--no-scan-files", "--json").json()
    niovs = {
        (labels["area"], labels["state"]): value
        for labels, value in samples["netmem_provider_niovs"]
    }
    assert areas
    for area in areas:
        for state in ("free", "in-pool", "stack", "user"):
            assert niovs[(area["area"], state)] == area[state]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_promtool_accepts_the_metrics():
    text = run_cli("-f", MIXED, "export", "--textfile", "-").out
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_the_readme_alert_rules_are_valid_rules(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## In production") :]
    (rules,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    path = tmp_path / "netmem.rules.yml"
    path.write_text(rules)
    check = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 3 rules found" in check.stdout


def test_max_pools_bounds_the_series_and_keeps_the_detached_pools():
    samples = _samples(run_cli("-f", MIXED, "export", "--max-pools", "4", "--textfile", "-").out)
    inflight = samples["netmem_page_pool_inflight_pages"]
    assert len(inflight) == 4
    assert all(labels["detached"] == "true" for labels, _ in inflight)
    assert samples["netmem_page_pools_unexported"] == [({}, 12.0)]


def _registry(collector: PoolCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def _live_world() -> World:
    w = World("linux-7.3")
    eth0 = w.init_net.netdev("eth0", driver="virtio_net")
    FakePagePool(w, netdev=eth0, napi_id=8200, queue=0, flags=1).alloc_pages(5, "out")
    w.commit()
    return w


def test_scrapes_within_the_minimum_interval_read_the_target_once():
    fm = FaultyMemory(_live_world())
    collector = PoolCollector(fm.program(live=True), min_interval=3600, log=lambda _: None)
    registry = _registry(collector)
    first = generate_latest(registry)
    reads = fm.reads
    for _ in range(5):
        again = generate_latest(registry)
    assert fm.reads == reads  # no memory read at all
    assert _samples(again.decode())["netmem_probe_reads_total"] == [({}, 1.0)]
    assert _by_pool(_samples(first.decode()), "netmem_page_pool_inflight_pages")[3] == 5.0


def _errors(samples) -> Dict[str, float]:
    return {labels["kind"]: value for labels, value in samples["netmem_probe_scrape_errors_total"]}


def test_a_reading_that_fails_is_counted_and_the_next_scrape_reads_again():
    fm = FaultyMemory(_live_world())
    torn = [True]

    def tear(fm: FaultyMemory, address: int, count: int) -> None:
        if torn[0]:
            raise RuntimeError("the reader was interrupted")

    logged: List[str] = []
    collector = PoolCollector(fm.program(live=True), min_interval=0, log=logged.append)
    fm.on_read.append(tear)
    registry = _registry(collector)
    failed = _samples(generate_latest(registry).decode())
    assert failed["netmem_probe_up"] == [({}, 0.0)]
    assert _errors(failed) == {"failed": 1.0, "partial": 0.0}
    assert "netmem_page_pool_inflight_pages" not in failed  # nothing stale
    assert logged == ["error: reading the target failed: RuntimeError: the reader was interrupted"]
    torn[0] = False
    good = _samples(generate_latest(registry).decode())
    assert good["netmem_probe_up"] == [({}, 1.0)]
    assert _errors(good) == {"failed": 1.0, "partial": 0.0}
    assert _by_pool(good, "netmem_page_pool_inflight_pages")[3] == 5.0


def test_a_reading_torn_by_a_changing_kernel_is_partial_and_counted():
    w = _live_world()
    fm = FaultyMemory(w)
    pool = w.pools[-1]
    at_hold = pool.obj.addr_of("pages_state_hold_cnt")
    changing = [True]

    def change(fm: FaultyMemory, address: int, count: int) -> None:
        # The pool's memory is freed under every read of it.
        if changing[0] and address <= at_hold < address + count:
            raise drgn.FaultError("freed under the reader", at_hold)

    logged: List[str] = []
    collector = PoolCollector(fm.program(live=True), min_interval=0, log=logged.append)
    fm.on_read.append(change)
    registry = _registry(collector)
    torn = _samples(generate_latest(registry).decode())
    assert torn["netmem_probe_up"] == [({}, 1.0)]
    assert torn["netmem_probe_skipped_objects"] == [({}, 1.0)]
    assert _errors(torn) == {"failed": 0.0, "partial": 1.0}
    assert pool.id not in _by_pool(torn, "netmem_page_pool_inflight_pages")
    assert len(logged) == 1 and logged[0].startswith("warning: 1 object(s) skipped")
    changing[0] = False
    again = _samples(generate_latest(registry).decode())
    assert _by_pool(again, "netmem_page_pool_inflight_pages")[pool.id] == 5.0
    assert again["netmem_probe_skipped_objects"] == [({}, 0.0)]


def test_bad_export_arguments_are_one_line_errors(tmp_path):
    for args in (
        ["export"],
        ["export", "--listen", "nowhere"],
        ["export", "--listen", "127.0.0.1:1", "--textfile", "x"],
        ["export", "--textfile", str(tmp_path / "no" / "such" / "dir" / "x.prom")],
    ):
        result = run_cli("-f", MIXED, *args)
        assert result.code == 2, (args, result)
        assert result.err.startswith("netmem-probe: error: ") and result.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_use_is_a_one_line_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("-f", MIXED, "export", "--listen", f"127.0.0.1:{port}")
    assert result.code == 2
    assert re.fullmatch(
        rf"netmem-probe: error: .*cannot listen on 127\.0\.0\.1:{port}: .*\n", result.err
    ), result.err


def _start_exporter(*args: str) -> Tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "netmem_probe", "-f", MIXED, "export", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
    if m is None:
        proc.kill()
        pytest.fail(f"exporter did not start: {line}{proc.stderr.read()}")
    return proc, int(m[1])


def _query(port: int, expr: str) -> List[Dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus missing (scripts/test installs it)",
)
def test_a_real_prometheus_scrapes_the_exporter_and_stores_what_pools_json_says(tmp_path):
    pools = {p["id"]: p for p in run_cli("-f", MIXED, "pools", "--json").json()}
    exporter, port = _start_exporter("--listen", "127.0.0.1:0", "--min-interval", "0.5")
    prom_port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: netmem\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),
    )
    try:
        deadline = time.monotonic() + 90
        stored: List[Dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                stored = _query(prom_port, "netmem_page_pool_inflight_pages")
            except OSError:
                stored = []
            if stored:
                break
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.5)
        assert stored, "Prometheus stored no series: " + (tmp_path / "prometheus.log").read_text()
        assert {int(s["metric"]["id"]): float(s["value"][1]) for s in stored} == {
            i: p["inflight"] for i, p in pools.items()
        }
        for s in stored:
            assert s["metric"]["job"] == "netmem"
            assert s["metric"]["state"] == pools[int(s["metric"]["id"])]["state"]
        ages = _query(prom_port, 'netmem_page_pool_detach_age_seconds{detached="true"}')
        assert {int(s["metric"]["id"]): float(s["value"][1]) for s in ages} == {
            i: p["detach-age"] for i, p in pools.items() if p["detach-age"] is not None
        }
        # The alert of the README: detached pools with pages out.
        alert = _query(prom_port, 'netmem_page_pool_inflight_pages{detached="true"} > 0')
        assert {int(s["metric"]["id"]) for s in alert} == {
            i for i, p in pools.items() if p["detached"] and p["inflight"]
        }
        (up,) = _query(prom_port, "netmem_probe_up")
        assert up["value"][1] == "1"
        (targets,) = _query(prom_port, "up")
        assert targets["value"][1] == "1"
    finally:
        prometheus.terminate()
        exporter.terminate()
        prometheus.wait(timeout=30)
        exporter.wait(timeout=30)
