"""Pages held by skbs waiting outside sockets: per CPU, in qdiscs, and released skbs."""

import pytest
from conftest import run_cli

from netmem_probe.fake.net import NetDevice
from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.queues import FQ_INTERNAL, FakeQdisc
from netmem_probe.fake.sockets import FakeSkb
from netmem_probe.fake.world import World


def _holders(world, *pages):
    result = run_cli("holders", "--json", *[hex(p.netmem) for p in pages], program=world.program())
    return {r["netmem"]: r["holders"] for r in result.json()}, result


def _summary(world, pool):
    result = run_cli("pool", str(pool.id), "--holders", "--json", program=world.program())
    assert result.code == 0, result.err
    return result.json()["holders"]


class _World(World):
    """A 7.3 world with a virtio_net eth0 and one page pool on it."""

    eth0: NetDevice
    pool: FakePagePool


@pytest.fixture
def world():
    w = _World("linux-7.3")
    w.eth0 = w.init_net.netdev("eth0", driver="virtio_net")
    w.pool = FakePagePool(w, netdev=w.eth0)
    return w


@pytest.mark.parametrize(
    "member, detail",
    [
        ("input_pkt_queue", "backlog of CPU 1 (input_pkt_queue)"),
        ("process_queue", "backlog of CPU 1 (process_queue)"),
    ],
)
def test_an_skb_in_a_cpu_backlog_holds_its_pages(world, member, detail):
    page = world.pool.alloc_pages(1)[0]
    skb = FakeSkb(world, [page], dev=world.eth0)
    world.cpu_queues.queue_backlog(1, skb.obj, member)
    got, result = _holders(world, page)
    (row,) = got[hex(page.netmem)]
    assert (row["kind"], row["skb"], row["queue"]) == ("skb-frag", hex(skb.obj.addr), "backlog")
    assert row["detail"] == detail and row["netdev"] == "eth0" and row["sock"] is None
    assert result.code == 0, result.err
    summary = _summary(world, world.pool)
    assert summary["holder-kinds"] == {"backlog": 1}
    assert summary["release"] == [
        {"action": "the CPU's backlog NAPI delivering it (process_backlog)", "pages": 1}
    ]


def test_skbs_on_a_cpu_defer_list_hold_their_pages(world):
    pages = world.pool.alloc_pages(2)
    skbs = [FakeSkb(world, [p]) for p in pages]
    for skb in skbs:
        world.cpu_queues.defer(0, skb.obj)
    got, result = _holders(world, *pages)
    for page in pages:
        (row,) = got[hex(page.netmem)]
        assert (row["queue"], row["detail"]) == ("defer-list", "defer list of CPU 0, node 0")
    assert result.code == 0, result.err
    assert _summary(world, world.pool)["holder-kinds"] == {"defer-list": 2}


def test_an_skb_on_the_completion_queue_holds_its_page(world):
    page = world.pool.alloc_pages(1)[0]
    skb = FakeSkb(world, [page])
    world.cpu_queues.complete(1, skb.obj)
    got, _ = _holders(world, page)
    (row,) = got[hex(page.netmem)]
    assert (row["queue"], row["detail"]) == ("completion-queue", "completion queue of CPU 1")


def test_a_released_skb_in_the_napi_cache_holds_nothing(world):
    page = world.pool.alloc_pages(1)[0]
    # A released sk_buff keeps its stale head pointer into the page.
    skb = FakeSkb(world, head_page=page)
    world.cpu_queues.cache(0, skb.obj)
    got, _ = _holders(world, page)
    (row,) = got[hex(page.netmem)]
    assert (row["kind"], row["queue"]) == ("skb-head", "napi-cache")
    assert row["detail"] == "NAPI skb cache of CPU 0, slot 0"
    # Nothing holds the page: the summary calls it what it is.
    assert _summary(world, world.pool)["holder-kinds"] == {"unexplained": 1}


def test_a_pfifo_fast_band_holds_its_skbs_pages(world):
    qdisc = FakeQdisc(world, world.eth0, "pfifo_fast")
    pages = world.pool.alloc_pages(2)
    for page in pages:
        qdisc.enqueue(FakeSkb(world, [page], dev=world.eth0).obj, 1)
    got, result = _holders(world, *pages)
    for page in pages:
        (row,) = got[hex(page.netmem)]
        assert (row["queue"], row["detail"]) == ("qdisc", "qdisc pfifo_fast 0: of eth0, band 1")
    assert result.code == 0, result.err
    summary = _summary(world, world.pool)
    assert summary["holder-kinds"] == {"qdisc": 2}
    assert summary["release"][0]["action"].startswith("the qdisc sending it (qdisc pfifo_fast")


def test_a_fq_codel_flow_holds_its_skbs_pages(world):
    qdisc = FakeQdisc(world, world.eth0, "fq_codel", handle=0x8001 << 16)
    pages = world.pool.alloc_pages(3)
    for page in pages:
        qdisc.enqueue(FakeSkb(world, [page], dev=world.eth0).obj, 5)
    got, result = _holders(world, *pages)
    for page in pages:
        (row,) = got[hex(page.netmem)]
        assert row["detail"] == "qdisc fq_codel 8001: of eth0, flow 5"
    assert result.code == 0, result.err


