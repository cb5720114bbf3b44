"""
Holders on real Debian kernel dumps (the real-kernel tier): every in-flight
page of every pool has a holder, the virtio_net rx rings are named as such,
and an unknown reference's slab object is named with what points at it.
"""

from collections import Counter
from typing import Dict, Optional, Set, Tuple

import drgn
import pytest
from conftest import run_cli
from drgn.helpers.linux.mm import virt_to_page
from drgn.helpers.linux.net import fget, skb_shinfo
from drgn.helpers.linux.pid import find_task
from realkernel_dumps import SERIES, dumps, has_registry, page_size, program, truth
from test_drgn_snippets import records, run_snippet, same_records, snippet

from netmem_probe.kernel.drivers import RxRings
from netmem_probe.kernel.holders import (
    Holder,
    HolderSearch,
    make_target,
    page_target,
    search_words,
)
from netmem_probe.kernel.pages import PpPageScanner
from netmem_probe.kernel.slab import place_of, referrers, slab_place
from netmem_probe.kernel.summary import HolderSummary
from netmem_probe.kernel.walk import Problems
from netmem_probe.snippets import KEYS
from netmem_probe.target import open_program

pytestmark = pytest.mark.realkernel


@pytest.fixture(params=dumps(), ids=lambda d: "-".join(d))
def dump(request):
    series, kind = request.param
    return truth(series), program(series, kind)


def test_virtio_net_rx_rings_are_walked_on_every_device(dump):
    truth, prog = dump
    rings = RxRings(prog, Problems())
    assert not rings.unwalked
    virtio = {
        s["ifname"]
        for s in truth["scenario"]
        if s["kind"] == "virtio_net" and not s.get("device_deleted")
    }
    walked = {name.split()[1] for name in rings.walked if name.startswith("virtio_net ")}
    assert virtio <= walked
    per_device: Dict[str, Set[Tuple[int, int]]] = {}
    for slot in rings.by_address.values():
        per_device.setdefault(slot.netdev, set()).add((slot.queue, slot.slot))
    # Debian's virtio_net posts a full ring of mergeable buffers on each queue.
    assert all(len(slots) > 128 for slots in per_device.values()), per_device


def test_a_slab_object_is_named_with_the_member_pointing_at_it(dump):
    _, prog = dump
    rings = RxRings(prog, Problems())
    address = next(iter(rings.by_address))
    place = slab_place(prog, address)
    assert place is not None and place.allocated and (place.cache or "").startswith("kmalloc-")
    # One step back: the vring_virtqueue's split.desc_state points at the array.
    found = referrers(prog, {place.object}, search_words(prog, {place.object}, (), Problems()))[
        place.object
    ]
    assert found and any(p.startswith("kmalloc-") for p in found), found
    assert (place_of(prog, prog.symbol("init_net").address + 8) or "").startswith("init_net.")


@pytest.fixture(
    scope="module", params=[d for d in dumps() if d[1] == "elf"], ids=lambda d: "-".join(d)
)
def summaries(request):
    """Every pool's holder summary (one memmap scan, one memory search) and the scenario."""
    series, kind = request.param
    prog = program(series, kind)
    problems = Problems()
    scanner = PpPageScanner(prog, problems)
    # by the pool's address: before Linux 6.8 pools have no id
    per_pool = {
        pool: HolderSummary()
        for pool, info in scanner.pools.items()
        if info.inflight and not info.provider
    }
    targets = {}
    for page in scanner.pages([scanner.pools[pool] for pool in per_pool]):
        info = scanner.pools[page.pool]
        t = page_target(prog, page.pfn, page.page, page.pool, page.pool_id, info.order, problems)
        targets[t.netmem] = (page.pool, t)
    search = HolderSearch(prog, problems, scanner.pools)
    found = search.find([t for _, t in targets.values()])
    sockets: Dict[Tuple[int, str, Optional[str]], Holder] = {}
    statics: Dict[int, Dict[int, Holder]] = {pool: {} for pool in per_pool}
    for netmem, (pool, _) in targets.items():
        per_pool[pool].add(found[netmem])
        for h in found[netmem]:
            if h.sock is not None and h.sock.local:
                sockets.setdefault((pool, h.sock.local, h.queue), h)
            if h.static is not None:
                statics[pool][netmem] = h
    record = truth(series)
    if "holders" not in record:
        pytest.fail(
            "the dump's truth.json has no 'holders' record: it was made before the "
            "scenario recorded them; rerun scripts/realkernel/make-vmcore " + series
        )
    pools = {pool: scanner.pools[pool] for pool in per_pool}
    return record, pools, per_pool, sockets, prog, statics


