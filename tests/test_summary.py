"""Holder summaries: per pool, pages by holder kind and what releases them."""

import json
import re
from typing import Any, Dict, List

from conftest import run_cli

from netmem_probe.fake.drivers import FakeVirtioNet
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.tasks import FakeTask
from netmem_probe.fake.world import World


def _nic_world():
    """A virtio_net pool: 2 pages posted in the ring, 2 in a UDP sink, 2 in the cache, 1 lost."""
    w = World("linux-7.3")
    nic = FakeVirtioNet(w.init_net, "eth0", ring_size=16)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8400)
    ring, sunk, lost = pool.alloc_pages(2), pool.alloc_pages(2), pool.alloc_pages(1)[0]
    pool.alloc_pages(2, "cache")
    for slot, page in enumerate(ring):
        nic.post(0, slot, w.page_virt(page.pfn))
    sink = FakeSocket(w, w.init_net, local=("10.0.2.15", 9000), owns_skbs=False)
    sink.queue(FakeSkb(w, sunk))
    FakeTask(w, 300, "sink", w.init_net).open(sink, 5)
    return w, pool, lost


def test_pool_holders_counts_each_page_once_by_its_strongest_holder():
    w, pool, _ = _nic_world()
    result = run_cli("pool", str(pool.id), "--holders", "--json", program=w.program())
    holders = result.json()["holders"]
    assert holders["holder-kinds"] == {
        "rx-ring": 2,
        "socket-receive": 2,
        "pool-cache": 2,
        "unexplained": 1,
    }
    assert {r["action"]: r["pages"] for r in holders["release"]} == {
        "unbinding its virtio device (eth0 down keeps the posted buffers)": 2,
        "close fd 5 of pid 300 (sink)": 2,
        "nothing: the pool's own cache, freed with the pool": 2,
        "none known: nothing holds it (a leak)": 1,
    }


def test_pool_holders_in_the_table():
    w, pool, _ = _nic_world()
    result = run_cli("pool", str(pool.id), "--holders", program=w.program())
    assert re.search(r"^    rx-ring +2$", result.out, re.M), result.out
    assert "    to release 2: close fd 5 of pid 300 (sink)" in result.out


def test_leaks_rows_and_summary_name_the_holder_kind_and_release():
    w, pool, lost = _nic_world()
    pool.detach(at=86000.0)  # its cache is scrubbed back to the page allocator
    prog = w.program()
    result = run_cli("leaks", "--json", program=prog)
    rows = [json.loads(line) for line in result.out.splitlines()]
    by_kind: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["holder-kind"], []).append(row)
    assert {k: len(v) for k, v in by_kind.items()} == {
        "rx-ring": 2,
        "socket-receive": 2,
        "unexplained": 1,
    }
    assert by_kind["unexplained"][0]["netmem"] == hex(lost.netmem)
    text = run_cli("leaks", program=prog).out
    assert "holders: rx-ring 2, socket-receive 2, unexplained 1" in text
    assert "to release 2 pages: close fd 5 of pid 300 (sink)" in text
