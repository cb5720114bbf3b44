"""
The kernel log: the page-pool messages of the printk ring buffer, read by
drgn's get_printk_records() from the fake world's ring buffer (laid out as
Linux 7.3 lays it out), each linked to the pool it names in ``check``,
``pool`` and ``pools``.
"""

from typing import Any, Dict, List

import drgn
import pytest
from conftest import FIXTURES, expected, fixtures_with, run_cli

from netmem_probe.fake import scenarios
from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.kernel.printk import classify, page_pool_messages

MIXED = str(FIXTURES / "linux-7.3-mixed")


@pytest.mark.parametrize("name", fixtures_with("kernel-log"))
def test_check_lists_every_page_pool_message_of_the_log_with_its_pool(name):
    truth = expected(name)["kernel-log"]
    log = run_cli("-f", str(FIXTURES / name), "check", "--no-leaks", "--json").json()["kernel-log"]
    assert log["error"] is None
    got = [{k: m[k] for k in ("text", "kind", "pool-id")} for m in log["page-pool-messages"]]
    assert got == [{k: m[k] for k in ("text", "kind", "pool-id")} for m in truth]
    pools = {p["id"] for p in expected(name)["pools"] if p["id"] is not None}
    assert log["linked"] == sum(1 for m in truth if m["pool-id"] in pools)


def test_pool_shows_the_kernel_log_lines_that_name_it():
    truth = [m for m in expected("linux-7.3-mixed")["kernel-log"] if m["pool-id"] == 9]
    assert len(truth) == 3
    rec = run_cli("-f", MIXED, "pool", "9", "--json").json()
    assert [m["text"] for m in rec["kernel-log"]] == [m["text"] for m in truth]
    assert all(m["kind"] == "stalled-shutdown" and m["level"] == 4 for m in rec["kernel-log"])
    text = run_cli("-f", MIXED, "pool", "9").out
    assert f"] {truth[-1]['text']}\n" in text
    assert run_cli("-f", MIXED, "pool", "3", "--json").json()["kernel-log"] == []


def test_pools_notes_the_pools_the_kernel_log_warns_about():
    result = run_cli("-f", MIXED, "pools")
    noted = [line for line in result.err.splitlines() if "kernel log" in line]
    assert [line.split(":")[2].strip() for line in noted] == ["pool 9", "pool 10"]
    assert noted[0].endswith(
        "'page_pool_release_retry() stalled pool shutdown: id 9, 3 inflight 3600 sec'"
    )


def test_check_links_the_stalled_pools_and_names_the_gone_one_and_the_warnings():
    findings = run_cli("-f", MIXED, "check", "--no-leaks", "--json").json()["findings"]
    by_code: Dict[str, List[Dict[str, Any]]] = {}
    for f in findings:
        by_code.setdefault(f["code"], []).append(f)
    stalled = {f["pool-id"]: f for f in by_code["detached-pool-inflight"]}
    assert "the kernel log has 3 message(s) about it" in stalled[10]["message"]
    assert "kernel log" not in stalled[14]["message"]  # visible pools are not warned about
    (gone,) = by_code["log-names-gone-pool"]
    assert gone["pool-id"] == scenarios.GONE_POOL_ID and gone["severity"] == "info"
    (unlinked,) = by_code["kernel-log"]
    assert unlinked["severity"] == "warning" and "(devmem, warning)" in unlinked["message"]


def test_a_layout_without_the_printk_ring_buffer_says_the_log_is_not_read():
    log = run_cli("-f", str(FIXTURES / "linux-6.18-mixed"), "check", "--no-leaks", "--json").json()[
        "kernel-log"
    ]
    assert log["error"].startswith("no printk ring buffer")
    assert log["records"] is None and log["page-pool-messages"] is None
    rec = run_cli("-f", str(FIXTURES / "linux-6.18-mixed"), "pool", "9", "--json").json()
    assert rec["kernel-log"] is None


@pytest.mark.parametrize(
    "member,value",
    [
        ("desc_ring.head_id.counter", (1 << 62) - 1),
        ("desc_ring.count_bits", 63),
        ("text_data_ring.size_bits", 200),
    ],
)
def test_a_corrupt_ring_buffer_is_refused_not_walked_for_ever(member, value):
    world = scenarios.build("linux-7.3-mixed")[0]
    world.commit()
    fm = FaultyMemory(world)
    prog = fm.program()
    rb = prog["prb"]
    address = rb.value_() + drgn.offsetof(rb.type_.type, member)
    size = 4 if member.endswith("bits") else 8
    fm.write_word(address, value, size)
    log = page_pool_messages(prog)
    assert log.error is not None and "corrupt printk ring buffer" in log.error
    result = run_cli("pools", program=prog)
    assert result.code == 1 and "kernel log" not in result.err


@pytest.mark.parametrize(
    "line,kind,pool_id",
    [
        # Linux 6.8+
        (
            "page_pool_release_retry() stalled pool shutdown: id 19, 13 inflight 3600 sec",
            "stalled-shutdown",
            19,
        ),
        # before 6.8: no id
        (
            "page_pool_release_retry() stalled pool shutdown 13 inflight 60 sec",
            "stalled-shutdown",
            None,
        ),
        ("page_pool_empty_ring() page_pool refcnt -1 violation", "refcnt-violation", None),
        # __warn() since 6.19, and before
        (
            "WARNING: io_uring/zcrx.c:655 at io_zcrx_ifq_free+0x12/0x40, CPU#0: kworker/0:1/12",
            "warning",
            None,
        ),
        (
            "WARNING: CPU: 3 PID: 0 at net/core/page_pool.c:1021"
            " page_pool_put_unrefed_netmem+0x5/0x9",
            "warning",
            None,
        ),
        ("WARNING: CPU: 3 PID: 0 at net/core/dev.c:1021 netif_rx+0x5/0x9", None, None),
        ("dmabuf sg entry (addr=0x1000, len=4096) not aligned to niov size 8192", "devmem", None),
        ("Linux version 7.3.4+deb13-amd64", None, None),
    ],
)
def test_classify_knows_the_kernels_page_pool_messages(line, kind, pool_id):
    found = classify(line)
    assert (found[0] if found else None) == kind
    if found:
        assert found[1] == pool_id