def pages_queued_on(prog: drgn.Program, pid: int, fd: int, pool: int) -> Set[int]:
    """
    The kernel's own answer, with drgn's helpers and no netmem-probe code:
    the struct pages of pool ``pool`` that the skbs on the receive queue of
    socket ``fd`` of task ``pid`` point into (a head in a page fragment, or a
    page frag).
    """
    sk = drgn.cast("struct socket *", fget(find_task(prog, pid), fd).private_data).sk
    queue = sk.sk_receive_queue.address_of_()
    pages: Set[int] = set()
    skb = queue.next
    while skb.value_() != queue.value_():
        candidates = [virt_to_page(prog, skb.head)] if skb.head_frag else []
        shinfo = skb_shinfo(skb)
        for frag in shinfo.frags[: shinfo.nr_frags]:
            # Since Linux kernel commit 21d2e6737c97 ("net: add support for skbs with
            # unreadable frags") (in v6.12) a frag is a netmem_ref; bit 0 marks a net_iov.
            if frag.type_.has_member("netmem"):
                if not frag.netmem.value_() & 1:
                    candidates.append(drgn.Object(prog, "struct page *", frag.netmem.value_()))
            else:
                candidates.append(frag.bv_page)
        pages.update(p.value_() for p in candidates if p.pp.value_() == pool)
        skb = skb.next
    return pages


def test_every_in_flight_page_of_every_pool_has_a_holder(summaries):
    truth, pools, per_pool, _, _, _ = summaries
    assert per_pool, "the scenario makes pools with pages in flight"
    # The pp_test module keeps pages in an array of its own (its .bss): named
    # by the module's data, as static data.
    pp_test = truth.get("pp_test") or {"pools": [], "held": []}
    address = {p["n"]: int(p["address"], 16) for p in pp_test["pools"]}
    in_module = Counter(address[h["pool"]] for h in pp_test["held"])
    for pool, summary in per_pool.items():
        assert sum(summary.kinds.values()) == pools[pool].inflight, (hex(pool), summary.kinds)
        assert summary.unexplained == 0, (hex(pool), summary.kinds)
        assert summary.kinds.get("static-data", 0) == in_module[pool], (hex(pool), summary.kinds)


def test_the_pages_pp_test_keeps_are_named_by_its_held_array(summaries):
    truth, pools, per_pool, _, _, statics = summaries
    if not truth.get("pp_test"):
        pytest.skip(f"{truth['series']}: {truth.get('pp_test_note') or 'no pp_test module'}")
    pp_test = truth["pp_test"]
    held = {int(h["page"], 16) for h in pp_test["held"]}
    (pool,) = [int(p["address"], 16) for p in pp_test["pools"] if p["n"] == 0]
    assert held and set(statics[pool]) == held
    word = 8  # struct page * on a 64-bit kernel
    # held[0] .. held[n-1]: consecutive words of one array, from its start
    start = min(h.static.address for h in statics[pool].values() if h.static is not None)
    for page, h in statics[pool].items():
        assert h.static is not None and h.static.module == "pp_test" and h.static.symbol == "held"
        assert h.value == page and h.static.region == "data"
        i = (h.static.address - start) // word
        # "[i]" with pp_test.ko's debug info loaded, "+0x.." from its kallsyms alone
        assert h.static.member in (f"[{i}]", f"+{i * word:#x}"), h.static
    assert {(h.static.address - start) // word for h in statics[pool].values()} == set(
        range(len(held))
    )
    (release,) = {h.release for h in statics[pool].values()}
    assert release == "module pp_test dropping it from its own data (held), or unloading"
    assert per_pool[pool].releases[release] == len(held)