def test_a_fifo_qdisc_queue_holds_its_skbs_pages(world):
    qdisc = FakeQdisc(world, world.eth0, "pfifo", handle=0x10 << 16)
    page = world.pool.alloc_pages(1)[0]
    qdisc.enqueue(FakeSkb(world, [page]).obj)
    got, _ = _holders(world, page)
    (row,) = got[hex(page.netmem)]
    assert row["detail"] == "qdisc pfifo 10: of eth0, queue"


def test_a_looping_defer_list_is_reported_and_the_rest_still_named(world):
    pages = world.pool.alloc_pages(2)
    looped = FakeSkb(world, [pages[0]])
    world.cpu_queues.defer(0, looped.obj)
    backlog = FakeSkb(world, [pages[1]], dev=world.eth0)
    world.cpu_queues.queue_backlog(1, backlog.obj)
    world.before_commit(lambda: looped.obj.set("next", looped.obj.addr))
    got, result = _holders(world, *pages)
    assert result.code == 4
    assert "skb defer list of CPU 0, node 0" in result.err and "loops" in result.err
    assert got[hex(pages[1].netmem)][0]["queue"] == "backlog"


def test_a_corrupt_fq_codel_flow_count_is_reported_not_read(world):
    qdisc = FakeQdisc(world, world.eth0, "fq_codel")
    page = world.pool.alloc_pages(1)[0]
    qdisc.enqueue(FakeSkb(world, [page]).obj, 0)

    def corrupt_flow_count() -> None:
        assert qdisc.data is not None  # fq_codel's private data, made by then
        qdisc.data.set("flows_cnt", 1 << 20)

    world.before_commit(corrupt_flow_count)
    got, result = _holders(world, page)
    assert result.code == 4 and "fq_codel" in result.err and "flows_cnt" in result.err
    (row,) = got[hex(page.netmem)]
    assert row["queue"] is None


def test_an_fq_qdiscs_flows_hold_their_skbs_pages(world):
    qdisc = FakeQdisc(world, world.eth0, "fq", handle=0x8002 << 16)
    pages = world.pool.alloc_pages(9)
    places = [(FQ_INTERNAL, False)] * 2 + [(3, False)] * 2 + [(3, True)] * 3 + [(7, True)] * 2
    for page, (flow, rbtree) in zip(pages, places):
        qdisc.enqueue_fq(
            FakeSkb(world, [page], dev=world.eth0).obj, flow, band=flow % 3, rbtree=rbtree
        )
    got, result = _holders(world, *pages)
    assert result.code == 0, result.err
    name = "qdisc fq 8002: of eth0"
    flows = {n: qdisc.fq_flow_objs[n].addr for n in (3, 7)}
    want = [f"{name}, internal flow"] * 2 + [f"{name}, flow {flows[3]:#x}, band 0"] * 5
    want += [f"{name}, flow {flows[7]:#x}, band 1"] * 2
    for page, detail in zip(pages, want):
        (row,) = got[hex(page.netmem)]
        # the rbtree's skbs too, whose dev is their rbnode's rb_left
        assert (row["queue"], row["detail"], row["netdev"]) == ("qdisc", detail, "eth0")
    summary = _summary(world, world.pool)
    assert summary["holder-kinds"] == {"qdisc": 9}


def test_a_corrupt_fq_flow_rbtree_is_reported_and_the_rest_still_named(world):
    qdisc = FakeQdisc(world, world.eth0, "fq")
    pages = world.pool.alloc_pages(4)
    skbs = [FakeSkb(world, [page]).obj for page in pages]
    qdisc.enqueue_fq(skbs[0], 1)
    for skb in skbs[1:]:
        qdisc.enqueue_fq(skb, 1, rbtree=True)

    def break_a_parent() -> None:  # the rbtree's left node names no parent
        skbs[1].set("rbnode.__rb_parent_color", 1)

    world.before_commit(break_a_parent)
    got, result = _holders(world, *pages)
    assert result.code == 4 and "fq flow rbtree" in result.err and "parent" in result.err
    # the list's skb and the rbtree's top and right nodes are still named
    named = [p for p in pages if got[hex(p.netmem)][0]["queue"] == "qdisc"]
    assert named == [pages[0], pages[2], pages[3]]


def test_an_impossible_fq_tree_count_is_reported_not_read(world):
    qdisc = FakeQdisc(world, world.eth0, "fq")
    page = world.pool.alloc_pages(1)[0]
    qdisc.enqueue_fq(FakeSkb(world, [page]).obj, 2)

    def corrupt_tree_count() -> None:
        assert qdisc.data is not None  # fq's private data, made by then
        qdisc.data.set("fq_trees_log", 40)

    world.before_commit(corrupt_tree_count)
    got, result = _holders(world, page)
    assert result.code == 4 and "fq_trees_log 40" in result.err
    (row,) = got[hex(page.netmem)]
    assert row["queue"] is None
