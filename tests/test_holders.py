"""``holders``: every reference the scenario made to a page or net_iov, and nothing else."""

import pytest
from conftest import expected, fixtures_with, run_cli, target_at

from netmem_probe.fake.pools import FakePagePool
from netmem_probe.fake.sockets import FakeSkb, FakeSocket
from netmem_probe.fake.world import World
from netmem_probe.kernel.holders import HolderSearch
from netmem_probe.kernel.walk import Problems

HOLDER_FIXTURES = fixtures_with("holders")


def _matches(got, want):
    """Each wanted row equals one got row on the wanted keys, one to one."""
    assert len(got) == len(want), (got, want)
    rest = list(got)
    for row in want:
        hit = next((g for g in rest if all(g.get(k) == v for k, v in row.items())), None)
        assert hit is not None, (row, got)
        rest.remove(hit)


@pytest.mark.parametrize("name", HOLDER_FIXTURES)
def test_holders_are_the_references_the_scenario_made(name):
    truth = expected(name)["holders"]
    result = run_cli(
        "-f", f"fixtures/vmcore-stubs/{name}", "holders", "--json", *[t["netmem"] for t in truth]
    )
    got = {r["netmem"]: r for r in result.json()}
    for want in truth:
        record = got[want["netmem"]]
        assert record["kind"] == ("net_iov" if int(want["netmem"], 16) & 1 else "page")
        _matches(record["holders"], want["holders"])
    unheld = [
        t
        for t in truth
        if not any(
            h["kind"] in ("skb-frag", "skb-head", "pool-cache", "pool-ring") for h in t["holders"]
        )
    ]
    assert result.code == (1 if unheld else 0), result.err


@pytest.mark.parametrize("name", HOLDER_FIXTURES)
def test_every_kind_of_holder_is_exercised(name):
    kinds = {h["kind"] for t in expected(name)["holders"] for h in t["holders"]}
    queues = {h.get("queue") for t in expected(name)["holders"] for h in t["holders"]}
    assert {"skb-frag", "skb-head", "pool-cache", "pool-ring", "pool-ring-stale"} <= kinds
    assert {"receive", "error", "backlog"} <= queues
    niovs = [t for t in expected(name)["holders"] if int(t["netmem"], 16) & 1]
    if "providers" in expected(name):
        assert any(h["kind"] == "skb-frag" for t in niovs for h in t["holders"])


def _world_with_one_skb():
    w = World("linux-7.3")
    dev = w.init_net.netdev("eth0", driver="virtio_net")
    pool = FakePagePool(w, netdev=dev, napi_id=8200)
    head, frag = pool.alloc_pages(2)
    sock = FakeSocket(w, w.init_net, local=("10.1.1.1", 443), remote=("10.1.1.2", 5555))
    skb = sock.queue(FakeSkb(w, [frag], head_page=head, dev=dev))
    return w, head, frag, skb


def test_a_direct_map_address_names_the_page_it_lies_in():
    w, head, frag, skb = _world_with_one_skb()
    prog = w.program()
    inside = w.page_virt(head.pfn) + 0x123
    target = target_at(prog, inside)
    assert target.netmem == head.netmem and target.kind == "page"
    found = HolderSearch(prog, Problems()).find([target])[head.netmem]
    assert [(h.kind, h.skb) for h in found] == [("skb-head", skb.obj.addr)]
    sock = found[0].sock
    assert sock is not None and (sock.local, sock.remote) == ("10.1.1.1:443", "10.1.1.2:5555")
    assert found[0].queue == "receive" and found[0].netdev == "eth0"


def test_an_ipv6_socket_is_named_by_its_addresses():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    page = pool.alloc_pages(1)[0]
    sock = FakeSocket(w, w.init_net, local=("fd00::1", 443), remote=("fd00::2", 5555))
    sock.queue(FakeSkb(w, [page]), "error")
    prog = w.program()
    found = HolderSearch(prog, Problems()).find([target_at(prog, page.netmem)])
    (holder,) = found[page.netmem]
    assert holder.sock is not None
    assert (holder.sock.family, holder.sock.local, holder.sock.remote, holder.queue) == (
        "inet6",
        "[fd00::1]:443",
        "[fd00::2]:5555",
        "error",
    )
    assert holder.sock.netns == w.init_net.inum


def test_a_frag_found_without_its_skb_says_so():
    w, head, frag, skb = _world_with_one_skb()
    skb.obj.value["head"] = 0  # no sk_buff points at the shared info any more
    prog = w.program()
    found = HolderSearch(prog, Problems()).find([target_at(prog, frag.netmem)])[frag.netmem]
    assert [(h.kind, h.skb, h.frag) for h in found] == [("skb-frag", None, 0)]
    assert "no sk_buff points at it" in (found[0].detail or "")


def test_an_skb_on_no_socket_has_no_owner():
    w = World("linux-7.3")
    pool = FakePagePool(w)
    page = pool.alloc_pages(1)[0]
    skb = FakeSkb(w, [page])
    skb.obj.value.update(next=skb.obj.addr, prev=skb.obj.addr)  # skb_queue_head_init'ed alone
    prog = w.program()
    found = HolderSearch(prog, Problems()).find([target_at(prog, page.netmem)])[page.netmem]
    assert [(h.kind, h.skb, h.sock, h.queue) for h in found] == [
        ("skb-frag", skb.obj.addr, None, None)
    ]


@pytest.mark.parametrize("value", ["0xffffea0000000008", "0x10", "0xffff888100000001", "zz"])
def test_values_that_name_nothing_are_usage_errors(value):
    result = run_cli("-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "holders", value)
    assert result.code == 2, result.err
    assert result.err.startswith("netmem-probe: error:") and len(result.err.splitlines()) == 1


def test_table_names_the_target_and_its_pool():
    truth = expected("linux-7.3-mixed")["holders"][0]
    result = run_cli("-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "holders", truth["netmem"])
    first = result.out.splitlines()[0]
    assert first.startswith(f"netmem {truth['netmem']}: struct page") and ", pool " in first