def test_the_holders_script_names_the_module_array_as_json_does(dump):
    truth, prog = dump
    if not truth.get("pp_test"):
        pytest.skip(f"{truth['series']}: {truth.get('pp_test_note') or 'no pp_test module'}")
    pages = [h["page"] for h in truth["pp_test"]["held"]]
    result = run_cli("holders", "--json", *pages, program=prog)
    for record in result.json():
        assert [(h["module"], h["symbol"][:4]) for h in record["holders"] if h["module"]] == [
            ("pp_test", "held")
        ], record
    if has_registry(prog):  # the scripts walk the page_pools registry (Linux 6.8+)
        theirs = run_snippet(snippet(prog, "holders", *pages), prog)
        assert same_records("holders", theirs, records("holders", result.out), KEYS["holders"])


@pytest.mark.parametrize("series", SERIES)
def test_a_module_list_that_does_not_link_back_is_reported_and_walked_back(series):
    record = truth(series)
    if not record.get("pp_test"):
        pytest.skip(f"{series}: {record.get('pp_test_note') or 'no pp_test module'}")
    # A Program of its own, to corrupt: the newest module's (pp_test's, at the
    # list's head) list.next made to point at itself, whose prev is the head.
    prog = open_program(core=record["dumps"]["elf"], symbols=record["symbols"])
    first = prog.read_word(prog["modules"].address_)
    word = first.to_bytes(8, "little")
    prog.add_memory_segment(first, 8, lambda _a, count, offset, _p: word[offset : offset + count])
    problems = Problems()
    targets = [make_target(prog, int(h["page"], 16), problems) for h in record["pp_test"]["held"]]
    found = HolderSearch(prog, problems).find([t for t in targets if t is not None])
    assert len(found) == len(targets)
    for holders in found.values():
        assert [h.static.module for h in holders if h.static is not None] == ["pp_test"]
    assert [p.what for p in problems.items] == ["modules"], [str(p) for p in problems.items]


