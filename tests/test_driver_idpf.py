"""idpf rx rings: the buffers of each split-queue buffer queue with a netmem are the posted ones."""

from conftest import run_cli

from netmem_probe.fake.drivers import FakeIdpf
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.walk import Problems


def _idpf_world():
    """
    Two rx queue groups of two buffer queues: buffer 5 of group 0's first
    buffer queue and buffer 15 of group 1's second are posted; buffer 6
    came back from the device (its netmem zeroed, its id on a refill queue).
    """
    w = World("linux-7.3")
    nic = FakeIdpf(w.init_net, "ens2f0", groups=2, bufqs=2, count=16)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8900)
    for group in range(2):
        for bufq in range(2):
            nic.use_pool(group, bufq, pool.obj.addr)
    pages = pool.alloc_pages(3)
    posted = {
        nic.post(0, 0, 5, pages[0].netmem): RxSlot("idpf", "ens2f0", 0, 5),
        nic.post(1, 1, 15, pages[1].netmem): RxSlot("idpf", "ens2f0", 1, 15, "bufq1"),
    }
    nic.post(0, 0, 6, pages[2].netmem)
    nic.take(0, 0, 6)
    return w, nic, pool, posted, pages


def test_idpf_posted_buffers_are_named_by_queue_group_and_buffer_id():
    w, _, _, posted, pages = _idpf_world()
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.by_address == posted and rings.walked == ["idpf ens2f0"]
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=prog)
    got = {r["netmem"]: r["holders"] for r in result.json()}
    assert [
        (h["kind"], h["driver"], h["rx-queue"], h["slot"], h["detail"])
        for h in got[hex(pages[0].netmem)]
    ] == [("rx-ring", "idpf", 0, 5, "idpf ens2f0 rx queue 0, slot 5")]
    assert [h["detail"] for h in got[hex(pages[1].netmem)]] == [
        "idpf ens2f0 rx queue 1, bufq1 slot 15"
    ]
    # The taken buffer's netmem was zeroed: nothing names its page.
    assert got[hex(pages[2].netmem)] == [] and result.code == 1


def test_an_af_xdp_buffer_queue_is_not_walked_for_pool_pages():
    w, nic, _, _, _ = _idpf_world()
    xsk = 1 << w.prog.constant("__IDPF_Q_XSK").value_()
    nic.bufqs[0][0].value[0]["bufq"]["flags"] = [xsk]
    rings = RxRings(w.program(), Problems())
    assert [s.queue for s in rings.by_address.values()] == [1]


def test_an_impossible_idpf_buffer_queue_count_is_reported_not_walked():
    w, nic, _, _, _ = _idpf_world()
    nic.bufqs[1][0].value[1]["bufq"]["desc_count"] = 1 << 20
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert "impossible" in rings.unwalked["idpf ens2f0"]
    assert [p.what for p in problems.items] == ["idpf ens2f0 rx ring"]


def test_idpf_single_queue_model_buffers_are_named_by_rx_queue_and_descriptor():
    w = World("linux-7.3")
    nic = FakeIdpf(w.init_net, "ens2f0", groups=2, count=16, single=True)
    pool = FakePagePool(w, netdev=nic.dev, napi_id=8900)
    for queue in range(2):
        nic.use_pool(queue, 0, pool.obj.addr)
    pages = pool.alloc_pages(2)
    posted = {nic.post(1, 0, 9, pages[0].netmem): RxSlot("idpf", "ens2f0", 1, 9)}
    nic.post(0, 0, 2, pages[1].netmem)
    nic.take(0, 0, 2)  # idpf_rx_singleq_clean() zeroes the netmem it takes
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.by_address == posted and rings.walked == ["idpf ens2f0"]
    result = run_cli("holders", "--json", hex(pages[0].netmem), program=prog)
    assert [h["detail"] for h in result.json()[0]["holders"]] == ["idpf ens2f0 rx queue 1, slot 9"]


def _stashed(frags: int):
    """Split queue group 0's rx queue with an unfinished frame: a head and ``frags`` frags."""
    w, nic, pool, posted, _ = _idpf_world()
    head, *rest = pool.alloc_pages(1 + frags)
    data, words = nic.stash(0, head, [p.netmem for p in rest])
    return w, nic, posted, head, rest, data, words


def test_an_unfinished_multi_buffer_frame_is_named_as_its_rx_queues_stash():
    w, _, posted, head, frags, data, words = _stashed(2)
    prog = w.program()
    rings = RxRings(prog, Problems())
    assert rings.by_address == {
        **posted,
        data: RxSlot("idpf", "ens2f0", 0, 0, "stash"),
        words[0]: RxSlot("idpf", "ens2f0", 0, 0, "stash frag"),
        words[1]: RxSlot("idpf", "ens2f0", 0, 1, "stash frag"),
    }
    values = [hex(p.netmem) for p in (head, *frags)]
    got = {
        r["netmem"]: r["holders"]
        for r in run_cli("holders", "--json", *values, program=prog).json()
    }
    # the stash's data points into the head page; its shared info names the frags
    assert "idpf ens2f0 rx queue 0, stash slot 0" in [h["detail"] for h in got[values[0]]]
    assert [h["detail"] for h in got[values[2]]] == ["idpf ens2f0 rx queue 0, stash frag slot 1"]


def test_a_stash_whose_shared_info_lies_outside_its_frame_is_reported():
    w, nic, _, _, _, _, _ = _stashed(1)
    nic.rxqs[0].value["rxq"]["xdp"]["frame_sz"] = 64  # the shared info alone is larger
    problems = Problems()
    rings = RxRings(w.program(), problems)
    assert "stash: a 64-byte frame cannot hold its shared info" in rings.unwalked["idpf ens2f0"]
    assert [p.what for p in problems.items] == ["idpf ens2f0 rx ring"]
