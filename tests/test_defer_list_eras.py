"""
The skb defer lists of each era are walked: an sk_buff chain in softnet_data
(v5.19 .. v6.17, here the linux-6.6 layout), and since v6.18 an llist per CPU
and NUMA node (net_hotdata.skb_defer_nodes, the linux-7.3 layout).
"""

import pytest
from conftest import run_cli

from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb
from netmem_probe.fake.world import World


@pytest.mark.parametrize(
    "layout, detail",
    [
        ("linux-6.6", "defer list of CPU 1"),
        ("linux-7.3", "defer list of CPU 1, node 0"),
    ],
)
def test_skbs_on_a_defer_list_of_each_era_hold_their_pages(layout, detail):
    w = World(layout)
    queues = w.cpu_queues
    assert queues is not None  # both layouts have softnet_data
    assert (queues.defer_nodes is None) == (layout == "linux-6.6")
    pages = FakePagePool(w).alloc_pages(3)
    for page in pages:
        queues.defer(1, FakeSkb(w, [page]).obj)  # a chain of three
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=w.program())
    assert result.code == 0, result.err
    rows = [h for record in result.json() for h in record["holders"]]
    assert [(h["kind"], h["queue"], h["detail"]) for h in rows] == [
        ("skb-frag", "defer-list", detail)
    ] * 3


def test_an_unreadable_per_cpu_offset_is_reported_and_the_rest_still_named():
    w = World("linux-7.3")
    queues = w.cpu_queues
    assert queues is not None
    page = FakePagePool(w).alloc_pages(1)[0]
    queues.queue_backlog(0, FakeSkb(w, [page]).obj)
    w.commit()
    fm = FaultyMemory(w)
    offsets = w.prog["__per_cpu_offset"]
    fm.unmap(offsets.address_ + 8, 8)  # CPU 1's offset
    result = run_cli("holders", "--json", hex(page.netmem), program=fm.program())
    assert result.code == 4 and "CPU 1" in result.err and "unreadable" in result.err
    (row,) = result.json()[0]["holders"]
    assert row["queue"] == "backlog"