def test_the_listed_virtio_pool_is_its_rx_ring_cache_and_sink(summaries):
    truth, pools, per_pool, sockets, prog, _ = summaries
    listed = next(s for s in truth["scenario"] if s["id"] == "virtio-listed")
    if not listed["pool_expected"]:  # before Linux 7.1
        pytest.skip(f"{truth['series']}: {listed['note']}")
    sink = f"{listed['sink']['addr']}:{listed['sink']['port']}"
    (pool,) = [
        i
        for i, info in pools.items()
        if info.netdev is not None and info.netdev.name == listed["ifname"]
    ]
    kinds = per_pool[pool].kinds
    assert set(kinds) <= {"rx-ring", "socket-receive", "pool-cache", "pool-ring"}, kinds
    # 256 buffers posted: over 64 pages of 4 KiB, fewer of 16 KiB (more buffers per page)
    assert kinds["rx-ring"] > 64 * 4096 // page_size(truth)
    pid = truth["holders"]["scenario_pid"]
    fd = truth["holders"]["sink_fds"][sink]
    # The sink's datagrams: exactly the pool's pages its receive queue points into. How
    # many datagrams share a page depends on PAGE_SIZE and the driver's buffer size
    # (on arm64-16k, 9 of virtio's mergeable buffers to a page: 90 datagrams in 10 pages).
    queued = pages_queued_on(prog, pid, fd, pool)
    assert kinds["socket-receive"] == len(queued)
    # ... and no fewer than the scenario sent: each 1200-byte datagram lies in one page.
    datagrams = listed["meant_to_hold_datagrams"]
    assert len(queued) >= -(-datagrams // (page_size(truth) // 1200)), (len(queued), datagrams)
    holder = sockets[(pool, sink, "receive")]
    assert [(o.pid, o.fd) for o in holder.owners] == [(pid, fd)]
    close = f"close fd {fd} of pid {pid} ({holder.owners[0].comm})"
    assert holder.release == close
    assert per_pool[pool].releases[close] == kinds["socket-receive"]


def test_the_tcp_out_of_order_queue_holds_veth_pool_pages(summaries):
    truth, pools, per_pool, sockets, _, _ = summaries
    ofo = truth["holders"]["tcp_ofo"]
    veth = next(s for s in truth["scenario"] if s["netns"] == ofo["netns"])
    if not veth["pool_expected"]:  # veth took page_pool in Linux 6.4
        pytest.skip(
            f"{truth['series']}: veth of this kernel makes no page pool, so no pool "
            "page reaches the TCP out-of-order queue"
        )
    held = [
        (pool, h)
        for (pool, local, queue), h in sockets.items()
        if local == ofo["server"] and queue == "tcp-ofo"
    ]
    assert held, "no page of any pool is in the TCP out-of-order queue"
    for pool, h in held:
        assert h.sock.protocol == "tcp" and h.sock.state == "ESTABLISHED"
        assert h.sock.remote == ofo["client"]
        assert per_pool[pool].kinds["socket-tcp-ofo"] >= 1
        # No process lives in the server's namespace: closing its fd releases them.
        pid = truth["holders"]["scenario_pid"]
        assert (pid, ofo["server_fd"]) in [(o.pid, o.fd) for o in h.owners]


def test_what_holders_names_releases_the_sinks_pages_and_ss_kill_does_not(summaries):
    """
    After the dump the scenario ran, in the guest, the ``ss -K`` filters for
    the orphaned virtio pool's UDP sink (as named before, then with -a), and
    then the action holders names now: closing the sink's descriptor.  The
    pool's in-flight count (netlink) after each step is the truth.
    """
    truth, pools, per_pool, sockets, _, _ = summaries
    rel = truth["release"]
    orphan = next(s for s in truth["scenario"] if s["id"] == "virtio-orphan")
    if not orphan["pool_expected"]:  # before Linux 7.1 the sink holds no pool page
        pytest.skip(f"{truth['series']}: {orphan['note']}")
    ((pool, holder),) = [
        (p, h)
        for (p, local, queue), h in sockets.items()
        if local == rel["socket"] and queue == "receive"
    ]
    held = per_pool[pool].kinds["socket-receive"]
    assert held >= 1
    pool_id = pools[pool].id  # netlink names pools by id
    before = rel["before"]["inflight"][str(pool_id)]
    assert before == pools[pool].inflight
    steps = {step["action"]: step for step in rel["steps"]}
    # The action holders names, run as named: the pool got every page back and
    # was destroyed (netlink lists it no more).
    assert holder.release == f"close fd {rel['fd']} of pid {rel['pid']} ({rel['comm']})"
    after = steps[holder.release]["inflight"].get(str(pool_id), 0)
    assert before - after >= held and after == 0
    # ss -K leaves the queue: unmatched without -a (the socket is UNCONN), and
    # aborted with -a, its queued bytes and the pool's pages stay.
    for action in (f"ss -K -u 'src {rel['socket']}'", f"ss -K -a -u 'src {rel['socket']}'"):
        step = steps[action]
        assert step["returncode"] == 0, step
        assert step["inflight"][str(pool_id)] == before, step
        assert step["rmem_alloc"] == rel["before"]["rmem_alloc"], step
    assert "UNCONN" in steps[f"ss -K -a -u 'src {rel['socket']}'"]["stdout"]


def test_ss_kill_leaves_a_tcp_out_of_order_queue_and_holders_names_the_owner(summaries):
    truth, _, _, sockets, _, _ = summaries
    tcp = truth["release"]["tcp"]
    (step,) = tcp["steps"]
    # The connection was aborted (TCP_CLOSE) but its queued bytes stayed.
    assert step["state"] == 7 and "ESTAB" in step["stdout"]
    assert step["rmem_alloc"] == tcp["before"]["rmem_alloc"] > 0
    veth = next(s for s in truth["scenario"] if s["netns"] == tcp["netns"])
    if not veth["pool_expected"]:  # veth took page_pool in Linux 6.4
        pytest.skip(
            f"{truth['series']}: ss -K left the queue; veth of this kernel makes no page "
            "pool, so no pool page is there for holders to name"
        )
    held = [
        h
        for (_, local, queue), h in sockets.items()
        if local == tcp["socket"] and queue == "tcp-ofo"
    ]
    assert held and all(
        h.release.startswith(f"close fd {tcp['fd']} of pid {truth['holders']['scenario_pid']} ")
        for h in held
    )
