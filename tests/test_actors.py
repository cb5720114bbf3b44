"""The actor: which process holds a socket whose skbs hold pages, and what releases them."""

from conftest import run_cli

from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.tasks import FakeTask
from netmem_probe.fake.world import World
from netmem_probe.kernel.actors import Owner, release_action


def _holders(prog, *pages):
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=prog)
    return {r["netmem"]: r["holders"] for r in result.json()}, result


def test_a_udp_sink_is_released_by_its_process_closing_it():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    page = pool.alloc_pages(1)[0]
    sink = FakeSocket(w, w.init_net, local=("10.0.2.15", 9000), owns_skbs=False)
    sink.queue(FakeSkb(w, [page]))
    FakeTask(w, 1, "init", w.init_net)
    FakeTask(w, 4242, "sink", w.init_net).open(sink, 7)
    got, result = _holders(w.program(), page)
    (row,) = got[hex(page.netmem)]
    assert row["protocol"] == "udp" and row["state"] is None and row["queue"] == "receive"
    assert row["owners"] == [
        {"pid": 4242, "comm": "sink", "fd": 7, "cgroup": None, "netns": w.init_net.inum}
    ]
    # ss -K aborts the socket but leaves its queue: closing the last fd frees it.
    assert row["release"] == "close fd 7 of pid 4242 (sink)"
    assert result.code == 0


def test_a_tcp_out_of_order_queue_holds_its_pages():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    pages = pool.alloc_pages(3)
    conn = FakeSocket(w, w.init_net, local=("10.0.2.15", 5201), remote=("10.0.2.2", 40000))
    skbs = [conn.queue(FakeSkb(w, [p]), "tcp-ofo") for p in pages]
    FakeTask(w, 77, "iperf3", w.init_net).open(conn, 3)
    got, _ = _holders(w.program(), *pages)
    for page, skb in zip(pages, skbs):
        (row,) = got[hex(page.netmem)]
        assert (row["kind"], row["skb"], row["queue"]) == ("skb-frag", hex(skb.obj.addr), "tcp-ofo")
        assert row["state"] == "ESTABLISHED" and row["netdev"] is None
        assert row["release"] == "close fd 3 of pid 77 (iperf3)"


def test_a_corrupt_out_of_order_tree_is_reported_not_followed():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    page = pool.alloc_pages(1)[0]
    conn = FakeSocket(w, w.init_net, local=("10.0.2.15", 5201), remote=("10.0.2.2", 40000))
    skb = conn.queue(FakeSkb(w, [page]), "tcp-ofo")
    other = FakeSkb(w, [])
    conn.queue(other, "tcp-ofo")

    def loop():  # the second node's parent is itself: a cycle
        node = other.obj.addr + w.type("struct sk_buff").member("rbnode").offset
        other.obj.value["rbnode"]["__rb_parent_color"] = node | 1
        skb.obj.value["rbnode"]["__rb_parent_color"] = node | 1

    w.before_commit(loop)
    got, result = _holders(w.program(), page)
    (row,) = got[hex(page.netmem)]
    assert row["queue"] is None and result.code == 4
    assert "TCP out-of-order rbtree" in result.err and "loops" in result.err


def test_an_owned_socket_is_released_by_closing_its_descriptors():
    owners = (Owner(10, "daemon", 4, "/system.slice/d.service", 1), Owner(11, "worker", 9, None, 1))
    for protocol in ("udp", "tcp"):
        assert release_action(protocol, "10.9.0.1:53", None, 2, owners, 99, 1) == (
            "close fd 4 of pid 10 (daemon), fd 9 of pid 11 (worker)"
        )


def test_an_orphaned_tcp_socket_is_killed_from_inside_its_namespace():
    tcp = ("tcp", "10.9.0.1:80", "10.9.0.2:4000")
    assert release_action(*tcp, 1, (), None, 1) == "ss -K -t 'src 10.9.0.1:80 dst 10.9.0.2:4000'"
    assert release_action(*tcp, 2, (), 99, 1) == (
        "nsenter -t 99 -n ss -K -t 'src 10.9.0.1:80 dst 10.9.0.2:4000'"
    )
    # Nobody lives in the namespace: ss cannot reach it.
    assert release_action(*tcp, 2, (), None, 1) is None
    # A UDP socket nobody holds: ss -K would abort it and leave its queue.
    assert release_action("udp", "10.9.0.1:53", None, 1, (), None, 1) is None
    assert release_action(None, None, None, None, (), None, 1) is None


def test_an_skb_held_for_gro_is_named_by_its_napi_and_bucket():
    w = World("linux-7.3")
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    napi = dev.napi(8500)
    dev.napi(8501)  # another instance, its lists empty
    pool = FakePagePool(w, netdev=dev, napi_id=8500)
    page = pool.alloc_pages(1)[0]
    skb = FakeSkb(w, [page], dev=dev)
    dev.gro_hold(napi, 3, skb.obj)
    got, result = _holders(w.program(), page)
    (row,) = got[hex(page.netmem)]
    assert (row["kind"], row["queue"]) == ("skb-frag", "gro")
    assert row["detail"] == "GRO list of napi 8500 (eth0), bucket 3"
    assert result.code == 0, result.err
    summary = run_cli("pool", str(pool.id), "--holders", "--json", program=w.program())
    assert summary.json()["holders"]["holder-kinds"] == {"gro": 1}
